"""Report figures. Each function takes plain arrays/dicts and returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas rather than through
``pyplot``: no global figure registry to leak memory in long sessions, and no dependence on
(or change to) whatever backend the caller's process selected.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..labels import EMOTIONS, N_LABELS
from ..metrics import f1_threshold_curve

STACK = "stack"  # must match embedensemble.report.STACK
_STACK_COLOR = "#d62728"
# member colours: tab10 then tab20's light shades, both without the stack's red (and its light shade)
_MEMBER_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)


def model_colors(names: Sequence[str]) -> dict[str, str]:
    """A distinct colour per model: the stack red, members from a palette without red, in the given order."""
    members = [n for n in dict.fromkeys(names) if n != STACK]
    palette = list(_MEMBER_COLORS)
    if len(members) > len(palette):  # more members than named colours: evenly spaced hues, away from red
        import colorsys

        extra = len(members) - len(palette)
        hues = [colorsys.hsv_to_rgb(0.08 + 0.84 * k / extra, 0.6, 0.8) for k in range(extra)]
        palette += ["#" + "".join(f"{int(255 * c):02x}" for c in rgb) for rgb in hues]
    colors = dict(zip(members, palette))
    if STACK in names:
        colors[STACK] = _STACK_COLOR
    return colors


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render ``fig`` to PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def per_emotion_f1_bars(scores: Mapping[str, Mapping[str, Mapping[str, float]]]) -> Figure:
    """Grouped bars of per-emotion F1, one panel per split.

    ``scores``: {split: {model name: {emotion: f1}}}; the model named ``"stack"`` is drawn
    last in red so it stands out against the members, each of which gets its own colour.
    """
    splits = list(scores)
    # one colour per model across every panel (a split may lack a member)
    colors = model_colors(sorted({m for split in splits for m in scores[split]}, key=lambda m: (m == STACK, m)))
    fig = _figure(12, 3.6 * max(len(splits), 1))
    axes = fig.subplots(max(len(splits), 1), 1, squeeze=False)[:, 0]
    for ax, split in zip(axes, splits, strict=True):
        models = sorted(scores[split], key=lambda m: (m == STACK, m))
        width = 0.8 / max(len(models), 1)
        x = np.arange(N_LABELS)
        for i, model in enumerate(models):
            values = [scores[split][model].get(e, np.nan) for e in EMOTIONS]
            ax.bar(x - 0.4 + width * (i + 0.5), values, width, label=model, color=colors[model])
        ax.set_xticks(x, EMOTIONS, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("F1")
        ax.set_title(f"Per-emotion F1 ({split})")
        ax.grid(axis="y", alpha=0.3)
        # outside the axes: bars near F1 = 1 would hide under an inside legend
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def threshold_curves(y_true: np.ndarray, proba: np.ndarray, thresholds: Mapping[str, float] | None) -> Figure:
    """F1 against decision threshold for each emotion (stack OOF), chosen threshold marked.

    Flat or jagged curves show where a threshold is poorly determined (rare emotions).
    """
    grid = np.linspace(0.01, 0.99, 99)
    fig = _figure(12, 8)
    axes = fig.subplots(3, 4, sharex=True, sharey=True).ravel()
    for k, (ax, emotion) in enumerate(zip(axes, EMOTIONS, strict=False)):
        curve = f1_threshold_curve(y_true[:, k], proba[:, k], grid)
        ax.plot(grid, curve, color="#1f77b4")
        ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
        title = f"{emotion} (n+={int(np.asarray(y_true[:, k]).sum())})"
        if thresholds and emotion in thresholds:
            t = float(thresholds[emotion])
            f_at_t = float(f1_threshold_curve(y_true[:, k], proba[:, k], [t])[0])
            ax.axvline(t, color=_STACK_COLOR, linewidth=1.2)
            ax.plot([t], [f_at_t], "o", color=_STACK_COLOR)
            title += f"\nt={t:.2f}, F1={f_at_t:.2f}"
        ax.set_title(title, fontsize="small")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    legend_ax = axes[N_LABELS]
    legend_ax.axis("off")
    legend_ax.text(0.05, 0.5, "blue: F1 on stack OOF\nred: chosen threshold\ndotted: 0.5", va="center", fontsize="small")
    fig.supxlabel("threshold")
    fig.supylabel("F1")
    return fig


def _heatmap(fig: Figure, matrix: np.ndarray, labels: Sequence[str], *, fmt: str, vmin: float | None,
             vmax: float | None, cmap: str, colorbar_label: str, fontsize: str = "x-small") -> None:
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    lo, hi = image.get_clim()
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix[i, j]
            if np.isnan(value):
                continue
            # dark text on light cells, light text on dark cells
            light = (min(max(value, lo), hi) - lo) / ((hi - lo) or 1) > 0.6
            ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=fontsize,
                    color="white" if light else "black")
    fig.colorbar(image, ax=ax, label=colorbar_label, shrink=0.8)


def member_correlation(oofs: Mapping[str, np.ndarray]) -> Figure:
    """Pearson correlation between members' OOF probabilities, each flattened to one vector.

    Only rows every member has a prediction for are used (holdout members leave NaN rows).
    Highly correlated members add little to a stack.
    """
    names = list(oofs)
    stacked = np.stack([np.asarray(oofs[n], dtype=np.float64) for n in names])  # [m, n, L]
    keep = ~np.isnan(stacked).any(axis=(0, 2))
    flat = stacked[:, keep, :].reshape(len(names), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(flat) if flat.shape[1] > 1 else np.full((len(names), len(names)), np.nan)
    corr = np.atleast_2d(corr)
    size = 3.5 + 0.5 * len(names)
    fig = _figure(size + 1.2, size)
    _heatmap(fig, corr, names, fmt=".2f", vmin=-1 if np.nanmin(corr, initial=0) < 0 else 0, vmax=1,
             cmap="viridis", colorbar_label="Pearson r", fontsize="medium" if len(names) <= 8 else "x-small")
    fig.axes[0].set_title(f"Member OOF correlation ({int(keep.sum())} shared rows)")
    return fig


def label_cooccurrence(labels: np.ndarray) -> Figure:
    """Counts of tweets carrying both emotions; the diagonal is each emotion's count.

    Colours are scaled to the off-diagonal maximum, since the diagonal would otherwise wash
    out every pair.
    """
    y = np.asarray(labels, dtype=np.int64)
    counts = (y.T @ y).astype(np.float64)
    off = counts[~np.eye(N_LABELS, dtype=bool)]
    fig = _figure(8.5, 7.5)
    _heatmap(fig, counts, EMOTIONS, fmt=".0f", vmin=0, vmax=max(float(off.max(initial=0)), 1.0),
             cmap="Blues", colorbar_label="tweets (colour capped at off-diagonal max)")
    fig.axes[0].set_title(f"Label co-occurrence in train ({y.shape[0]} tweets)")
    return fig
