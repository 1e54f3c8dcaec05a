"""Baselines scored beside the ensemble, in the same process on the same data, all at threshold 0.5.

* ``tfidf_logreg``: word 1-2-gram TF-IDF + one-vs-rest logistic regression (a plain sklearn pipeline).
* ``st_logreg``: frozen ``SentenceTransformer.encode`` embeddings + one-vs-rest logistic regression
  (what SetFit's one-vs-rest head does without its contrastive step).
* ``trainer_finetune``: ``AutoModelForSequenceClassification`` (multi-label) fine-tuned with
  ``transformers.Trainer``, the Hugging Face tutorial recipe.

``OnnxEncoder`` is the backbone exported to ONNX (fp32, or dynamic int8) and run by onnxruntime,
compared with the library's torch ``Encoder`` in the speed section.

``REFERENCES`` are published SemEval-2018 E-c *test* results (not re-run; our scores are on dev).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from embedensemble.metrics import evaluate

logger = logging.getLogger("benchmarks.baselines")

REFERENCES = [
    {
        "name": "NTUA-SLP (SemEval-2018 winner)",
        "split": "SemEval-2018 E-c test",
        "metrics": {"macro_f1": 0.528, "micro_f1": 0.701, "jaccard": 0.588},
        "source": "Baziotis et al., 2018, SemEval-2018 Task 1 system paper",
    },
    {
        "name": "SpanEmo",
        "split": "SemEval-2018 E-c test",
        "metrics": {"macro_f1": 0.578, "micro_f1": 0.713, "jaccard": 0.601},
        "source": "Alhuzali & Ananiadou, EACL 2021",
    },
]


def _ovr_logreg() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    return OneVsRestClassifier(LogisticRegression(max_iter=2000))


def _score(model: Any, X_train: Any, Y_train: np.ndarray, X_eval: Any, Y_eval: np.ndarray) -> tuple[dict, float]:
    started = time.perf_counter()
    model.fit(X_train, Y_train)
    fit_s = time.perf_counter() - started
    proba = np.asarray(model.predict_proba(X_eval))
    return evaluate(Y_eval, (proba >= 0.5).astype(int)), fit_s


def tfidf_logreg(train_texts: list[str], Y_train: np.ndarray, eval_texts: list[str], Y_eval: np.ndarray) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), _ovr_logreg())
    metrics, fit_s = _score(model, train_texts, Y_train, eval_texts, Y_eval)
    return {"description": "TF-IDF word 1-2-grams + one-vs-rest LogisticRegression, threshold 0.5", "threshold": 0.5,
            "eval": metrics, "fit_seconds": round(fit_s, 2)}


def st_embed(path: str, texts: list[str]) -> tuple[np.ndarray, float]:
    """Plain ``SentenceTransformer(path).encode(texts)``; returns embeddings and seconds spent encoding."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu")
    started = time.perf_counter()
    X = model.encode(texts, show_progress_bar=False, convert_to_numpy=True)
    return X, time.perf_counter() - started


def st_logreg(backbone: str, train_texts: list[str], Y_train: np.ndarray, eval_texts: list[str], Y_eval: np.ndarray) -> dict[str, Any]:
    from embedensemble.backbones import resolve_weights

    path = resolve_weights(backbone)
    X, embed_s = st_embed(str(path), list(train_texts) + list(eval_texts))
    metrics, fit_s = _score(_ovr_logreg(), X[: len(train_texts)], Y_train, X[len(train_texts):], Y_eval)
    return {"description": f"frozen SentenceTransformer({backbone}).encode + one-vs-rest LogisticRegression, threshold 0.5",
            "threshold": 0.5, "eval": metrics, "fit_seconds": round(fit_s, 2), "embed_seconds": round(embed_s, 2),
            "embed_tweets_per_s": round(len(X) / embed_s, 1), "torch_threads": _torch_threads()}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


class _Texts:
    """A torch-style dataset of tokenized tweets with float multi-label targets."""

    def __init__(self, encodings: dict[str, list], labels: np.ndarray | None) -> None:
        self.encodings, self.labels = encodings, labels

    def __len__(self) -> int:
        return len(self.encodings["input_ids"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {k: v[i] for k, v in self.encodings.items()}
        if self.labels is not None:
            item["labels"] = self.labels[i].astype(np.float32).tolist()
        return item


def trainer_finetune(
    backbone: str,
    train_texts: list[str],
    Y_train: np.ndarray,
    eval_texts: list[str],
    Y_eval: np.ndarray,
    *,
    epochs: float = 3.0,
    lr: float = 5e-5,
    batch_size: int = 32,
    max_length: int = 64,
    seed: int = 42,
) -> dict[str, Any]:
    """Fine-tune ``backbone``'s encoder as a multi-label sequence classifier with ``transformers.Trainer``."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    from embedensemble.backbones import resolve_weights

    path = str(resolve_weights(backbone))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized classifier" and similar notices
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=Y_train.shape[1], problem_type="multi_label_classification"
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    train_set = _Texts(dict(tokenizer(list(train_texts), truncation=True, max_length=max_length)), Y_train)
    eval_set = _Texts(dict(tokenizer(list(eval_texts), truncation=True, max_length=max_length)), None)
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            num_train_epochs=epochs,
            learning_rate=lr,
            per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=128,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            use_cpu=True,
            seed=seed,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=train_set, data_collator=DataCollatorWithPadding(tokenizer))
        started = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - started
        started = time.perf_counter()
        logits = trainer.predict(eval_set).predictions
        predict_s = time.perf_counter() - started
    proba = torch.sigmoid(torch.as_tensor(np.asarray(logits), dtype=torch.float32)).numpy()
    return {
        "description": f"AutoModelForSequenceClassification({backbone}, multi-label) + transformers.Trainer, "
        f"{epochs:g} epoch(s), lr {lr:g}, batch {batch_size}, max_length {max_length}, threshold 0.5",
        "threshold": 0.5,
        "eval": evaluate(Y_eval, (proba >= 0.5).astype(int)),
        "n_train": len(train_texts),
        "epochs": epochs,
        "torch_threads": torch.get_num_threads(),
        "fit_seconds": round(train_s, 2),
        "train_tweets_per_s": round(len(train_texts) * epochs / train_s, 1),
        "predict_seconds": round(predict_s, 2),
    }


class OnnxEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from an ONNX export of a backbone, run by onnxruntime
    with its default settings (``int8``: dynamic quantisation, one scale per weight tensor): the plain
    ONNX baseline the speed section compares the library's encoders with. The traced graph is the
    library's (:func:`embedensemble.backbones.onnx_encoder.pooled_module`)."""

    def __init__(self, backbone: str, folder: Path, *, int8: bool = False, batch_size: int = 64, threads: int = 1) -> None:
        from embedensemble.backbones import get_backbone_spec, resolve_weights

        self.spec = get_backbone_spec(backbone)
        self.path = resolve_weights(self.spec)
        self.folder, self.int8, self.batch_size, self.threads = Path(folder), int8, batch_size, threads
        self.export_seconds = 0.0

    def _export(self) -> Path:
        from transformers import AutoModel, AutoTokenizer

        from embedensemble.backbones.onnx_encoder import pooled_module, trace_to_onnx

        fp32 = self.folder / "model.onnx"
        if not fp32.is_file():
            started = time.perf_counter()
            model = AutoModel.from_pretrained(str(self.path), local_files_only=True).eval()
            tokenizer = AutoTokenizer.from_pretrained(str(self.path))
            sample = tokenizer(["an example tweet", "a longer example tweet for the export"], padding=True, return_tensors="pt")
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = fp32.with_suffix(".partial")
            # the library's traced encoder (mean pooling); L2 normalisation follows in encode()
            trace_to_onnx(pooled_module(model, "mean"), sample["input_ids"], sample["attention_mask"], partial, output="embedding")
            partial.replace(fp32)
            self.export_seconds += time.perf_counter() - started
        if not self.int8:
            return fp32
        int8 = self.folder / "model-int8.onnx"
        if not int8.is_file():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            started = time.perf_counter()
            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
            self.export_seconds += time.perf_counter() - started
        return int8

    def load(self) -> OnnxEncoder:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        model_file = self._export()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        return self

    def encode(self, texts: list[str]) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), 0), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=self.spec.max_length, return_tensors="np")
            vectors = self.session.run(None, {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)})[0]
            if out.shape[1] == 0:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
