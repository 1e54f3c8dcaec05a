"""``onnx-classifier``: a fine-tuned classifier exported to ONNX and run by ONNX Runtime.

The fast prediction path of a distilled student (see :mod:`embedensemble.distill`): texts are
tokenised by the ``tokenizers`` library from the saved ``tokenizer.json``, grouped by token
length into batches, and run through ``model.onnx`` (fp32, or int8 weights from dynamic
quantisation). Neither torch nor transformers is imported, so a process answers its first
request after reading two files.

Saved fold folder: ``fold.json`` (kind and member config), ``onnx.json`` (format version, text
format, precision, what it was exported from), ``model.onnx`` and ``tokenizer.json``. ONNX
files are protobuf (no code runs on load), which the ensemble manifest accepts.
Needs the optional extra ``pip install embedensemble[onnx]`` (onnxruntime).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .._logging import get_logger
from ..config import MemberConfig
from ..context import MemberContext
from ..errors import ArtifactError, NumericalError
from ..fileio import check_format_version, read_json
from ..runtime import default_num_threads
from .base import FoldModel, register_member

logger = get_logger(__name__)

KIND = "onnx-classifier"
FORMAT_VERSION = 1
META_FILE = "onnx.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
# Texts per batch, and at most this many (padded) tokens per batch: long tweets get smaller batches.
BATCH_SIZE = 64
MAX_BATCH_TOKENS = 64 * 48


def onnx_num_threads() -> int:
    """Threads for ONNX Runtime: :func:`embedensemble.runtime.default_num_threads` (``$OMP_NUM_THREADS`` as base, no torch)."""
    return default_num_threads()


def length_batches(lengths: np.ndarray, batch_size: int = BATCH_SIZE, max_tokens: int = MAX_BATCH_TOKENS) -> list[np.ndarray]:
    """Indices sorted by length (longest first), cut into batches of <= ``batch_size`` texts and <= ``max_tokens`` tokens."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, start = [], 0
    while start < len(order):
        width = max(1, int(lengths[order[start]]))  # the first text of a batch is its longest
        size = max(1, min(batch_size, max_tokens // width))
        batches.append(order[start : start + size])
        start += size
    return batches


def pad_batch(ids: list[list[int]], pad_id: int, left: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64) for one batch."""
    width = max(len(row) for row in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        cols = slice(width - len(row), width) if left else slice(0, len(row))
        input_ids[i, cols] = row
        mask[i, cols] = 1
    return input_ids, mask


@register_member(KIND)
class OnnxClassifierMember(FoldModel):
    """Predicts with a saved ONNX classifier; it cannot be trained (it is exported from one that was)."""

    def __init__(self, config: MemberConfig, context: MemberContext | None = None) -> None:
        super().__init__(config, context)
        self.session: Any = None
        self.tokenizer: Any = None
        self.meta: dict[str, Any] = {}
        self.source_dir: Path | None = None  # the folder holding model.onnx, tokenizer.json and onnx.json

    def _fit(self, texts: list[str], labels: np.ndarray, *, workdir: Path | None) -> None:
        raise ArtifactError(
            f"member '{self.config.name}' is an ONNX export; train the member it was exported from "
            "(e.g. `python -m embedensemble.distill`) instead"
        )

    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        fmt = self.meta["text_format"]
        ids = self._token_ids(texts)
        out = np.empty((len(texts), self.meta["n_labels"]), dtype=np.float32)
        for rows in length_batches(np.array([len(x) for x in ids])):
            input_ids, mask = pad_batch([ids[i] for i in rows], int(fmt["pad_token_id"]), fmt["padding_side"] == "left")
            logits = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
            out[rows] = logits
        if not np.isfinite(out).all():
            bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
            raise NumericalError(
                f"member '{self.config.name}': the ONNX model produced NaN or infinite outputs for text(s) {bad[:10].tolist()}"
            )
        return 1.0 / (1.0 + np.exp(-out.astype(np.float64)))

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        fmt = self.meta["text_format"]
        if fmt.get("prompt_template"):
            # str.replace, not str.format: tweets contain braces (same rule as finetune.batching).
            template = fmt["prompt_template"].replace("{task}", fmt.get("task") or "")
            texts = [template.replace("{text}", t) for t in texts]
        ids = [enc.ids for enc in self.tokenizer.encode_batch(texts, add_special_tokens=True)]
        eos = fmt.get("eos_token_id") if fmt.get("append_eos") else None
        if eos is not None:
            ids = [row if row and row[-1] == eos else row[: fmt["max_length"] - 1] + [eos] for row in ids]
        return ids

    def _save(self, path: Path) -> None:
        # The files are written by embedensemble.onnx_export; saving copies them (a loaded member saved elsewhere).
        if self.source_dir is None:
            raise ArtifactError(
                f"member '{self.config.name}' has no exported files; use embedensemble.onnx_export.export_student"
            )
        if Path(self.source_dir).resolve() != Path(path).resolve():
            for name in (META_FILE, MODEL_FILE, TOKENIZER_FILE):
                shutil.copy2(Path(self.source_dir) / name, Path(path) / name)

    @classmethod
    def _load(cls, path: Path, config: MemberConfig, context: MemberContext) -> OnnxClassifierMember:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ArtifactError(
                f"{path} is an ONNX member: install the optional extra with `pip install embedensemble[onnx]` ({exc})"
            ) from None
        if not (path / META_FILE).is_file():
            raise ArtifactError(f"{path} has no {META_FILE}")
        meta = read_json(path / META_FILE)
        check_format_version(meta, FORMAT_VERSION, path / META_FILE)
        member = cls(config, context)
        member.meta = meta
        member.source_dir = path
        tokenizer = Tokenizer.from_file(str(path / TOKENIZER_FILE))
        budget = int(meta["text_format"]["max_length"])
        tokenizer.enable_truncation(budget - (1 if meta["text_format"].get("append_eos") else 0))
        tokenizer.no_padding()
        member.tokenizer = tokenizer
        options = ort.SessionOptions()
        options.intra_op_num_threads = onnx_num_threads()
        options.inter_op_num_threads = 1
        # Spinning threads burn a shared machine's cores between requests; wake on demand instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        member.session = ort.InferenceSession(str(path / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        logger.debug("loaded %s (%s, %d threads)", path, meta.get("precision"), options.intra_op_num_threads)
        return member
