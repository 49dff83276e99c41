"""End to end on PostgreSQL: ``quantrec stack up --postgres`` (a cluster under the home, an
MLflow server and a Prefect server on it), a worker from a process work pool
(``deploy/worker.sh``), two deployment runs of different dates started at once, one killed
while registering and run again. The registry afterwards (versions, their tags, aliases)
equals what the same runs leave in the embedded SQLite store, with no duplicate versions.

    python -m pytest -q -m e2e tests/e2e/test_postgres.py -s

The days are made independent of the order they finish in, so the two registries can be
compared: training on the window alone (no parent version), a fresh search every day (no
previous plan) and a gate no candidate passes, so the champion (day A's fp32, promoted by
hand) is the same for both concurrent days whichever finishes first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from uuid import UUID

import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from quantrec.tasks.config import load_config
from quantrec.tasks.settings import Home
from quantrec.tasks.stack import StackPaths, StackState, postgres_bindir

from .conftest import BIN, MODEL, REPO, Quantrec, alias, spawn, stop_group, wait_until

DAY_A, DAY_B, DAY_C = "2026-03-03", "2026-03-04", "2026-03-05"
DEPLOYMENT = "daily-lifecycle/daily-lifecycle"
CONFIG = """\
# quantrec run --config e2e.toml --date 2026-03-04   (tests/e2e/test_postgres.py)
[feed]
rows_per_day = 3000
seed = 7

[training]
window_days = 2
batch_size = 256
mode = "window"

[search]
linear_candidates = ["fp16", "int8"]
table_candidates = ["fp16", "int8"]
reuse_plan = false

[evaluation]
batch_size = 512

[gate]
rules = [{ name = "review_only", metric = "auc", direction = "min", limit = 2.0 }]
"""
# Tags that name a run, a time or a file digest of one store: present, but not compared.
VOLATILE = ("quantrec.mlflow_run_id", "quantrec.manifest", "quantrec.manifest_sha256")
RUN_KEY = "quantrec.run_key"


def _code_version() -> str:
    """The code version a new process computes now (the sources' hash: any edit moves it)."""
    probe = "from quantrec.tasks.settings import code_version; print(code_version())"
    return subprocess.run(
        [str(BIN / "python"), "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()


def _registry(client: MlflowClient) -> dict:
    """Versions keyed by ``<run date>/<variant>`` with their tags, and aliases by the same
    key; fails on a duplicate version."""
    versions: dict[str, dict] = {}
    by_number: dict[str, str] = {}
    for version in client.search_model_versions(f"name='{MODEL}'"):
        key = f"{version.tags['quantrec.run_date']}/{version.tags['quantrec.variant']}"
        assert key not in versions, f"duplicate version of {key}: {version.version}"
        assert all(name in version.tags for name in VOLATILE[0::2]), version.tags
        versions[key] = {
            k: v for k, v in version.tags.items() if k not in VOLATILE and not k.endswith("_at")
        }
        by_number[str(version.version)] = key
    aliases = client.get_registered_model(MODEL).aliases
    return {
        "versions": dict(sorted(versions.items())),
        "aliases": {name: by_number[str(number)] for name, number in aliases.items()},
    }


def _promote_fp32_of(quantrec: Quantrec, day: str) -> None:
    [fp32] = [
        v
        for v in quantrec.client().search_model_versions(f"name='{MODEL}'")
        if v.tags["quantrec.run_date"] == day and v.tags["quantrec.variant"] == "fp32"
    ]
    done = quantrec.run("promote", str(fp32.version), "--reason", "the e2e's champion")
    assert done.returncode == 0, done.stderr[-3000:]
    assert alias(quantrec.client()) == str(fp32.version)


def _sqlite_registry(tmp_path: Path, prefect_api: str) -> tuple[dict, float]:
    """The same days on the embedded store, one after the other (``quantrec run``)."""
    started = time.monotonic()
    quantrec = Quantrec(tmp_path / "sqlite" / "home", prefect_api=prefect_api)
    quantrec.config.write_text(CONFIG)
    try:
        for day in (DAY_A, DAY_B, DAY_C):
            done = quantrec.run("run", "--date", day, "--json", timeout_s=600)
            assert done.returncode == 0, done.stderr[-3000:]
            if day == DAY_A:
                _promote_fp32_of(quantrec, DAY_A)
        return _registry(quantrec.client()), time.monotonic() - started
    finally:
        quantrec.close()


def _deployment_ready() -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(DEPLOYMENT)
        except Exception:  # noqa: BLE001 - not deployed yet (ObjectNotFound)
            return False
        workers = client.read_workers_for_work_pool("quantrec")
    return any(str(w.status.value) == "ONLINE" for w in workers)


def _start(day: str, config: dict, *, wait: bool = False, **env: str) -> UUID:
    """A deployment run of ``day`` (``env``: variables of its process only, job variables)."""
    parameters = {"run_date": day, "config": config, "wait": wait}
    run = run_deployment(DEPLOYMENT, parameters=parameters, job_variables={"env": env}, timeout=0)
    return run.id


def _finished(flow_run_id: UUID, worker: subprocess.Popen, timeout_s: float = 900):
    """The flow run once final (the worker must stay up meanwhile)."""

    def final():
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
        return run if run.state.is_final() else None

    return wait_until(
        final, timeout_s=timeout_s, what=f"flow run {flow_run_id}", every_s=3, alive=worker
    )


@pytest.mark.e2e
def test_postgres_stack_with_a_worker_matches_sqlite(tmp_path, prefect_api):
    try:
        postgres_bindir()
    except Exception as err:  # noqa: BLE001 - StackError: the programs are absent
        pytest.skip(f"PostgreSQL is not installed here: {err}")
    started, code = time.monotonic(), _code_version()
    # The same days on SQLite, meanwhile, so both sides run the same code.
    reference: dict = {}

    def on_sqlite() -> None:
        reference["registry"], reference["seconds"] = _sqlite_registry(tmp_path, prefect_api)

    beside = threading.Thread(target=on_sqlite)
    beside.start()
    # The cluster's unprivileged owner must reach the home: pytest's tmp is root-only.
    base = Path(tempfile.mkdtemp(prefix="qr-e2e-"))
    base.chmod(0o755)
    quantrec = Quantrec(base / "home", prefect_api="", tracking_uri=None)
    quantrec.config.write_text(CONFIG)
    env = {**quantrec.env(), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PREFECT_API_URL")
    worker = None
    try:
        up = subprocess.run(
            [str(BIN / "quantrec"), "stack", "up", "--postgres", "--no-ui"]
            + ["--mlflow-port", "0", "--prefect-port", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert up.returncode == 0, up.stderr[-3000:]
        print(up.stdout)
        stack = StackState.read(StackPaths(Home(root=quantrec.home)))
        quantrec.prefect_api, quantrec.tracking_uri = stack.prefect_api_url, stack.tracking_uri
        print(f"stack up after {time.monotonic() - started:.0f} s")
        worker = spawn(
            ["bash", str(REPO / "deploy" / "worker.sh")],
            env={**quantrec.env(), "PATH": env["PATH"]},
            log=base / "worker.log",
        )
        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api_url}):
            wait_until(
                _deployment_ready,
                timeout_s=300,
                what="the deployments and the worker",
                every_s=3,
                alive=worker,
            )
            _on_the_stack(quantrec, worker, base)
        postgres = _registry(quantrec.client())
        print(f"PostgreSQL side done after {time.monotonic() - started:.0f} s")
    finally:
        if worker is not None:
            stop_group(worker)
        subprocess.run(
            [str(BIN / "quantrec"), "stack", "down", "--remove"], env=env, timeout=120, check=False
        )
        quantrec.close()
        shutil.rmtree(base, ignore_errors=True)

    beside.join(timeout=1800)
    assert "registry" in reference, "the SQLite side did not finish (see its failure above)"
    sqlite = reference["registry"]
    whole = time.monotonic() - started
    print(f"SQLite side: {reference['seconds']:.0f} s; whole test {whole:.0f} s")
    if _code_version() != code:
        # The run identity includes the code version: an edit of the sources while the test
        # ran gives the later runs other run keys. Everything else must still be equal.
        print("the sources changed during the test: run keys not compared")
        for side in (postgres, sqlite):
            for tags in side["versions"].values():
                assert tags.pop(RUN_KEY)
    assert len(postgres["versions"]) == 12, sorted(postgres["versions"])
    assert postgres["aliases"] == {"champion": f"{DAY_A}/fp32"}
    assert sqlite["aliases"] == postgres["aliases"]
    for key, tags in postgres["versions"].items():
        assert tags == sqlite["versions"].get(key), key
    assert json.dumps(postgres, sort_keys=True) == json.dumps(sqlite, sort_keys=True)


def _on_the_stack(quantrec: Quantrec, worker: subprocess.Popen, base: Path) -> None:
    config = load_config(quantrec.config).model_dump(mode="json")
    first = _finished(_start(DAY_A, config), worker)
    assert first.state.is_completed(), first.state
    _promote_fp32_of(quantrec, DAY_A)

    # Two dates at once; C stops at the failpoint after its first variant's files are
    # logged and before its version is created.
    plain = _start(DAY_B, config)
    paused = _start(DAY_C, config, QUANTREC_PAUSE_AT="register-files")
    marker = quantrec.home / "paused-register-files"
    wait_until(marker.exists, timeout_s=900, what=str(marker), every_s=2, alive=worker)

    # The same date from another machine (another home: no file lock in common) is refused
    # by the Prefect concurrency limit while C holds it.
    other = Quantrec(
        base / "other-machine" / "home",
        prefect_api=quantrec.prefect_api,
        tracking_uri=quantrec.tracking_uri,
    )
    other.config.write_text(CONFIG)
    refused = other.run("run", "--date", DAY_C, "--json", timeout_s=300)
    other.close()
    assert refused.returncode == 4, refused.stderr[-3000:]
    assert f"concurrency limit 'quantrec-run:{MODEL}:{DAY_C}' is held" in refused.stderr

    second = _finished(plain, worker)
    assert second.state.is_completed(), second.state
    os.kill(int(marker.read_text()), signal.SIGKILL)  # the flow run's process, mid-register
    crashed = _finished(paused, worker)
    assert crashed.state.is_crashed() or crashed.state.is_failed(), crashed.state
    marker.unlink()

    # The rerun queues behind the killed run's slot until its lease lapses, then resumes.
    rerun_started = time.monotonic()
    rerun = _finished(_start(DAY_C, config, wait=True), worker)
    assert rerun.state.is_completed(), rerun.state
    print(f"rerun of {DAY_C} done {time.monotonic() - rerun_started:.0f} s after it started")
