"""Registered files are verified before anything loads them: a changed weight, a changed
``MLmodel``, an extra file and a version without a manifest are each refused, by
``load_version`` and by ``quantrec verify``; an untouched version verifies.

Tampering happens on a version registered into a copy of the backfilled home (its own
experiment, so its files live in the copy), never on the shared session state.
"""

from datetime import date
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import pytest
import torch

from quantrec.flows.cli import main
from quantrec.models.manifest import IntegrityError, file_sha256
from quantrec.tasks.registry import _log_version
from quantrec.tasks.settings import quantrec_home
from quantrec.tasks.tracking import (
    experiment_id,
    load_version,
    record_manifest,
    start_run,
)


@pytest.fixture
def registered(home_copy):
    """A version registered as the lifecycle does, with its files inside the copied home:
    (client, model name, version, folder of its stored files)."""
    copy, config, records, client = home_copy
    name = config.registry.model_name
    loaded = load_version(name, records[-1]["registered_versions"]["fp32"])
    experiment = experiment_id(client, quantrec_home(), "integrity")
    run_id = start_run(client, experiment, date(2026, 3, 3), {})
    identity = {"quantrec.run_key": "integrity", "quantrec.variant": "fp32"}
    version = _log_version(
        client, run_id, "fp32", loaded.model, loaded.schema, None, name, identity
    )
    record_manifest(client, name, version, run_id)
    source = client.get_model_version(name, version).source
    location = client.get_logged_model(source.removeprefix("models:/")).artifact_location
    folder = Path(unquote(urlparse(location).path))
    assert folder.is_relative_to(copy), "tampering must stay inside the copied home"
    return client, name, version, folder


def _refused(name, version, capsys, *needles):
    with pytest.raises(IntegrityError) as refused:
        load_version(name, version)
    for needle in (f"model {name!r} version {version}", *needles):
        assert needle in str(refused.value)
    assert main(["verify", version]) == 2
    err = capsys.readouterr().err
    for needle in (f"model {name!r} version {version}", *needles):
        assert needle in err


def test_an_untouched_version_verifies_and_loads(registered, capsys):
    client, name, version, folder = registered
    manifest = mlflow.artifacts.load_text(
        client.get_model_version(name, version).tags["quantrec.manifest"]
    )
    for stored in (
        "MLmodel",
        "requirements.txt",
        "data/artifact/weights.pt",
        "data/artifact/recipe.json",
        "data/artifact/schema.json",
    ):
        assert f'"{stored}"' in manifest
    assert load_version(name, version).precision == "fp32"
    assert main(["verify", version]) == 0
    assert "files match its manifest" in capsys.readouterr().out


def test_other_valid_weights_are_refused(registered, capsys):
    _, name, version, folder = registered
    weights = folder / "data" / "artifact" / "weights.pt"
    before = file_sha256(weights)
    state = torch.load(weights, weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 1.0
    torch.save(state, weights)
    after = file_sha256(weights)
    _refused(name, version, capsys, "'data/artifact/weights.pt'", before, after)


def test_a_changed_loader_is_refused_before_it_runs(registered, capsys, tmp_path):
    _, name, version, folder = registered
    ran = tmp_path / "ran"
    mlmodel = folder / "MLmodel"
    before = file_sha256(mlmodel)
    mlmodel.write_text(
        mlmodel.read_text().replace("quantrec.models.pyfunc", "evil_loader") + "code: code\n"
    )
    (folder / "code").mkdir()
    (folder / "code" / "evil_loader.py").write_text(
        f"open({str(ran)!r}, 'w').close()\ndef _load_pyfunc(path):\n    raise SystemExit\n"
    )
    _refused(
        name,
        version,
        capsys,
        f"file 'MLmodel' has sha256 {file_sha256(mlmodel)}",
        before,
        "extra file 'code/evil_loader.py'",
    )
    assert not ran.exists()


def test_an_extra_file_is_refused(registered, capsys):
    _, name, version, folder = registered
    (folder / "code").mkdir()
    (folder / "code" / "helper.py").write_text("print('hello')\n")
    _refused(
        name,
        version,
        capsys,
        "extra file 'code/helper.py'",
        file_sha256(folder / "code" / "helper.py"),
    )


def test_a_version_without_a_manifest_is_refused(home_copy, capsys):
    _, config, records, client = home_copy
    name, version = config.registry.model_name, records[0]["registered_versions"]["int8"]
    client.delete_model_version_tag(name, version, "quantrec.manifest_sha256")
    _refused(name, version, capsys, "has no manifest", "registered before quantrec recorded")


def test_verifying_an_unknown_version_is_a_clear_error(home_copy, capsys):
    _, config, _, _ = home_copy
    assert main(["verify", "999"]) == 2
    err = capsys.readouterr().err
    assert f"model {config.registry.model_name!r} has no version '999'" in err
    assert "Traceback" not in err
