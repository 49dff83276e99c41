"""The layout's import rules, checked on every module so a new one is covered too.

- The pure core (``quantrec.models``, ``quantrec.data_checks``, ``quantrec.feeds``) imports
  neither Prefect nor MLflow, so it runs, is tested and benchmarked without a server;
  ``data_checks`` and ``feeds`` do not import torch either (a data check needs no model).
- A task module uses the core and the tasks' base (tracking, settings, config), never
  another task: the flows compose tasks, the tasks do not call one another.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ORCHESTRATION = ("prefect", "mlflow")
CORE = {
    "quantrec.models": ORCHESTRATION,
    "quantrec.data_checks": (*ORCHESTRATION, "torch"),
    "quantrec.feeds": (*ORCHESTRATION, "torch"),
}
# What every task may use: the tracking store, the settings and config, the stage store
# of resumable results (the stages' own persistence, as tracking is the runs'), and the task
# runner of work that fans out.
TASK_BASE = {
    "quantrec.tasks.tracking",
    "quantrec.tasks.settings",
    "quantrec.tasks.config",
    "quantrec.tasks.stage_store",
    "quantrec.tasks.fanout",
}

# Run in a fresh interpreter: the test process has long imported Prefect and MLflow.
# Imports each module of the package (found by pkgutil.walk_packages) in turn and prints,
# per forbidden top-level module, the first module whose import brought it in.
_IMPORT_ALL = """
import importlib, json, pkgutil, sys
package, forbidden = sys.argv[1], sys.argv[2].split(",")
def unimportable(name):
    raise ImportError(f"cannot import {name} to walk it")
root = importlib.import_module(package)
walk = pkgutil.walk_packages(root.__path__, package + ".", onerror=unimportable)
modules = [package] + [m.name for m in walk]
culprits = {name: package for name in forbidden if name in sys.modules}
for module in modules:
    importlib.import_module(module)
    for name in forbidden:
        if name in sys.modules:
            culprits.setdefault(name, module)
print(json.dumps({"modules": modules, "culprits": culprits}))
"""


@pytest.mark.parametrize("package", sorted(CORE))
def test_the_core_imports_no_orchestration(package: str, tmp_path: Path) -> None:
    forbidden = CORE[package]
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, package, ",".join(forbidden)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(found["modules"]) > 1, found["modules"]  # the walk found the submodules
    if package == "quantrec.models":
        assert "quantrec.models.recipes.embedding" in found["modules"]  # and subpackages
    assert found["culprits"] == {}, (
        f"{package} must not import {sorted(found['culprits'])}; first brought in by "
        f"{found['culprits']}"
    )


def _task_modules() -> dict[str, Path]:
    # find_spec locates the package without importing it (importing tasks loads Prefect).
    spec = importlib.util.find_spec("quantrec.tasks")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations)))
    return {
        "quantrec.tasks" + ("" if path.stem == "__init__" else f".{path.stem}"): path
        for path in sorted(folder.glob("*.py"))
    }


def _imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``path`` imports, absolute; ``from pkg import name`` counts as the
    module ``pkg.name`` when that is one of ``known``."""
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
    return found


def test_the_import_parser_resolves_relative_and_from_imports(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    path.write_text(
        "from . import data\nfrom .registry import promote\nfrom ..models import dlrm\n"
        "import quantrec.tasks.drift\nfrom quantrec.tasks import config\n"
    )
    known = {"quantrec.tasks.data", "quantrec.tasks.config"}
    assert _imported_modules("quantrec.tasks.train", path, known) == {
        "quantrec.tasks",
        "quantrec.tasks.data",
        "quantrec.tasks.registry",
        "quantrec.models",
        "quantrec.tasks.drift",
        "quantrec.tasks.config",
    }


def test_a_task_imports_no_other_task() -> None:
    modules = _task_modules()
    tasks = set(modules) - {"quantrec.tasks"}
    crossings = {
        module: sorted((_imported_modules(module, path, tasks) & tasks) - TASK_BASE - {module})
        for module, path in modules.items()
    }
    crossings = {module: imports for module, imports in crossings.items() if imports}
    assert crossings == {}, f"task modules importing other tasks: {crossings}"
