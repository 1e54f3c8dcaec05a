"""A tiny, deterministic member for testing cross-fitting and ensembles without backbones.

It scores each emotion by bag-of-words naive-Bayes-like log-odds learned from training rows,
and records every text it was trained on so tests can check no row predicts itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedensemble.fileio import load_tensors, read_json, save_tensors, write_json
from embedensemble.labels import N_LABELS
from embedensemble.members.base import FoldModel, register_member

TRAINED_ON: list[set[str]] = []  # texts seen by each fit (in-process tests only)


@register_member("test-bow")
class BagOfWordsMember(FoldModel):
    def _fit(self, texts, labels, *, workdir):
        TRAINED_ON.append(set(texts))
        vocab = sorted({w for t in texts for w in t.split()})
        index = {w: i for i, w in enumerate(vocab)}
        counts = np.ones((len(vocab), N_LABELS, 2))
        for text, y in zip(texts, labels):
            for w in set(text.split()):
                counts[index[w], np.arange(N_LABELS), y.astype(int)] += 1
        self.vocab_ = vocab
        self.weights_ = np.log(counts[:, :, 1] / counts[:, :, 0]) - np.log(counts[:, :, 1].sum(0) / counts[:, :, 0].sum(0))
        self.bias_ = np.log((labels.mean(0) + 1e-3) / (1 - labels.mean(0) + 1e-3))

    def _predict_proba(self, texts):
        index = {w: i for i, w in enumerate(self.vocab_)}
        scores = np.tile(self.bias_, (len(texts), 1))
        for r, text in enumerate(texts):
            for w in set(text.split()):
                if w in index:
                    scores[r] += self.weights_[index[w]]
        return 1 / (1 + np.exp(-scores))

    def _save(self, path: Path):
        save_tensors(path / "weights.safetensors", {"weights": self.weights_, "bias": self.bias_})
        write_json(path / "vocab.json", self.vocab_)

    @classmethod
    def _load(cls, path, config, context):
        model = cls(config, context)
        arrays = load_tensors(path / "weights.safetensors")
        model.weights_, model.bias_ = arrays["weights"], arrays["bias"]
        model.vocab_ = read_json(path / "vocab.json")
        return model
