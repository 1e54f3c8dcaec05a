"""The emotion label set: the one place that names the 11 emotions and fixes their order."""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = (
    "anger",
    "anticipation",
    "disgust",
    "fear",
    "joy",
    "love",
    "optimism",
    "pessimism",
    "sadness",
    "surprise",
    "trust",
)
N_LABELS: int = len(EMOTIONS)
