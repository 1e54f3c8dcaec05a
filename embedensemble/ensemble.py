"""``EmotionEnsemble``: the object a user holds — members, stacker and thresholds.

    ensemble = EmotionEnsemble.load("artifacts/default/ensemble")
    ensemble.predict(["I can't wait for the weekend!"])   # DataFrame of 0/1 per emotion

A saved ensemble is a folder: ``manifest.json`` (format and library versions, label order,
members, checksums of every file), ``members/<name>/fold_<k>/`` (each fold's model),
``stacker/`` and ``thresholds.json``. Nothing in it is unpickled on load. Members that a stacked
member reads without being stacked themselves (the source of ``finetuned:<source>`` features)
are copied the same way and listed under the manifest's ``dependencies``.

This module only predicts: an ensemble is assembled from fitted parts (:meth:`EmotionEnsemble.from_parts`,
:meth:`EmotionEnsemble.load`). Training is the fit/stack pipeline (:func:`embedensemble.training.fit_ensemble`,
``python -m embedensemble.fit`` / ``stack``), which returns one.
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
from .context import MemberContext
from .data import validate_texts
from .errors import ArtifactError
from .labels import EMOTIONS
from .manifest import verify_folder, write_manifest
from .members.base import FoldModel, load_member_shared, saved_dependencies, saved_fold_dirs
from .run_folder import RUN_ONLY_FOLD_FILES
from .runtime import set_thread_policy
from .stacker import Stacker
from .thresholds import ThresholdOptimizer

logger = get_logger(__name__)


class EmotionEnsemble:
    """Members (each a list of fold models whose probabilities are averaged), a stacker and thresholds."""

    def __init__(
        self,
        config: EnsembleConfig | None = None,
        *,
        member_folds: dict[str, list[Path]] | None = None,
        stacker: Stacker | None = None,
        thresholds: ThresholdOptimizer | None = None,
        dependency_folds: dict[str, list[Path]] | None = None,
        use_cache: bool = True,
    ) -> None:
        """An ensemble of fitted parts; without them it is not fitted (see :meth:`load`, :meth:`from_parts`)."""
        self.config = config or EnsembleConfig()
        self.use_cache = use_cache
        self.member_folds_: dict[str, list[Path]] = dict(member_folds or {})
        # read by stacked members, not stacked themselves
        self.dependency_folds_: dict[str, list[Path]] = (
            dict(dependency_folds) if dependency_folds is not None else _find_dependencies(self.member_folds_)
        )
        self.stacker_ = stacker
        self.thresholds_ = thresholds
        self._context: MemberContext | None = None
        self._loaded: dict[str, list[FoldModel]] = {}

    @property
    def context(self) -> MemberContext:
        """The context every member of this ensemble is loaded with; its resource pool (loaded fold
        models, encoders, the current batch's embeddings) is shared by all of them."""
        if self._context is None:
            self._context = MemberContext(
                cache_dir=self.config.cache_dir,
                seed=self.config.seed,
                device=self.config.device,
                use_cache=self.use_cache,
                member_folds={**self.dependency_folds_, **self.member_folds_},
            )
        return self._context

    # ---------------------------------------------------------------- prediction
    def member_proba(self, texts: Sequence[str], members: Sequence[str] | None = None) -> np.ndarray:
        """Each member's probabilities, averaged over its fold models: [n, members, 11].

        ``members``: only these (in this order); what one member costs to run can be timed this way.
        """
        texts = validate_texts(texts)
        self._check_fitted()
        names = self.member_names if members is None else list(members)
        unknown = sorted(set(names) - set(self.member_names))
        if unknown:
            raise ValueError(f"this ensemble has no member(s) {unknown}; it has {self.member_names}")
        per_member = []
        for name in names:
            models = self._models(name)
            per_member.append(np.mean([m.predict_proba(texts) for m in models], axis=0) if texts else np.zeros((0, len(EMOTIONS))))
        return np.stack(per_member, axis=1).astype(np.float32) if texts else np.zeros((0, len(per_member), len(EMOTIONS)), np.float32)

    def predict_proba(self, texts: Sequence[str]) -> pd.DataFrame:
        """Stacked probabilities of each emotion (one row per text, one column per emotion)."""
        member_proba = self.member_proba(texts)
        proba = self.stacker_.predict_proba(member_proba) if len(member_proba) else np.zeros((0, len(EMOTIONS)), np.float32)
        return pd.DataFrame(proba, columns=list(EMOTIONS))

    def predict(self, texts: Sequence[str]) -> pd.DataFrame:
        """0/1 per emotion: the stacked probabilities through the decision rule chosen on out-of-fold
        predictions (per-emotion thresholds, or expected-Jaccard decoding; see :attr:`decision`)."""
        proba = self.predict_proba(texts)
        return pd.DataFrame(self.decide(proba.to_numpy()), columns=list(EMOTIONS))

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """0/1 [n, 11] from stacked probabilities [n, 11] (what :meth:`predict` does after :meth:`predict_proba`)."""
        self._check_fitted()
        return self.thresholds_.predict(np.asarray(proba))

    @property
    def decision(self) -> str:
        """``"thresholds"`` or ``"expected_jaccard"``: how :meth:`decide` turns probabilities into labels."""
        self._check_fitted()
        return self.thresholds_.decision

    @property
    def member_names(self) -> list[str]:
        return list(self.member_folds_)

    @property
    def thresholds(self) -> dict[str, float]:
        """Per-emotion thresholds tuned on OOF (what :meth:`decide` uses when :attr:`decision` is ``"thresholds"``)."""
        self._check_fitted()
        return dict(zip(EMOTIONS, map(float, self.thresholds_.thresholds_)))

    def _check_fitted(self) -> None:
        if self.stacker_ is None or self.thresholds_ is None or not self.member_folds_:
            raise ArtifactError(
                "this EmotionEnsemble is not fitted: train one with embedensemble.fit_ensemble(...) or load one with EmotionEnsemble.load(path)"
            )

    def _models(self, name: str) -> list[FoldModel]:
        if name not in self._loaded:
            self._loaded[name] = [load_member_shared(path, self.context) for path in self.member_folds_[name]]
        return self._loaded[name]

    # ------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the ensemble folder (atomically: built beside ``path``, then renamed into place)."""
        self._check_fitted()
        path = _recover_interrupted_save(Path(path))
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
        path = _recover_interrupted_save(Path(path))
        manifest = verify_folder(path)
        if manifest.get("labels") != list(EMOTIONS):
            raise ArtifactError(f"{path} was trained with labels {manifest.get('labels')}, this library uses {list(EMOTIONS)}")
        config = EnsembleConfig.from_dict(manifest["config"], where=f"{path}/manifest.json")
        config.cache_dir = cache_dir or config.cache_dir
        config.device = device or config.device
        member_folds = {m["name"]: [path / f for f in m["folds"]] for m in manifest["members"]}
        dependency_folds = {d["name"]: [path / f for f in d["folds"]] for d in manifest.get("dependencies", [])}
        held = {*member_folds, *dependency_folds}
        for name, folds in member_folds.items():
            missing = sorted({d for f in folds for d in saved_dependencies(f)} - held)
            if missing:
                raise ArtifactError(f"{path}: member '{name}' reads member(s) {missing}, which the ensemble does not hold")
        return cls(
            config,
            member_folds=member_folds,
            dependency_folds=dependency_folds,
            stacker=Stacker.load(path / manifest["stacker"]),
            thresholds=ThresholdOptimizer.load(path / manifest["thresholds"]),
            use_cache=use_cache,
        )

    @classmethod
    def from_parts(
        cls, config: EnsembleConfig, member_folds: dict[str, list[Path]], stacker: Stacker, thresholds: ThresholdOptimizer
    ) -> EmotionEnsemble:
        """An ensemble of fitted fold folders, stacker and thresholds; members they read are found beside them."""
        return cls(config, member_folds=member_folds, stacker=stacker, thresholds=thresholds)

    def __repr__(self) -> str:
        members = ", ".join(self.member_folds_) or "not fitted"
        return f"EmotionEnsemble(members=[{members}])"


def _copy_folds(folds: list[Path], staging: Path, name: str) -> list[str]:
    copies = []
    for k, fold in enumerate(folds):
        target = staging / "members" / name / f"fold_{k}"
        shutil.copytree(fold, target, ignore=shutil.ignore_patterns(*RUN_ONLY_FOLD_FILES))
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


def _recover_interrupted_save(path: Path) -> Path:
    """A save killed between its two renames left ``<path>.old`` and no ``path``: put the old one back."""
    backup = path.with_name(path.name + ".old")
    if not path.exists() and backup.is_dir():
        logger.warning("%s: restoring the previous ensemble from %s (a save was interrupted)", path, backup.name)
        os.replace(backup, path)
    return path


def load_ensemble(
    path: str | os.PathLike,
    *,
    use_cache: bool = False,
    cache_dir: str | None = None,
    device: str | None = None,
    threads: int | None = None,
) -> EmotionEnsemble:
    """For serving processes: apply the process's thread policy once, then load a saved ensemble.

    The CLI, the HTTP service and Ray actors use it; members load on first use.
    """
    set_thread_policy(threads)
    return EmotionEnsemble.load(path, use_cache=use_cache, cache_dir=cache_dir, device=device)

