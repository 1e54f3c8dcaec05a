"""Train an ensemble from Python: cross-fit every member, stack, and return the predictor.

    from embedensemble import EnsembleConfig, load_dataset
    from embedensemble.training import fit_ensemble

    ensemble = fit_ensemble(EnsembleConfig.load("experiments/default.json"), load_dataset(path).train,
                            run_dir="artifacts/x")
    ensemble.predict(["I can't wait for the weekend!"])

The same two steps as ``python -m embedensemble.fit`` and ``python -m embedensemble.stack``
(:func:`embedensemble.fitting.fit_members`, :func:`embedensemble.stacking.stack_run`); the run
folder keeps everything they write.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .config import EnsembleConfig
from .data import Corpus, validate_texts
from .ensemble import EmotionEnsemble
from .errors import ConfigError, DataError
from .fitting import fit_members
from .labels import EMOTIONS
from .stacking import stack_run


def as_training_corpus(train: Corpus | Sequence[str], labels: np.ndarray | None = None) -> Corpus:
    """Check training input and turn texts + labels into a :class:`Corpus` (errors name the row/column)."""
    if isinstance(train, Corpus):
        if labels is not None:
            raise DataError("pass labels either inside the Corpus or as `labels`, not both")
        if train.labels is None:
            raise DataError("the training corpus has no labels", file=train.source)
        return train
    texts = validate_texts(train)
    if labels is None:
        raise DataError("fit(texts) needs labels: a 0/1 array of shape [n, 11]")
    array = np.asarray(labels)
    if array.shape != (len(texts), len(EMOTIONS)):
        raise DataError(f"labels must have shape ({len(texts)}, {len(EMOTIONS)}), got {array.shape}", column="labels")
    bad = np.argwhere(~np.isin(array, (0, 1)))
    if len(bad):
        row, col = map(int, bad[0])
        raise DataError(f"label must be 0 or 1, got {array[row, col]!r}", row=row, column=EMOTIONS[col])
    return Corpus([str(i) for i in range(len(texts))], texts, array.astype(np.int8))


def fit_ensemble(
    config: EnsembleConfig,
    train: Corpus | Sequence[str],
    labels: np.ndarray | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    test: Corpus | None = None,
    eval: Corpus | None = None,
) -> EmotionEnsemble:
    """Cross-fit every member of ``config``, then stack; the run folder (a temp dir if not given) keeps everything.

    ``train`` is a labelled :class:`Corpus` (e.g. ``load_dataset(path).train``) or a list of
    texts with ``labels``, a 0/1 array [n, 11] in ``EMOTIONS`` order.
    """
    if not config.members:
        raise ConfigError("the config has no members to fit")
    train = as_training_corpus(train, labels)
    run_dir = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="embedensemble-run-"))
    fit_members(config, train, run_dir, test=test, eval=eval)
    return stack_run(run_dir, write_report=False)
