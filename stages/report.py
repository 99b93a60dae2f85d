"""Stage 6, report: every method's metrics side by side, as one self-contained HTML page and a Markdown summary,
plus the papers' findings reproduced on this run (``reports/REPRODUCTION.md`` and the page's "Reproduction"
section, :mod:`stages.reporting.reproduction`) and ``reports/ranking.json`` (a DVC metric: each method's rank per attribute).

The HTML embeds every figure as a base64 PNG (no CDN, no external file: it opens offline and can be mailed).
Contents: a ranking table per attribute (effectiveness vs entanglement vs identity, per unit of effect), the per-α curves, cosine
heatmaps (within each method, and the same attribute across methods), the attribute correlation of the synthesized
data (InterFaceGAN's correlation table), each method's own fit figures, and the traversal grids.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from latentatlas import dataset  # noqa: E402
from latentatlas.errors import LatentAtlasError  # noqa: E402
from latentatlas.layout import OutputLayout  # noqa: E402
from latentatlas.params import Params  # noqa: E402
from latentatlas.atomic import atomic_write_bytes, atomic_write_json  # noqa: E402
from stages.latent.directions import DirectionSet  # noqa: E402
from stages.latent.directions import select_directions  # noqa: E402
from stages.reporting.reproduction import Entry, build_reproduction, render_html, render_markdown  # noqa: E402

# (metric key, label): what each method's metrics file holds, shown per attribute
SHOWN_METRICS = [("slope_std", "effect (std/α)"), ("entanglement", "entanglement"), ("lpips", "LPIPS at ±α_max"),
                 ("moved_fraction", "moved the intended way"), ("ppl", "PPL"),
                 ("conditional_entanglement", "entanglement, conditional")]
# Ranked: effect, and the collateral change *per unit of effect* — a direction that barely moves its attribute
# must not win on entanglement or LPIPS just by changing nothing at all.
RANKED = [("effect (std/α)", True), ("entanglement / effect", False), ("LPIPS / effect", False)]


class ReportError(LatentAtlasError, ValueError):
    """A method's metrics or directions are missing."""


def load_metrics(methods: list[str], metrics_root: Path) -> dict[str, dict[str, Any]]:
    """Each method's evaluation details (``metrics/<method>.details.json``: every number, the DVC metric holds only
    the headline ones)."""
    loaded = {}
    for method in methods:
        path = Path(metrics_root) / f"{method}.details.json"
        if not path.is_file():
            raise ReportError(f"{path}: missing; run the evaluate stage for {method!r} first (`dvc repro`)")
        loaded[method] = json.loads(path.read_text())
    return loaded


def fit_r2(entry: dict[str, Any]) -> float | None:
    """The held-out R² a direction's own fit reports (ortho-linear ``r2_val``, TunaGAN ``val_r2``), or None."""
    fit = entry.get("fit", {})
    for key in ("r2_val", "val_r2"):
        value = fit.get(key)
        if isinstance(value, (int, float)) and np.isfinite(value):
            return float(value)
    return None


def ranking_tables(metrics: dict[str, dict[str, Any]], min_fit_r2: float | None = None) -> dict[str, pd.DataFrame]:
    """Per attribute: one row per method, the shown metrics, the collateral-per-effect ratios, and ``rank`` = mean
    rank over :data:`RANKED` (a direction that moves its attribute the wrong way ranks last on effect).

    With ``min_fit_r2``, a direction whose own fit reports a held-out R² below it (its linear map explains less of
    the attribute than that: not a direction of that attribute) ranks after every other one, marked in the
    ``fit`` column; directions whose method reports no R² (classifiers, unsupervised components) are not gated.
    """
    attributes = sorted({a for m in metrics.values() for a in m["directions"]})
    tables = {}
    for attribute in attributes:
        rows = {method: {label: m["directions"][attribute].get(key, np.nan) for key, label in SHOWN_METRICS}
                for method, m in metrics.items() if attribute in m["directions"]}
        table = pd.DataFrame.from_dict(rows, orient="index")
        effect = table["effect (std/α)"].clip(lower=1e-6)
        table["entanglement / effect"] = table["entanglement"] / effect
        table["LPIPS / effect"] = table["LPIPS at ±α_max"] / effect
        r2 = pd.Series({method: fit_r2(metrics[method]["directions"][attribute]) for method in table.index},
                       dtype=float)
        table["fit R² (held-out)"] = r2
        fits = ~(r2 < min_fit_r2) if min_fit_r2 is not None else pd.Series(True, index=table.index)
        rank = pd.Series(np.nan, index=table.index)
        for group, offset in ((fits, 0), (~fits, int(fits.sum()))):
            if group.any():
                ranks = [table.loc[group, label].rank(ascending=not higher) for label, higher in RANKED]
                rank[group] = pd.concat(ranks, axis=1).mean(axis=1) + offset
        table["fit"] = ["" if ok else f"✗ R² < {min_fit_r2:g}: ranked last" for ok in fits]
        table.insert(0, "rank", rank)
        tables[attribute] = table.sort_values("rank")
    return tables


def ranking_metric(tables: dict[str, pd.DataFrame]) -> dict[str, dict[str, float]]:
    """``reports/ranking.json`` (a DVC metric): rank of every method per attribute."""
    return {attribute: {method: round(float(rank), 3) for method, rank in table["rank"].items()}
            for attribute, table in tables.items()}


def _png(figure: plt.Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _heatmap(matrix: np.ndarray, labels: list[str], title: str, vmin: float = -1.0) -> str:
    size = max(3.0, 0.45 * len(labels) + 1.5)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(matrix, cmap="RdBu_r", vmin=vmin, vmax=1.0)
    axes.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    for (i, j), value in np.ndenumerate(matrix):
        axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046)
    return _png(figure)


def _curves(curves: dict[str, list[dict]], attribute: str) -> str:
    figure, axes = plt.subplots(figsize=(5, 3.4))
    for method, points in curves.items():
        for mode, style in (("plain", "-"), ("conditional", "--")):
            selected = [p for p in points if p["direction"] == attribute and p["mode"] == mode]
            if selected:
                axes.plot([p["alpha"] for p in selected], [p["target_mean"] for p in selected], style, marker="o",
                          markersize=3, label=method if mode == "plain" else f"{method} (cond.)")
    axes.set_xlabel("α (edit strength)")
    axes.set_ylabel(f"mean {attribute} after edit")
    axes.set_title(f"{attribute}: re-labeled score along the edit")
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    return _png(figure)


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _space_label(method_metrics: dict[str, Any]) -> str:
    """Where a method's edits were made: ``z``, ``w``, or ``w+ layers [a, b)``."""
    space, layers = method_metrics.get("space", "z"), method_metrics.get("layers")
    return f"w+ layers [{layers[0]}, {layers[1]})" if layers else space


def build_report(params: Params, data_dir: Path, methods: list[str], layout: OutputLayout = OutputLayout()) -> None:
    """Write the HTML report, the Markdown summary, ``REPRODUCTION.md`` and the ranking metric for ``methods``
    (every fitted entry: methods and variants; output paths from ``layout``)."""
    metrics_root = layout.metrics_root()
    metrics = load_metrics(methods, metrics_root)
    curves = {m: json.loads((metrics_root / f"{m}.curves.json").read_text()) for m in methods}
    directions = {m: DirectionSet.load(layout.directions(m)) for m in methods}
    tables = ranking_tables(metrics, min_fit_r2=params.report.min_fit_r2)
    atomic_write_json(layout.ranking_metrics(), ranking_metric(tables))
    data = dataset.open(data_dir)
    label_names = data.attributes
    _, scores = data.arrays(label_names)
    label_correlation = pd.DataFrame(np.corrcoef(scores.T), index=label_names, columns=label_names)
    entries = {m: Entry(name=m, base_method=params.fit.base_method(m), directions=directions[m], details=metrics[m])
               for m in methods}
    reproduction = build_reproduction(entries, label_correlation, list(data.spaces), params.report.reference_attribute)
    header = (f"Measured on generator {params.generator.name!r}, labeler {params.label.labeler!r}, "
              f"{data.n_samples} fit samples, {params.eval.n_samples} held-out samples per direction, "
              f"α ∈ {params.eval.alphas}. 'holds here' is judged by fixed rules (stages/reporting/reproduction.py), never "
              f"tuned; where a relation fails, the note says why it may (different GAN, labelers, scale).")
    atomic_write_bytes(layout.reproduction_markdown(), render_markdown(reproduction, header).encode())
    attributes = list(tables)
    selected = {m: select_directions(directions[m], [a for a in attributes if a in metrics[m]["directions"]],
                                     allow_missing=True) for m in methods}

    # Markdown summary
    lines = ["# latentatlas report", "", f"Methods: {', '.join(methods)}. Held-out samples per direction: "
             f"{params.eval.n_samples}; α ∈ {params.eval.alphas}.", "",
             "Lower rank is better: mean rank of effect ↑, entanglement per unit effect ↓ and LPIPS per unit "
             "effect ↓ (effect and entanglement in held-out standard deviations). A direction whose own fit "
             f"explains less than R² = {params.report.min_fit_r2:g} of its attribute (held-out) ranks after "
             "every direction that fits (column `fit`).", "",
             "Edits were made in: " + "; ".join(f"{m}: {_space_label(metrics[m])}" for m in methods) + ".", ""]
    for attribute, table in tables.items():
        lines += [f"## {attribute}", "", table.to_markdown(floatfmt=".3f"), ""]
    atomic_write_bytes(layout.report_markdown(), "\n".join(lines).encode())

    # HTML
    sections = [f"<h1>latentatlas report</h1><p>Methods: {html.escape(', '.join(methods))}. "
                f"Held-out samples per direction: {params.eval.n_samples}; α ∈ {params.eval.alphas}. "
                f"Every number comes from re-synthesized, re-labeled edits of held-out latents. Edits were made in: "
                + html.escape("; ".join(f"{m}: {_space_label(metrics[m])}" for m in methods)) + ".</p>",
                "<h2>Ranking per attribute</h2><p>rank = mean rank of effect (↑), entanglement per unit effect (↓) and "
                "LPIPS at ±α<sub>max</sub> per unit effect (↓); effect and entanglement are in held-out standard "
                "deviations. A direction whose own fit explains less than R² = "
                f"{params.report.min_fit_r2:g} of its attribute on held-out samples is no direction of that "
                "attribute: it ranks after every direction that fits, marked in the column <i>fit</i>. "
                "<a href='#reproduction'>Reproduction of the papers' findings</a>.</p>"]
    for attribute, table in tables.items():
        sections.append(f"<h3>{html.escape(attribute)}</h3>" + table.to_html(float_format="{:.3f}".format,
                                                                              classes="ranking"))
        sections.append(_img(_curves(curves, attribute), f"curves {attribute}"))
    sections.append("<h2>Geometry</h2>")
    for method in methods:
        names = list(selected[method])
        if len(names) > 1:
            vectors = np.stack([selected[method][a][0] for a in names])
            sections.append(_img(_heatmap(vectors @ vectors.T, names, f"{method}: cosine between directions"),
                                 f"cosine {method}"))
    if len(methods) > 1:
        for attribute in attributes:
            having = [m for m in methods if attribute in selected[m]]
            vectors = np.stack([selected[m][attribute][0] for m in having])
            sections.append(_img(_heatmap(vectors @ vectors.T, having, f"{attribute}: cosine across methods"),
                                 f"across methods {attribute}"))
    sections.append(_img(_heatmap(label_correlation.to_numpy(), label_names, "Pearson correlation of the labels "
                                  f"(N = {data.n_samples} synthesized samples)"), "attribute correlation"))
    sections.append("<h2>Fit statistics (from each method)</h2>")
    for method in methods:
        stats = {attribute: metrics[method]["directions"][attribute].get("fit", {})
                 for attribute in metrics[method]["directions"]}
        flat = pd.DataFrame({a: {k: v for k, v in s.items() if isinstance(v, (int, float))} for a, s in stats.items()})
        if not flat.empty:
            sections.append(f"<h3>{html.escape(method)}</h3>" + flat.T.to_html(float_format="{:.3f}".format))
    sections.append(render_html(reproduction, header))
    sections.append("<h2>Traversal grids</h2><p>Rows: held-out samples; columns: α; caption: the target "
                    "attribute re-labeled after the edit.</p>")
    for method in methods:
        for attribute in selected[method]:
            grid = layout.grids_root() / method / f"{attribute}.png"
            if grid.is_file():
                sections.append(_img(base64.b64encode(grid.read_bytes()).decode(), f"{method} {attribute}"))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}img{max-width:100%;"
             "margin:6px 0}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>latentatlas report</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>")
    atomic_write_bytes(layout.report_html(), page.encode())
