"""Artifact manifests: the SHA-256 of every file of a model directory, and the check that a
directory holds exactly those files with exactly those bytes.

A manifest is taken of the directory MLflow stored for a registered version (``MLmodel``,
the environment files, ``weights.pt``, ``recipe.json``, ``schema.json``, ...). Before a
version is loaded, its downloaded copy is compared with the manifest: a changed byte, a
missing file or an extra file (a ``code/`` folder, a second loader) refuses it, before
MLflow reads ``MLmodel`` and imports anything it names. The manifest's own hash
(``Manifest.sha256``) is what the registry keeps, so the manifest cannot be edited either.

Pure: hashing and comparing files, no MLflow import.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

MANIFEST_FORMAT = 1
_CHUNK = 1 << 20
# MLflow writes this into every download of a ``models:/`` URI (the name and version, as
# YAML, read as data only): it is not part of what was registered, so it is not hashed.
DOWNLOAD_BOOKKEEPING = frozenset({"registered_model_meta"})


class IntegrityError(ValueError):
    """A model version's files do not match its manifest, or it has no manifest."""


@dataclass(frozen=True)
class Mismatch:
    """One file that differs: ``expected`` None for an extra file, ``found`` None for a
    missing one; both hex SHA-256 digests otherwise."""

    path: str
    expected: str | None
    found: str | None

    def describe(self) -> str:
        if self.expected is None:
            return f"extra file {self.path!r} (sha256 {self.found}) is not in the manifest"
        if self.found is None:
            return f"file {self.path!r} (manifest sha256 {self.expected}) is missing"
        return f"file {self.path!r} has sha256 {self.found}, the manifest says {self.expected}"


@dataclass(frozen=True)
class Manifest:
    """Relative POSIX path -> hex SHA-256 of every file under a directory."""

    files: dict[str, str]

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the bytes ``sha256`` hashes."""
        return json.dumps(
            {"format": MANIFEST_FORMAT, "files": self.files}, sort_keys=True, separators=(",", ":")
        )

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            data = json.loads(text)
            files = data["files"]
            fmt = data["format"]
        except (ValueError, KeyError, TypeError) as err:
            raise IntegrityError(f"the manifest is not a quantrec manifest: {err}") from err
        if fmt != MANIFEST_FORMAT:
            raise IntegrityError(
                f"manifest format {fmt!r}; this quantrec reads format {MANIFEST_FORMAT}"
            )
        return cls(files=dict(files))

    def mismatches(self, directory: Path) -> list[Mismatch]:
        """Every difference between ``directory`` and the manifest, sorted by path; empty
        when they agree."""
        found = take_manifest(directory).files
        paths = sorted(set(found) | set(self.files))
        return [
            Mismatch(path, self.files.get(path), found.get(path))
            for path in paths
            if self.files.get(path) != found.get(path)
        ]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def take_manifest(directory: Path) -> Manifest:
    """The manifest of every file under ``directory`` (recursively).

    A symbolic link is recorded by where it points, never followed: a link swapped in for
    a file reads as a changed file, and a link out of the directory is not hashed as if it
    were inside it.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise IntegrityError(f"{directory} is not a directory to take a manifest of")
    files: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        key = path.relative_to(directory).as_posix()
        if key in DOWNLOAD_BOOKKEEPING and not path.is_symlink():
            continue
        if path.is_symlink():
            files[key] = "symlink:" + hashlib.sha256(str(path.readlink()).encode()).hexdigest()
        elif path.is_file():
            files[key] = file_sha256(path)
    return Manifest(files=files)
