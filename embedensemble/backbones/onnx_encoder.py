"""``OnnxSentenceEncoder``: an encoder backbone exported once to ONNX, weights quantised to int8, run by ONNX Runtime.

:class:`~embedensemble.backbones.Encoder` uses it for ``precision="int8"``. The graph maps
``input_ids`` and ``attention_mask`` to the pooled vector (mean or CLS, as the spec says); L2
normalisation follows in numpy. MatMul weights are quantised to int8 with one scale per output
channel (ONNX Runtime's dynamic quantisation; activations are quantised per batch at run time):
one scale per tensor lost 0.006-0.009 macro-F1 on MiniLM, one per channel none (benchmarks/speed.py,
embedensemble.onnx_export). Two kinds of MatMul stay fp32: products of two activations (attention
scores), and each layer's feed-forward down-projection, whose GELU outputs carry the outlier values
that one per-batch activation scale cannot hold: quantised, mpnet's vectors kept a median cosine of
0.86 to fp32 on 64 Kaggle tweets; with the down-projections in fp32, 0.99 (at about 2/3 of the
speed-up). Activations share one scale per batch, so a text's vector moves slightly (about 1e-5)
with the texts batched beside it; the same texts in the same batches give the same vectors.
The export is cached under ``<cache root>/onnx/<encoder identity>/`` and written atomically, so it is
built once per machine. onnx and onnxruntime are core dependencies (the default config uses this).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._logging import get_logger, progress, root_logging_kept
from ..errors import ConfigError
from ..runtime import default_num_threads
from .presets import BackboneSpec
from .tokens import length_sorted_batches

logger = get_logger(__name__)

MODEL_FILE = "model.onnx"
OPSET = 17
# sentence-transformers modules the export reproduces; anything else (Dense, ...) is refused.
_SUPPORTED_MODULES = {"Transformer", "Pooling", "Normalize"}
# The feed-forward down-projection of BERT-style layers (``layer.N.output.dense``), kept in fp32.
_FP32_MATMUL = re.compile(r"/layer\.\d+/output/dense/MatMul")


def _st_modules(folder: Path) -> list[str]:
    """Class names of a sentence-transformers folder's modules (``[]`` when it has no ``modules.json``)."""
    path = folder / "modules.json"
    if not path.is_file():
        return []
    return [str(entry.get("type", "")).rsplit(".", 1)[-1] for entry in json.loads(path.read_text(encoding="utf-8"))]


def check_exportable(spec: BackboneSpec, folder: Path) -> None:
    """Refuse backbones the ONNX encoder would not reproduce (decoders, extra sentence-transformers modules)."""
    if spec.family != "encoder":
        raise ConfigError(f"backbone '{spec.name}': precision 'int8' is for encoders; {spec.family} backbones run in torch")
    extra = sorted(set(_st_modules(folder)) - _SUPPORTED_MODULES)
    if extra:
        raise ConfigError(f"backbone '{spec.name}': precision 'int8' cannot export sentence-transformers module(s) {extra}")


def pooled_module(model: Any, pooling: str) -> Any:
    """``(input_ids, attention_mask) -> pooled vector`` around a transformers encoder.

    The backbone gets a prepared 4-D mask (:func:`~.tokens.additive_attention_mask`): traced with a 2-D
    one, transformers' mask builder is frozen as a constant of the traced batch shape.
    """
    import torch

    from .tokens import additive_attention_mask, pool

    takes_token_types = "token_type_ids" in inspect.signature(model.forward).parameters

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            extra = {"token_type_ids": torch.zeros_like(input_ids)} if takes_token_types else {}
            mask4d = additive_attention_mask(attention_mask)
            hidden = self.model(input_ids=input_ids, attention_mask=mask4d, **extra).last_hidden_state
            return pool(hidden, attention_mask, pooling).float()

    return Pooled().eval()


def trace_to_onnx(module: Any, input_ids: Any, attention_mask: Any, path: Path, *, output: str) -> None:
    """Trace ``module(input_ids, attention_mask) -> [batch, ...]`` to ONNX at ``path``, batch and token axes dynamic."""
    import torch

    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, output: {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(
            module,
            (input_ids, attention_mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=[output],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def export_encoder(spec: BackboneSpec, weights: Path, folder: Path, *, quantize: bool = True) -> Path:
    """Write ``folder/model.onnx`` (int8 per-channel weights when ``quantize``) unless it exists; returns the file."""
    target = folder / MODEL_FILE
    if target.is_file():
        return target
    from transformers import AutoModel, AutoTokenizer

    check_exportable(spec, weights)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model = AutoModel.from_pretrained(str(weights), local_files_only=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(weights))
        sample = tokenizer(["an example tweet", "a longer example tweet, for the export"], padding=True, return_tensors="pt")
        fp32 = staging / "model-fp32.onnx"
        trace_to_onnx(pooled_module(model, spec.pooling), sample["input_ids"], sample["attention_mask"], fp32, output="embedding")
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with root_logging_kept():
                quantize_dynamic(
                    str(fp32),
                    str(staging / MODEL_FILE),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    nodes_to_exclude=_fp32_matmuls(fp32),
                    extra_options={"MatMulConstBOnly": True},  # only weights are quantised, never activation x activation
                )
            fp32.unlink()
        else:
            fp32.rename(staging / MODEL_FILE)
        try:
            os.replace(staging, folder)  # another process may have finished the same export first: keep theirs
        except OSError:
            if not target.is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported backbone '%s' to %s (%s)", spec.name, target, "int8" if quantize else "fp32")
    return target


def _fp32_matmuls(model_file: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type == "MatMul" and _FP32_MATMUL.search(node.name)]


class OnnxSentenceEncoder:
    """Pooled (and, per the spec, L2-normalised) vectors of an encoder from its ONNX export.

    ``folder`` holds the export (built on :meth:`load` when missing); ``quantize=False`` keeps fp32
    weights (same vectors as torch up to rounding, which the tests check).
    """

    def __init__(
        self,
        spec: BackboneSpec,
        weights: Path,
        folder: Path,
        *,
        quantize: bool = True,
        batch_size: int = 64,
        num_threads: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> None:
        self.spec, self.weights, self.folder = spec, Path(weights), Path(folder)
        self.quantize, self.batch_size, self.num_threads = quantize, batch_size, num_threads
        self.show_progress_bar = show_progress_bar
        self.session: Any = None
        self.tokenizer: Any = None
        self.dim = 0

    def load(self) -> OnnxSentenceEncoder:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        model_file = export_encoder(self.spec, self.weights, self.folder, quantize=self.quantize)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.num_threads or default_num_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads leave the cores
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.weights))
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self._normalize = self.spec.normalize or "Normalize" in _st_modules(self.weights)
        return self

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``[len(texts), dim]`` in input order; texts are batched by token length."""
        inputs = [self.spec.format_text(t) for t in texts]
        ids = self.tokenizer(inputs, truncation=True, max_length=self.spec.max_length)["input_ids"]
        pad = int(self.tokenizer.pad_token_id or 0)
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        batches = length_sorted_batches([len(row) for row in ids], self.batch_size)
        for batch in progress(batches, desc=f"Encoding ({self.spec.name}, onnx)", show_progress_bar=self.show_progress_bar):
            width = len(ids[batch[0]])  # the batch's longest text comes first
            input_ids = np.full((len(batch), width), pad, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, index in enumerate(batch):
                input_ids[row, : len(ids[index])] = ids[index]
                mask[row, : len(ids[index])] = 1
            out[batch] = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
        if self._normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out
