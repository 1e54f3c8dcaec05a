"""Synthetic tweets for fixtures (the real data's licence forbids copying any of it).

Each emotion has a few cue words; a tweet mixes the cues of its emotions with filler,
so simple models can learn the task and tests can assert real quality.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from embedensemble.labels import EMOTIONS

CUES = {
    "anger": ["furious", "rage", "livid"],
    "anticipation": ["waiting", "soon", "countdown"],
    "disgust": ["gross", "vile", "nasty"],
    "fear": ["scared", "terrified", "afraid"],
    "joy": ["happy", "delighted", "cheerful"],
    "love": ["adore", "darling", "sweetheart"],
    "optimism": ["hopeful", "brighter", "believe"],
    "pessimism": ["hopeless", "doomed", "pointless"],
    "sadness": ["crying", "heartbroken", "lonely"],
    "surprise": ["shocked", "unexpected", "wow"],
    "trust": ["reliable", "loyal", "faithful"],
}
FILLER = ["the", "a", "my", "this", "today", "with", "friends", "at", "work", "again", "really", "so", "just", "about", "game", "coffee", "bus"]


def make_tweets(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, len(EMOTIONS)), dtype=np.int8)
    texts = []
    for i in range(n):
        k = rng.choice([0, 1, 1, 2, 2, 3])
        chosen = rng.choice(len(EMOTIONS), size=k, replace=False) if k else []
        labels[i, chosen] = 1
        words = list(rng.choice(FILLER, size=6))
        for j in chosen:
            words.insert(int(rng.integers(0, len(words))), str(rng.choice(CUES[EMOTIONS[j]])))
        texts.append(" ".join(words) + f" #{i}")
    return texts, labels


def write_kaggle(folder: Path, n_train: int = 120, n_test: int = 40, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    texts, labels = make_tweets(n_train + n_test, seed)
    header = ["ID", "Tweet", *EMOTIONS]
    with open(folder / "train.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(n_train):
            w.writerow([f"2017-{i:05d}", texts[i], *labels[i].tolist()])
    with open(folder / "test.csv", "w", newline="", encoding="utf-8") as f, open(folder / "sample_submission.csv", "w", newline="", encoding="utf-8") as s:
        w, ws = csv.writer(f), csv.writer(s)
        w.writerow(header)
        ws.writerow(["ID", *EMOTIONS])
        for i in range(n_train, n_train + n_test):
            w.writerow([f"2018-{i:05d}", texts[i], *["NONE"] * len(EMOTIONS)])
            ws.writerow([f"2018-{i:05d}", *[0] * len(EMOTIONS)])
    return folder


def write_semeval(folder: Path, n_train: int = 120, n_dev: int = 40, n_test: int = 30, seed: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    texts, labels = make_tweets(n_train + n_dev + n_test, seed)
    header = "\t".join(["ID", "Tweet", *EMOTIONS])
    spans = {"train": range(n_train), "dev": range(n_train, n_train + n_dev), "test": range(n_train + n_dev, n_train + n_dev + n_test)}
    for split, rows in spans.items():
        lines = [header]
        for i in rows:
            cells = ["NONE"] * len(EMOTIONS) if split == "test" else [str(v) for v in labels[i]]
            lines.append("\t".join([f"2018-En-{i:05d}", texts[i], *cells]))
        (folder / f"2018-E-c-En-{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
