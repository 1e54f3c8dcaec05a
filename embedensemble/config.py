"""Typed configuration: dataclasses that round-trip to JSON and reject unknown keys.

An ``EnsembleConfig`` says which members to train, how to cross-fit them and how to
stack them. It is written into every run folder so a run describes itself.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .metrics import DECISIONS, OBJECTIVES

MEMBER_KINDS = ("head", "pooled-finetune", "seqcls-finetune")  # built-in kinds; plugins may register more
CV_MODES = ("kfold", "holdout")
FINETUNED_FEATURES = "finetuned:"  # features "finetuned:<member>": a pooled-finetune member's fold models embed


def _from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from ``data``, naming any unknown key and where it was found."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(known)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@dataclass
class MemberConfig:
    """One ensemble member: a feature source + head, or a fine-tuned backbone.

    ``kind="head"``: ``features`` is ``"tfidf"`` or a backbone (preset name, HF id or path) whose
    cached embeddings feed ``head`` (``logreg``, ``lgbm``, ...) with ``head_params``; or
    ``"finetuned:<name>"``: the out-of-fold embeddings of pooled-finetune member ``<name>``
    (see :mod:`embedensemble.members.finetuned_head`).
    ``kind="pooled-finetune"`` / ``"seqcls-finetune"``: ``backbone`` is fine-tuned with ``params``.
    ``cv`` overrides the run's cross-fitting mode for this member (e.g. ``"holdout"`` for a 7B model).
    A head member's ``params: {"normalise": true}`` feeds its features normalised tweets
    (:mod:`embedensemble.normalise`).
    """

    name: str
    kind: str = "head"
    features: str | None = None
    head: str = "logreg"
    head_params: dict[str, Any] = field(default_factory=dict)
    backbone: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    cv: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError(f"member name {self.name!r} must be a non-empty string without '/'")
        if not isinstance(self.kind, str) or not self.kind:
            raise ConfigError(f"member '{self.name}': kind must be one of {list(MEMBER_KINDS)}")
        if self.kind == "head" and not self.features:
            raise ConfigError(f"member '{self.name}': kind 'head' needs 'features' (\"tfidf\" or a backbone)")
        if self.kind in ("pooled-finetune", "seqcls-finetune") and not self.backbone:
            raise ConfigError(f"member '{self.name}': kind {self.kind!r} needs 'backbone'")
        if self.cv is not None and self.cv not in CV_MODES:
            raise ConfigError(f"member '{self.name}': cv {self.cv!r} is not one of {list(CV_MODES)}")
        if self.feature_source == "":
            raise ConfigError(f"member '{self.name}': features {self.features!r} must name a member after {FINETUNED_FEATURES!r}")

    @property
    def requires(self) -> list[str]:
        """Names of the members whose fold models this member reads (declared by ``features: "finetuned:<name>"``)."""
        return [self.feature_source] if self.feature_source is not None else []

    @property
    def feature_source(self) -> str | None:
        """The member named by ``features: "finetuned:<name>"`` (a head on its embeddings), else ``None``."""
        features = self.features
        if self.kind in ("head", "finetuned-head") and isinstance(features, str) and features.startswith(FINETUNED_FEATURES):
            return features[len(FINETUNED_FEATURES) :].strip()
        return None


@dataclass
class CVConfig:
    """Cross-fitting: K multilabel-stratified folds, or one stratified holdout split."""

    n_folds: int = 5
    mode: str = "kfold"
    holdout_fraction: float = 0.2
    seed: int = 42

    def __post_init__(self) -> None:
        if self.mode not in CV_MODES:
            raise ConfigError(f"cv.mode {self.mode!r} is not one of {list(CV_MODES)}")
        if not isinstance(self.n_folds, int) or self.n_folds < 2:
            raise ConfigError(f"cv.n_folds must be an integer >= 2, got {self.n_folds!r}")
        if not 0.0 < float(self.holdout_fraction) < 1.0:
            raise ConfigError(f"cv.holdout_fraction must be in (0, 1), got {self.holdout_fraction!r}")


@dataclass
class StackConfig:
    """Stacker and thresholds.

    ``meta_C`` is the inverse regularisation of the per-emotion logistic meta-learner;
    ``meta_features`` what each emotion's meta-learner reads: ``"all"`` members' logits of all
    emotions, or only the ``"same_emotion"``'s; ``meta_learner`` ``"logreg"``, ``"lgbm"`` (LightGBM per
    emotion) or ``"mean"`` (see :mod:`embedensemble.stacker`).
    Thresholds are searched on a grid of step ``threshold_step`` and shrunk toward 0.5 by
    ``threshold_shrinkage * (prior_count / (prior_count + n_positive))`` so rare emotions,
    whose F1 curve is noisy, do not get an over-fitted threshold. ``decision`` says how 0/1 labels
    are made: ``"thresholds"``, ``"expected_jaccard"`` (each tweet's label set of highest expected
    Jaccard) or ``"auto"`` (the second for ``objective: jaccard``; see :mod:`embedensemble.thresholds`).
    """

    objective: str = "macro_f1"
    meta_learner: str = "logreg"
    meta_C: float = 1.0
    # "same_emotion" beat "all" by +0.0048 ± 0.0006 macro-F1 on Kaggle train OOF (nested thresholds, 3 fold
    # seeds x 3 meta-fold seeds, dev tweets left out): docs/ablation.md.
    meta_features: str = "same_emotion"
    threshold_step: float = 0.02
    threshold_shrinkage: float = 1.0
    threshold_prior_count: float = 30.0
    decision: str = "auto"
    members: list[str] | None = None

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"stack.objective {self.objective!r} is not one of {list(OBJECTIVES)}")
        if self.meta_learner not in ("logreg", "lgbm", "mean"):
            raise ConfigError(f"stack.meta_learner {self.meta_learner!r} is not one of ['logreg', 'lgbm', 'mean']")
        if self.meta_features not in ("all", "same_emotion"):
            raise ConfigError(f"stack.meta_features {self.meta_features!r} is not one of ['all', 'same_emotion']")
        if self.decision not in DECISIONS:
            raise ConfigError(f"stack.decision {self.decision!r} is not one of {list(DECISIONS)}")
        if not 0.0 < float(self.threshold_step) <= 0.5:
            raise ConfigError(f"stack.threshold_step must be in (0, 0.5], got {self.threshold_step!r}")


@dataclass
class EnsembleConfig:
    """Everything a run needs besides the data: members, cross-fitting, stacking, cache, seed."""

    name: str = "default"
    members: list[MemberConfig] = field(default_factory=list)
    cv: CVConfig = field(default_factory=CVConfig)
    stack: StackConfig = field(default_factory=StackConfig)
    seed: int = 42
    cache_dir: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        names = [m.name for m in self.members]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"duplicate member name(s): {duplicates}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> EnsembleConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected an object at the top level")
        data = dict(data)
        members = data.pop("members", [])
        if not isinstance(members, list):
            raise ConfigError(f"{where}: 'members' must be a list")
        data["members"] = [_from_dict(MemberConfig, m, f"{where}: members[{i}]") for i, m in enumerate(members)]
        if "cv" in data:
            data["cv"] = _from_dict(CVConfig, data["cv"], f"{where}: cv")
        if "stack" in data:
            data["stack"] = _from_dict(StackConfig, data["stack"], f"{where}: stack")
        return _from_dict(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, path: str | Path) -> EnsembleConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data, where=str(path))

    def save(self, path: str | Path) -> None:
        from .fileio import write_json

        write_json(path, self.to_dict())

    def check_requirements(self) -> None:
        """Every member a member reads (``MemberConfig.requires``) is listed before it, and both are k-fold
        (the reader's fold ``k`` uses the source's fold models, matched by fold index). Whether the
        source's kind gives what the reader needs is its kind's check
        (``embedensemble.members.base.check_requirements``).

        Checked when a run starts, not on load: a saved ensemble's config lists only the stacked
        members, which need not include the sources.
        """
        position = {m.name: i for i, m in enumerate(self.members)}
        for i, member in enumerate(self.members):
            for source in member.requires:
                where = f"member '{member.name}' (features {member.features!r})"
                if source not in position:
                    raise ConfigError(f"{where}: no member named '{source}'; members are {list(position)}")
                if position[source] > i:
                    raise ConfigError(f"{where}: source member '{source}' must be listed before '{member.name}'")
                source_config = self.members[position[source]]
                for name, mode in ((source, source_config.cv or self.cv.mode), (member.name, member.cv or self.cv.mode)):
                    if mode != "kfold":
                        raise ConfigError(f"{where}: '{source}' and '{member.name}' need k-fold cv; '{name}' has cv {mode!r}")

    def member(self, name: str) -> MemberConfig:
        for member in self.members:
            if member.name == name:
                return member
        raise ConfigError(f"no member named {name!r}; members are {[m.name for m in self.members]}")
