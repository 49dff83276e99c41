"""Manifests of a model directory: every file's SHA-256, and each kind of difference."""

import hashlib

import pytest

from quantrec.models.manifest import IntegrityError, Manifest, Mismatch, take_manifest


@pytest.fixture
def model_dir(tmp_path):
    root = tmp_path / "model"
    (root / "data" / "artifact").mkdir(parents=True)
    (root / "MLmodel").write_text("loader_module: quantrec.models.pyfunc\n")
    (root / "data" / "artifact" / "weights.pt").write_bytes(b"\x00tensors")
    return root


def test_every_file_is_hashed_by_its_relative_path(model_dir):
    manifest = take_manifest(model_dir)
    assert manifest.files == {
        "MLmodel": hashlib.sha256(b"loader_module: quantrec.models.pyfunc\n").hexdigest(),
        "data/artifact/weights.pt": hashlib.sha256(b"\x00tensors").hexdigest(),
    }
    assert manifest.mismatches(model_dir) == []


def test_the_json_round_trips_and_its_hash_is_of_the_canonical_bytes(model_dir):
    manifest = take_manifest(model_dir)
    text = manifest.to_json()
    assert Manifest.from_json(text) == manifest
    assert manifest.sha256 == hashlib.sha256(text.encode()).hexdigest()


def test_a_changed_a_missing_and_an_extra_file_are_each_named(model_dir):
    manifest = take_manifest(model_dir)
    old = manifest.files["MLmodel"]
    (model_dir / "MLmodel").write_text("loader_module: evil\n")
    (model_dir / "data" / "artifact" / "weights.pt").unlink()
    (model_dir / "code").mkdir()
    (model_dir / "code" / "evil.py").write_text("import os\n")
    found = manifest.mismatches(model_dir)
    new = hashlib.sha256(b"loader_module: evil\n").hexdigest()
    extra = hashlib.sha256(b"import os\n").hexdigest()
    assert found == [
        Mismatch("MLmodel", old, new),
        Mismatch("code/evil.py", None, extra),
        Mismatch("data/artifact/weights.pt", manifest.files["data/artifact/weights.pt"], None),
    ]
    assert found[0].describe() == f"file 'MLmodel' has sha256 {new}, the manifest says {old}"
    assert "extra file 'code/evil.py'" in found[1].describe()
    assert "is missing" in found[2].describe()


def test_a_symlink_is_recorded_not_followed(model_dir, tmp_path):
    manifest = take_manifest(model_dir)
    outside = tmp_path / "outside.pt"
    outside.write_bytes(b"\x00tensors")
    target = model_dir / "data" / "artifact" / "weights.pt"
    target.unlink()
    target.symlink_to(outside)
    [mismatch] = manifest.mismatches(model_dir)
    assert mismatch.path == "data/artifact/weights.pt"
    assert mismatch.found.startswith("symlink:")


def test_a_manifest_of_another_format_or_no_manifest_is_refused():
    with pytest.raises(IntegrityError, match="format 2"):
        Manifest.from_json('{"format": 2, "files": {}}')
    with pytest.raises(IntegrityError, match="not a quantrec manifest"):
        Manifest.from_json("[]")
