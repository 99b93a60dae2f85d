"""Stage 6, report: every method's metrics side by side with how sure each number is, as one self-contained HTML page
and a Markdown summary, plus the papers' findings reproduced on this run.

Outputs (paths from :class:`latentatlas.layout.OutputLayout`):

- ``reports/ranking.json`` (the DVC metric, the headline only): per attribute each method's rank group and the best
  group (:func:`stages.reporting.ranking.headline`);
- ``reports/ranking.details.json``: per attribute the mean ranks with intervals, each method's probability of being
  best, the Holm-adjusted paired p-values, every criterion with its interval, the smallest detectable differences and
  the warnings (:mod:`stages.reporting.ranking`);
- ``reports/REPRODUCTION.md`` and ``reports/reproduction.json``: the papers' claims, ours with intervals, the rules
  and the verdicts (:mod:`stages.reporting.reproduction`);
- ``reports/summary.md``: the rankings (groups, intervals, detectable differences, warnings) in Markdown;
- ``reports/report.html``, one self-contained page made for looking, in this order: a short header; the edits side
  by side (per attribute the same held-out faces edited by every method, α across, methods best rank first with
  their rank group, the re-labeled target score under each face; composed from the evaluate stage's traversal grids
  and per-sample records, never re-synthesized: :mod:`stages.reporting.comparison`); the ranking (tables, rank
  intervals, per-α curves with interval bands and the legend beside them); the geometry (cosines across methods, the
  labels' correlation, each method's own cosines folded); the reproduction; each method's fit statistics (folded).
  Faces are JPEG strips, plots palette PNGs, all embedded as base64 (no script, no URL: it opens offline and can be
  mailed; the default run's page is about 2 MB). Tables print integers as integers, other numbers with 3 decimals.

Every interval comes from the per-sample records the evaluations wrote (``metrics/<method>.samples.parquet``),
resampled with the same seeded bootstrap (``eval.seed``, ``eval.bootstrap_resamples``) for every method: every method
is judged on the same held-out latents, so comparisons are paired.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

import stages.reporting.figures as figures
from latentatlas import dataset
from latentatlas.atomic import atomic_write_bytes, atomic_write_json
from latentatlas.errors import LatentAtlasError
from latentatlas.layout import OutputLayout
from latentatlas.params import Params
from stages.latent.directions import DirectionSet, select_directions
from stages.reporting.claims import PaperSection
from stages.reporting.comparison import ComparisonError, comparison_html
from stages.reporting.page import STYLE, folded, table_html
from stages.reporting.ranking import CRITERIA, AttributeRanking, headline, rank_attribute
from stages.reporting.reproduction import (
    Entry,
    RunInputs,
    build_reproduction,
    render_html,
    render_markdown,
    reproduction_record,
)
from stages.reporting.samples import EvaluationDraws, EvaluationRecord
from stages.reporting.statistics import LEVEL, POWER, resample_weights


class ReportError(LatentAtlasError, ValueError):
    """A method's metrics, per-sample record or directions are missing, or the methods were not judged on the same
    held-out samples."""


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report reads: per method its details, curves, directions and per-sample draws (on one shared
    set of bootstrap resamples), and the labeled data's attribute correlation."""

    methods: list[str]
    details: dict[str, dict[str, Any]]
    curves: dict[str, list[dict]]
    directions: dict[str, DirectionSet]
    draws: dict[str, EvaluationDraws]
    label_correlation: pd.DataFrame
    n_labeled: int
    latent_spaces: list[str]

    @property
    def n_heldout(self) -> int:
        """Held-out samples every method was judged on (the same for all: checked when the draws load)."""
        return next(iter(self.draws.values())).record.n_samples


def load_metrics(methods: list[str], layout: OutputLayout) -> dict[str, dict[str, Any]]:
    """Each method's evaluation details (``metrics/<method>.details.json``)."""
    loaded = {}
    for method in methods:
        path = layout.metric_details(method)
        if not path.is_file():
            raise ReportError(f"{path}: missing; run the evaluate stage for {method!r} first (`dvc repro`)")
        loaded[method] = json.loads(path.read_text())
    return loaded


def load_draws(methods: list[str], layout: OutputLayout, resamples: int, seed: int) -> dict[str, EvaluationDraws]:
    """Each method's per-sample record with its draws, all on the same bootstrap resamples of the same held-out
    samples (paired)."""
    records = {}
    for method in methods:
        try:
            records[method] = EvaluationRecord.load(layout.metric_samples(method), layout.metric_ppl_terms(method))
        except LatentAtlasError as error:
            raise ReportError(f"{method}: {error}") from None
    first = next(iter(records.values()))
    for method, record in records.items():
        if not np.array_equal(record.sample_ids, first.sample_ids):
            raise ReportError(
                f"{method} was evaluated on other held-out samples than {methods[0]} "
                f"({record.n_samples} vs {first.n_samples}): rerun its evaluation with this eval section"
            )
    weights = resample_weights(first.n_samples, resamples, seed)
    return {method: EvaluationDraws(record, resamples, seed, weights) for method, record in records.items()}


def load_inputs(params: Params, data_dir: Path, methods: list[str], layout: OutputLayout) -> ReportInputs:
    """Read every method's outputs and the labeled data (see :class:`ReportInputs`)."""
    details = load_metrics(methods, layout)
    curves = {m: json.loads(layout.metric_curves(m).read_text()) for m in methods}
    directions = {m: DirectionSet.load(layout.directions(m)) for m in methods}
    draws = load_draws(methods, layout, params.eval.bootstrap_resamples, params.eval.seed)
    with dataset.open(data_dir) as data:
        names = data.attributes
        _, scores = data.arrays(names)
        correlation = pd.DataFrame(np.corrcoef(scores.T), index=names, columns=names)
        return ReportInputs(methods, details, curves, directions, draws, correlation, data.n_samples, list(data.spaces))


def rank_methods(inputs: ReportInputs, min_fit_r2: float | None) -> dict[str, AttributeRanking]:
    """Per evaluated attribute, the ranking of the methods that evaluated it."""
    attributes = sorted({a for details in inputs.details.values() for a in details["directions"]})
    return {attribute: rank_attribute(attribute, inputs.draws, inputs.details, min_fit_r2) for attribute in attributes}


def write_rankings(
    rankings: dict[str, AttributeRanking], inputs: ReportInputs, params: Params, layout: OutputLayout
) -> None:
    """``reports/ranking.json`` (headline) and ``reports/ranking.details.json``."""
    atomic_write_json(layout.ranking_metrics(), headline(rankings))
    atomic_write_json(
        layout.ranking_details(),
        {
            "level": LEVEL,
            "power": POWER,
            "resamples": params.eval.bootstrap_resamples,
            "seed": params.eval.seed,
            "n_heldout": inputs.n_heldout,
            "attributes": {attribute: ranking.to_json() for attribute, ranking in rankings.items()},
        },
    )


def reproduction(params: Params, inputs: ReportInputs) -> tuple[list[PaperSection], str]:
    """The papers' sections and the header that says what they were measured on."""
    entries = {
        m: Entry(
            name=m,
            base_method=params.fit.base_method(m),
            directions=inputs.directions[m],
            details=inputs.details[m],
            draws=inputs.draws[m],
        )
        for m in inputs.methods
    }
    run = RunInputs(
        entries,
        inputs.label_correlation,
        inputs.n_labeled,
        inputs.latent_spaces,
        params.report.reference_attribute,
        params.eval.bootstrap_resamples,
        params.eval.seed,
    )
    header = (
        f"Measured on generator {params.generator.name!r}, labeler {params.label.labeler!r}, "
        f"{inputs.n_labeled} fit samples, {params.eval.n_samples} held-out samples per direction, "
        f"α ∈ {params.eval.alphas}. Every claim is judged by a rule fixed in advance "
        f"(stages/reporting/reproduction.py): the direction of the relation, the minimum effect it needs and "
        f"a 95 % interval that must exclude no effect; yes / no / inconclusive (interval too wide to tell) / "
        f"n/a (not measurable here). Where a relation fails, the note says why it may (different GAN, "
        f"labelers, scale)."
    )
    return build_reproduction(run), header


def write_reproduction(sections: list[PaperSection], header: str, layout: OutputLayout) -> None:
    atomic_write_bytes(layout.reproduction_markdown(), render_markdown(sections, header).encode())
    atomic_write_json(layout.reproduction_json(), reproduction_record(sections, header))


# ---------------------------------------------------------------------------------------------- content blocks


def space_label(method_metrics: dict[str, Any]) -> str:
    """Where a method's edits were made: ``z``, ``w``, or ``w+ layers [a, b)``."""
    space, layers = method_metrics.get("space", "z"), method_metrics.get("layers")
    return f"w+ layers [{layers[0]}, {layers[1]})" if layers else space


def how_to_read(params: Params) -> str:
    """What the ranking tables mean (plain text, one paragraph)."""
    return (
        f"Every number carries its {LEVEL:.0%} interval [low, high]: a bootstrap over the "
        f"{params.eval.n_samples} held-out samples ({params.eval.bootstrap_resamples} resamples seeded from "
        f"eval.seed {params.eval.seed}; 'moved the intended way' is exact, Clopper–Pearson). Every method is "
        f"judged on the same held-out latents, so comparisons are paired. Mean rank (lower is better) = mean rank "
        f"of effect ↑, entanglement per unit effect ↓ and LPIPS per unit effect ↓ (effect and entanglement in "
        f"standard deviations of the labeled data). Two methods are in different groups only when every method "
        f"of the better group ranks significantly before every method of the worse one (paired bootstrap, "
        f"Holm-corrected over all pairs of the attribute, 5 %); group 1 is the best group. P(best): share of "
        f"resamples in which the method has the lowest mean rank. A direction whose own fit explains less than "
        f"R² = {params.report.min_fit_r2:g} of its attribute (held-out) ranks after every direction that fits "
        f"(column 'fit')."
    )


def detectable_line(ranking: AttributeRanking, n_heldout: int) -> str:
    """The smallest differences this run could have detected for one attribute, in words."""
    parts = ", ".join(
        f"{label} {ranking.detectable[label]:.3g}" for label, _ in CRITERIA if np.isfinite(ranking.detectable[label])
    )
    pairs = sum(ranking.fits.values()) * (sum(ranking.fits.values()) - 1) // 2
    return (
        f"Smallest difference this run could detect ({POWER:.0%} power, {pairs} Holm-corrected pairs, "
        f"{n_heldout} held-out samples): {parts or '–'}."
    )


def best_line(ranking: AttributeRanking) -> str:
    return f"Best group: {', '.join(ranking.best_group)}."


def summary_markdown(
    params: Params, inputs: ReportInputs, rankings: dict[str, AttributeRanking], sections: list[PaperSection]
) -> str:
    """``reports/summary.md``: what was measured, how to read it, and per attribute the ranking with intervals,
    groups, the detectable differences and any warning; then the reproduction's verdicts."""
    lines = [
        "# latentatlas report",
        "",
        f"Methods: {', '.join(inputs.methods)}. Held-out samples per direction: {inputs.n_heldout}; "
        f"α ∈ {params.eval.alphas}.",
        "",
        how_to_read(params),
        "",
        "Edits were made in: " + "; ".join(f"{m}: {space_label(inputs.details[m])}" for m in inputs.methods) + ".",
        "",
    ]
    warnings = [ranking.warning for ranking in rankings.values() if ranking.warning]
    if warnings:
        lines += ["**Warnings**", ""] + [f"- {warning}" for warning in warnings] + [""]
    for attribute, ranking in rankings.items():
        lines += [
            f"## {attribute}",
            "",
            best_line(ranking) + " " + detectable_line(ranking, inputs.n_heldout),
            "",
            ranking.display_table().to_markdown(),
            "",
        ]
    verdicts = [(claim.id, claim.verdict) for section in sections for claim in section.claims]
    lines += ["## Reproduction", "", "See REPRODUCTION.md: " + ", ".join(f"{id_} **{v}**" for id_, v in verdicts), ""]
    return "\n".join(lines)


def comparison_section(inputs: ReportInputs, rankings: dict[str, AttributeRanking], layout: OutputLayout) -> str:
    """The page's first section: per attribute the same held-out faces edited by every method, side by side
    (:mod:`stages.reporting.comparison`)."""
    records = {m: inputs.draws[m].record for m in inputs.methods}
    spaces = {m: space_label(inputs.details[m]) for m in inputs.methods}
    attributes = []
    for ranking in rankings.values():
        missing = [m for m in inputs.methods if m not in ranking.methods]
        try:
            attributes.append(comparison_html(ranking, layout, records, spaces, missing))
        except ComparisonError as error:
            raise ReportError(str(error)) from None
    return (
        "<h2 id='comparison'>The edits side by side</h2><p class='note'>Per attribute, the same held-out faces "
        "(never used for fitting) edited by every method, α from left to right (α = 0: the unedited face); "
        "methods best rank first, with their rank group (below). The number under each face is its target "
        "attribute re-labeled after the edit.</p>" + "".join(attributes)
    )


def ranking_html(rankings: dict[str, AttributeRanking], inputs: ReportInputs) -> list[str]:
    """Per attribute: heading, best group, detectable differences, warning, the table, rank intervals and curves."""
    sections = []
    for attribute, ranking in rankings.items():
        warning = f"<p class='warning'>⚠ {html.escape(ranking.warning)}</p>" if ranking.warning else ""
        sections.append(
            f"<h3 id='ranking-{html.escape(attribute)}'>{html.escape(attribute)}</h3>"
            f"<p>{html.escape(best_line(ranking))} {html.escape(detectable_line(ranking, inputs.n_heldout))}</p>"
            f"{warning}"
            + table_html(ranking.display_table(), classes="ranking")
            + "<div class='figures'>"
            + figures.img(figures.rank_intervals(ranking), f"rank intervals {attribute}")
            + figures.img(figures.curves(inputs.curves, attribute), f"curves {attribute}")
            + "</div>"
        )
    return sections


def correlation_half_width(n_samples: int, level: float = LEVEL) -> float:
    """The widest half-width of a Pearson correlation's ``level`` interval over ``n_samples`` pairs (Fisher z; the
    widest is at r = 0: tanh(z_(1+level)/2 / √(n − 3)))."""
    if n_samples <= 3:
        return float("nan")
    return float(np.tanh(NormalDist().inv_cdf(0.5 + level / 2) / np.sqrt(n_samples - 3)))


def geometry_html(inputs: ReportInputs, attributes: list[str]) -> list[str]:
    """Cosine heatmaps across methods (per attribute) and within each method (folded), and the labels'
    correlation."""
    selected = {
        m: select_directions(
            inputs.directions[m], [a for a in attributes if a in inputs.details[m]["directions"]], allow_missing=True
        )
        for m in inputs.methods
    }
    across = []
    if len(inputs.methods) > 1:
        for attribute in attributes:
            having = [m for m in inputs.methods if attribute in selected[m]]
            vectors = np.stack([selected[m][attribute][0] for m in having])
            across.append(
                figures.img(
                    figures.heatmap(vectors @ vectors.T, having, f"{attribute}: cosine across methods"),
                    f"across methods {attribute}",
                )
            )
    within = []
    for method in inputs.methods:
        names = list(selected[method])
        if len(names) > 1:
            vectors = np.stack([selected[method][a][0] for a in names])
            within.append(
                figures.img(
                    figures.heatmap(vectors @ vectors.T, names, f"{method}: cosine between directions"),
                    f"cosine {method}",
                )
            )
    names = list(inputs.label_correlation.index)
    correlation = figures.img(
        figures.heatmap(
            inputs.label_correlation.to_numpy(),
            names,
            f"Pearson correlation of the labels (N = {inputs.n_labeled} synthesized samples)",
        ),
        "attribute correlation",
    )
    sections = [
        "<h2 id='geometry'>Geometry</h2><p class='note'>Cosines between fitted unit directions are exact for these "
        "fits: no held-out sampling lies behind them, so they carry no interval (how they move with other fitting "
        "samples is not measured here). Every label correlation is within "
        f"±{correlation_half_width(inputs.n_labeled):.3f} of its true value (95 %, Fisher z, N = "
        f"{inputs.n_labeled}): too little to draw.</p>",
        f"<div class='figures'>{''.join(across)}{correlation}</div>",
    ]
    if within:
        sections.append(
            folded(
                f"Cosine between each method's directions ({len(within)} methods)",
                f"<div class='figures'>{''.join(within)}</div>",
            )
        )
    return sections


def fit_statistics_html(inputs: ReportInputs) -> list[str]:
    """Each method's own fit statistics per attribute, folded (one block per method)."""
    sections = [
        "<h2 id='fit-statistics'>Fit statistics (from each method)</h2><p class='note'>What each method reported "
        "about its own fit (counts, accuracies, R², losses), per attribute, on its own fitting data: diagnostics, "
        "not evaluations, so no interval; every evaluated number, with its interval, is in the ranking.</p>"
    ]
    for method in inputs.methods:
        stats = {attribute: entry.get("fit", {}) for attribute, entry in inputs.details[method]["directions"].items()}
        scalars = {
            attribute: {k: v for k, v in s.items() if isinstance(v, (int, float)) or v is None}
            for attribute, s in stats.items()
        }
        columns = list(dict.fromkeys(key for values in scalars.values() for key in values))
        flat = pd.DataFrame(  # built cell by cell: a count missing for one attribute keeps the others integers
            [[values.get(key) for key in columns] for values in scalars.values()],
            index=list(scalars),
            columns=columns,
            dtype=object,
        )
        if not flat.empty:
            sections.append(folded(f"{method} ({len(flat)} attributes)", table_html(flat)))
    return sections


def report_html(
    params: Params,
    inputs: ReportInputs,
    rankings: dict[str, AttributeRanking],
    sections: list[PaperSection],
    header: str,
    layout: OutputLayout,
) -> str:
    """The whole self-contained page: a short header, the edits side by side, the ranking, then geometry,
    reproduction and the fit statistics (folded)."""
    methods = inputs.methods
    navigation = " ".join(
        f"<a href='#{anchor}'>{title}</a>"
        for anchor, title in (
            ("comparison", "Edits side by side"),
            ("ranking", "Ranking"),
            ("geometry", "Geometry"),
            ("reproduction", "Reproduction"),
            ("fit-statistics", "Fit statistics"),
        )
    )
    parts = [
        f"<h1>latentatlas report</h1><p class='lead'>Generator {html.escape(params.generator.name)}, labeler "
        f"{html.escape(params.label.labeler)}; {len(methods)} methods fitted on {inputs.n_labeled} labeled "
        f"samples, each judged on the same {inputs.n_heldout} held-out latents, α ∈ {params.eval.alphas}.</p>"
        f"<nav>{navigation}</nav>",
        comparison_section(inputs, rankings, layout),
        f"<h2 id='ranking'>Ranking per attribute</h2><p>{html.escape(how_to_read(params))}</p><p class='note'>"
        "Edits were made in: "
        + html.escape("; ".join(f"{m}: {space_label(inputs.details[m])}" for m in methods))
        + ".</p>",
        *ranking_html(rankings, inputs),
        *geometry_html(inputs, list(rankings)),
        render_html(sections, header),
        *fit_statistics_html(inputs),
    ]
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>latentatlas report</title>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )


def build_report(params: Params, data_dir: Path, methods: list[str], layout: OutputLayout = OutputLayout()) -> None:
    """Write the rankings, the reproduction, the Markdown summary and the HTML page for ``methods`` (every fitted
    entry: methods and variants; output paths from ``layout``)."""
    inputs = load_inputs(params, data_dir, methods, layout)
    rankings = rank_methods(inputs, params.report.min_fit_r2)
    write_rankings(rankings, inputs, params, layout)
    sections, header = reproduction(params, inputs)
    write_reproduction(sections, header, layout)
    atomic_write_bytes(layout.report_markdown(), summary_markdown(params, inputs, rankings, sections).encode())
    atomic_write_bytes(layout.report_html(), report_html(params, inputs, rankings, sections, header, layout).encode())
