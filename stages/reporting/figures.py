"""The report's figures, each a base64 PNG (embedded in the page: no CDN, no external file), quantized to a
256-colour palette (plots have few colours: a third of the size, no visible change). Legends sit beside the axes,
never over the data.
"""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from stages.reporting.ranking import AttributeRanking  # noqa: E402


def png(figure: plt.Figure) -> str:
    """The figure as a base64 PNG with a 256-colour palette (the figure is closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", facecolor="white")
    plt.close(figure)
    buffer.seek(0)
    with Image.open(buffer) as rendered:
        palette = rendered.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    compressed = io.BytesIO()
    palette.save(compressed, format="PNG", optimize=True)
    return base64.b64encode(compressed.getvalue()).decode()


def img(b64: str, alt: str) -> str:
    """An ``<img>`` tag embedding a base64 PNG."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def method_colours(methods: list[str]) -> dict[str, tuple[float, ...]]:
    """One colour per method, the same in every figure (tab10, tab20 beyond ten methods)."""
    colours = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    return {method: colours(k % colours.N) for k, method in enumerate(methods)}


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


def curves_figure(points_by_method: dict[str, list[dict]], attribute: str) -> plt.Figure:
    """Mean re-labeled target score per α for every method with its 95 % interval as a band: one panel per edit
    mode (plain; conditional when evaluated), one colour per method, the legend beside the panels (one column up
    to 12 methods)."""
    modes = [
        mode
        for mode in ("plain", "conditional")
        if any(
            p["direction"] == attribute and p["mode"] == mode for points in points_by_method.values() for p in points
        )
    ] or ["plain"]
    colours = method_colours(list(points_by_method))
    figure, panels = plt.subplots(
        1, len(modes), figsize=(4.2 * len(modes), 3.4), sharey=True, squeeze=False, layout="constrained"
    )
    for axes, mode in zip(panels[0], modes):
        for method, points in points_by_method.items():
            selected = [p for p in points if p["direction"] == attribute and p["mode"] == mode]
            if not selected:
                continue
            alphas = [p["alpha"] for p in selected]
            axes.plot(
                alphas,
                [p["target_mean"] for p in selected],
                "-",
                marker="o",
                markersize=3,
                color=colours[method],
                label=method,
            )
            if all("target_low" in p for p in selected):
                axes.fill_between(
                    alphas,
                    [p["target_low"] for p in selected],
                    [p["target_high"] for p in selected],
                    color=colours[method],
                    alpha=0.12,
                    linewidth=0,
                )
        axes.set_xlabel("α (edit strength)")
        axes.set_title("plain edit" if mode == "plain" else "conditional edit", fontsize=10)
        axes.grid(alpha=0.3)
    panels[0][0].set_ylabel(f"mean {attribute} after edit")
    figure.suptitle(f"{attribute}: re-labeled score along the edit (band: 95 % interval)", fontsize=11)
    handles = {}
    for axes in panels[0]:
        for handle, label in zip(*axes.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        figure.legend(
            handles.values(),
            handles.keys(),
            loc="outside right upper",
            fontsize=8,
            ncols=1 if len(handles) <= 12 else 2,
            frameon=False,
        )
    return figure


def curves(points_by_method: dict[str, list[dict]], attribute: str) -> str:
    """:func:`curves_figure` as a base64 PNG."""
    return png(curves_figure(points_by_method, attribute))


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
