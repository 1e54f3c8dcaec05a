"""``features: "finetuned:<source>"``: a head on a cross-fitted fine-tune's embeddings, without leakage.

Embedding the train tweets with the fine-tuned backbone would leak: source fold model ``m`` was
trained on every row outside fold ``m``, so its embeddings of those rows have seen their labels,
and a head fitted on them scores its own out-of-fold rows too well. Instead:

* **Embedding tables** (:func:`ensure_embedding_tables`, once per source, in the source member's
  run folder): ``oof_embeddings.npy`` [n_train, d] holds each train row embedded by the one fold
  model that held it out; ``<split>_embeddings_fold<m>.npy`` holds the test/eval texts embedded by
  fold model ``m``. ``embeddings.json`` says what they were computed from and which folds are
  done; an interrupted computation redoes only the unfinished folds.
* **Cross-fitting**, on the source's k folds: fold ``k``'s head trains on the OOF embeddings of
  the rows outside fold ``k`` and predicts fold ``k``'s rows from their OOF embeddings, made by
  source model ``k``, which never saw them.
* **Any other text** (test/eval, new tweets): ``mean over m of head_k(embed_m(text))``. Each
  training row was embedded by a model that had not seen it, so for an unseen text every
  ``embed_m`` is in distribution. The member averages its fold heads as every member does, so
  ``EmotionEnsemble.predict`` on the test tweets reproduces ``submission.csv``.

Saved fold: ``fold.json`` (with ``"depends_on": [source]``), ``finetuned_head.json`` (source
name, its fold count, embedding width) and ``head/`` (arrays or LightGBM text; no pickle). The
source's fold models are found through ``MemberContext.member_folds`` (a saved ensemble copies
them even when the source is not stacked) or beside this member's folder
(``members/<source>/fold_<m>/``). They are loaded once, shared by every fold and every head that
reads the same source, and the last texts' embeddings are reused, so K heads embed once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._logging import get_logger
from ..config import MemberConfig
from ..context import MemberContext
from ..errors import ArtifactError, ConfigError
from ..fileio import check_format_version, load_array, read_json, save_array, sha256_file, texts_digest, write_json
from ..heads import Head, load_head, make_head
from ..run_folder import fold_done_file, folds_digest, read_fold_done
from .base import FoldModel, load_member, load_member_shared, register_member, saved_fold_dirs

if TYPE_CHECKING:
    from ..data import Corpus
    from ..run_folder import RunFolder

logger = get_logger(__name__)

FORMAT_VERSION = 1
META_FILE = "finetuned_head.json"
TABLE_META = "embeddings.json"
OOF_TABLE = "oof_embeddings.npy"


def split_table_name(split: str, m: int) -> str:
    return f"{split}_embeddings_fold{m}.npy"


# -- embedding tables ------------------------------------------------------------------------------
def ensure_embedding_tables(
    source_dir: Path,
    source_folds: list[Path],
    train_texts: Sequence[str],
    folds: np.ndarray,
    splits: dict[str, list[str]],
    context: MemberContext,
) -> str:
    """Compute (or reuse) the source member's embedding tables; returns the OOF table's sha256."""
    source_dir = Path(source_dir)
    folds = np.asarray(folds)
    n_folds = int(folds.max()) + 1
    if (folds < 0).any() or len(source_folds) != n_folds:
        raise ArtifactError(
            f"{source_dir}: embedding tables need {n_folds} k-fold models, found {len(source_folds)} fold folders"
        )
    fold_digest = folds_digest(folds)
    for m, fold in enumerate(source_folds):  # each fold model must have been made from these folds
        made_from = (read_fold_done(fold) or {}).get("inputs", {}).get("folds")
        if made_from != fold_digest:
            raise ArtifactError(
                f"{fold}: fold model {m} of '{source_dir.name}' was trained on other folds ({made_from} != {fold_digest}); "
                f"refit '{source_dir.name}' first (python -m embedensemble.fit refits stale members)"
            )
    inputs = {
        "train": texts_digest(train_texts),
        "folds": fold_digest,
        # the fold models themselves: a refitted source (new DONE markers) makes new tables
        "models": hashlib.sha256("".join(sha256_file(fold_done_file(f)) for f in source_folds).encode()).hexdigest()[:16],
        "splits": {split: texts_digest(texts) for split, texts in splits.items()},
    }
    meta_path = source_dir / TABLE_META
    meta = read_json(meta_path) if meta_path.is_file() else {}
    if meta.get("inputs") != inputs:
        meta = {"inputs": inputs, "folds_done": []}
    if meta.get("complete") and (source_dir / OOF_TABLE).is_file():
        return str(meta["oof_sha256"])
    for m in range(n_folds):
        part = source_dir / f"oof_embeddings_fold{m}.part.npy"
        outputs = [part, *(source_dir / split_table_name(split, m) for split in splits)]
        if m in meta["folds_done"] and all(p.is_file() for p in outputs):
            continue
        started = time.perf_counter()
        model = load_member(source_folds[m], context)
        if not hasattr(model, "embed"):
            raise ConfigError(
                f"{source_folds[m]}: a {model.kind!r} member has no embeddings; 'finetuned:' needs a pooled-finetune member"
            )
        rows = np.flatnonzero(folds == m)
        logger.info("%s: embedding %d held-out train rows and %s with fold model %d", source_dir.name, len(rows), list(splits), m)
        save_array(part, model.embed([train_texts[i] for i in rows]))
        for split, texts in splits.items():
            save_array(source_dir / split_table_name(split, m), model.embed(texts))
        if hasattr(model, "release"):
            model.release()
        meta["folds_done"] = sorted({*meta["folds_done"], m})
        # the pass's cost, which no member's fit time holds: cold-time estimates of a finetuned: head add it
        meta["seconds"] = round(meta.get("seconds", 0.0) + time.perf_counter() - started, 2)
        write_json(meta_path, meta)
    parts = [load_array(source_dir / f"oof_embeddings_fold{m}.part.npy") for m in range(n_folds)]
    oof = np.empty((len(folds), parts[0].shape[1]), dtype=np.float32)
    for m, part in enumerate(parts):
        oof[folds == m] = part
    save_array(source_dir / OOF_TABLE, oof)
    meta.update(complete=True, n_folds=n_folds, dim=int(oof.shape[1]), oof_sha256=sha256_file(source_dir / OOF_TABLE))
    write_json(meta_path, meta)
    for m in range(n_folds):
        (source_dir / f"oof_embeddings_fold{m}.part.npy").unlink(missing_ok=True)
    return str(meta["oof_sha256"])


class _Tables:
    """A source member's finished embedding tables (read-only, memory-mapped)."""

    def __init__(self, source_dir: Path) -> None:
        meta_path = source_dir / TABLE_META
        meta = read_json(meta_path) if meta_path.is_file() else {}
        if not meta.get("complete"):
            raise ArtifactError(
                f"{source_dir} has no finished embedding tables ({TABLE_META}); they are made when a run is fitted"
            )
        self.dir, self.meta, self.n_folds = source_dir, meta, int(meta["n_folds"])
        self.oof = load_array(source_dir / OOF_TABLE, mmap=True)

    def split(self, split: str, texts: list[str]) -> list[np.ndarray] | None:
        """Fold models' embeddings of ``split``, or ``None`` if the table was made from other texts."""
        if self.meta["inputs"]["splits"].get(split) != texts_digest(texts):
            return None
        return [load_array(self.dir / split_table_name(split, m)) for m in range(self.n_folds)]


# -- embedding new texts with the source's fold models --------------------------------------------
class SourceEmbedder:
    """A source member's fold models, loaded on first use; ``embed`` gives one matrix per model.

    One per source in the context's resource pool, which also keeps the current batch's
    embeddings, so the K fold heads of a member (and other heads on the same source) that
    predict the same texts embed them once.
    """

    def __init__(self, folds: list[Path], context: MemberContext) -> None:
        self.folds, self.context = folds, context
        self._models: list[Any] | None = None
        self.key = ("source-embeddings", tuple(str(Path(f).resolve()) for f in folds), *context.settings_key())

    def embed(self, texts: list[str]) -> list[np.ndarray]:
        return self.context.resources.for_batch(self.key, texts, self._embed)

    def _embed(self, texts: list[str]) -> list[np.ndarray]:
        if self._models is None:
            self._models = [load_member_shared(fold, self.context) for fold in self.folds]
        return [model.embed(texts) for model in self._models]


def _shared_embedder(folds: list[Path], context: MemberContext) -> SourceEmbedder:
    embedder = SourceEmbedder(folds, context)
    return context.resources.shared(embedder.key, lambda: embedder)


# -- the member ------------------------------------------------------------------------------------
@register_member("finetuned-head")
class FinetunedHeadMember(FoldModel):
    """Head ``config.head`` on the embeddings of pooled-finetune member ``config.feature_source``."""

    def __init__(self, config: MemberConfig, context: MemberContext | None = None) -> None:
        super().__init__(config, context)
        if not config.feature_source:
            raise ConfigError(f"member '{config.name}': kind 'finetuned-head' needs features \"finetuned:<member>\"")
        if not isinstance(config.head_params, dict):
            raise ConfigError(f"member '{config.name}': head_params must be an object, got {type(config.head_params).__name__}")
        self.source: str = config.feature_source
        try:  # built now so a bad head name or parameter fails before any work
            self.head_: Head = make_head(config.head, **self._head_params())
        except ConfigError as exc:
            raise ConfigError(f"member '{config.name}': {exc}") from None
        self.n_source_folds_: int | None = None
        self._path: Path | None = None
        self._tables_: _Tables | None = None
        self._embedder_: SourceEmbedder | None = None

    def _head_params(self) -> dict[str, Any]:
        params = dict(self.config.head_params)
        params.setdefault("random_state", int(self.context.seed))
        return params

    def depends_on(self) -> list[str]:
        return [self.source]

    # -- the declared dependency: ``features: "finetuned:<source>"`` -----------------------------
    @classmethod
    def claims(cls, config: MemberConfig) -> bool:
        return config.kind == "head" and bool(config.requires)

    @classmethod
    def check_sources(cls, config: MemberConfig, sources: dict[str, type[FoldModel]]) -> None:
        for name, source in sources.items():
            if not callable(getattr(source, "embed", None)):
                raise ConfigError(
                    f"member '{config.name}' (features {config.features!r}): source member '{name}' is of kind "
                    f"{source.kind!r}, which gives no embeddings; 'finetuned:' needs a member that embeds, e.g. 'pooled-finetune'"
                )

    @classmethod
    def prepare_requirements(
        cls, config: MemberConfig, run: RunFolder, train: Corpus, splits: dict[str, list[str]], context: MemberContext
    ) -> dict[str, str]:
        """The source's embedding tables (made or reused); their digest ties this member to them."""
        source = config.feature_source
        table = ensure_embedding_tables(
            run.member_dir(source), context.member_folds[source], train.texts, run.folds("kfold"), splits, context
        )
        return {"source_embeddings": table}

    # -- cross-fitting: training rows are looked up in the OOF embedding table ---------------------
    def fit_rows(self, train: Corpus, rows: np.ndarray, *, workdir: Path | None = None) -> FinetunedHeadMember:
        tables = self._tables()
        X = np.asarray(tables.oof[rows])
        logger.info(
            "member '%s': fitting %s head on %d x %d OOF embeddings of '%s'",
            self.config.name,
            self.config.head,
            *X.shape,
            self.source,
        )
        self.head_ = make_head(self.config.head, **self._head_params()).fit(X, train.labels[rows])
        self.n_source_folds_ = tables.n_folds
        return self

    def predict_rows(self, train: Corpus, rows: np.ndarray) -> np.ndarray:
        return self._checked(self.head_.predict_proba(np.asarray(self._tables().oof[rows])), len(rows))

    def predict_split(self, split: str, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        embeddings = self._tables().split(split, texts) if texts else None
        if embeddings is None:
            return self.predict_proba(texts)
        return self._checked(self._average(embeddings), len(texts))

    # -- FoldModel -------------------------------------------------------------------------------
    def _fit(self, texts: list[str], labels: np.ndarray, *, workdir: Path | None) -> None:
        raise RuntimeError(
            f"member '{self.config.name}' learns from the out-of-fold embeddings of a run's train rows: "
            "it is trained by cross-fitting a run (fit_members), not from texts"
        )

    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        if self._embedder_ is None:
            self._embedder_ = _shared_embedder(self._source_folds(), self.context)
        return self._average(self._embedder_.embed(texts))

    def _average(self, embeddings: list[np.ndarray]) -> np.ndarray:
        return np.mean([self.head_.predict_proba(X) for X in embeddings], axis=0)

    def _save(self, path: Path) -> None:
        if not hasattr(self.head_, "constant_"):
            raise RuntimeError(f"member '{self.config.name}' is not fitted; nothing to save")
        self.head_.save(path / "head")
        meta = {
            "format_version": FORMAT_VERSION,
            "source": self.source,
            "n_source_folds": self.n_source_folds_,
            "n_features": self.head_.n_features_in_,
        }
        write_json(path / META_FILE, meta)

    @classmethod
    def _load(cls, path: Path, config: MemberConfig, context: MemberContext) -> FinetunedHeadMember:
        if not (path / META_FILE).is_file():
            raise ArtifactError(f"{path} is not a saved finetuned-head member (no {META_FILE})")
        meta = read_json(path / META_FILE)
        check_format_version(meta, FORMAT_VERSION, path / META_FILE)
        member = cls(config, context)
        member.head_ = load_head(path / "head")
        if meta.get("source") != member.source or meta.get("n_features") != member.head_.n_features_in_:
            raise ArtifactError(f"{path}: {META_FILE} does not match fold.json and head/ (a partial or mixed save)")
        member.n_source_folds_ = int(meta["n_source_folds"])
        member._path = path
        return member

    # -- where the source lives ------------------------------------------------------------------
    def _source_folds(self) -> list[Path]:
        folds = self.context.member_folds.get(self.source)
        if folds is None and self._path is not None:  # members/<name>/fold_<k> -> members/<source>/fold_<m>
            folds = saved_fold_dirs(self._path.parent.parent / self.source) or None
        if not folds:
            raise ArtifactError(
                f"member '{self.config.name}' reads embeddings of member '{self.source}', whose fold folders were not found "
                "(save the ensemble with EmotionEnsemble.save, which copies them)"
            )
        if self.n_source_folds_ is not None and len(folds) != self.n_source_folds_:
            raise ArtifactError(
                f"member '{self.config.name}' was trained on {self.n_source_folds_} fold models of '{self.source}', "
                f"found {len(folds)}"
            )
        return [Path(f) for f in folds]

    def _tables(self) -> _Tables:
        if self._tables_ is None:
            self._tables_ = _Tables(self._source_folds()[0].parent)
        return self._tables_
