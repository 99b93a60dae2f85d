"""Stage 5, evaluate: judge one method's directions on held-out latents by really editing, re-synthesizing and
re-labeling (never by asking the fitted model).

Held-out z come from their own random stream (numpy PCG64 seeded with ``(eval.seed, EVAL_STREAM, chunk)``) and are
checked to share no row with the fitted latents; every method is judged on the same held-out z, so comparisons
between methods are paired. For every evaluated direction n, edit mode (``plain``, and ``conditional`` when
``eval.condition_on`` names directions to hold fixed) and strength α in ``eval.alphas``: z' = edit(z, n, α) → G(z')
→ labeler → scores, and LPIPS(G(z), G(z')). One long-format Parquet part per chunk of held-out samples
(``evaluations/<method>/``), so a killed evaluation resumes at chunk granularity.

A direction that comes with a nonlinear model of its attribute (TunaGAN's MLP, ``meta["models"]``) is edited as
the paper applies it: each held-out latent follows the model's normalised gradient for a path of length |α|
(:func:`stages.latent.editing.follow_gradient`), not the mean-gradient vector stored for consumers that need one
vector; its PPL is measured along that path (:func:`field_perceptual_path_length_terms`).

``finish`` writes, under ``metrics/``:

- ``<method>.samples.parquet`` and ``<method>.ppl.parquet``: what was measured per held-out sample (the re-labeled
  scores along the α path, LPIPS, the PPL terms; :mod:`stages.reporting.samples`), so any statistic can be
  recomputed without re-synthesizing;
- ``<method>.details.json``: every metric (defined in :mod:`stages.reporting.samples`: effect ``slope`` /
  ``slope_std``, ``moved_fraction``, Table II cells and ``entanglement``, ``lpips``, ``ppl``, the conditional
  ones; "std" units are each score's standard deviation on the labeled fit data, ``spread``), each with its 95 %
  interval in the ``ci95`` beside it (bootstrap over the held-out samples,
  ``eval.bootstrap_resamples`` resamples seeded from ``eval.seed``; ``moved_fraction`` exact, Clopper–Pearson), the
  method's own fit statistics, and where the edits were made;
- ``<method>.json``: the headline numbers (:data:`HEADLINE_KEYS` per attribute and their means) with intervals;
- ``<method>.curves.json`` (DVC plots): mean target score per α with its interval;

and traversal grids ``reports/grids/<method>/<attribute>.png``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import torch

from latentatlas import dataset
from latentatlas.atomic import atomic_write_json
from latentatlas.errors import LatentAtlasError
from latentatlas.layout import OutputLayout
from latentatlas.params import Params
from latentatlas.stores import ParquetChunkStore, StoreError, StoreInfo
from stages.latent.directions import DirectionSet
from stages.latent.editing import DirectionEdit, LatentField, direction_edits
from stages.latent.metrics import field_perceptual_path_length_terms, perceptual_path_length_terms
from stages.latent.perceptual import resize_for_lpips
from stages.latent.streams import heldout_latents_z
from stages.plugins.generators import Generator, generator_for
from stages.plugins.generators.synthesis import ImageSynthesizer, images_to_uint8
from stages.plugins.labelers import Labeler, labeler_for
from stages.plugins.labelers.scoring import score_images
from stages.plugins.methods.base import METHODS
from stages.reporting.contact_sheet import render_traversal_grid, write_contact_sheet
from stages.reporting.samples import (
    EDIT_KEYS,
    MODES,
    SUMMARY_KEYS,
    EditDraws,
    EvaluationDraws,
    EvaluationRecord,
    metric_estimate,
)
from stages.reporting.statistics import BOOTSTRAP_STREAM, LEVEL, Estimate
from stages.runtime.chunked import ChunkedStage
from stages.runtime.device import inference_context, resolve_device

logger = logging.getLogger(__name__)

#: Per attribute, what ``metrics/<method>.json`` keeps: effect, entanglement, identity, direction.
HEADLINE_KEYS = ("slope_std", "entanglement", "lpips", "moved_fraction")
#: eval keys that change only the statistics computed in ``finish``, never a chunk of the evaluation store.
STATISTICS_KEYS = frozenset({"bootstrap_resamples"})


class EvaluationError(LatentAtlasError, ValueError):
    """The directions cannot be evaluated as asked (unknown attribute, no component for it, overlap, ...)."""


def _row_keys(latents: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(latents)}


class EvaluateStage(ChunkedStage):
    """Edit held-out latents along one entry's directions, re-synthesize, re-label; ``finish`` writes the metrics
    (see the module docstring)."""

    name = "evaluate"

    def __init__(
        self,
        params: Params,
        data_dir: Path,
        method: str,
        layout: OutputLayout = OutputLayout(),
        generator: Generator | None = None,
        labeler: Labeler | None = None,
        lpips: torch.nn.Module | None = None,
        *,
        attach: str | None = None,
    ) -> None:
        """``attach``: worker mode (the driver's store fingerprint), see :class:`stages.runtime.chunked.ChunkedStage`;
        the held-out overlap check is the driver's."""
        layout = OutputLayout(Path(layout.root).resolve())
        super().__init__(
            params,
            data_dir,
            attach=attach,
            options={"method": method, "layout": layout},
            injected=generator is not None or labeler is not None or lpips is not None,
        )
        self.params, self.method, self.settings = params, method, params.eval
        self.layout = layout
        self._load_directions_and_data(data_dir)
        self._choose_edits()
        self._build_models(generator, labeler, lpips)
        self.store: ParquetChunkStore = self._open_output(
            ParquetChunkStore, layout.evaluations_root() / method, self._store_info()
        )
        if attach is None:
            self._check_heldout_is_disjoint()

    # ------------------------------------------------------------------------------------------------ set-up

    def _load_directions_and_data(self, data_dir: Path) -> None:
        """The entry's directions, and the labeled latents (read-locked by the driver for its whole run)."""
        self.directions = DirectionSet.load(self.layout.directions(self.method))
        self.space = self.directions.space
        self.data = dataset.open(data_dir, read_lock=not self.attached)
        self._exit_stack.callback(self.data.close)
        self.attributes = list(self.settings.attributes or self.params.fit.attributes or self.data.attributes)

    def _choose_edits(self) -> None:
        """Which direction edits each attribute (``targets``), which are held fixed in conditional edits, the modes.

        A supervised method must have every attribute and condition asked for; an unsupervised one is judged on the
        attributes its components match (the others are recorded as unmatched) and holds the conditions it has."""
        base_method = self.params.fit.base_method(self.method)  # a variant is evaluated as its method
        supervised = METHODS.build(base_method).supervised if base_method in METHODS.names() else True
        self.targets: dict[str, DirectionEdit] = direction_edits(
            self.directions, self.attributes, allow_missing=not supervised
        )
        self.unmatched = [name for name in self.attributes if name not in self.targets]
        condition_on = self.settings.condition_on
        self.conditions = [name for name in condition_on if name in self.targets]
        unknown = [name for name in condition_on if name not in self.targets]
        if unknown and supervised:
            raise EvaluationError(
                f"eval.condition_on: {unknown} are not among the evaluated attributes {list(self.targets)}"
            )
        self.modes = list(MODES) if self.conditions else ["plain"]
        self.alphas = np.asarray(self.settings.alphas, dtype=np.float64)

    def _build_models(
        self, generator: Generator | None, labeler: Labeler | None, lpips: torch.nn.Module | None
    ) -> None:
        """Generator (behind a batched synthesizer), labeler and LPIPS (built on first use) on the eval device; the
        edit space and W+ layers checked against the generator."""
        synth_settings = self.params.synthesize.model_copy(
            update={"batch_size": self.settings.batch_size, "device": self.settings.device}
        )
        generator = generator_for(self.params.generator, generator)
        self.synthesizer = ImageSynthesizer(generator, synth_settings)
        self.device = resolve_device(self.settings.device)
        self.labeler = labeler_for(self.params.label, labeler).to(self.device)
        self._lpips = lpips
        self.z_dim = generator.z_dim
        self.layers = self._check_space(generator, self.settings.layers)
        self._edit_layers_along_vectors()

    def _store_info(self) -> StoreInfo:
        """The evaluation store's description: its fingerprint covers everything a chunk depends on (not the
        statistics computed in ``finish``)."""
        settings = self.settings
        inputs = {
            "stage": "evaluate",
            "method": self.method,
            "directions": self.directions.meta.get("fingerprint"),
            "directions_vectors": _digest(self.directions.vectors),
            "labels": self.data.labels_store.info.fingerprint,
            "eval": settings.model_dump(mode="json", exclude=set(STATISTICS_KEYS)),
            "attributes": self.attributes,
            "labeler": self.labeler.fingerprint,
            **self.synthesizer.fingerprint_inputs(),
            "edits": {name: self.edit_kind(name) for name in self.targets},
        }
        rows_per_sample = len(self.targets) * len(self.modes) * len(self.alphas)
        return StoreInfo(
            "evaluation",
            inputs,
            settings.n_samples,
            settings.chunk_size,
            details={
                "rows_per_sample": rows_per_sample,
                "targets": list(self.targets),
                "modes": self.modes,
                "alphas": settings.alphas,
                "scores": list(self.labeler.attributes),
            },
        )

    def _check_space(self, generator: Generator, layers: list[int] | None) -> tuple[int, int] | None:
        """Edits happen in the space the directions were fitted in (z, or w: held-out z mapped first), W+ layers
        ``layers`` only when given. Returns the layer range, or None."""
        if self.space not in ("z", "w") or self.space not in generator.latent_spaces:
            raise EvaluationError(
                f"{self.method}: directions live in space {self.space!r}, but the generator "
                f"{generator.name!r} is driven from {list(generator.latent_spaces)} (edits need z or w)"
            )
        dim = self.z_dim if self.space == "z" else int(generator.w_dim)
        if self.directions.dim != dim:
            raise EvaluationError(
                f"{self.method}: directions are {self.directions.dim}-d, the generator's {self.space} is {dim}-d"
            )
        if layers is None or self.space != "w":
            return None  # W+ layer ranges apply to directions in w; z directions edit z (metrics say layers: null)
        if layers[1] > int(generator.num_ws):
            raise EvaluationError(f"eval.layers {layers}: the generator has {generator.num_ws} W+ layers")
        return layers[0], layers[1]

    def _edit_layers_along_vectors(self) -> None:
        """With ``eval.layers`` (W+ layer edits) a gradient path has no layer-wise meaning: directions whose set
        carries a nonlinear model (TunaGAN's MLPs) are edited along their stored mean-gradient vectors instead, and
        the metrics say so (``edit``)."""
        nonlinear = sorted(name for name, target in self.targets.items() if target.field is not None)
        if nonlinear and self.layers is not None:
            logger.warning(
                "%s: eval.layers edits W+ layers along vectors; the nonlinear models of %s are edited "
                "along their mean-gradient vectors instead of their gradient paths",
                self.method,
                nonlinear,
            )
            self.targets = {name: dataclasses.replace(target, field=None) for name, target in self.targets.items()}

    def _check_heldout_is_disjoint(self) -> None:
        fitted = set()
        store = self.data.latents_store
        for index in range(store.info.n_chunks):
            fitted |= _row_keys(store.read_chunk("z", index))
        for index in range(self.store.info.n_chunks):
            if _row_keys(self.heldout(index)) & fitted:
                raise EvaluationError(
                    f"held-out chunk {index} shares latents with the fitted data "
                    f"({store.path}); choose another eval.seed"
                )

    # ------------------------------------------------------------------------------------------------ editing

    def edit_kind(self, attribute: str) -> str:
        """How ``attribute``'s direction is applied: ``"gradient_path"`` (nonlinear model) or ``"vector"``."""
        return self.targets[attribute].kind

    def base_latents(self, latents_z: np.ndarray) -> np.ndarray:
        """(n, D) held-out latents in the directions' space: z itself, or its (truncated) w."""
        if self.space == "z":
            return latents_z
        generator, device = self.synthesizer.generator, self.synthesizer.device
        with inference_context(device, amp=False):
            return generator.map(torch.from_numpy(latents_z).to(device))["w"].float().cpu().numpy()

    @functools.cached_property
    def lpips(self) -> torch.nn.Module:
        from stages.latent.perceptual import build_lpips

        return (self._lpips or build_lpips(self.settings.lpips_net, self.device)).to(self.device).eval()

    def heldout(self, index: int) -> np.ndarray:
        return heldout_latents_z(self.settings.seed, index, self.chunk_length(index), self.z_dim)

    def keep_for(self, attribute: str, mode: str) -> list[np.ndarray] | None:
        if mode == "plain":
            return None
        kept = [self.targets[name].vector for name in self.conditions if name != attribute]
        return kept or None

    def _edited_images(self, latents_z: np.ndarray, attribute: str, mode: str) -> torch.Tensor:
        """(M, n, 3, R, R) images of the n latents edited at every α, in the directions' space (W+ layers
        ``eval.layers`` only, when given)."""
        base = self.base_latents(latents_z)
        target, keep = self.targets[attribute], self.keep_for(attribute, mode)
        if self.layers is not None:
            generator, device = self.synthesizer.generator, self.synthesizer.device
            with inference_context(device, amp=False):
                codes = generator.w_plus(torch.from_numpy(base).to(device)).float().cpu().numpy()
            edited = target.apply_layers(codes, self.alphas, self.layers, keep=keep)
            images = self.synthesizer(edited.reshape(-1, *edited.shape[2:]).astype(np.float32), space="w+")
        else:
            edited = target.apply(base, self.alphas, keep=keep)
            images = self.synthesizer(edited.reshape(-1, edited.shape[-1]).astype(np.float32), space=self.space)
        return images.reshape(len(self.alphas), len(latents_z), *images.shape[1:])

    def _distances(self, originals: torch.Tensor, edited: torch.Tensor) -> np.ndarray:
        """(n,) LPIPS between each original and its edit, in batches."""
        batch_size = self.settings.batch_size
        return (
            torch.cat(
                [
                    self.lpips(
                        resize_for_lpips(originals[s : s + batch_size].to(self.device)),
                        resize_for_lpips(edited[s : s + batch_size].to(self.device)),
                    )
                    for s in range(0, len(originals), batch_size)
                ]
            )
            .float()
            .cpu()
            .numpy()
            .reshape(-1)
        )

    def _measure(self, latents_z: np.ndarray, attribute: str, mode: str) -> dict[str, np.ndarray]:
        """One direction × mode on n held-out latents: columns ``alpha``, ``lpips`` and every score, (M · n,) each,
        α-major."""
        images = self._edited_images(latents_z, attribute, mode)
        originals = images[int(np.flatnonzero(self.alphas == 0)[0])]
        scores, distances = [], []
        with inference_context(self.device, amp=False):
            for position in range(len(self.alphas)):
                scores.append(score_images(self.labeler, images[position].to(self.device), self.settings.batch_size))
                distances.append(self._distances(originals, images[position]))
        measured = {
            "alpha": np.repeat(self.alphas, len(latents_z)).astype(np.float32),
            "lpips": np.concatenate(distances).astype(np.float32),
        }
        stacked = np.concatenate(scores)
        measured.update({name: stacked[:, k] for k, name in enumerate(self.labeler.attributes)})
        return measured

    def run_chunk(self, index: int) -> None:
        rows = self.store.info.chunk_slice(index)
        latents_z = self.heldout(index)
        sample_ids = np.arange(rows.start, rows.stop, dtype=np.int64)
        parts = []
        for attribute in self.targets:
            for mode in self.modes:
                measured = self._measure(latents_z, attribute, mode)
                count = len(measured["alpha"])
                parts.append(
                    {
                        "sample_id": np.tile(sample_ids, len(self.alphas)),
                        "direction": [attribute] * count,
                        "mode": [mode] * count,
                        **measured,
                    }
                )
        columns = ["sample_id", "direction", "mode", "alpha", "lpips", *self.labeler.attributes]
        table = pa.table(
            {
                name: pa.array(np.concatenate([part[name] for part in parts]))
                if name not in ("direction", "mode")
                else pa.array([value for part in parts for value in part[name]], pa.string())
                for name in columns
            }
        )
        self.store.write_chunk(index, table)

    # ------------------------------------------------------------------------------------------------ finish

    def finish(self) -> None:
        super().finish()
        record = self.record()
        record.save(self.layout.metric_samples(self.method), self.layout.metric_ppl_terms(self.method))
        draws = EvaluationDraws(record, self.settings.bootstrap_resamples, self.settings.seed)
        details, curves = summarize(draws, self.targets, self.directions.stats)
        details.update(self._description())
        atomic_write_json(self.layout.metric_details(self.method), details)
        atomic_write_json(self.layout.metrics(self.method), headline_metrics(details))
        atomic_write_json(self.layout.metric_curves(self.method), curves)
        self._write_grids()

    def record(self) -> EvaluationRecord:
        """The per-sample record: the evaluation store's edits and each direction's PPL terms."""
        frame = pads.dataset(str(self.store.path), format="parquet").to_table().to_pandas()
        if frame.empty:
            raise StoreError(f"{self.store.path}: the evaluation store is empty")
        record = EvaluationRecord.from_frames(frame)
        terms = {attribute: self._ppl_terms(target) for attribute, target in self.targets.items()}
        return dataclasses.replace(record, ppl_terms=terms, reference_spread=self.reference_spread(record))

    def reference_spread(self, record: EvaluationRecord) -> dict[str, float]:
        """Each score's standard deviation (ddof 0) on the labeled fit data, for the scores it holds: the unit of
        the std metrics (a constant: thousands of samples, the same for every method)."""
        names = [name for name in record.score_names if name in self.data.attributes]
        labels = self.data.labels_frame(names) if names else None
        return {name: float(np.nanstd(labels[name].to_numpy(np.float64))) for name in names}

    def _description(self) -> dict[str, Any]:
        """What was evaluated and where: the entry, its method, the edit space and layers, the held-out count."""
        return {
            "method": self.method,
            "base_method": self.params.fit.base_method(self.method),
            "space": self.space,
            "layers": list(self.layers) if self.layers is not None else None,
            "n_heldout": self.store.info.n_samples,
            "condition_on": list(self.conditions),
            "unmatched_attributes": self.unmatched,
        }  # asked for, but no component of this method moves them

    def _ppl_terms(self, target: DirectionEdit) -> np.ndarray:
        """The per-sample PPL terms along the target's direction (its gradient path for a nonlinear model)."""
        options = {
            "space": self.space,
            "n_samples": self.settings.ppl_samples,
            "t_max": float(np.abs(self.alphas).max()),
            "seed": self.settings.seed,
            "batch_size": self.settings.batch_size,
            "device": self.device,
        }
        generator = self.synthesizer.generator
        if target.field is None:
            return perceptual_path_length_terms(generator, target.vector[None], self.lpips, **options)[0]
        field: LatentField = target.field
        return field_perceptual_path_length_terms(generator, field, self.lpips, **options)

    def _write_grids(self) -> None:
        latents_z = self.heldout(0)[: self.settings.grid_samples]
        for attribute in self.targets:
            images = self._edited_images(latents_z, attribute, "plain")  # (M, g, 3, R, R)
            flat = images.reshape(-1, *images.shape[2:])
            with inference_context(self.device, amp=False):
                scores = score_images(self.labeler, flat.to(self.device), self.settings.batch_size)
            target = (
                scores[:, list(self.labeler.attributes).index(attribute)]
                if attribute in self.labeler.attributes
                else np.full(len(flat), np.nan)
            )
            pixels = images_to_uint8(flat).reshape(len(self.alphas), len(latents_z), *images.shape[3:], 3)
            grid = render_traversal_grid(
                pixels.transpose(1, 0, 2, 3, 4),
                self.alphas,
                target.reshape(len(self.alphas), -1).T,
                title=f"{self.method}: {attribute}",
            )
            write_contact_sheet(self.layout.traversal_grid(self.method, attribute), grid)


def headline_metrics(details: dict[str, Any]) -> dict[str, Any]:
    """``metrics/<method>.json``: where the edits were made, and per attribute and on average only
    :data:`HEADLINE_KEYS` (+ the mean PPL), each with its interval."""

    def pick(entry: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
        picked = {key: entry[key] for key in keys if key in entry}
        return {**picked, "ci95": {key: entry["ci95"][key] for key in picked if key in entry.get("ci95", {})}}

    return {
        "space": details.get("space"),
        "layers": details.get("layers"),
        "n_heldout": details.get("n_heldout"),
        "directions": {attribute: pick(entry, HEADLINE_KEYS) for attribute, entry in details["directions"].items()},
        "summary": pick(details["summary"], (*HEADLINE_KEYS, "ppl")),
    }


def _digest(vectors: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(vectors, dtype=np.float32).tobytes()).hexdigest()[:24]


def _edit_entry(edits: EditDraws, prefix: str, n_samples: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """One mode's metrics (keys prefixed ``conditional_`` for that mode) and their intervals."""
    values, intervals = {}, {}
    for key in EDIT_KEYS:
        estimate = metric_estimate(edits.values[key], key, n_samples)
        values[prefix + key], intervals[prefix + key] = estimate.value, estimate.interval
    table = {}
    for other, cells in edits.table_ii.items():
        estimates = {key: Estimate.from_draws(draws) for key, draws in cells.items()}
        table[other] = {
            **{key: e.value for key, e in estimates.items()},
            "ci95": {key: e.interval for key, e in estimates.items()},
        }
    values[prefix + "table_ii"] = table
    return values, intervals


def _curve_points(attribute: str, mode: str, alphas: np.ndarray, edits: EditDraws) -> list[dict[str, Any]]:
    """The mean target score per α with its interval (one point per α; none when the target is not scored)."""
    if edits.curve is None:
        return []
    points = []
    for position, alpha in enumerate(alphas):
        estimate = Estimate.from_draws(edits.curve[:, position])
        points.append(
            {
                "direction": attribute,
                "mode": mode,
                "alpha": float(alpha),
                "target_mean": estimate.value,
                "target_low": estimate.low,
                "target_high": estimate.high,
                "target_std": float(edits.curve_std[position]),
            }
        )
    return points


def summarize(
    draws: EvaluationDraws, targets: Mapping[str, DirectionEdit], fit_stats: Mapping[str, dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The details (every metric with its interval, per attribute and averaged) and the per-α curves of one
    evaluation, from its draws (see :mod:`stages.reporting.samples` for the definitions)."""
    record, n_samples = draws.record, draws.record.n_samples
    spread = {name: float(draws.spread[0, k]) for k, name in enumerate(record.score_names)}
    details: dict[str, Any] = {
        "directions": {},
        "summary": {},
        "spread": spread,
        "intervals": {
            "level": LEVEL,
            "resamples": draws.resamples,
            "seed": draws.seed,
            "stream": BOOTSTRAP_STREAM,
            "method": "percentile bootstrap over the held-out samples (the same resamples for every method); "
            "moved_fraction: exact Clopper–Pearson; ppl: bootstrap over its own (z, t) samples",
        },
    }
    curves: list[dict[str, Any]] = []
    for attribute, target in targets.items():
        entry: dict[str, Any] = {
            "source_direction": target.source,
            "fit": fit_stats.get(target.source, {}),
            "edit": target.kind,
        }
        intervals: dict[str, Any] = {}
        for mode in MODES:
            edits = draws.edit(attribute, mode, full=True)
            if edits is None:
                continue
            values, mode_intervals = _edit_entry(edits, "" if mode == "plain" else "conditional_", n_samples)
            entry.update(values)
            intervals.update(mode_intervals)
            curves += _curve_points(attribute, mode, record.edits[(attribute, mode)].alphas, edits)
        ppl = draws.ppl(attribute)
        if ppl is not None:
            estimate = Estimate.from_draws(ppl)
            entry["ppl"], intervals["ppl"] = estimate.value, estimate.interval
        entry["ci95"] = intervals
        details["directions"][attribute] = entry
    summary_intervals = {}
    for key in SUMMARY_KEYS:
        averaged = draws.mean_over(targets, key)
        estimate = Estimate.from_draws(averaged) if averaged is not None else Estimate(np.nan, np.nan, np.nan)
        details["summary"][key], summary_intervals[key] = estimate.value, estimate.interval
    details["summary"]["ci95"] = summary_intervals
    return details, curves
