"""How sure each number is: seeded bootstrap over held-out samples, exact binomial intervals, paired comparisons with
Holm's correction, rank groups, and the smallest difference a run can detect.

Every evaluation number is a function of per-held-out-sample values (``metrics/<entry>.samples.parquet``), so its
uncertainty comes from resampling those samples. :func:`resample_weights` gives a (1 + B, n) matrix: row 0 weighs
every sample 1/n (the point estimate), rows 1..B are bootstrap resamples (how often each sample is drawn, divided by
n). It is seeded by ``(eval.seed, n)`` only, so every method's evaluation and the report draw the *same* resamples
of the same held-out latents: differences between methods are paired, and the variation between samples that all
methods share cancels out of them.

A statistic computed on every row is a *draws* array, (1 + B,) or (1 + B, K): :meth:`Estimate.from_draws` reads the
point (row 0) and the 95 % percentile interval (rows 1..B).

Comparisons (:func:`paired_p_values`): the two-sided bootstrap p-value of a paired difference is twice the smaller
share of resamples on either side of zero (each count + 1 over B + 1, so it is never 0); :func:`holm` adjusts a
family of them. :func:`rank_groups` turns the significant orderings into rank groups, and
:func:`minimum_detectable_difference` states what a run of this size could have separated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

#: Every interval is a 95 % interval; every comparison is made at family-wise level 5 % (Holm).
LEVEL = 0.95
SIGNIFICANCE = 1.0 - LEVEL
#: The power at which :func:`minimum_detectable_difference` states the smallest detectable difference.
POWER = 0.8
#: Separates the bootstrap's random stream from the held-out latents' (both seeded from ``eval.seed``).
BOOTSTRAP_STREAM = 0xB0075
#: Resample streams: the held-out edits (paired across methods), and PPL's own (z, t) samples.
EDITS_STREAM, PPL_STREAM = 0, 1


def resample_weights(n_samples: int, resamples: int, seed: int, stream: int = EDITS_STREAM) -> np.ndarray:
    """(1 + resamples, n_samples) float64 weights, each row summing to 1: row 0 = 1/n everywhere (the point
    estimate), row b ≥ 1 = (times sample i is drawn in bootstrap resample b) / n.

    Seeded by ``(seed, stream, n_samples)``: equal arguments give equal weights in every process."""
    if n_samples < 1 or resamples < 1:
        raise ValueError(f"need at least one sample and one resample, got n={n_samples}, B={resamples}")
    rng = np.random.Generator(np.random.PCG64([seed, BOOTSTRAP_STREAM, stream, n_samples]))
    drawn = rng.integers(0, n_samples, size=(resamples, n_samples))
    rows = np.arange(resamples)[:, None] * n_samples
    counts = np.bincount((drawn + rows).ravel(), minlength=resamples * n_samples).reshape(resamples, n_samples)
    weights = np.empty((resamples + 1, n_samples))
    weights[0] = 1.0 / n_samples
    weights[1:] = counts / n_samples
    return weights


@dataclass(frozen=True)
class Estimate:
    """A number and its 95 % interval [low, high] (NaN where it cannot be estimated)."""

    value: float
    low: float
    high: float

    @classmethod
    def from_draws(cls, draws: np.ndarray) -> Estimate:
        """From a (1 + B,) draws array: row 0 is the point, the 2.5th and 97.5th percentiles of rows 1..B the
        interval. Resamples where the statistic is undefined (NaN) make the interval NaN: it cannot be trusted."""
        draws = np.asarray(draws, dtype=np.float64)
        value, resampled = float(draws[0]), draws[1:]
        if not np.isfinite(value) or not len(resampled) or np.isnan(resampled).any():
            return cls(value, math.nan, math.nan)
        low, high = np.quantile(resampled, [SIGNIFICANCE / 2, 1 - SIGNIFICANCE / 2], method="linear")
        return cls(value, float(low), float(high))

    @classmethod
    def exact(cls, value: float) -> Estimate:
        """A number with no sampling uncertainty (a property of fixed inputs)."""
        return cls(float(value), float(value), float(value))

    @property
    def interval(self) -> list[float | None]:
        """``[low, high]`` for JSON (None where NaN)."""
        return [_json_float(self.low), _json_float(self.high)]

    @property
    def width(self) -> float:
        return self.high - self.low

    def to_json(self) -> dict[str, float | list[float | None] | None]:
        return {"value": _json_float(self.value), "ci95": self.interval}

    def format(self, digits: int = 3) -> str:
        """``0.531 [0.472, 0.598]``; ``–`` for a missing value."""
        if not np.isfinite(self.value):
            return "–"
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            return f"{self.value:.{digits}f} [–]"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def clopper_pearson(successes: int, trials: int) -> Estimate:
    """The share ``successes / trials`` with its exact (Clopper–Pearson) 95 % interval."""
    from scipy.stats import beta

    if trials < 1:
        return Estimate(math.nan, math.nan, math.nan)
    low = 0.0 if successes == 0 else float(beta.ppf(SIGNIFICANCE / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - SIGNIFICANCE / 2, successes + 1, trials - successes))
    return Estimate(successes / trials, low, high)


def normal_quantile(probability: float) -> float:
    return NormalDist().inv_cdf(probability)


def paired_p_values(draws: np.ndarray) -> np.ndarray:
    """(K, K) two-sided bootstrap p-values of the differences between K statistics computed on the same resamples.

    Args:
        draws: (1 + B, K): row 0 the point estimates, rows 1..B the resamples.
    Returns:
        p[i, j] = min(1, 2 · min(#(d ≤ 0) + 1, #(d ≥ 0) + 1) / (B + 1)) with d = draws[1:, i] − draws[1:, j]; the
        diagonal is 1.
    """
    resampled = np.asarray(draws, dtype=np.float64)[1:]
    differences = resampled[:, :, None] - resampled[:, None, :]  # (B, K, K)
    total = len(resampled) + 1
    below = (np.sum(differences <= 0, axis=0) + 1) / total
    above = (np.sum(differences >= 0, axis=0) + 1) / total
    p_values = np.minimum(1.0, 2.0 * np.minimum(below, above))
    np.fill_diagonal(p_values, 1.0)
    return p_values


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (any shape; NaN entries are not in the family)."""
    p_values = np.asarray(p_values, dtype=np.float64)
    flat = p_values.ravel()
    tested = np.flatnonzero(np.isfinite(flat))
    adjusted = np.full_like(flat, np.nan)
    order = tested[np.argsort(flat[tested], kind="stable")]
    size = len(order)
    stepped = np.maximum.accumulate((size - np.arange(size)) * flat[order]) if size else np.array([])
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted.reshape(p_values.shape)


def rank_groups(order: list[int], better: np.ndarray) -> list[int]:
    """Rank groups of K items sorted best first: a new group starts after position i only when every item up to i
    is significantly better than every item after it, so items in different groups are always significantly
    ordered (items within a group need not all be tied: the grouping never claims an order the data does not show).

    Args:
        order: the K item indices, best first (by point estimate).
        better: (K, K) bool, better[a, b]: a is significantly better than b.
    Returns:
        group number (1 = best) of each item, by item index.
    """
    groups = [0] * len(order)
    group, start = 1, 0
    for position, item in enumerate(order):
        if position > start and all(better[a, b] for a in order[start:position] for b in order[position:]):
            group, start = group + 1, position
        groups[item] = group
    return groups


def minimum_detectable_difference(
    standard_error: float, comparisons: int, significance: float = SIGNIFICANCE, power: float = POWER
) -> float:
    """The smallest true difference a two-sided test at ``significance / comparisons`` (the first, strictest step
    of Holm's procedure over ``comparisons`` tests) detects with probability ``power``, given the standard error of
    the difference: (z_{1 − α/(2m)} + z_{power}) · SE."""
    comparisons = max(1, comparisons)
    return (normal_quantile(1 - significance / (2 * comparisons)) + normal_quantile(power)) * standard_error


def wilson(successes: int, trials: int) -> Estimate:
    """The share ``successes / trials`` with its Wilson score 95 % interval."""
    if trials < 1:
        return Estimate(math.nan, math.nan, math.nan)
    z = normal_quantile(1 - SIGNIFICANCE / 2)
    share = successes / trials
    centre = (share + z**2 / (2 * trials)) / (1 + z**2 / trials)
    half = z * math.sqrt(share * (1 - share) / trials + z**2 / (4 * trials**2)) / (1 + z**2 / trials)
    return Estimate(share, max(0.0, centre - half), min(1.0, centre + half))


def difference_of_shares(first: tuple[int, int], second: tuple[int, int]) -> Estimate:
    """``first`` − ``second`` of two independent shares (successes, trials), with Newcombe's hybrid score 95 %
    interval (from the two Wilson intervals)."""
    a, b = wilson(*first), wilson(*second)
    difference = a.value - b.value
    low = difference - math.sqrt((a.value - a.low) ** 2 + (b.high - b.value) ** 2)
    high = difference + math.sqrt((a.high - a.value) ** 2 + (b.value - b.low) ** 2)
    return Estimate(difference, low, high)


def correlation_interval(correlation: float, n_samples: int) -> Estimate:
    """A Pearson correlation of ``n_samples`` pairs with its Fisher-z 95 % interval."""
    if n_samples < 4 or not np.isfinite(correlation):
        return Estimate(correlation, math.nan, math.nan)
    clipped = min(max(correlation, -1 + 1e-12), 1 - 1e-12)
    half = normal_quantile(1 - SIGNIFICANCE / 2) / math.sqrt(n_samples - 3)
    return Estimate(correlation, math.tanh(math.atanh(clipped) - half), math.tanh(math.atanh(clipped) + half))
