"""``EmotionEnsemble``: the object a user holds — members, stacker and thresholds.

    ensemble = EmotionEnsemble.load("artifacts/default/ensemble")
    ensemble.predict(["I can't wait for the weekend!"])   # DataFrame of 0/1 per emotion

A saved ensemble is a folder: ``manifest.json`` (format and library versions, label order,
members, checksums of every file), ``members/<name>/fold_<k>/`` (each fold's model),
``stacker/`` and ``thresholds.json``. Nothing in it is unpickled on load. Members that a stacked
member reads without being stacked themselves (the source of ``finetuned:<source>`` features)
are copied the same way and listed under the manifest's ``dependencies``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ._logging import get_logger
from .config import EnsembleConfig
from .data import Corpus, validate_texts
from .errors import ArtifactError, ConfigError, DataError
from .labels import EMOTIONS
from .manifest import verify_folder, write_manifest
from .members.base import FoldModel, MemberContext, load_member_shared, saved_dependencies, saved_fold_dirs
from .stacker import Stacker
from .thresholds import ThresholdOptimizer

logger = get_logger(__name__)


def _as_training_corpus(train: Corpus | Sequence[str], labels: np.ndarray | None) -> Corpus:
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


class EmotionEnsemble:
    """Members (each a list of fold models whose probabilities are averaged), a stacker and thresholds."""

    def __init__(self, config: EnsembleConfig | None = None, *, use_cache: bool = True) -> None:
        self.config = config or EnsembleConfig()
        self.use_cache = use_cache
        self.member_folds_: dict[str, list[Path]] = {}
        self.dependency_folds_: dict[str, list[Path]] = {}  # read by stacked members, not stacked
        self._loaded: dict[str, list[FoldModel]] = {}

    # ------------------------------------------------------------------ training
    def fit(
        self,
        train: Corpus | Sequence[str],
        labels: np.ndarray | None = None,
        *,
        run_dir: str | os.PathLike | None = None,
        test: Corpus | None = None,
        eval: Corpus | None = None,
    ) -> EmotionEnsemble:
        """Cross-fit every member, then stack; the run folder (a temp dir if not given) keeps everything.

        ``train`` is a labelled :class:`Corpus` (e.g. ``load_dataset(path).train``) or a list of
        texts with ``labels``, a 0/1 array [n, 11] in ``EMOTIONS`` order.
        """
        from .fitting import fit_members
        from .stacking import stack_run

        if not self.config.members:
            raise ConfigError("the config has no members to fit")
        train = _as_training_corpus(train, labels)
        run_dir = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="embedensemble-run-"))
        fit_members(self.config, train, run_dir, test=test, eval=eval)
        fitted = stack_run(run_dir, write_report=False)
        self.__dict__.update(fitted.__dict__)
        return self

    # ---------------------------------------------------------------- prediction
    def member_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Each member's probabilities, averaged over its fold models: [n, members, 11]."""
        texts = validate_texts(texts)
        self._check_fitted()
        per_member = []
        for name in self.member_names:
            models = self._models(name)
            per_member.append(np.mean([m.predict_proba(texts) for m in models], axis=0) if texts else np.zeros((0, len(EMOTIONS))))
        return np.stack(per_member, axis=1).astype(np.float32) if texts else np.zeros((0, len(per_member), len(EMOTIONS)), np.float32)

    def predict_proba(self, texts: Sequence[str]) -> pd.DataFrame:
        """Stacked probabilities of each emotion (one row per text, one column per emotion)."""
        member_proba = self.member_proba(texts)
        proba = self.stacker_.predict_proba(member_proba) if len(member_proba) else np.zeros((0, len(EMOTIONS)), np.float32)
        return pd.DataFrame(proba, columns=list(EMOTIONS))

    def predict(self, texts: Sequence[str]) -> pd.DataFrame:
        """0/1 per emotion, using the per-emotion thresholds chosen on out-of-fold predictions."""
        proba = self.predict_proba(texts)
        return pd.DataFrame(self.thresholds_.predict(proba.to_numpy()), columns=list(EMOTIONS))

    @property
    def member_names(self) -> list[str]:
        return list(self.member_folds_)

    @property
    def thresholds(self) -> dict[str, float]:
        self._check_fitted()
        return dict(zip(EMOTIONS, map(float, self.thresholds_.thresholds_)))

    def _check_fitted(self) -> None:
        if not hasattr(self, "stacker_") or not self.member_folds_:
            raise ArtifactError("this EmotionEnsemble is not fitted: call fit() or EmotionEnsemble.load(path)")

    def _models(self, name: str) -> list[FoldModel]:
        if name not in self._loaded:
            context = MemberContext(
                cache_dir=self.config.cache_dir,
                seed=self.config.seed,
                device=self.config.device,
                use_cache=self.use_cache,
                member_folds={**self.dependency_folds_, **self.member_folds_},
            )
            self._loaded[name] = [load_member_shared(path, context) for path in self.member_folds_[name]]
        return self._loaded[name]

    # ------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the ensemble folder (atomically: built beside ``path``, then renamed into place)."""
        self._check_fitted()
        path = Path(path)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent if path.parent.exists() else None))
        members = [
            {"name": name, "folds": _copy_folds(folds, staging, name), "config": dataclasses.asdict(self.config.member(name))}
            for name, folds in self.member_folds_.items()
        ]
        dependencies = [{"name": name, "folds": _copy_folds(folds, staging, name)} for name, folds in self.dependency_folds_.items()]
        self.stacker_.save(staging / "stacker")
        self.thresholds_.save(staging / "thresholds.json")
        write_manifest(
            staging,
            {
                "labels": list(EMOTIONS),
                "members": members,
                "dependencies": dependencies,
                "config": self.config.to_dict(),
                "stacker": "stacker",
                "thresholds": "thresholds.json",
            },
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            backup = path.with_name(path.name + ".old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(path, backup)
            os.replace(staging, path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, path)
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, use_cache: bool = True, cache_dir: str | None = None, device: str | None = None
    ) -> EmotionEnsemble:
        """Load a saved ensemble, refusing pickles and files that fail the manifest's checksums.

        ``use_cache=False`` embeds every text afresh (no embedding cache reads or writes);
        ``cache_dir`` and ``device`` override the values saved with the ensemble.
        """
        path = Path(path)
        manifest = verify_folder(path)
        if manifest.get("labels") != list(EMOTIONS):
            raise ArtifactError(f"{path} was trained with labels {manifest.get('labels')}, this library uses {list(EMOTIONS)}")
        config = EnsembleConfig.from_dict(manifest["config"], where=f"{path}/manifest.json")
        config.cache_dir = cache_dir or config.cache_dir
        config.device = device or config.device
        ensemble = cls(config, use_cache=use_cache)
        ensemble.member_folds_ = {m["name"]: [path / f for f in m["folds"]] for m in manifest["members"]}
        ensemble.dependency_folds_ = {d["name"]: [path / f for f in d["folds"]] for d in manifest.get("dependencies", [])}
        for name, folds in ensemble.member_folds_.items():
            held = {*ensemble.member_folds_, *ensemble.dependency_folds_}
            missing = sorted({d for f in folds for d in saved_dependencies(f)} - held)
            if missing:
                raise ArtifactError(f"{path}: member '{name}' reads member(s) {missing}, which the ensemble does not hold")
        ensemble.stacker_ = Stacker.load(path / manifest["stacker"])
        ensemble.thresholds_ = ThresholdOptimizer.load(path / manifest["thresholds"])
        return ensemble

    @classmethod
    def from_parts(
        cls, config: EnsembleConfig, member_folds: dict[str, list[Path]], stacker: Stacker, thresholds: ThresholdOptimizer
    ) -> EmotionEnsemble:
        ensemble = cls(config)
        ensemble.member_folds_ = dict(member_folds)
        ensemble.dependency_folds_ = _find_dependencies(ensemble.member_folds_)
        ensemble.stacker_ = stacker
        ensemble.thresholds_ = thresholds
        return ensemble

    def __repr__(self) -> str:
        members = ", ".join(self.member_folds_) or "not fitted"
        return f"EmotionEnsemble(members=[{members}])"


def _copy_folds(folds: list[Path], staging: Path, name: str) -> list[str]:
    copies = []
    for k, fold in enumerate(folds):
        target = staging / "members" / name / f"fold_{k}"
        shutil.copytree(fold, target, ignore=shutil.ignore_patterns("pred_*.npy", "DONE"))
        copies.append(target.relative_to(staging).as_posix())
    return copies


def _find_dependencies(member_folds: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Fold folders of members read by ``member_folds`` but not among them, found beside the reader.

    Runs and ensembles both keep a member's folds in ``members/<name>/fold_<k>/``.
    """
    found: dict[str, list[Path]] = {}
    for name, folds in member_folds.items():
        for fold in folds:
            for dependency in saved_dependencies(fold):
                if dependency in member_folds or dependency in found:
                    continue
                dependency_folds = saved_fold_dirs(Path(fold).parent.parent / dependency)
                if not dependency_folds:
                    where = Path(fold).parent.parent
                    raise ArtifactError(f"member '{name}' reads member '{dependency}', whose folds are not beside it in {where}")
                found[dependency] = dependency_folds
    return found
