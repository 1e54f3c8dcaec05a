"""``python -m embedensemble.download``: fetch the official SemEval-2018 Task 1 E-c English files.

For users with internet. Downloads the organisers' release zip once into a cache folder,
extracts the three E-c English files atomically and checks them (parseable, expected row
counts, SHA-256 of the copies this project was tested on). The data's licence forbids
redistribution, so the library never ships it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

from ._cli import add_verbosity, apply_verbosity, run_cli
from ._logging import get_logger
from .data import SEMEVAL_FILES, read_corpus
from .errors import DataError
from .fileio import sha256_file

logger = get_logger(__name__)

SEMEVAL_URL = "http://saifmohammad.com/WebDocs/AIT-2018/AIT2018-DATA/SemEval2018-Task1-all-data.zip"
EXPECTED_ROWS = {"train": 6838, "eval": 886, "test": 3259}
KNOWN_SHA256 = {
    "2018-E-c-En-train.txt": "9e470a60b4dad2f7f3ac1591b582e0ab48af19990d0af0354d2e89501526d57d",
    "2018-E-c-En-dev.txt": "bcb192bd4df68cf440dff7c4ceb8873be964e9c71d01a669c2f329506dbd5d95",
    "2018-E-c-En-test.txt": "e532447d23102750c19f997de661e8d724354373c0151497fbd50864076cc212",
}


def default_download_dir() -> Path:
    root = os.environ.get("EMBEDENSEMBLE_CACHE") or Path.home() / ".cache" / "embedensemble"
    return Path(root) / "data" / "semeval2018-ec"


def download_semeval(dest: str | os.PathLike | None = None, url: str = SEMEVAL_URL, *, expected_rows: dict[str, int] | None = None) -> Path:
    """Download (once), extract and check the E-c English files; returns the data folder."""
    dest = Path(dest) if dest else default_download_dir()
    if not all((dest / name).is_file() for name in SEMEVAL_FILES.values()):
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            archive = Path(tmp) / "release.zip"
            logger.info("downloading %s", url)
            with urllib.request.urlopen(url, timeout=120) as response, open(archive, "wb") as out:
                shutil.copyfileobj(response, out)
            staging = Path(tmp) / "files"
            _extract(archive, staging, url)
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(staging, dest)
    check_semeval(dest, expected_rows or EXPECTED_ROWS)
    return dest


def _extract(archive: Path, staging: Path, url: str) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DataError(f"download from {url} is not a zip archive", file=archive) from None
    staging.mkdir()
    with zf:
        members = {Path(n).name: n for n in zf.namelist()}
        for name in SEMEVAL_FILES.values():
            if name not in members:
                raise DataError(f"the release zip from {url} has no {name}", file=archive)
            (staging / name).write_bytes(zf.read(members[name]))


def check_semeval(folder: Path, expected_rows: dict[str, int]) -> None:
    """Every file parses, has the expected rows; SHA-256 differences are reported (line endings may differ)."""
    for split, name in SEMEVAL_FILES.items():
        corpus = read_corpus(folder / name, require_labels=split != "test")
        if len(corpus) != expected_rows[split]:
            raise DataError(f"expected {expected_rows[split]} tweets, found {len(corpus)}", file=folder / name)
        if sha256_file(folder / name) != KNOWN_SHA256[name]:
            logger.warning("%s parses correctly but its SHA-256 differs from the copy embedensemble was tested on", folder / name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedensemble.download", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, help=f"target folder (default {default_download_dir()})")
    parser.add_argument("--url", default=SEMEVAL_URL, help="release zip URL")
    add_verbosity(parser)
    args = parser.parse_args(argv)
    apply_verbosity(args)
    try:
        folder = download_semeval(args.dest, args.url)
    except OSError as exc:  # network or disk: one clear line instead of a urllib traceback
        raise DataError(f"could not download {args.url}: {exc}") from None
    print(f"SemEval-2018 E-c English files ready in {folder}; use --data {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
