"""Rankings per attribute that separate only what the data separates.

A method's *mean rank* for an attribute is the mean of its ranks on three criteria (:data:`CRITERIA`): effect ↑
(standard deviations per unit α), entanglement per unit effect ↓ and LPIPS at ±α_max per unit effect ↓ (collateral
change per unit effect, so that a direction that barely moves its attribute cannot win by changing nothing). A direction
whose own fit explains less than ``min_fit_r2`` of its attribute (held-out R², where its method reports one) is no
direction of that attribute: it ranks after every direction that fits, by rule.

Uncertainty: the mean ranks are recomputed on every bootstrap resample of the held-out samples, the same resamples
for every method (:mod:`stages.reporting.statistics`), which gives each mean rank its interval, each pair of methods
a paired p-value, and each method its probability of being best (its share of resamples with the lowest mean rank,
ties split). Two methods are *ordered* only when their paired difference is significant after Holm's correction over
every pair of that attribute (or when the fit rule orders them); :func:`stages.reporting.statistics.rank_groups`
turns that into rank groups: methods in different groups are significantly ordered, the best group is group 1.

Each attribute also states the smallest difference its run could have detected per criterion (80 % power, the
strictest Holm step, the median paired standard error over pairs of methods) and warns when the intervals are too
wide to rank (more than half of the methods share the best group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from stages.reporting.samples import EvaluationDraws, metric_estimate
from stages.reporting.statistics import (
    SIGNIFICANCE,
    Estimate,
    holm,
    minimum_detectable_difference,
    paired_p_values,
    rank_groups,
)

#: (label, higher is better): the ranked criteria.
CRITERIA = (("effect (std/α)", True), ("entanglement / effect", False), ("LPIPS / effect", False))
#: (metric key, label): the other numbers shown per method (with intervals).
SHOWN_METRICS = (
    ("entanglement", "entanglement"),
    ("lpips", "LPIPS at ±α_max"),
    ("moved_fraction", "moved the intended way"),
    ("ppl", "PPL"),
    ("conditional_entanglement", "entanglement, conditional"),
)
#: An effect is clipped at this before dividing by it.
EFFECT_FLOOR = 1e-6


@dataclass(frozen=True)
class AttributeRanking:
    """The ranking of one attribute.

    Attributes:
        attribute: the attribute.
        methods: the ranked methods, best first (by point mean rank).
        mean_rank: method → mean rank with its interval.
        group: method → rank group (1 = best group).
        p_best: method → share of resamples in which it has the lowest mean rank (directions that fit only).
        fits: method → whether its fit passes ``min_fit_r2`` (False: ranked after every one that fits).
        fit_r2: method → its held-out fit R², or NaN where its method reports none.
        p_adjusted: (K, K) Holm-adjusted paired p-values of the mean ranks, NaN where the fit rule orders the pair.
        estimates: column label → method → estimate (the criteria and :data:`SHOWN_METRICS`).
        detectable: criterion label → the smallest difference this run could have detected.
        warning: why the ranking cannot be trusted, or None.
        min_fit_r2: the fit gate applied (None: none).
    """

    attribute: str
    methods: list[str]
    mean_rank: dict[str, Estimate]
    group: dict[str, int]
    p_best: dict[str, float]
    fits: dict[str, bool]
    fit_r2: dict[str, float]
    p_adjusted: pd.DataFrame
    estimates: dict[str, dict[str, Estimate]]
    detectable: dict[str, float]
    warning: str | None
    min_fit_r2: float | None

    @property
    def best_group(self) -> list[str]:
        return [method for method in self.methods if self.group[method] == 1]

    def table(self) -> pd.DataFrame:
        """One row per method, best first: group, mean rank and its interval, P(best), each estimate's value,
        fit R² and the fit mark (numbers; :func:`display_table` formats them with their intervals)."""
        rows = {}
        for method in self.methods:
            rank = self.mean_rank[method]
            row: dict[str, Any] = {
                "group": self.group[method],
                "rank": rank.value,
                "rank low": rank.low,
                "rank high": rank.high,
                "P(best)": self.p_best.get(method, 0.0),
            }
            row.update({label: values[method].value for label, values in self.estimates.items() if method in values})
            row["fit R² (held-out)"] = self.fit_r2[method]
            row["fit"] = "" if self.fits[method] else f"✗ R² < {self.min_fit_r2:g}: ranked last"
            rows[method] = row
        return pd.DataFrame.from_dict(rows, orient="index")

    def display_table(self, digits: int = 3) -> pd.DataFrame:
        """The table as text: every estimate as ``value [low, high]``."""
        rows = {}
        for method in self.methods:
            row: dict[str, Any] = {
                "group": self.group[method],
                "mean rank": self.mean_rank[method].format(2),
                "P(best)": f"{self.p_best.get(method, 0.0):.2f}",
            }
            row.update(
                {
                    label: values[method].format(digits) if method in values else "–"
                    for label, values in self.estimates.items()
                }
            )
            r2 = self.fit_r2[method]
            row["fit R² (held-out)"] = f"{r2:.{digits}f}" if np.isfinite(r2) else "–"
            row["fit"] = "" if self.fits[method] else f"✗ R² < {self.min_fit_r2:g}: ranked last"
            rows[method] = row
        return pd.DataFrame.from_dict(rows, orient="index")

    def to_json(self) -> dict[str, Any]:
        """``reports/ranking.details.json``'s entry for this attribute."""

        def number(value: float) -> float | None:
            return float(value) if np.isfinite(value) else None

        return {
            "methods": self.methods,
            "group": self.group,
            "best_group": self.best_group,
            "mean_rank": {m: e.to_json() for m, e in self.mean_rank.items()},
            "p_best": {m: round(p, 4) for m, p in self.p_best.items()},
            "fits": self.fits,
            "criteria": {
                label: {m: e.to_json() for m, e in values.items()} for label, values in self.estimates.items()
            },
            "p_adjusted": {
                a: {b: number(self.p_adjusted.loc[a, b]) for b in self.methods if b != a} for a in self.methods
            },
            "minimum_detectable_difference": {label: number(value) for label, value in self.detectable.items()},
            "warning": self.warning,
        }


def fit_r2(entry: dict[str, Any]) -> float | None:
    """The held-out R² a direction's own fit reports (ortho-linear ``r2_val``, TunaGAN ``val_r2``), or None."""
    fit = entry.get("fit", {})
    for key in ("r2_val", "val_r2"):
        value = fit.get(key)
        if isinstance(value, (int, float)) and np.isfinite(value):
            return float(value)
    return None


def criteria_draws(draws: EvaluationDraws, attribute: str) -> dict[str, np.ndarray]:
    """(R,) draws of each ranked criterion of one method's attribute."""
    effect = draws.value(attribute, "slope_std")
    clipped = np.clip(effect, EFFECT_FLOOR, None)
    return {
        "effect (std/α)": effect,
        "entanglement / effect": draws.value(attribute, "entanglement") / clipped,
        "LPIPS / effect": draws.value(attribute, "lpips") / clipped,
    }


def mean_rank_draws(criteria: dict[str, np.ndarray], fits: np.ndarray) -> np.ndarray:
    """(R, K) mean rank over :data:`CRITERIA` of K methods on every row, from (R, K) criteria draws; ties share
    their average rank, an undefined criterion ranks last, and methods that do not fit rank after those that do."""
    ranks = []
    for label, higher in CRITERIA:
        key = -criteria[label] if higher else criteria[label].copy()
        key[np.isnan(key)] = np.inf
        rank = np.empty_like(key)
        for members, offset in ((fits, 0), (~fits, int(fits.sum()))):
            if members.any():
                rank[:, members] = rankdata(key[:, members], axis=1) + offset
        ranks.append(rank)
    return np.mean(ranks, axis=0)


def _ordering(mean_ranks: np.ndarray, fits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Holm-adjusted paired p-values (K, K) (NaN for pairs the fit rule orders) and ``better[a, b]``: a is ordered
    before b (significantly, or by the fit rule)."""
    same_gate = fits[:, None] == fits[None, :]
    raw = paired_p_values(mean_ranks)
    upper = np.triu(np.ones_like(raw, dtype=bool), 1) & same_gate
    adjusted = holm(np.where(upper, raw, np.nan))
    adjusted = np.where(upper, adjusted, adjusted.T)
    point = mean_ranks[0]
    better = ((adjusted < SIGNIFICANCE) & (point[:, None] < point[None, :])) | (fits[:, None] & ~fits[None, :])
    adjusted[~same_gate] = np.nan
    np.fill_diagonal(adjusted, np.nan)
    return adjusted, better


def _p_best(mean_ranks: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(K,) share of resamples in which each candidate has the lowest mean rank (ties split; others 0)."""
    resampled = np.where(candidates, mean_ranks[1:], np.inf)
    lowest = resampled == resampled.min(axis=1, keepdims=True)
    return (lowest / lowest.sum(axis=1, keepdims=True)).mean(axis=0)


def _detectable(criteria: dict[str, np.ndarray], fits: np.ndarray) -> dict[str, float]:
    """Per criterion: the minimum detectable difference from the median paired standard error over the pairs of
    methods that fit (for the per-effect ratios, over the pairs whose effects are both positive: a ratio to an effect
    at the floor measures nothing), at the Holm family of every pair that fits."""
    members = np.flatnonzero(fits)
    pairs = [(a, b) for i, a in enumerate(members) for b in members[i + 1 :]]
    positive = criteria[CRITERIA[0][0]][0] > EFFECT_FLOOR
    detectable = {}
    for label, _ in CRITERIA:
        resampled = criteria[label][1:]
        measured = pairs if label == CRITERIA[0][0] else [(a, b) for a, b in pairs if positive[a] and positive[b]]
        errors = [error for a, b in measured if np.isfinite(error := np.std(resampled[:, a] - resampled[:, b], ddof=1))]
        detectable[label] = (
            minimum_detectable_difference(float(np.median(errors)), len(pairs)) if errors else float("nan")
        )
    return detectable


def _warning(attribute: str, best: int, ranked: int, n_heldout: int, detectable: dict[str, float]) -> str | None:
    """Why the ranking cannot order its leaders: more than half of the (fitting) methods share the best group."""
    if ranked < 3 or best * 2 <= ranked:
        return None
    sizes = ", ".join(f"{label} {value:.3g}" for label, value in detectable.items() if np.isfinite(value))
    return (
        f"{attribute}: intervals too wide to rank the leaders: {best} of {ranked} methods share the best group "
        f"with {n_heldout} held-out samples; their differences are below what this run can detect ({sizes}), "
        f"which shrinks as 1/√n (4 × eval.n_samples halves it)"
    )


def rank_attribute(
    attribute: str,
    draws: dict[str, EvaluationDraws],
    details: dict[str, dict[str, Any]],
    min_fit_r2: float | None = None,
) -> AttributeRanking:
    """The ranking of ``attribute`` over the methods that evaluated it (see the module docstring).

    Args:
        draws: method → its evaluation's draws; every method's on the same held-out samples and resamples.
        details: method → its ``metrics/<method>.details.json`` (for the fit statistics).
        min_fit_r2: the fit gate (``report.min_fit_r2``), or None for none.
    """
    methods = [m for m in draws if draws[m].edit(attribute) is not None]
    r2 = {m: fit_r2(details[m]["directions"].get(attribute, {})) for m in methods}
    fits = np.array([min_fit_r2 is None or r2[m] is None or r2[m] >= min_fit_r2 for m in methods])
    per_method = {m: criteria_draws(draws[m], attribute) for m in methods}
    criteria = {label: np.stack([per_method[m][label] for m in methods], axis=1) for label, _ in CRITERIA}
    mean_ranks = mean_rank_draws(criteria, fits)
    adjusted, better = _ordering(mean_ranks, fits)
    order = sorted(range(len(methods)), key=lambda k: (mean_ranks[0, k], methods[k]))
    groups = rank_groups(order, better)
    candidates = fits if fits.any() else np.ones_like(fits)
    p_best = _p_best(mean_ranks, candidates)
    estimates = {
        label: {m: Estimate.from_draws(criteria[label][:, k]) for k, m in enumerate(methods)} for label, _ in CRITERIA
    }
    for key, label in SHOWN_METRICS:
        mode, metric = (
            ("conditional", key.removeprefix("conditional_")) if key.startswith("conditional_") else ("plain", key)
        )
        found = {m: value for m in methods if (value := draws[m].value(attribute, metric, mode)) is not None}
        if found:
            estimates[label] = {
                m: metric_estimate(value, metric, draws[m].record.n_samples) for m, value in found.items()
            }
    sorted_methods = [methods[k] for k in order]
    detectable = _detectable(criteria, fits)
    group = {methods[k]: groups[k] for k in order}
    n_heldout = next(iter(draws.values())).record.n_samples
    return AttributeRanking(
        attribute=attribute,
        methods=sorted_methods,
        mean_rank={methods[k]: Estimate.from_draws(mean_ranks[:, k]) for k in order},
        group=group,
        p_best={methods[k]: float(p_best[k]) for k in order if candidates[k]},
        fits={m: bool(f) for m, f in zip(methods, fits)},
        fit_r2={m: float("nan") if r2[m] is None else r2[m] for m in methods},
        p_adjusted=pd.DataFrame(adjusted, index=methods, columns=methods).loc[sorted_methods, sorted_methods],
        estimates=estimates,
        detectable=detectable,
        warning=_warning(
            attribute,
            sum(1 for m in sorted_methods if group[m] == 1 and bool(fits[methods.index(m)])),
            int(fits.sum()),
            n_heldout,
            detectable,
        ),
        min_fit_r2=min_fit_r2,
    )


def headline(rankings: dict[str, AttributeRanking]) -> dict[str, Any]:
    """``reports/ranking.json`` (the DVC metric): per attribute each method's rank group, and per attribute the best
    group (its methods in alphabetical order, comma-separated: a group that keeps its members does not show as a
    change when their point order flips)."""
    if "best_group" in rankings:
        raise ValueError("an attribute named 'best_group' collides with the ranking metric's own key")
    metric: dict[str, Any] = {attribute: dict(ranking.group) for attribute, ranking in rankings.items()}
    metric["best_group"] = {attribute: ", ".join(sorted(ranking.best_group)) for attribute, ranking in rankings.items()}
    return metric
