"""One candidates run assembled from several: every candidate scored against the *current* kept members.

    python -m benchmarks.candidate_union --out artifacts/quality-candidates-f --base artifacts/quality-candidates-e \
        artifacts/quality-candidates-b:mpnet-ft-top6-s7 artifacts/quality-candidates-c:gemma3-mid-logreg,qwen-mid-logreg

Candidates are fitted in batches, each batch into a copy of the quality run (same folds, kept members hard-linked).
When the kept set changes (a candidate joins), the older batches lack the new member, so their candidates cannot be
scored against it. Refitting them costs hours; their folds and the members they share with the base are the same
fits, so their member folders are linked into a copy of the base instead (hard links, nothing copied), and the
result is the run one fit of all of them would have left. That is checked, not assumed: each source must hold the
same train labels and folds as the base, and every member both hold must have the same config and bit-identical
out-of-fold probabilities; otherwise nothing is written.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from . import logger, setup_logging

UNION_FILE = "union.json"  # in the assembled run: where its members came from (rendered under the candidates table)


def _same_array(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and np.array_equal(np.load(a), np.load(b), equal_nan=True)


def check_source(base: Path, source: Path, names: list[str]) -> dict[str, dict]:
    """The config entries of ``names`` in ``source``, after checking that ``source`` is a fit of the same folds and
    shared members as ``base`` (SystemExit naming the run and the file or member that differs)."""
    from embedensemble.fileio import read_json
    from embedensemble.run_folder import RunFolder

    base_run, run = RunFolder(base), RunFolder(source)
    for file in (base_run.train_labels_file.name, base_run.folds_file("kfold").name):
        if not _same_array(base / file, source / file):
            raise SystemExit(f"{source}: {file} differs from {base}'s (another data set or fold seed)")
    base_configs = {m["name"]: m for m in read_json(base_run.config_file)["members"]}
    configs = {m["name"]: m for m in read_json(run.config_file)["members"]}
    for name in sorted(set(base_configs) & set(configs)):
        if configs[name] != base_configs[name] or not _same_array(base_run.member_array_file(name, "oof"), run.member_array_file(name, "oof")):
            raise SystemExit(f"{source}: member {name!r} is not the same fit as in {base} (config or out-of-fold probabilities differ)")
    for name in names:
        if name in base_configs:
            raise SystemExit(f"{source}: member {name!r} is already in {base}")
        if name not in configs or not run.is_member_done(name):
            raise SystemExit(f"{source}: has no finished member {name!r}")
    return {name: configs[name] for name in names}


def union_run(out: Path, base: Path, sources: dict[Path, list[str]]) -> list[str]:
    """Write ``out``: a hard-linked copy of ``base`` plus the named members of each source run; returns its members."""
    names = [n for listed in sources.values() for n in listed]
    if len(set(names)) != len(names):
        raise SystemExit(f"a member is named twice: {sorted({n for n in names if names.count(n) > 1})}")
    added = {source: check_source(base, source, listed) for source, listed in sources.items()}
    if out.exists():
        raise SystemExit(f"{out} exists: give a new folder")
    partial = out.with_name(f".{out.name}.partial")  # renamed to ``out`` when complete: no half-assembled run
    shutil.rmtree(partial, ignore_errors=True)
    try:
        config = _assemble(partial, base, added)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(out)
    return [m["name"] for m in config["members"]]


def _assemble(path: Path, base: Path, added: dict[Path, dict[str, dict]]) -> dict:
    from embedensemble.fileio import read_json, write_json
    from embedensemble.run_folder import RunFolder

    subprocess.run(["cp", "-al", str(base), str(path)], check=True)
    run = RunFolder(path)
    run.lock_file.unlink(missing_ok=True)
    for source, found in added.items():
        for name in found:
            subprocess.run(["cp", "-al", str(RunFolder(source).member_dir(name)), str(run.member_dir(name))], check=True)
    config = read_json(run.config_file)
    config["members"] += [c for found in added.values() for c in found.values()]
    write_json(run.config_file, config)  # replaces the file (temp + rename): the base's hard-linked config is untouched
    write_json(path / UNION_FILE, {"base": str(base), "linked": {str(s): list(found) for s, found in added.items()}})
    return config


def _source(text: str) -> tuple[Path, list[str]]:
    run, _, names = text.partition(":")
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected RUN:member[,member...]")
    return Path(run), names.split(",")


def merge_sources(pairs: list[tuple[Path, list[str]]]) -> dict[Path, list[str]]:
    """``RUN:members`` pairs by run, a run named twice keeping every member listed (none dropped)."""
    merged: dict[Path, list[str]] = {}
    for run, names in pairs:
        merged.setdefault(run, []).extend(names)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", type=Path, required=True, help="a candidates run holding the current kept members")
    parser.add_argument("sources", nargs="+", type=_source, help="RUN:member[,member...] to link in")
    args = parser.parse_args(argv)
    setup_logging(False)
    members = union_run(args.out, args.base, merge_sources(args.sources))
    logger.info("wrote %s: %s", args.out, ", ".join(members))
    return 0


if __name__ == "__main__":
    sys.exit(main())
