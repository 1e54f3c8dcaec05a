"""Every member and the stack get their own colour in the per-emotion F1 bars (the stack keeps red)."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.colors import to_hex

from embedensemble.labels import EMOTIONS
from embedensemble.report.plots import STACK, model_colors, per_emotion_f1_bars


def _bar_colors(ax):
    return {c.get_label(): to_hex(c.patches[0].get_facecolor()) for c in ax.containers}


@pytest.mark.parametrize("n_members", [4, 12, 25])
def test_each_member_and_the_stack_get_distinct_colours(n_members):
    names = ["tfidf-logreg", *(f"member-{k:02d}" for k in range(n_members - 1))]
    rng = np.random.default_rng(0)
    scores = {"oof": {m: dict(zip(EMOTIONS, rng.random(len(EMOTIONS)))) for m in [*names, STACK]}}
    scores["eval"] = {m: v for m, v in scores["oof"].items() if m != "member-00"}  # a member missing from one split
    fig = per_emotion_f1_bars(scores)
    oof, evaluation = (_bar_colors(ax) for ax in fig.axes[:2])
    assert len(set(oof.values())) == n_members + 1
    assert oof[STACK] == "#d62728"
    assert all(evaluation[m] == oof[m] for m in evaluation)  # a member keeps its colour in every panel


def test_model_colors_are_stable_and_red_is_the_stacks_alone():
    colors = model_colors(["a", "b", STACK, "a"])
    assert colors == {"a": "#1f77b4", "b": "#ff7f0e", STACK: "#d62728"}
    assert "#d62728" not in model_colors([f"m{k}" for k in range(40)]).values()
