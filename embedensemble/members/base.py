"""The member contract: one model trained on one fold, texts in, emotion probabilities out.

Every member kind (frozen features + head, pooled-embedding fine-tune, sequence classifier)
subclasses :class:`FoldModel`. Cross-fitting (``embedensemble.cv``) trains one ``FoldModel``
per fold, saves it in its own folder and never looks inside: the same code cross-fits,
resumes and reloads every kind.

Saved folder contract: ``save(path)`` writes ``fold.json`` (``{"kind": ..., "config": ...}``,
plus ``"depends_on"``: the names of other members whose fold models this one reads, if any;
written by the base class) plus whatever the kind needs, only as JSON, safetensors, ``.npy``
or a library's native text format. ``load(path, context)`` must not unpickle anything.

Cross-fitting calls ``fit_rows`` / ``predict_rows`` / ``predict_split``, which default to
``fit`` / ``predict_proba`` on the rows' texts; a member whose features belong to training
rows rather than texts (out-of-fold embeddings) overrides them.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..config import MemberConfig
from ..context import MemberContext
from ..errors import ArtifactError, ConfigError
from ..fileio import read_json, write_json
from ..labels import N_LABELS

if TYPE_CHECKING:
    from ..config import EnsembleConfig
    from ..data import Corpus
    from ..run_folder import RunFolder

_REGISTRY: dict[str, type[FoldModel]] = {}


class FoldModel(ABC):
    """A member trained on one fold. Subclasses implement ``_fit``, ``_predict_proba``, ``_save``, ``_load``."""

    kind: ClassVar[str] = ""

    def __init__(self, config: MemberConfig, context: MemberContext | None = None) -> None:
        self.config = config
        self.context = context or MemberContext()

    def fit(self, texts: Sequence[str], labels: np.ndarray, *, workdir: Path | None = None) -> FoldModel:
        """Train on ``texts`` with 0/1 ``labels`` [n, 11]. ``workdir`` holds checkpoints for resuming."""
        labels = np.asarray(labels)
        if labels.shape != (len(texts), N_LABELS):
            raise ValueError(f"labels must have shape ({len(texts)}, {N_LABELS}), got {labels.shape}")
        self._fit(list(texts), labels.astype(np.float32), workdir=workdir)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities [n, 11] (float32) of each emotion."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, N_LABELS), dtype=np.float32)
        return self._checked(self._predict_proba(texts), len(texts))

    # -- cross-fitting: rows of the run's train corpus ------------------------------------------------
    def fit_rows(self, train: Corpus, rows: np.ndarray, *, workdir: Path | None = None) -> FoldModel:
        """Train on rows ``rows`` of the run's train corpus (default: on their texts and labels)."""
        return self.fit([train.texts[i] for i in rows], train.labels[rows], workdir=workdir)

    def predict_rows(self, train: Corpus, rows: np.ndarray) -> np.ndarray:
        """Probabilities of the held-out train rows ``rows`` (default: from their texts)."""
        return self.predict_proba([train.texts[i] for i in rows])

    def predict_split(self, split: str, texts: Sequence[str]) -> np.ndarray:
        """Probabilities of every text of the run's split ``split`` (``test``/``eval``; default: from the texts)."""
        return self.predict_proba(texts)

    def depends_on(self) -> list[str]:
        """Names of other members whose fold models this one reads when predicting (``config.requires``)."""
        return list(self.config.requires)

    # -- declared dependencies: members that read other members' fold models ------------------------
    @classmethod
    def claims(cls, config: MemberConfig) -> bool:
        """Whether this kind builds ``config`` although ``config.kind`` names another (e.g. a head that reads a member)."""
        return False

    @classmethod
    def check_sources(cls, config: MemberConfig, sources: dict[str, type[FoldModel]]) -> None:
        """Refuse (``ConfigError``) members in ``config.requires`` this kind cannot read; ``sources``: their classes."""
        if sources:
            raise ConfigError(f"member '{config.name}': kind {cls.kind!r} reads no other member, got {sorted(sources)}")

    @classmethod
    def prepare_requirements(
        cls, config: MemberConfig, run: RunFolder, train: Corpus, splits: dict[str, list[str]], context: MemberContext
    ) -> dict[str, str]:
        """Before cross-fitting in ``run``: make what this kind reads from its required members (whose
        fold folders are in ``context.member_folds``); returns digests of it, recorded with the member
        so that it is refitted when they change."""
        return {}

    def _checked(self, proba: Any, n_rows: int) -> np.ndarray:
        proba = np.asarray(proba, dtype=np.float32)
        if proba.shape != (n_rows, N_LABELS):
            raise RuntimeError(f"{type(self).__name__} returned shape {proba.shape}, expected ({n_rows}, {N_LABELS})")
        return proba

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._save(path)
        meta: dict[str, Any] = {"kind": self.kind, "config": _config_dict(self.config)}
        if self.depends_on():
            meta["depends_on"] = self.depends_on()
        write_json(path / "fold.json", meta)

    @classmethod
    def load(cls, path: str | Path, context: MemberContext | None = None) -> FoldModel:
        path = Path(path)
        config = MemberConfig(**read_json(path / "fold.json")["config"])
        return cls._load(path, config, context or MemberContext())

    @abstractmethod
    def _fit(self, texts: list[str], labels: np.ndarray, *, workdir: Path | None) -> None: ...

    @abstractmethod
    def _predict_proba(self, texts: list[str]) -> np.ndarray: ...

    @abstractmethod
    def _save(self, path: Path) -> None: ...

    @classmethod
    @abstractmethod
    def _load(cls, path: Path, config: MemberConfig, context: MemberContext) -> FoldModel: ...


def _config_dict(config: MemberConfig) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(config)


def register_member(kind: str):
    """Class decorator: make a ``FoldModel`` subclass buildable from ``MemberConfig.kind``."""

    def decorate(cls: type[FoldModel]) -> type[FoldModel]:
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return decorate


def member_kind(config: MemberConfig) -> str:
    """The registered kind that builds ``config``: ``config.kind``, unless a kind claims it (:meth:`FoldModel.claims`)."""
    _import_builtin_kinds()
    claimed = [kind for kind, cls in _REGISTRY.items() if cls.claims(config)]
    return claimed[0] if claimed else config.kind


# The module of each built-in kind, named by the package ``__init__`` (:func:`declare_kinds`). A kind's
# module is imported alone the first time the kind is asked for, so loading a light kind (a head,
# an ONNX classifier) never imports torch or peft, and this module never imports its subclasses.
_KIND_MODULES: dict[str, str] = {}


def declare_kinds(modules: dict[str, str]) -> None:
    """Name the module that registers each kind (``{"head": "embedensemble.members.head_member"}``)."""
    _KIND_MODULES.update(modules)


def member_class(kind: str) -> type[FoldModel]:
    if kind in _KIND_MODULES and kind not in _REGISTRY:
        _import_kind_module(_KIND_MODULES[kind])
    if kind not in _REGISTRY:
        _import_builtin_kinds()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise ConfigError(f"unknown member kind {kind!r}; known kinds are {sorted(_REGISTRY)}") from None


def build_member(config: MemberConfig, context: MemberContext | None = None) -> FoldModel:
    """A fresh, untrained fold model for ``config``."""
    return member_class(member_kind(config))(config, context)


def check_requirements(config: EnsembleConfig) -> None:
    """Every member's kind is known and every member it reads is one its kind can read (before any work)."""
    config.check_requirements()
    classes = {m.name: member_class(member_kind(m)) for m in config.members}
    for member in config.members:
        classes[member.name].check_sources(member, {name: classes[name] for name in member.requires})


def load_member(path: str | Path, context: MemberContext | None = None) -> FoldModel:
    """Load any saved fold model, dispatching on the kind recorded in its ``fold.json``."""
    path = Path(path)
    if not (path / "fold.json").is_file():
        raise ArtifactError(f"{path} is not a saved member fold (no fold.json)")
    kind = read_json(path / "fold.json").get("kind")
    return member_class(kind).load(path, context)


def load_member_shared(path: str | Path, context: MemberContext) -> FoldModel:
    """:func:`load_member`, once per fold folder in ``context``'s resource pool.

    An ensemble's fine-tuned member and the heads that read its embeddings (``finetuned:<name>``)
    then use one copy of each fold's weights.
    """
    path = Path(path).resolve()
    stamp = (path / "fold.json").stat()  # a folder saved again over the same path is a new model
    key = ("fold-model", str(path), stamp.st_ino, stamp.st_mtime_ns, *context.settings_key())
    return context.resources.shared(key, lambda: load_member(path, context))


def saved_dependencies(path: str | Path) -> list[str]:
    """Names of the members whose fold models the saved fold at ``path`` reads (``fold.json``)."""
    return list(read_json(Path(path) / "fold.json").get("depends_on", []))


def saved_fold_dirs(member_dir: str | Path) -> list[Path]:
    """A member folder's saved folds ``fold_<k>/`` (run or ensemble layout), in fold order."""
    found = [p.parent for p in Path(member_dir).glob("fold_*/fold.json") if p.parent.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def _import_builtin_kinds() -> None:
    """Import every declared kind's module (for lookups that need them all, e.g. :func:`member_kind`)."""
    for module in dict.fromkeys(_KIND_MODULES.values()):
        _import_kind_module(module)


def _import_kind_module(module: str) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:  # fine-tuning kinds need peft; head members do not
        if exc.name not in ("peft", "bitsandbytes"):
            raise
