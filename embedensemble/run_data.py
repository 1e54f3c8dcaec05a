"""The tweets a run was fitted on, read again from the files its ``run.json`` names.

A run folder keeps labels and ids but no tweet text (the data's licence stays with the data
folder). Steps that train after ``fit`` (distillation, refitting on all rows) read the files
again and check them against the fingerprints ``fit`` recorded, so they never train on other data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .data import Corpus, read_corpus
from .errors import ArtifactError, DataError
from .run_folder import RunFolder, data_digest


@dataclass
class RunData:
    """A run's train corpus (labelled) and, when the run had them, its test and eval corpora."""

    train: Corpus
    test: Corpus | None = None
    eval: Corpus | None = None


def load_run_data(run: RunFolder | str | os.PathLike, data_dir: str | os.PathLike | None = None) -> RunData:
    """Read the run's data files (``data_dir`` replaces the folder they were read from) and check their fingerprints."""
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    run.require_config()
    info = run.run_info()
    files = {k: v for k, v in info.get("files", {}).items() if k in ("train", "test", "eval")}
    if "train" not in files:
        raise ArtifactError(
            f"{run.run_file} does not name the data files the run was fitted on; refit the run with `python -m embedensemble.fit`"
        )
    if data_dir is not None:
        files = {k: str(Path(data_dir) / Path(v).name) for k, v in files.items()}
    prints = info.get("fingerprints", {})
    corpora: dict[str, Corpus] = {}
    for split, path in files.items():
        if split not in prints:
            continue  # a file beside the data the run did not use (e.g. SemEval test when fitted without it)
        corpus = read_corpus(path, require_labels=split != "test")  # as fit read them: test without labels
        if data_digest(corpus.ids, corpus.texts, corpus.labels) != prints[split]:
            raise DataError(
                f"is not the {split} data run {run.path} was fitted on (fingerprint differs from run.json); "
                "pass the original data folder with --data",
                file=path,
            )
        corpora[split] = corpus
    return RunData(corpora["train"], corpora.get("test"), corpora.get("eval"))
