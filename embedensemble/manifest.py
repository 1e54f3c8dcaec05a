"""The self-describing manifest of a saved ensemble: format version, library versions, checksums.

Loading is refused, before anything is deserialised, when the folder holds a pickle (by
name or by content), a file the manifest does not list, a file whose checksum differs, or a
format version this library cannot read (:class:`FormatVersionError`). A folder written with
another major.minor version of a library that shapes its predictions (``CHECKED_LIBRARIES``)
loads with an :class:`InconsistentVersionWarning` per library, as scikit-learn does for its
own pickles: patch releases never warn. ``manifest.json`` itself is not checksummed (it holds
the checksums), so editing its ``versions`` or ``format_version`` is what a test of this does.
"""

from __future__ import annotations

import importlib.metadata
import re
import warnings
from pathlib import Path
from typing import Any

from .errors import ArtifactError, FormatVersionError, InconsistentVersionWarning, UnsafeArtifactError
from .fileio import read_json, sha256_file, write_json

FORMAT_NAME = "embedensemble-ensemble"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".pt", ".pth", ".bin", ".ckpt", ".npz"}
_VERSIONED = ("embedensemble", "numpy", "scikit-learn", "lightgbm", "torch", "transformers", "sentence-transformers", "peft")
# Libraries whose major.minor changes can change what a saved model computes (tokenisers,
# pooling, solvers, tree formats); numpy and embedensemble itself are covered by format versions.
CHECKED_LIBRARIES = ("torch", "transformers", "sentence-transformers", "peft", "scikit-learn", "lightgbm")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _major_minor(version: str) -> tuple[int, int] | None:
    match = re.match(r"\s*v?(\d+)(?:\.(\d+))?", str(version))
    return (int(match.group(1)), int(match.group(2) or 0)) if match else None


def check_library_versions(saved: object, where: str | Path, *, stacklevel: int = 2) -> list[InconsistentVersionWarning]:
    """Warn once per checked library whose saved major.minor differs from the installed one.

    ``saved`` is a ``{library: version}`` record (a manifest's ``versions``, a run's ``run.json``);
    libraries not recorded are not checked. Returns the warnings issued.
    """
    if not isinstance(saved, dict):
        return []
    installed = library_versions()
    issued = []
    for library in CHECKED_LIBRARIES:
        then = saved.get(library)
        if then is None:
            continue
        now = installed.get(library)
        if now is None:
            message = f"{where} was saved with {library} {then}, which is not installed; loading its members may fail"
        elif _major_minor(str(then)) != _major_minor(now):
            message = (
                f"{where} was saved with {library} {then} and is loaded with {library} {now}; predictions may differ "
                f"from the saved run's. Install {library}=={then} to reproduce them exactly, or refit"
            )
        else:
            continue
        warning = InconsistentVersionWarning(library, str(then), now, message)
        warnings.warn(warning, stacklevel=stacklevel + 1)
        issued.append(warning)
    return issued


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(2)
    # Pickle protocol 2+ starts with PROTO (0x80); torch.save zips start with "PK".
    return head[:1] == b"\x80" or head == b"PK"


def _payload_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: str | Path, content: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` listing every file in ``folder`` with its sha256."""
    folder = Path(folder)
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "versions": library_versions(),
        **content,
        "files": {p.relative_to(folder).as_posix(): sha256_file(p) for p in _payload_files(folder)},
    }
    write_json(folder / MANIFEST, manifest)
    return manifest


def verify_folder(folder: str | Path) -> dict[str, Any]:
    """Check format, refuse pickles and unlisted or altered files; return the manifest."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"ensemble folder {folder} does not exist")
    if not (folder / MANIFEST).is_file():
        raise ArtifactError(f"{folder} is not a saved ensemble: it has no {MANIFEST}")
    manifest = read_json(folder / MANIFEST)
    if manifest.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{folder / MANIFEST} is not an embedensemble manifest (format={manifest.get('format')!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        known = isinstance(version, int) and not isinstance(version, bool)
        relation = "newer than this library knows" if known and version > FORMAT_VERSION else "older" if known else "unreadable"
        writer = manifest.get("versions", {}).get("embedensemble", "unknown") if isinstance(manifest.get("versions"), dict) else "unknown"
        raise FormatVersionError(
            f"{folder} was saved in format version {version!r} ({relation}); this embedensemble "
            f"reads version {FORMAT_VERSION}. Install the library version that wrote it "
            f"({writer}) or re-run `stack`."
        )
    listed = manifest.get("files", {})
    for path in _payload_files(folder):
        rel = path.relative_to(folder).as_posix()
        # safetensors cannot carry code, whatever its first bytes happen to be.
        if path.suffix in _PICKLE_SUFFIXES or (path.suffix != ".safetensors" and _looks_like_pickle(path)):
            raise UnsafeArtifactError(f"refusing to load {folder}: {rel} is (or may be) a pickle, which can run code on load")
        if rel not in listed:
            raise UnsafeArtifactError(f"refusing to load {folder}: {rel} is not listed in {MANIFEST}")
        if sha256_file(path) != listed[rel]:
            raise UnsafeArtifactError(f"refusing to load {folder}: checksum of {rel} does not match {MANIFEST}")
    missing = [rel for rel in listed if not (folder / rel).is_file()]
    if missing:
        raise ArtifactError(f"{folder} is incomplete: {missing[0]} (and {len(missing) - 1} more) listed in {MANIFEST} is missing")
    check_library_versions(manifest.get("versions"), folder, stacklevel=3)  # warn at the caller of load()
    return manifest
