"""What one entry's evaluation measured per held-out sample, and every evaluation metric computed from it.

The record (:class:`EvaluationRecord`, written beside the metrics so any statistic can be recomputed without
re-synthesizing):

- ``metrics/<entry>.samples.parquet``: one row per held-out sample × evaluated direction × edit mode × α, with
  ``sample_id``, ``direction`` (the attribute edited), ``mode`` (``plain`` / ``conditional``), ``alpha``, ``lpips``
  (LPIPS between the original and the edited image) and every labeler score of the edited image;
- ``metrics/<entry>.ppl.parquet``: per evaluated direction, the per-sample terms of its perceptual path length;
- the samples table's metadata: each score's reference standard deviation σ (on the labeled fit data), the unit of
  the "std" metrics.

Every metric is a function of weighted means over the held-out samples, computed on every row of a weights matrix
(:func:`stages.reporting.statistics.resample_weights`): row 0 gives the number itself, rows 1..B its bootstrap
resamples. With α_max / α_min the largest / smallest strength and y_t(α) a sample's re-labeled score of attribute t:

- ``slope``: the least-squares slope of the target's score on α over samples × α, which (every sample has every α)
  is the mean of the per-sample slopes; ``slope_std``: the same over the target's standard deviation σ_t on the
  labeled fit data (ddof 0; thousands of samples, so a constant: the std metrics stay means of per-sample values,
  whose bootstrap intervals hold their level; a score the fit data lacks uses the held-out originals' σ, resampled);
- ``moved_fraction``: share of samples with y_t(α_max) > y_t(α_min);
- Table II cells (Pham Van et al., "Interpreting the Latent Space of Generative Adversarial Networks using Supervised
  Learning") for every other attribute o: mean original, mean edited at ±α_max and ``mean_abs_change``, the mean of
  (|y_o(α_max) − y_o(0)| + |y_o(α_min) − y_o(0)|) / 2; ``entanglement``: the mean over o of mean_abs_change / σ_o;
- ``lpips``: mean of (LPIPS(α_max) + LPIPS(α_min)) / 2; ``ppl``: mean of the direction's PPL terms (their own
  (z, t) samples, resampled on their own).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from latentatlas.atomic import atomic_write_bytes
from latentatlas.errors import LatentAtlasError
from stages.reporting.statistics import PPL_STREAM, Estimate, clopper_pearson, resample_weights

#: The samples table's metadata key holding the reference spreads (JSON).
SPREAD_METADATA = b"latentatlas.reference_spread"
#: Columns of the samples table before the labeler's scores.
KEY_COLUMNS = ("sample_id", "direction", "mode", "alpha", "lpips")
MODES = ("plain", "conditional")
#: The metrics of one direction × mode, in the order the details list them.
EDIT_KEYS = ("slope", "slope_std", "moved_fraction", "entanglement", "lpips")
TABLE_II_KEYS = ("original", "edited_plus", "edited_minus", "mean_abs_change")
#: Averaged over attributes into the summary.
SUMMARY_KEYS = ("slope_std", "moved_fraction", "entanglement", "lpips", "ppl")


class RecordError(LatentAtlasError, ValueError):
    """A per-sample record is incomplete (a sample lacks an α) or missing."""


@dataclass(frozen=True)
class EditSamples:
    """One direction's edits in one mode: ``alphas`` (M,) increasing, ``scores`` (M, n, S) re-labeled scores and
    ``lpips`` (M, n) distances to the original, per α and held-out sample."""

    alphas: np.ndarray
    scores: np.ndarray
    lpips: np.ndarray

    @property
    def positions(self) -> tuple[int, int, int]:
        """Indices of α_min, 0 and α_max."""
        return int(np.argmin(self.alphas)), int(np.flatnonzero(self.alphas == 0)[0]), int(np.argmax(self.alphas))


@dataclass(frozen=True)
class EvaluationRecord:
    """Everything one entry's evaluation measured per held-out sample (see the module docstring); ``reference_spread``:
    score → its standard deviation on the labeled fit data (the unit of the std metrics)."""

    sample_ids: np.ndarray
    score_names: tuple[str, ...]
    edits: dict[tuple[str, str], EditSamples]
    ppl_terms: dict[str, np.ndarray] = field(default_factory=dict)
    reference_spread: dict[str, float] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return len(self.sample_ids)

    @property
    def attributes(self) -> list[str]:
        """The evaluated directions (attributes), in evaluation order."""
        return list(dict.fromkeys(direction for direction, _ in self.edits))

    def originals(self) -> np.ndarray:
        """(n, S) scores of the unedited images (α = 0 of a plain edit: the same images for every direction)."""
        samples = next(edits for (_, mode), edits in self.edits.items() if mode == "plain")
        return samples.scores[samples.positions[1]]

    @classmethod
    def from_frames(
        cls, edits: pd.DataFrame, ppl: pd.DataFrame | None = None, reference_spread: dict[str, float] | None = None
    ) -> EvaluationRecord:
        """From the long edits table (:data:`KEY_COLUMNS` + scores, any row order), the PPL terms table
        (``direction``, ``term``) and the scores' reference standard deviations."""
        if edits.empty:
            raise RecordError("the evaluation recorded no edits")
        score_names = tuple(name for name in edits.columns if name not in KEY_COLUMNS)
        sample_ids = np.sort(edits["sample_id"].unique())
        grouped = {}
        for (direction, mode), rows in edits.groupby(["direction", "mode"], sort=False):
            rows = rows.sort_values(["alpha", "sample_id"])
            alphas = np.sort(rows["alpha"].unique()).astype(np.float64)
            shape = (len(alphas), len(sample_ids))
            if (
                len(rows) != shape[0] * shape[1]
                or not (rows["sample_id"].to_numpy().reshape(shape) == sample_ids).all()
            ):
                raise RecordError(
                    f"edits of {direction!r} ({mode}): expected every one of {len(sample_ids)} held-out "
                    f"samples at each of {len(alphas)} α, got {len(rows)} rows"
                )
            grouped[(str(direction), str(mode))] = EditSamples(
                alphas,
                rows[list(score_names)].to_numpy(np.float64).reshape(*shape, len(score_names)),
                rows["lpips"].to_numpy(np.float64).reshape(shape),
            )
        directions = list(dict.fromkeys(str(direction) for direction in edits["direction"].unique()))
        order = sorted(
            grouped, key=lambda key: (directions.index(key[0]), MODES.index(key[1]) if key[1] in MODES else len(MODES))
        )
        terms = (
            {}
            if ppl is None
            else {
                str(direction): rows["term"].to_numpy(np.float64)
                for direction, rows in ppl.groupby("direction", sort=False)
            }
        )
        return cls(sample_ids, score_names, {key: grouped[key] for key in order}, terms, dict(reference_spread or {}))

    def edits_frame(self) -> pd.DataFrame:
        """The long edits table, sorted by direction, mode, α and sample."""
        parts = []
        for (direction, mode), samples in self.edits.items():
            count = samples.lpips.size
            part = {
                "sample_id": np.tile(self.sample_ids, len(samples.alphas)),
                "direction": np.full(count, direction, dtype=object),
                "mode": np.full(count, mode, dtype=object),
                "alpha": np.repeat(samples.alphas, len(self.sample_ids)).astype(np.float32),
                "lpips": samples.lpips.reshape(-1).astype(np.float32),
            }
            part.update(
                {name: samples.scores[..., k].reshape(-1).astype(np.float32) for k, name in enumerate(self.score_names)}
            )
            parts.append(pd.DataFrame(part))
        return pd.concat(parts, ignore_index=True)

    def ppl_frame(self) -> pd.DataFrame:
        """``direction``, ``term``: the per-sample PPL terms of every direction."""
        rows = [(direction, float(term)) for direction, terms in self.ppl_terms.items() for term in terms]
        return pd.DataFrame(rows, columns=["direction", "term"]).astype({"direction": object, "term": np.float64})

    def save(self, samples_path: Path, ppl_path: Path) -> None:
        """Write both tables (each atomically: a temp file renamed into place); the reference spreads go into the
        samples table's metadata."""
        metadata = {SPREAD_METADATA: json.dumps(self.reference_spread).encode()}
        for frame, path in ((self.edits_frame(), samples_path), (self.ppl_frame(), ppl_path)):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            atomic_write_bytes(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, samples_path: Path, ppl_path: Path) -> EvaluationRecord:
        if not Path(samples_path).is_file():
            raise RecordError(f"{samples_path}: missing; run the evaluate stage first (`dvc repro`)")
        table = pq.read_table(samples_path)
        spread = json.loads((table.schema.metadata or {}).get(SPREAD_METADATA, b"{}"))
        ppl = pd.read_parquet(ppl_path) if Path(ppl_path).is_file() else None
        return cls.from_frames(table.to_pandas(), ppl, spread)


@dataclass(frozen=True)
class EditDraws:
    """The metrics of one direction × mode on every weights row: ``values[key]`` (R,) for :data:`EDIT_KEYS` and
    ``table_ii[other][key]`` (R,) for ``mean_abs_change``; with ``full``, also the other :data:`TABLE_II_KEYS`,
    ``curve`` (R, M) the mean target score per α (None when the attribute is not among the scores) and
    ``curve_std`` (M,) its spread over the samples."""

    values: dict[str, np.ndarray]
    table_ii: dict[str, dict[str, np.ndarray]]
    curve: np.ndarray | None = None
    curve_std: np.ndarray | None = None


def spread_draws(originals: np.ndarray, weights: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """(R, S) standard deviation of each score: its ``reference`` (S,) where given (finite), else that of the
    unedited originals (n, S) over the weighted samples (ddof 0); 1 where it is 0."""
    reference = np.full(originals.shape[1], np.nan) if reference is None else np.asarray(reference, dtype=np.float64)
    deviation = np.broadcast_to(reference, (len(weights), len(reference))).copy()
    missing = ~np.isfinite(reference)
    if missing.any():
        centred = originals[:, missing] - originals[:, missing].mean(axis=0)
        mean = weights @ centred
        deviation[:, missing] = np.sqrt(np.clip(weights @ centred**2 - mean**2, 0.0, None))
    return np.where(deviation > 0, deviation, 1.0)


def edit_draws(
    samples: EditSamples,
    score_names: tuple[str, ...],
    target: str,
    spread: np.ndarray,
    weights: np.ndarray,
    full: bool = True,
) -> EditDraws:
    """Every metric of one direction × mode (see the module docstring) on every row of ``weights`` (R, n), with
    ``spread`` (R, S) from :func:`spread_draws` of the same weights; ``full``: also the Table II cells other than
    the change and the curve (one product per column: the ranking needs neither)."""
    low, zero, high = samples.positions
    columns: dict[str, np.ndarray] = {"lpips": (samples.lpips[high] + samples.lpips[low]) / 2}
    t = score_names.index(target) if target in score_names else None
    if t is not None:
        centred = samples.alphas - samples.alphas.mean()
        target_scores = samples.scores[:, :, t]  # (M, n)
        columns["slope"] = centred @ target_scores / (centred @ centred)
        columns["moved_fraction"] = (target_scores[high] > target_scores[low]).astype(np.float64)
    others = [k for k in range(len(score_names)) if k != t]
    for k in others:
        original, plus, minus = (samples.scores[position, :, k] for position in (zero, high, low))
        cells = {"mean_abs_change": (np.abs(plus - original) + np.abs(minus - original)) / 2}
        if full:
            cells.update({"original": original, "edited_plus": plus, "edited_minus": minus})
        columns.update({f"{score_names[k]}\0{key}": value for key, value in cells.items()})
    names = list(columns)
    means = weights @ np.stack([columns[name] for name in names], axis=1)  # (R, columns)
    mean = {name: means[:, j] for j, name in enumerate(names)}
    nan = np.full(len(weights), np.nan)
    keys = TABLE_II_KEYS if full else ("mean_abs_change",)
    table_ii = {score_names[k]: {key: mean[f"{score_names[k]}\0{key}"] for key in keys} for k in others}
    values = {
        "slope": mean.get("slope", nan),
        "slope_std": mean["slope"] / spread[:, t] if t is not None else nan,
        "moved_fraction": mean.get("moved_fraction", nan),
        "entanglement": np.mean([table_ii[score_names[k]]["mean_abs_change"] / spread[:, k] for k in others], axis=0)
        if others
        else nan,
        "lpips": mean["lpips"],
    }
    if not full or t is None:
        return EditDraws(values, table_ii)
    return EditDraws(values, table_ii, weights @ samples.scores[:, :, t].T, samples.scores[:, :, t].std(axis=1))


def metric_estimate(draws: np.ndarray, key: str, n_samples: int) -> Estimate:
    """A metric's number and 95 % interval from its draws: exact (Clopper–Pearson) for ``moved_fraction`` (a share
    of the n held-out samples), the bootstrap percentiles otherwise."""
    if key.endswith("moved_fraction") and np.isfinite(draws[0]):
        return clopper_pearson(int(round(float(draws[0]) * n_samples)), n_samples)
    return Estimate.from_draws(draws)


class EvaluationDraws:
    """Every metric of one evaluation record on the point row and ``resamples`` bootstrap resamples, seeded by
    ``seed`` (``eval.seed``): records of the same held-out samples get the same resamples (paired). ``weights``:
    those resamples when the caller already drew them (:func:`resample_weights` of the same arguments)."""

    def __init__(self, record: EvaluationRecord, resamples: int, seed: int, weights: np.ndarray | None = None) -> None:
        self.record, self.resamples, self.seed = record, resamples, seed
        self.weights = resample_weights(record.n_samples, resamples, seed) if weights is None else weights
        if self.weights.shape != (resamples + 1, record.n_samples):
            raise ValueError(f"weights {self.weights.shape} do not fit {resamples} resamples of {record.n_samples}")
        reference = np.array([record.reference_spread.get(name, np.nan) for name in record.score_names], dtype=float)
        self.spread = spread_draws(record.originals(), self.weights, reference)
        self._edits: dict[tuple[str, str, bool], EditDraws] = {}
        self._ppl_weights: dict[int, np.ndarray] = {}

    def edit(self, attribute: str, mode: str = "plain", full: bool = False) -> EditDraws | None:
        """The metrics of ``attribute``'s edit in ``mode`` (``full``: with every Table II cell and the curve), or
        None when it was not evaluated."""
        if (attribute, mode) not in self.record.edits:
            return None
        key = (attribute, mode, full)
        if key not in self._edits:
            self._edits[key] = self._edits.get((attribute, mode, True)) or edit_draws(
                self.record.edits[(attribute, mode)],
                self.record.score_names,
                attribute,
                self.spread,
                self.weights,
                full,
            )
        return self._edits[key]

    def value(self, attribute: str, key: str, mode: str = "plain") -> np.ndarray | None:
        """(R,) draws of one metric (:data:`EDIT_KEYS` or ``ppl``), or None when not measured."""
        if key == "ppl":
            return self.ppl(attribute) if mode == "plain" else None
        edits = self.edit(attribute, mode)
        return None if edits is None else edits.values[key]

    def ppl(self, attribute: str) -> np.ndarray | None:
        """(R,) draws of the PPL of ``attribute``'s direction (its own terms, resampled on their own)."""
        terms = self.record.ppl_terms.get(attribute)
        if terms is None or not len(terms):
            return None
        if len(terms) not in self._ppl_weights:
            self._ppl_weights[len(terms)] = resample_weights(len(terms), self.resamples, self.seed, PPL_STREAM)
        return self._ppl_weights[len(terms)] @ terms

    def spread_of(self, name: str) -> np.ndarray:
        """(R,) standard deviation of score ``name`` (the unit of the std metrics)."""
        return self.spread[:, self.record.score_names.index(name)]

    def mean_over(self, attributes: Iterable[str], key: str, mode: str = "plain") -> np.ndarray | None:
        """(R,) mean of a metric over the attributes where it is defined, or None."""
        draws = [d for a in attributes if (d := self.value(a, key, mode)) is not None and np.isfinite(d[0])]
        return np.mean(draws, axis=0) if draws else None
