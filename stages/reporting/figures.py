"""The report's figures, each a base64 PNG (embedded in the page: no CDN, no external file)."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stages.reporting.ranking import AttributeRanking  # noqa: E402


def png(figure: plt.Figure) -> str:
    """The figure as a base64 PNG (the figure is closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def img(b64: str, alt: str) -> str:
    """An ``<img>`` tag embedding a base64 PNG."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def heatmap(matrix: np.ndarray, labels: list[str], title: str, vmin: float = -1.0) -> str:
    """A labelled (K, K) matrix in [vmin, 1] (cosines, correlations)."""
    size = max(3.0, 0.45 * len(labels) + 1.5)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(matrix, cmap="RdBu_r", vmin=vmin, vmax=1.0)
    axes.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    for (i, j), value in np.ndenumerate(matrix):
        axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046)
    return png(figure)


def curves(points_by_method: dict[str, list[dict]], attribute: str) -> str:
    """Mean re-labeled target score per α for every method (plain solid, conditional dashed), with its 95 %
    interval as a band."""
    figure, axes = plt.subplots(figsize=(5, 3.4))
    for method, points in points_by_method.items():
        for mode, style in (("plain", "-"), ("conditional", "--")):
            selected = [p for p in points if p["direction"] == attribute and p["mode"] == mode]
            if not selected:
                continue
            alphas = [p["alpha"] for p in selected]
            (line,) = axes.plot(
                alphas,
                [p["target_mean"] for p in selected],
                style,
                marker="o",
                markersize=3,
                label=method if mode == "plain" else f"{method} (cond.)",
            )
            if all("target_low" in p for p in selected):
                axes.fill_between(
                    alphas,
                    [p["target_low"] for p in selected],
                    [p["target_high"] for p in selected],
                    color=line.get_color(),
                    alpha=0.15,
                    linewidth=0,
                )
    axes.set_xlabel("α (edit strength)")
    axes.set_ylabel(f"mean {attribute} after edit")
    axes.set_title(f"{attribute}: re-labeled score along the edit (band: 95 % interval)")
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    return png(figure)


def rank_intervals(ranking: AttributeRanking) -> str:
    """Each method's mean rank with its 95 % interval (error bars), best first, coloured by rank group."""
    methods = ranking.methods
    figure, axes = plt.subplots(figsize=(5, 0.35 * len(methods) + 1.2))
    colours = plt.get_cmap("tab10")
    for row, method in enumerate(methods):
        estimate, group = ranking.mean_rank[method], ranking.group[method]
        axes.errorbar(
            estimate.value,
            row,
            xerr=[[estimate.value - estimate.low], [estimate.high - estimate.value]],
            fmt="o",
            color=colours((group - 1) % 10),
            capsize=3,
        )
    axes.set_yticks(range(len(methods)), [f"{m} (group {ranking.group[m]})" for m in methods])
    axes.invert_yaxis()
    axes.set_xlabel("mean rank (lower is better), 95 % interval")
    axes.set_title(f"{ranking.attribute}: rank groups")
    axes.grid(alpha=0.3, axis="x")
    return png(figure)
