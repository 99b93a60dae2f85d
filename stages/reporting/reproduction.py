"""The papers' findings, measured on this run: for each paper its claims, the paper's number, ours with its 95 %
interval, the rule that judges the relation and the verdict (:mod:`stages.reporting.claims`: yes / no / inconclusive,
n/a when not measurable).

Every number of ours comes from the run's fitted directions (``directions/<entry>/``) and their held-out evaluation
(``metrics/<entry>.details.json`` and the per-sample record beside it); the papers' numbers are transcribed from their
tables (:data:`PAPER_TABLES`). Each claim's rule (direction of the relation, minimum effect, no-effect value) is fixed
in :data:`PAPERS` before any run, never tuned to make a claim hold; a relation that fails here is reported as failing,
with the reasons it may (different GAN, labelers, scale) in its note.

One structure serves every paper (:class:`Paper`): what its claims need from the run (``context``: the entries it
compares, or why the run cannot), its claims (:class:`ClaimSpec`: id, text, the paper's value, rules, a measurement)
and its tables; :func:`reproduce` is the one skeleton that turns a paper and a run into a :class:`PaperSection`.

Intervals: held-out metrics (entanglement, effect, conditional change, collateral per unit effect, PPL) are
bootstrapped over the held-out samples with the same resamples for every entry (paired); accuracies and RCA are exact
binomial shares (Clopper–Pearson; Newcombe's interval for a difference of two); label correlations use Fisher's z.
Quantities of the fitted directions themselves (cosines, separability scores) have no per-sample record: their
interval is a bootstrap over the attributes they are averaged over, and says so.

Papers (cited by title and authors):

- Pham Van et al., "Interpreting the Latent Space of Generative Adversarial Networks using Supervised Learning":
  the orthogonality penalty's cosine table (Table III) and re-scoring of one attribute's edit (Table II), from a
  λ = 0 ``ortho-linear`` entry beside a λ > 0 one (``fit.variants``).
- Shen, Gu, Tang & Zhou, "Interpreting the Latent Space of GANs for Semantic Face Editing" (InterFaceGAN):
  boundary validation accuracy, boundary cosines against the labels' correlation, conditional manipulation.
- Mao, Lou & Yuan, "TunaGAN: Interpretable GAN for Smart Editing": separability score (Table 1), nonlinear vs
  linear and W vs Z, and nonlinear (gradient-path) edits against linear ones.
- Lu, Lee, Tseng & Yang, "Unsupervised Discovery of Disentangled Manifolds in GANs": RCA and PPL of the centroid
  method against the baseline of Voynov & Babenko, "Unsupervised Discovery of Interpretable Directions in the GAN
  Latent Space" (Table 1).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from stages.latent.directions import DirectionSet
from stages.reporting.claims import Claim, Measurement, Missing, PaperSection, Part, Rule
from stages.reporting.page import table_html
from stages.reporting.samples import EvaluationDraws
from stages.reporting.statistics import (
    Estimate,
    clopper_pearson,
    correlation_interval,
    difference_of_shares,
    resample_weights,
)

PHAM_VAN = (
    'Pham Van et al., "Interpreting the Latent Space of Generative Adversarial Networks using Supervised Learning"'
)
INTERFACEGAN = 'Shen, Gu, Tang & Zhou, "Interpreting the Latent Space of GANs for Semantic Face Editing" (InterFaceGAN)'
TUNAGAN = 'Mao, Lou & Yuan, "TunaGAN: Interpretable GAN for Smart Editing"'
LU = 'Lu, Lee, Tseng & Yang, "Unsupervised Discovery of Disentangled Manifolds in GANs"'

#: Transcribed from the papers (inputs to the comparison, not results of ours).
PAPER_TABLES: dict[str, pd.DataFrame] = {
    # Pham Van et al., Table III: cos(Young, attribute) without / with the penalty (λ = 2).
    "pham_van_table_iii": pd.DataFrame(
        {
            "without": [
                0.859559,
                0.795307,
                0.791769,
                0.599438,
                0.542247,
                0.513396,
                0.453567,
                0.430066,
                0.413676,
                -0.786877,
                -0.769961,
                -0.754783,
                -0.749704,
                -0.734693,
                -0.669467,
                -0.585021,
                -0.523914,
                -0.495711,
            ],
            "with": [
                0.313507,
                -0.002151,
                0.282624,
                0.262185,
                -0.000376,
                0.042719,
                -0.017463,
                0.036656,
                0.022878,
                0.019917,
                0.039103,
                0.015170,
                0.014643,
                0.034192,
                0.038437,
                0.042678,
                0.009939,
                0.038485,
            ],
        },
        index=[
            "Attractive",
            "HeavyMakeup",
            "Lipstick",
            "NoBeard",
            "BigLips",
            "ArchedEyebrows",
            "OvalFace",
            "WavyHair",
            "PointyNose",
            "DoubleChin",
            "Male",
            "BagsUnderEyes",
            "GrayHair",
            "BigNose",
            "WearingTie",
            "Bald",
            "RecedingHairline",
            "Goatee",
        ],
    ),
    # Pham Van et al., Table II: increasing Young; abs. change of the other attributes' classifier scores.
    "pham_van_table_ii": pd.DataFrame(
        {
            "abs_diff_no_reg": [
                0.999401,
                0.998050,
                0.997815,
                0.783849,
                0.754571,
                0.752356,
                0.688344,
                0.676984,
                0.607690,
                0.541111,
                0.539525,
                0.374099,
                0.324246,
            ],
            "abs_diff_reg": [
                0.002541,
                0.007879,
                0.012769,
                0.058051,
                0.110794,
                0.071713,
                0.015950,
                0.107190,
                0.194136,
                0.290538,
                0.011577,
                0.024169,
                0.095482,
            ],
        },
        index=[
            "Male",
            "Makeup",
            "Lipstick",
            "Earrings",
            "BagsUnderEyes",
            "WavyHair",
            "5oClockShadow",
            "BigNose",
            "OvalFace",
            "DoubleChin",
            "BushyEyebrows",
            "ArchedEyebrows",
            "NarrowEyes",
        ],
    ),
    # InterFaceGAN (PGGAN on CelebA-HQ): boundary cosines and the labels' Pearson correlation (upper triangles).
    "interfacegan_cosines": pd.DataFrame(
        {
            "cosine": [-0.04, -0.06, -0.05, -0.04, 0.04, -0.10, -0.05, 0.49, 0.38, 0.52],
            "pearson": [-0.01, -0.01, -0.02, 0.00, 0.02, -0.08, -0.01, 0.42, 0.35, 0.47],
        },
        index=[
            "pose/smile",
            "pose/age",
            "pose/gender",
            "pose/glasses",
            "smile/age",
            "smile/gender",
            "smile/glasses",
            "age/gender",
            "age/glasses",
            "gender/glasses",
        ],
    ),
    # TunaGAN, Table 1: separability score exp(H(Y|Ŷ)) (lower = more separable).
    "tunagan_table_1": pd.DataFrame(
        {
            "Gender": [2.2057, 1.8984, 1.6361, 1.3079],
            "Beard": [1.3243, 1.2921, 1.0979, 1.1335],
            "Glasses": [1.8572, 1.5709, 1.3946, 1.1384],
            "Overall": [5.4249, 3.8533, 2.5051, 1.6877],
        },
        index=["linear z", "linear w", "nonlinear z", "nonlinear w"],
    ),
    # Lu et al., Table 1: RCA (↑) and PPL (↓); the baseline is Voynov & Babenko's method.
    "lu_table_1": pd.DataFrame(
        {
            "Anime RCA": [0.77, 0.80, 0.78],
            "Anime PPL": [179.23, 175.32, 99.78],
            "ILSVRC RCA": [0.84, 0.86, 0.85],
            "ILSVRC PPL": [207.35, 191.34, 185.23],
            "FFHQ RCA": [0.84, 0.83, 0.82],
            "FFHQ PPL": [412.40, 408.75, 402.64],
        },
        index=["baseline (Voynov & Babenko)", "w/o centroid loss", "with centroid loss (Lu et al.)"],
    ),
}

#: Bootstraps over attributes (quantities of the fitted directions) use their own resample stream.
ATTRIBUTES_STREAM = 2
#: Fewer attributes than this give no interval from a bootstrap over attributes.
MIN_ATTRIBUTES = 3

# The rules, fixed before any run (see stages/reporting/claims.py for how a rule turns into a verdict).
HALVES = Rule(
    "mean |cos| with the penalty / without",
    "below",
    0.5,
    1.0,
    "the claim: 'much less similar'; Table III: 0.64 → 0.07 (ratio 0.11)",
)
COLLATERAL = Rule(
    "entanglement with the penalty / without",
    "below",
    0.75,
    1.0,
    "the claim: 'changes the others less'; Table II: mean |Δ| 0.70 → 0.08 (ratio 0.11)",
)
OWN_EFFECT = Rule(
    "own effect with the penalty / without",
    "above",
    0.5,
    0.0,
    "the claim: 'still edits'; Table II: Young +0.38 (λ = 0) and +0.28 (λ = 2), ratio 0.75",
)
VAL_ACCURACY = Rule("validation accuracy", "above", 0.95, 0.5, "InterFaceGAN: > 95 % (0.5 is chance)")
REST_ACCURACY = Rule("rest-of-data accuracy", "above", 0.75, 0.5, "InterFaceGAN: > 75 % (0.5 is chance)")
COSINE_GAP = Rule(
    "largest |cos(boundaries) − ρ(labels)|", "below", 0.10, 0.10, "the paper's largest gap is 0.07 over 10 pairs"
)
HELD = Rule(
    "conditioned attribute's change, conditional / plain",
    "below",
    0.75,
    1.0,
    "the claim: the conditioned attribute is held; a reduction of at least 25 %",
)
PRIMAL = Rule(
    "primal attribute's effect, conditional / plain",
    "above",
    0.5,
    0.0,
    "the claim: while still editing the primal attribute; at least half its plain effect",
)
NONLINEAR_SEPARABILITY = Rule(
    "SS nonlinear / linear (geometric mean over attributes)",
    "below",
    0.9,
    1.0,
    "Table 1: geometric means 0.77 (Z), 0.76 (W), per attribute 0.69–0.88 (SS ≥ 1 compresses ratios); at least 10 %",
)
W_SEPARABILITY = Rule(
    "SS in W / in Z (geometric mean over attributes)",
    "below",
    0.9,
    1.0,
    "Table 1: geometric means 0.89 (linear), 0.88 (nonlinear), per attribute 0.80–1.03; at least 10 %",
)
NONLINEAR_EDITS = Rule(
    "entanglement per unit effect, nonlinear / linear",
    "below",
    0.75,
    1.0,
    "the paper judges by eye (Fig. 8); a reduction of at least 25 %",
)
RCA_KEPT = Rule("RCA with the centroid loss − baseline", "above", -0.03, -0.03, "Table 1: the largest drop is 0.02")
PPL_LOWER = Rule(
    "PPL with the centroid loss / baseline",
    "below",
    0.9,
    1.0,
    "Table 1: ratios 0.56 (Anime), 0.89 (ILSVRC), 0.98 (FFHQ); at least the median's 10 %",
)


@dataclass(frozen=True)
class Entry:
    """One fitted and evaluated directions set: its name, the method that fitted it, its directions, its evaluation
    details (``metrics/<name>.details.json``) and the draws of its per-sample record (None: no record)."""

    name: str
    base_method: str
    directions: DirectionSet
    details: dict[str, Any]
    draws: EvaluationDraws | None = None

    @property
    def fit_params(self) -> dict[str, Any]:
        return self.directions.meta.get("params", {})


@dataclass(frozen=True)
class RunInputs:
    """What the reproduction reads from a run.

    Attributes:
        entries: every evaluated directions set by name (their draws on the same held-out resamples).
        label_correlation: (A, A) Pearson correlation of the labels on the synthesized data, indexed by attribute.
        n_labeled: how many samples that correlation is computed on.
        latent_spaces: the latent spaces the data holds (``["z"]``, or ``["z", "w"]`` for a generator with W).
        reference_attribute: the attribute whose edit the orthogonality tables follow (None: the first evaluated).
        resamples, seed: the bootstrap's (``eval.bootstrap_resamples``, ``eval.seed``).
    """

    entries: dict[str, Entry]
    label_correlation: pd.DataFrame
    n_labeled: int
    latent_spaces: list[str]
    reference_attribute: str | None = None
    resamples: int = 10000
    seed: int = 0


@dataclass(frozen=True)
class ClaimSpec:
    """A claim as fixed in advance: id, text, the paper's value, its rules, and how to measure it from a paper's
    context (a :class:`Measurement`, or :class:`Missing` when this run cannot)."""

    id: str
    text: str
    paper_value: str
    rules: tuple[Rule, ...]
    measure: Callable[[Any], Measurement | Missing]

    def claim(self, paper: str, measured: Measurement | Missing) -> Claim:
        if isinstance(measured, Missing):
            return Claim(self.id, paper, self.text, self.paper_value, self.rules, note=measured.needs)
        return Claim(
            self.id,
            paper,
            self.text,
            self.paper_value,
            self.rules,
            measured.parts,
            measured.ours,
            measured.interval,
            measured.note,
        )


@dataclass(frozen=True)
class Paper:
    """A paper's reproduction: its citation and method summary; ``context`` picks what its claims compare from the
    run (or says why it cannot: :class:`Missing`); its claims; ``tables`` of ours from the context; the paper's own
    tables (title, :data:`PAPER_TABLES` key), always shown."""

    citation: str
    summary: str
    context: Callable[[RunInputs], Any]
    claims: tuple[ClaimSpec, ...]
    tables: Callable[[Any], list[tuple[str, pd.DataFrame]]]
    paper_tables: tuple[tuple[str, str], ...] = ()


def reproduce(paper: Paper, inputs: RunInputs) -> PaperSection:
    """The one skeleton: the paper's context, its tables, every claim measured and judged by its rules."""
    section = PaperSection(paper.citation, paper.summary)
    context = paper.context(inputs)
    if not isinstance(context, Missing):
        section.tables.extend(paper.tables(context))
    section.tables.extend((title, PAPER_TABLES[key]) for title, key in paper.paper_tables)
    for spec in paper.claims:
        section.claims.append(
            spec.claim(paper.citation, context if isinstance(context, Missing) else spec.measure(context))
        )
    return section


# ------------------------------------------------------------------------------------------------------ helpers


def _fmt(value: Any, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def _with_interval(value: Any, interval: list[float | None] | None, digits: int = 3) -> str:
    """``value [low, high]`` from a details number and its ``ci95`` entry."""
    if value is None or not np.isfinite(value):
        return "–"
    if not interval or interval[0] is None or interval[1] is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def _by_base(entries: dict[str, Entry], *bases: str) -> list[Entry]:
    return [entry for entry in entries.values() if entry.base_method in bases]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(numerator, dtype=np.float64) / np.asarray(denominator, dtype=np.float64)


def _over_attributes(values: np.ndarray, inputs: RunInputs, log: bool = False) -> Estimate:
    """The mean of per-attribute values (geometric with ``log``: values are log-ratios) with a bootstrap interval
    over the attributes (none below :data:`MIN_ATTRIBUTES`)."""
    values = np.asarray(values, dtype=np.float64)
    draws = resample_weights(len(values), inputs.resamples, inputs.seed, ATTRIBUTES_STREAM) @ values
    draws = np.exp(draws) if log else draws
    estimate = Estimate.from_draws(draws)
    return estimate if len(values) >= MIN_ATTRIBUTES else Estimate(estimate.value, np.nan, np.nan)


def _needs_records(*entries: Entry) -> Missing | None:
    missing = [entry.name for entry in entries if entry.draws is None]
    return (
        Missing(f"needs the per-sample records of {missing} (metrics/<entry>.samples.parquet: rerun evaluate)")
        if missing
        else None
    )


HELD_OUT = "paired bootstrap over the held-out samples (the same resamples for every entry)"
OVER_ATTRIBUTES = (
    "bootstrap over the attributes it averages (a quantity of the fitted directions: no per-sample record)"
)


# ------------------------------------------------------------------------------------------------ Pham Van et al.


@dataclass(frozen=True)
class OrthoPair:
    """A λ = 0 ortho-linear entry beside a λ > 0 one, and the reference attribute whose edit the tables follow."""

    base: Entry
    reg: Entry
    reference: str
    common: list[str]
    inputs: RunInputs

    @property
    def others(self) -> list[str]:
        return [name for name in self.common if name != self.reference]

    def label(self, entry: Entry) -> str:
        return f"λ={float(entry.fit_params['lam']):g} ({entry.name})"

    def cosines(self, entry: Entry) -> pd.DataFrame:
        names = entry.directions.names
        return pd.DataFrame(entry.directions.cosine_similarity(), index=names, columns=names).loc[
            self.common, self.common
        ]


def _ortho_pair(inputs: RunInputs) -> OrthoPair | Missing:
    ortho = _by_base(inputs.entries, "ortho-linear")
    baselines = [e for e in ortho if float(e.fit_params.get("lam", -1)) == 0.0]
    regularised = [e for e in ortho if float(e.fit_params.get("lam", 0)) > 0.0]
    if not baselines or not regularised:
        return Missing(
            "needs an ortho-linear entry with lam: 0 beside one with lam > 0, e.g. fit.variants: "
            "{ortho-linear-noreg: {method: ortho-linear, lam: 0.0}}"
        )
    base, reg = baselines[0], regularised[0]
    common = [n for n in base.directions.names if n in reg.directions.names]
    evaluated = [a for a in base.details["directions"] if a in reg.details["directions"] and a in common]
    if not evaluated:
        return Missing("the λ = 0 and λ > 0 entries share no evaluated attribute")
    reference = inputs.reference_attribute if inputs.reference_attribute in evaluated else evaluated[0]
    return OrthoPair(base, reg, reference, common, inputs)


def _pham_van_tables(pair: OrthoPair) -> list[tuple[str, pd.DataFrame]]:
    base_label, reg_label, ref = pair.label(pair.base), pair.label(pair.reg), pair.reference
    cos_base, cos_reg = pair.cosines(pair.base), pair.cosines(pair.reg)
    table_iii = pd.DataFrame({base_label: cos_base.loc[ref, pair.others], reg_label: cos_reg.loc[ref, pair.others]})
    table_iii = table_iii.sort_values(base_label, ascending=False)
    off = ~np.eye(len(pair.common), dtype=bool)
    table_iii.loc["mean |cos| (these rows)"] = table_iii.abs().mean()
    table_iii.loc["mean |cos| (all pairs)"] = [
        np.abs(cos_base.to_numpy()[off]).mean(),
        np.abs(cos_reg.to_numpy()[off]).mean(),
    ]
    rows = {}
    base_cells = pair.base.details["directions"][ref].get("table_ii", {})
    reg_cells = pair.reg.details["directions"][ref].get("table_ii", {})
    for other, cell in base_cells.items():
        reg_cell = reg_cells.get(other)
        if reg_cell is None:
            continue
        rows[other] = {
            "original": cell["original"],
            f"edited, {base_label}": cell["edited_plus"],
            f"|Δ|, {base_label}": _with_interval(cell["mean_abs_change"], cell.get("ci95", {}).get("mean_abs_change")),
            f"edited, {reg_label}": reg_cell["edited_plus"],
            f"|Δ|, {reg_label}": _with_interval(
                reg_cell["mean_abs_change"], reg_cell.get("ci95", {}).get("mean_abs_change")
            ),
            "_order": cell["mean_abs_change"],
        }
    table_ii = pd.DataFrame.from_dict(rows, orient="index")
    if not table_ii.empty:
        table_ii = table_ii.sort_values("_order", ascending=False).drop(columns="_order")
    fit = pd.DataFrame(
        {
            f"R² {split}, {pair.label(entry)}": {a: entry.directions.stats.get(a, {}).get(key) for a in pair.common}
            for entry in (pair.base, pair.reg)
            for split, key in (("train", "r2_train"), ("held-out", "r2_val"))
        },
        dtype=float,
    )
    return [
        (f"Table III: cosine between {ref!r} and every other direction", table_iii),
        (
            f"Table II: editing {ref!r} (+α_max), re-labeled scores of the other attributes; |Δ| = mean over "
            f"held-out samples of |edited − original| at ±α_max, in each attribute's units, with its 95 % interval",
            table_ii,
        ),
        ("Fit of the linear map (R², original units; the paper reports none)", fit),
    ]


PHAM_VAN_SCALE = (
    "The paper: PGGAN (z ∈ R⁵¹²), 40 CelebA attributes from one ResNet classifier, N = 3000; ours: "
    "this run's generator and labelers, fewer attributes, fewer of them correlated."
)


def _pham_van_cosines(pair: OrthoPair) -> Measurement:
    ref = pair.reference
    base = np.abs(pair.cosines(pair.base).loc[ref, pair.others].to_numpy())
    reg = np.abs(pair.cosines(pair.reg).loc[ref, pair.others].to_numpy())
    weights = resample_weights(len(base), pair.inputs.resamples, pair.inputs.seed, ATTRIBUTES_STREAM)
    ratio = Estimate.from_draws(_ratio(weights @ reg, weights @ base))
    if len(base) < MIN_ATTRIBUTES:
        ratio = Estimate(ratio.value, np.nan, np.nan)
    return Measurement(
        (Part(ref, ratio, HALVES),),
        f"mean |cos({ref}, ·)| {base.mean():.2f} → {reg.mean():.2f} over {len(base)} attributes: "
        f"ratio {ratio.format(2)}",
        OVER_ATTRIBUTES,
        PHAM_VAN_SCALE + " Little to remove when the λ = 0 cosines are already small.",
    )


def _pham_van_collateral(pair: OrthoPair) -> Measurement | Missing:
    if (missing := _needs_records(pair.base, pair.reg)) is not None:
        return missing
    ref = pair.reference
    base, reg = pair.base.draws.value(ref, "entanglement"), pair.reg.draws.value(ref, "entanglement")
    ratio = Estimate.from_draws(_ratio(reg, base))
    return Measurement(
        (Part(ref, ratio, COLLATERAL),),
        f"entanglement of {ref}'s edit (mean |Δ| of the others, std units) "
        f"{Estimate.from_draws(base).format(2)} → {Estimate.from_draws(reg).format(2)}: ratio "
        f"{ratio.format(2)}",
        HELD_OUT,
        "Measured by re-labeling real edits of held-out latents (the paper: one image). " + PHAM_VAN_SCALE,
    )


def _pham_van_own_effect(pair: OrthoPair) -> Measurement | Missing:
    if (missing := _needs_records(pair.base, pair.reg)) is not None:
        return missing
    ref = pair.reference
    base, reg = pair.base.draws.value(ref, "slope_std"), pair.reg.draws.value(ref, "slope_std")
    ratio = Estimate.from_draws(_ratio(reg, base))
    return Measurement(
        (Part(ref, ratio, OWN_EFFECT),),
        f"effect on {ref} (std per unit α) {Estimate.from_draws(base).format(2)} (λ = 0), "
        f"{Estimate.from_draws(reg).format(2)} (λ > 0): ratio {ratio.format(2)}",
        HELD_OUT,
        "A direction that must turn away from correlated attributes loses part of its own effect.",
    )


_TABLE_III, _TABLE_II = PAPER_TABLES["pham_van_table_iii"], PAPER_TABLES["pham_van_table_ii"]
PHAM_VAN_PAPER = Paper(
    citation=PHAM_VAN,
    summary="A linear map z → attributes with an orthogonality penalty (λ = 2) on its rows; directions are the "
    "normalised rows.",
    context=_ortho_pair,
    claims=(
        ClaimSpec(
            "pham-van-cosines",
            "The penalty makes an attribute's direction much less similar to the others' (Table III)",
            f"mean |cos(Young, ·)| {_TABLE_III['without'].abs().mean():.2f} → "
            f"{_TABLE_III['with'].abs().mean():.2f} ({len(_TABLE_III)} attributes)",
            (HALVES,),
            _pham_van_cosines,
        ),
        ClaimSpec(
            "pham-van-collateral",
            "With the penalty, editing that attribute changes the others less (Table II)",
            f"mean |Δscore| of {len(_TABLE_II)} other attributes {_TABLE_II['abs_diff_no_reg'].mean():.2f} → "
            f"{_TABLE_II['abs_diff_reg'].mean():.2f} when increasing Young",
            (COLLATERAL,),
            _pham_van_collateral,
        ),
        ClaimSpec(
            "pham-van-own-effect",
            "The regularised direction still edits its own attribute (Table II)",
            "Young 0.61 → 0.99 (λ = 0), 0.90 (λ = 2)",
            (OWN_EFFECT,),
            _pham_van_own_effect,
        ),
    ),
    tables=_pham_van_tables,
)


# ------------------------------------------------------------------------------------------------ InterFaceGAN


@dataclass(frozen=True)
class BoundarySet:
    """The InterFaceGAN entry whose boundaries the claims judge."""

    entry: Entry
    inputs: RunInputs

    @property
    def names(self) -> list[str]:
        return self.entry.directions.names

    def cosines(self) -> pd.DataFrame:
        return pd.DataFrame(self.entry.directions.cosine_similarity(), index=self.names, columns=self.names)

    def accuracy(self, name: str, key: str, count_key: str) -> Estimate:
        """An accuracy of the boundary of ``name`` with its exact interval (none without its count)."""
        stats = self.entry.directions.stats.get(name, {})
        value, trials = stats.get(key), stats.get(count_key)
        if value is None:
            return Estimate(np.nan, np.nan, np.nan)
        if not trials:
            return Estimate(float(value), np.nan, np.nan)
        return clopper_pearson(int(round(float(value) * trials)), int(trials))

    def correlation_pairs(self) -> pd.DataFrame:
        """Per pair of labelled attributes: the boundaries' cosine, the labels' ρ with its interval, |cos − ρ| and
        the range it takes over ρ's interval."""
        corr, cosines = self.inputs.label_correlation, self.cosines()
        labelled = [n for n in self.names if n in corr.index]
        rows = {}
        for i, a in enumerate(labelled):
            for b in labelled[i + 1 :]:
                cosine = float(cosines.loc[a, b])
                rho = correlation_interval(float(corr.loc[a, b]), self.inputs.n_labeled)
                ends = np.abs(cosine - np.array([rho.low, rho.high]))
                low = 0.0 if rho.low <= cosine <= rho.high else float(np.min(ends))
                rows[f"{a}/{b}"] = {
                    "cos(boundaries)": cosine,
                    "Pearson ρ(labels)": rho.value,
                    "ρ low": rho.low,
                    "ρ high": rho.high,
                    "|cos − ρ|": abs(cosine - rho.value),
                    "|cos − ρ| low": low,
                    "|cos − ρ| high": float(np.max(ends)),
                }
        return pd.DataFrame.from_dict(rows, orient="index")

    def conditional_pairs(self) -> list[tuple[str, str]]:
        """(edited attribute, held attribute) pairs with a conditional edit and a score for the held one."""
        draws, conditions = self.entry.draws, self.entry.details.get("condition_on", [])
        if draws is None:
            return []
        return [
            (attribute, condition)
            for attribute in self.entry.details["directions"]
            for condition in conditions
            if condition != attribute
            and condition in draws.record.score_names
            and draws.edit(attribute, "conditional") is not None
        ]


def _interfacegan(inputs: RunInputs) -> BoundarySet | Missing:
    found = _by_base(inputs.entries, "interfacegan")
    if not found:
        return Missing("needs an interfacegan entry in fit.methods or fit.variants")
    return BoundarySet(next((e for e in found if e.name == "interfacegan"), found[0]), inputs)


def _held_change(draws: EvaluationDraws, attribute: str, condition: str, mode: str) -> np.ndarray:
    """(R,) mean |change| of ``condition`` when editing ``attribute`` in ``mode``, in its std units."""
    return draws.edit(attribute, mode).table_ii[condition]["mean_abs_change"] / draws.spread_of(condition)


def _interfacegan_tables(boundaries: BoundarySet) -> list[tuple[str, pd.DataFrame]]:
    entry, names = boundaries.entry, boundaries.names
    accuracy = pd.DataFrame(
        {
            "validation accuracy": {n: boundaries.accuracy(n, "val_accuracy", "n_val").format() for n in names},
            "rest-of-data accuracy": {
                n: boundaries.accuracy(n, "remaining_accuracy", "n_remaining").format() for n in names
            },
        }
    )
    tables = [
        (
            f"Separability of the boundaries ({entry.name}, space {entry.directions.space}), with exact 95 % intervals",
            accuracy,
        ),
        (f"Boundary cosines ({entry.name})", boundaries.cosines()),
    ]
    pairs = boundaries.correlation_pairs()
    if not pairs.empty:
        tables.append(
            (
                f"Boundary cosine against the labels' correlation (ρ's interval: Fisher z, "
                f"N = {boundaries.inputs.n_labeled}), per pair",
                pairs,
            )
        )
    rows = {}
    for attribute, condition in boundaries.conditional_pairs():
        draws = entry.draws
        rows[f"edit {attribute}, hold {condition}"] = {
            f"{condition}'s change, {mode}": Estimate.from_draws(
                _held_change(draws, attribute, condition, mode)
            ).format()
            for mode in ("plain", "conditional")
        } | {
            f"effect on {attribute}, {mode}": Estimate.from_draws(draws.value(attribute, "slope_std", mode)).format()
            for mode in ("plain", "conditional")
        }
    if rows:
        tables.append(
            (
                "Conditional manipulation: the conditioned attribute's mean |change| at ±α_max (std "
                "units) and the primal attribute's effect (std per unit α), before and after projection",
                pd.DataFrame.from_dict(rows, orient="index"),
            )
        )
    return tables


def _interfacegan_accuracy(boundaries: BoundarySet) -> Measurement:
    parts = []
    for name in boundaries.names:
        parts.append(Part(f"{name}, validation", boundaries.accuracy(name, "val_accuracy", "n_val"), VAL_ACCURACY))
        parts.append(
            Part(
                f"{name}, rest of the data",
                boundaries.accuracy(name, "remaining_accuracy", "n_remaining"),
                REST_ACCURACY,
            )
        )
    failing = sorted({part.label.split(",")[0] for part in parts if part.verdict != "yes"})
    return Measurement(
        tuple(parts),
        "; ".join(f"{p.label} {p.estimate.format(3)}" for p in parts),
        "exact (Clopper–Pearson) over the validation / rest-of-data samples",
        (f"Not clearly above the bars: {', '.join(failing)}. " if failing else "")
        + "The paper: PGGAN / StyleGAN at 1024 px with CelebA-trained attribute predictors; ours: this "
        "run's generator and labelers (the default: a 64-px DCGAN and small 64-px classifiers, whose "
        "scores are noisier), so an attribute may be encoded less linearly in z or labeled less "
        "reliably.",
    )


def _interfacegan_cosines(boundaries: BoundarySet) -> Measurement | Missing:
    pairs = boundaries.correlation_pairs()
    if pairs.empty:
        return Missing("no fitted attribute is among the labels")
    worst = pairs["|cos − ρ|"].idxmax()
    gap = Estimate(
        float(pairs["|cos − ρ|"].max()), float(pairs["|cos − ρ| low"].max()), float(pairs["|cos − ρ| high"].max())
    )
    return Measurement(
        (Part("largest gap", gap, COSINE_GAP),),
        f"largest |cos − ρ| {gap.format(2)} ({worst}) over {len(pairs)} pairs; mean {pairs['|cos − ρ|'].mean():.2f}",
        f"from the labels' correlation intervals (Fisher z, N = {boundaries.inputs.n_labeled}); "
        "the boundaries are taken as fitted",
        "The boundary is fitted on the extremes only (top/bottom 2 %), ρ on all samples: for attributes "
        "that are nonlinear in z (pose angles, age in years) the two need not agree.",
    )


def _interfacegan_conditional(boundaries: BoundarySet) -> Measurement | Missing:
    if (missing := _needs_records(boundaries.entry)) is not None:
        return missing
    pairs = boundaries.conditional_pairs()
    if not pairs:
        return Missing("needs eval.condition_on (e.g. [male])")
    draws = boundaries.entry.draws
    held = {mode: sum(_held_change(draws, a, c, mode) for a, c in pairs) for mode in ("plain", "conditional")}
    primal = {mode: sum(draws.value(a, "slope_std", mode) for a, _ in pairs) for mode in ("plain", "conditional")}
    held_ratio = Estimate.from_draws(_ratio(held["conditional"], held["plain"]))
    primal_ratio = Estimate.from_draws(_ratio(primal["conditional"], primal["plain"]))
    edits = ", ".join(f"{a} holding {c}" for a, c in pairs)
    return Measurement(
        (Part("conditioned attribute", held_ratio, HELD), Part("primal attribute", primal_ratio, PRIMAL)),
        f"summed over {edits}: conditioned attribute's change "
        f"{Estimate.from_draws(held['plain']).format(2)} → "
        f"{Estimate.from_draws(held['conditional']).format(2)} (ratio {held_ratio.format(2)}); "
        f"primal effect ratio {primal_ratio.format(2)}",
        HELD_OUT,
        "Projection holds an attribute only as far as it is linear along its own boundary; a labeler "
        "that reads the conditioned attribute off other cues still sees it move.",
    )


_COSINE_PAIRS = PAPER_TABLES["interfacegan_cosines"]
INTERFACEGAN_PAPER = Paper(
    citation=INTERFACEGAN,
    summary="A linear SVM per attribute on the top/bottom 2 % of samples; the boundary's normal is the direction.",
    context=_interfacegan,
    claims=(
        ClaimSpec(
            "interfacegan-accuracy",
            "Linear boundaries separate the attributes (validation and rest-of-data accuracy)",
            "> 95 % validation, > 75 % entire set, every attribute (PGGAN Z, StyleGAN W)",
            (VAL_ACCURACY, REST_ACCURACY),
            _interfacegan_accuracy,
        ),
        ClaimSpec(
            "interfacegan-cosines",
            "Boundary cosines mirror the attributes' correlation in the synthesized data",
            f"largest |cos − ρ| {(_COSINE_PAIRS['cosine'] - _COSINE_PAIRS['pearson']).abs().max():.2f} over "
            f"{len(_COSINE_PAIRS)} pairs (PGGAN)",
            (COSINE_GAP,),
            _interfacegan_cosines,
        ),
        ClaimSpec(
            "interfacegan-conditional",
            "Conditional manipulation holds the conditioned attribute while still editing the primal one",
            "qualitative: age conditioned on gender, eyeglasses on age and gender (PGGAN)",
            (HELD, PRIMAL),
            _interfacegan_conditional,
        ),
    ),
    tables=_interfacegan_tables,
)


# ----------------------------------------------------------------------------------------------------- TunaGAN


@dataclass(frozen=True)
class TunaGANSets:
    """The TunaGAN entries by ``"<linear|nonlinear> <space>"`` and the attributes they share."""

    found: dict[str, Entry]
    common: list[str]
    inputs: RunInputs

    def separability(self, key: str) -> np.ndarray:
        entry = self.found[key]
        return np.array([entry.directions.stats[n]["separability"] for n in self.common], dtype=np.float64)

    def separability_ratio(self, label: str, numerator: str, denominator: str, rule: Rule) -> Part | None:
        """The geometric mean over attributes of SS(numerator) / SS(denominator), or None without both."""
        if numerator not in self.found or denominator not in self.found:
            return None
        log_ratios = np.log(self.separability(numerator)) - np.log(self.separability(denominator))
        return Part(label, _over_attributes(log_ratios, self.inputs, log=True), rule)


def _tunagan_key(entry: Entry) -> str:
    return f"{entry.fit_params.get('model', 'nonlinear')} {entry.directions.space}"


def _tunagan(inputs: RunInputs) -> TunaGANSets | Missing:
    found: dict[str, Entry] = {}
    for entry in _by_base(inputs.entries, "tunagan", "tunagan-linear"):
        found.setdefault(_tunagan_key(entry), entry)
    if not found:
        return Missing("needs tunagan / tunagan-linear entries")
    first = next(iter(found.values())).directions.names
    common = [n for n in first if all(n in entry.directions.names for entry in found.values())]
    return TunaGANSets(found, common, inputs)


def _collateral_per_effect(entry: Entry, attributes: list[str]) -> np.ndarray:
    """(R,) mean over ``attributes`` of entanglement / effect (effect floored at 1e-6)."""
    draws = entry.draws
    return np.mean(
        [draws.value(a, "entanglement") / np.clip(draws.value(a, "slope_std"), 1e-6, None) for a in attributes], axis=0
    )


def _tunagan_tables(sets: TunaGANSets) -> list[tuple[str, pd.DataFrame]]:
    rows = {}
    for key, entry in sorted(sets.found.items()):
        scores = dict(zip(sets.common, sets.separability(key)))
        rows[f"{key} ({entry.name})"] = {**scores, "overall (product)": float(np.prod(list(scores.values())))}
    tables = [
        (
            "Separability score per attribute (validation split; lower is better)",
            pd.DataFrame.from_dict(rows, orient="index"),
        )
    ]
    edit_rows = {}
    for key, entry in sorted(sets.found.items()):
        for attribute, record in entry.details["directions"].items():
            intervals = record.get("ci95", {})
            edit_rows[f"{attribute}, {key} ({entry.name})"] = {
                "edit": record.get("edit", "vector"),
                **{
                    label: _with_interval(record.get(metric), intervals.get(metric))
                    for metric, label in (
                        ("slope_std", "effect (std/α)"),
                        ("entanglement", "entanglement"),
                        ("lpips", "LPIPS at ±α_max"),
                        ("ppl", "PPL"),
                    )
                },
            }
    if edit_rows:
        tables.append(
            (
                "Edits of held-out latents: linear (one vector) against nonlinear (each sample follows the "
                "MLP's gradient)",
                pd.DataFrame.from_dict(edit_rows, orient="index"),
            )
        )
    return tables


def _tunagan_nonlinear_separability(sets: TunaGANSets) -> Measurement | Missing:
    parts = [
        part
        for space in ("z", "w")
        if (
            part := sets.separability_ratio(
                space.upper(), f"nonlinear {space}", f"linear {space}", NONLINEAR_SEPARABILITY
            )
        )
        is not None
    ]
    if not parts:
        return Missing("needs a linear and a nonlinear entry in one space")
    return Measurement(
        tuple(parts),
        "; ".join(
            f"SS nonlinear / linear in {p.label}: {p.estimate.format(2)} ({len(sets.common)} attributes)" for p in parts
        ),
        OVER_ATTRIBUTES,
        "Our attributes include continuous ones discretised into quantile bins for SS; the MLP's width "
        "and training are ours (the paper gives none).",
    )


def _tunagan_w_vs_z(sets: TunaGANSets) -> Measurement | Missing:
    parts = [
        part
        for model in ("linear", "nonlinear")
        if (part := sets.separability_ratio(model, f"{model} w", f"{model} z", W_SEPARABILITY)) is not None
    ]
    if not parts:
        if "w" not in sets.inputs.latent_spaces:
            return Missing("the generator has no W space (no mapping network): Z vs W does not apply")
        return Missing(
            "add TunaGAN variants in W, e.g. fit.variants: {tunagan-w: {method: tunagan, space: w}, "
            "tunagan-linear-w: {method: tunagan-linear, space: w}}"
        )
    return Measurement(
        tuple(parts),
        "; ".join(f"SS W / Z ({p.label}): {p.estimate.format(2)}" for p in parts),
        OVER_ATTRIBUTES,
        "W's advantage is a property of StyleGAN's mapping network.",
    )


def _tunagan_nonlinear_edits(sets: TunaGANSets) -> Measurement | Missing:
    parts = []
    for space in ("z", "w"):
        linear, nonlinear = sets.found.get(f"linear {space}"), sets.found.get(f"nonlinear {space}")
        if linear is None or nonlinear is None:
            continue
        if (missing := _needs_records(linear, nonlinear)) is not None:
            return missing
        attributes = [a for a in linear.details["directions"] if a in nonlinear.details["directions"]]
        ratio = _ratio(_collateral_per_effect(nonlinear, attributes), _collateral_per_effect(linear, attributes))
        parts.append(Part(space.upper(), Estimate.from_draws(ratio), NONLINEAR_EDITS))
    if not parts:
        return Missing("needs tunagan and tunagan-linear entries in one space")
    return Measurement(
        tuple(parts),
        "; ".join(
            f"mean entanglement / effect, nonlinear / linear in {p.label}: {p.estimate.format(2)}" for p in parts
        ),
        HELD_OUT,
        "A gradient path follows the MLP wherever its fit is poor too, and an attribute that is linear "
        "in the latents gains nothing from it; the paper judged the edits by eye on StyleGAN, we by "
        "re-labeling.",
    )


_TUNA = PAPER_TABLES["tunagan_table_1"]
TUNAGAN_PAPER = Paper(
    citation=TUNAGAN,
    summary="Linear (logistic / least squares) and 2-layer MLP models latent → attribute; separability score "
    "SS = exp(H(Y | Ŷ)) (1 = separable; 2 = chance for a binary attribute); nonlinear edits follow the MLP's "
    "gradient per sample.",
    context=_tunagan,
    claims=(
        ClaimSpec(
            "tunagan-nonlinear-separability",
            "Nonlinear models separate the attributes better than linear ones (lower SS)",
            f"overall SS {_TUNA.loc['linear z', 'Overall']:.2f} → {_TUNA.loc['nonlinear z', 'Overall']:.2f} "
            f"(Z), {_TUNA.loc['linear w', 'Overall']:.2f} → {_TUNA.loc['nonlinear w', 'Overall']:.2f} (W)",
            (NONLINEAR_SEPARABILITY,),
            _tunagan_nonlinear_separability,
        ),
        ClaimSpec(
            "tunagan-w-vs-z",
            "W is more separable than Z (lower SS)",
            f"overall SS Z {_TUNA.loc['linear z', 'Overall']:.2f} → W {_TUNA.loc['linear w', 'Overall']:.2f} "
            f"(linear), {_TUNA.loc['nonlinear z', 'Overall']:.2f} → {_TUNA.loc['nonlinear w', 'Overall']:.2f} "
            f"(nonlinear)",
            (W_SEPARABILITY,),
            _tunagan_w_vs_z,
        ),
        ClaimSpec(
            "tunagan-nonlinear-edits",
            "Nonlinear (gradient-path) traversal edits better than linear traversal "
            "(less collateral change per unit of effect)",
            "qualitative (Fig. 8)",
            (NONLINEAR_EDITS,),
            _tunagan_nonlinear_edits,
        ),
    ),
    tables=_tunagan_tables,
    paper_tables=(("The paper's Table 1 (StyleGAN, Microsoft Face API labels)", "tunagan_table_1"),),
)


# --------------------------------------------------------------------------------------------------- Lu et al.


@dataclass(frozen=True)
class UnsupervisedPair:
    """The Voynov–Babenko baseline entry and the centroid (Lu et al.) entry."""

    baseline: Entry
    centroid: Entry

    def rca(self, entry: Entry) -> tuple[int, int] | None:
        """(correct, pairs) of the entry's reconstructor accuracy, or None without the count."""
        meta = entry.directions.meta
        if meta.get("rca") is None or not meta.get("rca_pairs"):
            return None
        return int(round(float(meta["rca"]) * meta["rca_pairs"])), int(meta["rca_pairs"])

    def common(self) -> list[str]:
        return [a for a in self.baseline.details["directions"] if a in self.centroid.details["directions"]]


def _unsupervised(inputs: RunInputs) -> UnsupervisedPair | Missing:
    voynov, centroid = _by_base(inputs.entries, "voynov"), _by_base(inputs.entries, "centroid")
    if not voynov or not centroid:
        return Missing("needs a voynov and a centroid entry")
    return UnsupervisedPair(voynov[0], centroid[0])


def _lu_tables(pair: UnsupervisedPair) -> list[tuple[str, pd.DataFrame]]:
    rows = {}
    for entry in (pair.baseline, pair.centroid):
        meta, counts = entry.directions.meta, pair.rca(entry)
        rca = clopper_pearson(*counts) if counts else Estimate(meta.get("rca", np.nan), np.nan, np.nan)
        summary = entry.details.get("summary", {})
        rows[f"{entry.name} ({entry.base_method})"] = {
            "K": meta.get("n_directions"),
            "chance": meta.get("rca_chance"),
            "steps": meta.get("steps"),
            "RCA": rca.format(),
            "PPL (all K, training ε)": meta.get("ppl_mean"),
            "PPL (evaluated directions, ±α)": _with_interval(summary.get("ppl"), summary.get("ci95", {}).get("ppl"), 4),
        }
    return [("Ours (same generator, same settings for both)", pd.DataFrame.from_dict(rows, orient="index"))]


LU_SCALE = (
    "Ours: the K, steps and LPIPS net in the table above (the default: K = 16, 300 steps on a CPU, "
    "LPIPS-AlexNet at 64 px); the paper: K = 128, 2·10⁵ steps, VGG16. Compare the relation, not the values."
)


def _lu_rca(pair: UnsupervisedPair) -> Measurement | Missing:
    base, ours = pair.rca(pair.baseline), pair.rca(pair.centroid)
    if base is None or ours is None:
        return Missing("the unsupervised entries record no RCA with its number of pairs (rca, rca_pairs)")
    difference = difference_of_shares(ours, base)
    return Measurement(
        (Part("RCA difference", difference, RCA_KEPT),),
        f"RCA {base[0] / base[1]:.2f} → {ours[0] / ours[1]:.2f} over {base[1]} / {ours[1]} pairs: "
        f"difference {difference.format(3)} (chance "
        f"{pair.centroid.directions.meta.get('rca_chance', 0):.2f})",
        "Newcombe's interval of a difference of two shares (Wilson score intervals)",
        LU_SCALE,
    )


def _lu_ppl(pair: UnsupervisedPair) -> Measurement | Missing:
    if (missing := _needs_records(pair.baseline, pair.centroid)) is not None:
        return missing
    common = pair.common()
    base, ours = pair.baseline.draws.mean_over(common, "ppl"), pair.centroid.draws.mean_over(common, "ppl")
    if base is None or ours is None:
        return Missing("the evaluations of the unsupervised entries recorded no PPL terms")
    ratio = Estimate.from_draws(_ratio(ours, base))
    return Measurement(
        (Part("PPL ratio", ratio, PPL_LOWER),),
        f"PPL of the evaluated directions ({', '.join(common)}) {Estimate.from_draws(base).format(4)} → "
        f"{Estimate.from_draws(ours).format(4)}: ratio {ratio.format(2)}",
        "bootstrap over each direction's PPL samples (z, t)",
        LU_SCALE + " A short training run leaves both deformators near their initialisation.",
    )


_LU = PAPER_TABLES["lu_table_1"]
_LU_ROWS, _LU_DATASETS = (_LU.index[0], _LU.index[2]), ("Anime", "ILSVRC", "FFHQ")
LU_PAPER = Paper(
    citation=LU,
    summary="Voynov & Babenko's deformator/reconstructor training with two consecutive shifts and a centroid loss; "
    "RCA = the reconstructor's top-1 accuracy at naming the direction (chance 1/K), PPL = perceptual path "
    "length along the directions.",
    context=_unsupervised,
    claims=(
        ClaimSpec(
            "lu-rca",
            f"The centroid loss keeps RCA competitive with the baseline (drop ≤ {-RCA_KEPT.minimum:g})",
            "; ".join(
                f"{d} {_LU.loc[_LU_ROWS[0], f'{d} RCA']:.2f} → {_LU.loc[_LU_ROWS[1], f'{d} RCA']:.2f}"
                for d in _LU_DATASETS
            ),
            (RCA_KEPT,),
            _lu_rca,
        ),
        ClaimSpec(
            "lu-ppl",
            "The centroid loss lowers PPL (smoother, more consistent paths)",
            "; ".join(
                f"{d} {_LU.loc[_LU_ROWS[0], f'{d} PPL']:.1f} → {_LU.loc[_LU_ROWS[1], f'{d} PPL']:.1f}"
                for d in _LU_DATASETS
            ),
            (PPL_LOWER,),
            _lu_ppl,
        ),
    ),
    tables=_lu_tables,
    paper_tables=(("The paper's Table 1 (K = 128, 2·10⁵ steps, PPL with VGG16 LPIPS)", "lu_table_1"),),
)

#: Every reproduced paper, in the report's order.
PAPERS = (PHAM_VAN_PAPER, INTERFACEGAN_PAPER, TUNAGAN_PAPER, LU_PAPER)


# ------------------------------------------------------------------------------------------------------ output


def build_reproduction(inputs: RunInputs) -> list[PaperSection]:
    """Every paper's section, from the run (see the module docstring)."""
    return [reproduce(paper, inputs) for paper in PAPERS]


def reproduction_record(sections: list[PaperSection], header: str) -> dict[str, Any]:
    """``reports/reproduction.json``: every claim (id, paper, the paper's value, ours with intervals, the rule, the
    verdict) and the count of each verdict."""
    claims = [claim for section in sections for claim in section.claims]
    counts = {
        verdict: sum(claim.verdict == verdict for claim in claims) for verdict in ("yes", "no", "inconclusive", "n/a")
    }
    return {"header": header, "verdicts": counts, "claims": [claim.to_json() for claim in claims]}


def findings_table(sections: list[PaperSection]) -> pd.DataFrame:
    """One row per claim: paper, claim, paper's number, ours, rule, verdict, note."""
    return pd.DataFrame(
        [
            {
                "paper": s.paper,
                "claim": c.text,
                "paper's number": c.paper_value,
                "ours": c.ours,
                "rule": c.rule_text,
                "verdict": c.verdict,
                "note": c.note,
            }
            for s in sections
            for c in s.claims
        ]
    )


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _parts_markdown(section: PaperSection) -> list[str]:
    rows = [(claim, part) for claim in section.claims if len(claim.parts) > 1 for part in claim.parts]
    if not rows:
        return []
    lines = ["", "| claim | part | ours [95 % interval] | rule | verdict |", "|---|---|---|---|---|"]
    lines += [
        f"| {claim.id} | {_cell(part.label)} | {part.estimate.format(3)} | {_cell(part.rule.text)} | {part.verdict} |"
        for claim, part in rows
    ]
    return lines


def short_citation(paper: str) -> str:
    """``Shen et al.`` for ``Shen, Gu, Tang & Zhou, "Interpreting …"``; a single author's surname stays alone."""
    authors = paper.split('"')[0].strip().rstrip(",")
    first = authors.split(",")[0].split("&")[0].strip()
    return first if first == authors or first.endswith("et al.") else f"{first} et al."


def render_markdown(sections: list[PaperSection], header: str) -> str:
    """REPRODUCTION.md: the header, a summary of every claim, then each paper's claims, parts and tables."""
    lines = [
        "# Reproduction",
        "",
        header,
        "",
        "| paper | claim | ours [95 % interval] | rule | verdict |",
        "|---|---|---|---|---|",
    ]
    for section in sections:
        for claim in section.claims:
            lines.append(
                f"| {_cell(short_citation(section.paper))} | {_cell(claim.text)} | {_cell(claim.estimates_text)} | "
                f"{_cell(claim.rule_text)} | {claim.verdict} |"
            )
    for section in sections:
        lines += [
            "",
            f"## {section.paper}",
            "",
            section.summary,
            "",
            "| claim | paper | ours | rule | verdict | interval | note |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in section.claims:
            lines.append(
                f"| {_cell(c.text)} | {_cell(c.paper_value)} | {_cell(c.ours)} | {_cell(c.rule_text)} | "
                f"**{c.verdict}** | {_cell(c.interval)} | {_cell(c.note)} |"
            )
        lines += _parts_markdown(section)
        for title, table in section.tables:
            lines += ["", f"**{title}**", "", table.to_markdown(floatfmt=".3f")]
    return "\n".join(lines) + "\n"


def render_html(sections: list[PaperSection], header: str) -> str:
    """The report's "Reproduction" section (HTML fragment)."""
    parts = [f"<h2 id='reproduction'>Reproduction</h2><p>{html.escape(header)}</p>"]
    for section in sections:
        rows = "".join(
            f"<tr><td>{html.escape(c.text)}</td><td>{html.escape(c.paper_value)}</td>"
            f"<td>{html.escape(c.ours)}</td><td>{html.escape(c.rule_text)}</td>"
            f"<td><b>{html.escape(c.verdict)}</b></td><td>{html.escape(c.note)}</td></tr>"
            for c in section.claims
        )
        parts.append(
            f"<h3>{html.escape(section.paper)}</h3><p>{html.escape(section.summary)}</p><table class='claims'><tr>"
            f"<th>claim</th><th>paper</th><th>ours (95 % interval)</th><th>rule</th><th>verdict</th>"
            f"<th>note</th></tr>{rows}</table>"
        )
        for title, table in section.tables:
            parts.append(f"<h4>{html.escape(title)}</h4>" + table_html(table))
    return "".join(parts)
