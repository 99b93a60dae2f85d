"""Stage 5, evaluate: judge one method's directions on held-out latents by really editing, re-synthesizing and
re-labeling (never by asking the fitted model).

Held-out z come from their own random stream (numpy PCG64 seeded with ``(eval.seed, EVAL_STREAM, chunk)``) and are
checked to share no row with the fitted latents. For every evaluated direction n, edit mode (``plain``, and
``conditional`` when ``eval.condition_on`` names directions to hold fixed) and strength α in ``eval.alphas``:
z' = edit(z, n, α) → G(z') → labeler → scores, and LPIPS(G(z), G(z')). One long-format Parquet part per chunk of
held-out samples (``evaluations/<method>/``), so a killed evaluation resumes at chunk granularity.

A direction that comes with a nonlinear model of its attribute (TunaGAN's MLP, ``meta["models"]``) is edited as
the paper applies it: each held-out latent follows the model's normalised gradient for a path of length |α|
(:func:`stages.latent.editing.follow_gradient`), not the mean-gradient vector stored for consumers that need one vector;
its PPL is measured along that path (:func:`field_perceptual_path_length`).

``finish`` turns the store into ``metrics/<method>.details.json`` (every number below; the report reads it),
``metrics/<method>.json`` (the DVC metric: only the headline numbers a user ranks by, :data:`HEADLINE_KEYS` per
attribute and their means, so that ``dvc exp show`` stays readable), ``metrics/<method>.curves.json`` (DVC plots:
mean target score per α) and traversal grids ``reports/grids/<method>/<attribute>.png``:

- effectiveness: ``slope`` of the target score per unit α (least squares over samples × α), the same divided by the
  target's held-out standard deviation (``slope_std``), and ``moved_fraction``: samples whose target score at the
  largest α exceeds the one at the smallest;
- entanglement (Table II of Pham Van et al., "Interpreting the Latent Space of Generative Adversarial Networks using
  Supervised Learning"): for every other attribute, original score, edited score (α = ±max) and mean absolute
  difference; ``entanglement`` = mean over the other attributes of that difference in held-out std units;
- identity and smoothness: mean LPIPS between original and edited image at ±max α; perceptual path length along n;
- the method's own fit statistics (SVM accuracy, separability, RCA, ...) carried through from its directions.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import torch

from latentatlas import dataset
from latentatlas.layout import OutputLayout
from latentatlas.params import Params
from latentatlas.stores import ParquetChunkStore, StoreError, StoreInfo
from latentatlas.atomic import atomic_write_json
from stages.runtime.chunked import ChunkedStage
from stages.reporting.contact_sheet import render_traversal_grid, write_contact_sheet
from stages.runtime.device import inference_context, resolve_device
from stages.latent.directions import DirectionSet
from stages.latent.editing import DirectionEdit, LatentField, direction_edits
from stages.plugins.generators import Generator, generator_for
from stages.plugins.labelers import Labeler, labeler_for
from stages.latent.perceptual import resize_for_lpips
from stages.plugins.methods.base import METHODS
from stages.latent.metrics import field_perceptual_path_length, perceptual_path_length
from stages.latent.streams import heldout_latents_z
from stages.plugins.labelers.scoring import score_images
from stages.plugins.generators.synthesis import ImageSynthesizer, images_to_uint8
from latentatlas.errors import LatentAtlasError

logger = logging.getLogger(__name__)

#: Per attribute, what ``metrics/<method>.json`` (the DVC metric) keeps: effect, entanglement, identity, direction.
HEADLINE_KEYS = ("slope_std", "entanglement", "lpips", "moved_fraction")


class EvaluationError(LatentAtlasError, ValueError):
    """The directions cannot be evaluated as asked (unknown attribute, no component for it, overlap, ...)."""


def _row_keys(latents: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(latents)}


class EvaluateStage(ChunkedStage):
    name = "evaluate"

    def __init__(self, params: Params, data_dir: Path, method: str, layout: OutputLayout = OutputLayout(),
                 generator: Generator | None = None,
                 labeler: Labeler | None = None, lpips: torch.nn.Module | None = None, *,
                 attach: str | None = None) -> None:
        """``attach``: worker mode (the driver's store fingerprint), see :class:`stages.runtime.chunked.ChunkedStage`; the
        held-out overlap check is the driver's."""
        layout = OutputLayout(Path(layout.root).resolve())
        options = {"method": method, "layout": layout}
        super().__init__(params, data_dir, attach=attach, options=options,
                         injected=generator is not None or labeler is not None or lpips is not None)
        settings = params.eval
        self.params, self.method, self.settings = params, method, settings
        self.directions = DirectionSet.load(layout.directions(method))
        self.space = self.directions.space
        # The driver holds the labeled latents read-locked for its whole run (closed with the stage).
        self.data = dataset.open(data_dir, read_lock=not self.attached)
        self._exit_stack.callback(self.data.close)
        self.attributes = list(settings.attributes or params.fit.attributes or self.data.attributes)
        base_method = params.fit.base_method(method)  # a variant is evaluated as its method
        supervised = METHODS.build(base_method).supervised if base_method in METHODS.names() else True
        self.targets: dict[str, DirectionEdit] = direction_edits(self.directions, self.attributes,
                                                                 allow_missing=not supervised)
        self.unmatched = [name for name in self.attributes if name not in self.targets]
        # Hold fixed only directions this method has; a supervised method must have every one asked for, an
        # unsupervised one holds those it discovered (recorded in the metrics as unmatched otherwise).
        self.conditions = [name for name in settings.condition_on if name in self.targets]
        unknown = [name for name in settings.condition_on if name not in self.targets]
        if unknown and supervised:
            raise EvaluationError(f"eval.condition_on: {unknown} are not among the evaluated attributes "
                                  f"{list(self.targets)}")
        self.modes = ["plain", "conditional"] if self.conditions else ["plain"]
        self.alphas = np.asarray(settings.alphas, dtype=np.float64)

        synth_settings = params.synthesize.model_copy(update={"batch_size": settings.batch_size,
                                                              "device": settings.device})
        generator = generator_for(params.generator, generator)
        self.synthesizer = ImageSynthesizer(generator, synth_settings)
        self.device = resolve_device(settings.device)
        self.labeler = labeler_for(params.label, labeler).to(self.device)
        self._lpips = lpips
        self.z_dim = generator.z_dim
        self.layers = self._check_space(generator, settings.layers)
        self._edit_layers_along_vectors()

        rows_per_sample = len(self.targets) * len(self.modes) * len(self.alphas)
        inputs = {"stage": "evaluate", "method": method, "directions": self.directions.meta.get("fingerprint"),
                  "directions_vectors": _digest(self.directions.vectors), "labels": self.data.labels_store.info.fingerprint,
                  "eval": settings.model_dump(mode="json"), "attributes": self.attributes,
                  "labeler": self.labeler.fingerprint, **self.synthesizer.fingerprint_inputs(),
                  "edits": {name: self.edit_kind(name) for name in self.targets}}
        info = StoreInfo("evaluation", inputs, settings.n_samples, settings.chunk_size,
                         details={"rows_per_sample": rows_per_sample, "targets": list(self.targets),
                                  "modes": self.modes, "alphas": settings.alphas,
                                  "scores": list(self.labeler.attributes)})
        path = layout.evaluations_root() / method
        self.store: ParquetChunkStore = self._open_output(ParquetChunkStore, path, info)
        self.metrics_path = layout.metrics(method)
        self.details_path = layout.metric_details(method)
        self.curves_path = layout.metrics_root() / f"{method}.curves.json"
        self.grids_dir = layout.grids_root() / method
        if attach is None:
            self._check_heldout_is_disjoint()

    def _check_space(self, generator: Generator, layers: list[int] | None) -> tuple[int, int] | None:
        """Edits happen in the space the directions were fitted in (z, or w: held-out z mapped first), W+ layers
        ``layers`` only when given. Returns the layer range, or None."""
        if self.space not in ("z", "w") or self.space not in generator.latent_spaces:
            raise EvaluationError(f"{self.method}: directions live in space {self.space!r}, but the generator "
                                  f"{generator.name!r} is driven from {list(generator.latent_spaces)} (edits need z or w)")
        dim = self.z_dim if self.space == "z" else int(generator.w_dim)
        if self.directions.dim != dim:
            raise EvaluationError(f"{self.method}: directions are {self.directions.dim}-d, the generator's "
                                  f"{self.space} is {dim}-d")
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
            logger.warning("%s: eval.layers edits W+ layers along vectors; the nonlinear models of %s are edited "
                           "along their mean-gradient vectors instead of their gradient paths", self.method, nonlinear)
            self.targets = {name: dataclasses.replace(target, field=None) for name, target in self.targets.items()}

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

    def _check_heldout_is_disjoint(self) -> None:
        fitted = set()
        store = self.data.latents_store
        for index in range(store.info.n_chunks):
            fitted |= _row_keys(store.read_chunk("z", index))
        for index in range(self.store.info.n_chunks):
            if _row_keys(self.heldout(index)) & fitted:
                raise EvaluationError(f"held-out chunk {index} shares latents with the fitted data "
                                      f"({store.path}); choose another eval.seed")

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

    def run_chunk(self, index: int) -> None:
        rows = self.store.info.chunk_slice(index)
        latents_z = self.heldout(index)
        sample_ids = np.arange(rows.start, rows.stop, dtype=np.int64)
        columns: dict[str, list[np.ndarray]] = {"sample_id": [], "direction": [], "mode": [], "alpha": [],
                                                "lpips": [], **{name: [] for name in self.labeler.attributes}}
        batch_size = self.settings.batch_size
        for attribute in self.targets:
            for mode in self.modes:
                images = self._edited_images(latents_z, attribute, mode)
                originals = images[int(np.flatnonzero(self.alphas == 0)[0])]
                with inference_context(self.device, amp=False):
                    for position, alpha in enumerate(self.alphas):
                        scores = score_images(self.labeler, images[position].to(self.device), batch_size)
                        distance = torch.cat([
                            self.lpips(resize_for_lpips(originals[s:s + batch_size].to(self.device)),
                                       resize_for_lpips(images[position][s:s + batch_size].to(self.device)))
                            for s in range(0, len(latents_z), batch_size)]).float().cpu().numpy()
                        n = len(latents_z)
                        columns["sample_id"].append(sample_ids)
                        columns["direction"].append(np.full(n, attribute, dtype=object))
                        columns["mode"].append(np.full(n, mode, dtype=object))
                        columns["alpha"].append(np.full(n, alpha, dtype=np.float32))
                        columns["lpips"].append(distance.reshape(n).astype(np.float32))
                        for k, name in enumerate(self.labeler.attributes):
                            columns[name].append(scores[:, k])
        table = pa.table({name: pa.array(np.concatenate(parts)) if name not in ("direction", "mode")
                          else pa.array(np.concatenate(parts).tolist(), pa.string())
                          for name, parts in columns.items()})
        self.store.write_chunk(index, table)

    def finish(self) -> None:
        super().finish()
        frame = pads.dataset(str(self.store.path), format="parquet").to_table().to_pandas()
        details, curves = summarize(frame, self.attributes, list(self.labeler.attributes), self.alphas,
                                    self.directions, self.targets)
        for attribute, target in self.targets.items():
            details["directions"][attribute]["edit"] = target.kind
            details["directions"][attribute]["ppl"] = (self._ppl(target.vector) if target.field is None
                                                       else self._field_ppl(target.field))
        details["summary"]["ppl"] = float(np.mean([m["ppl"] for m in details["directions"].values()]))
        details["method"] = self.method
        details["base_method"] = self.params.fit.base_method(self.method)
        details["space"] = self.space  # where the edits were made; W+ layers when given
        details["layers"] = list(self.layers) if self.layers is not None else None
        details["n_heldout"] = self.store.info.n_samples
        details["condition_on"] = list(self.conditions)
        details["unmatched_attributes"] = self.unmatched  # asked for, but no component of this method moves them
        atomic_write_json(self.details_path, details)
        atomic_write_json(self.metrics_path, headline_metrics(details))
        atomic_write_json(self.curves_path, curves)
        self._write_grids()

    def _ppl(self, vector: np.ndarray) -> float:
        return float(perceptual_path_length(self.synthesizer.generator, vector[None], self.lpips,
                                            space=self.space, n_samples=self.settings.ppl_samples,
                                            t_max=float(np.abs(self.alphas).max()), seed=self.settings.seed,
                                            batch_size=self.settings.batch_size, device=self.device)[0])

    def _field_ppl(self, field: LatentField) -> float:
        return field_perceptual_path_length(self.synthesizer.generator, field, self.lpips, space=self.space,
                                            n_samples=self.settings.ppl_samples,
                                            t_max=float(np.abs(self.alphas).max()), seed=self.settings.seed,
                                            batch_size=self.settings.batch_size, device=self.device)

    def _write_grids(self) -> None:
        latents_z = self.heldout(0)[: self.settings.grid_samples]
        for attribute in self.targets:
            images = self._edited_images(latents_z, attribute, "plain")  # (M, g, 3, R, R)
            flat = images.reshape(-1, *images.shape[2:])
            with inference_context(self.device, amp=False):
                scores = score_images(self.labeler, flat.to(self.device), self.settings.batch_size)
            target = scores[:, list(self.labeler.attributes).index(attribute)] \
                if attribute in self.labeler.attributes else np.full(len(flat), np.nan)
            pixels = images_to_uint8(flat).reshape(len(self.alphas), len(latents_z), *images.shape[3:], 3)
            grid = render_traversal_grid(pixels.transpose(1, 0, 2, 3, 4), self.alphas,
                                         target.reshape(len(self.alphas), -1).T,
                                         title=f"{self.method}: {attribute}")
            write_contact_sheet(self.grids_dir / f"{attribute}.png", grid)


def headline_metrics(details: dict[str, Any]) -> dict[str, Any]:
    """The DVC metric of one method from its details: where the edits were made, and per attribute and on average
    only :data:`HEADLINE_KEYS` (+ the mean PPL), so that ``dvc exp show`` has a few columns per method."""
    directions = {attribute: {key: entry[key] for key in HEADLINE_KEYS if key in entry}
                  for attribute, entry in details["directions"].items()}
    summary = {key: details["summary"][key] for key in (*HEADLINE_KEYS, "ppl") if key in details["summary"]}
    return {"space": details.get("space"), "layers": details.get("layers"), "n_heldout": details.get("n_heldout"),
            "directions": directions, "summary": summary}


def _digest(vectors: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(vectors, dtype=np.float32).tobytes()).hexdigest()[:24]


def summarize(frame: pd.DataFrame, targets_attributes: list[str], score_columns: list[str], alphas: np.ndarray,
              directions: DirectionSet, targets: dict[str, DirectionEdit]) -> tuple[dict, list[dict]]:
    """Metrics and per-α curves from the long evaluation table (see the module docstring for definitions)."""
    if frame.empty:
        raise StoreError("evaluation store is empty")
    alpha_min, alpha_max = float(alphas.min()), float(alphas.max())
    originals = frame[(frame["alpha"] == 0) & (frame["mode"] == "plain")].drop_duplicates("sample_id")
    spread = {name: float(originals[name].std(ddof=0)) or 1.0 for name in score_columns}
    metrics: dict[str, Any] = {"directions": {}, "summary": {}, "spread": spread}
    curves: list[dict] = []
    for attribute in targets:
        entry: dict[str, Any] = {"source_direction": targets[attribute].source,
                                 "fit": directions.stats.get(targets[attribute].source, {})}
        for mode in sorted(frame["mode"].unique()):
            rows = frame[(frame["direction"] == attribute) & (frame["mode"] == mode)]
            if rows.empty:
                continue
            by_alpha = rows.pivot_table(index="sample_id", columns="alpha", values=score_columns + ["lpips"])
            if attribute in score_columns:
                target = rows[attribute].to_numpy(np.float64)
                alpha_values = rows["alpha"].to_numpy(np.float64)
                slope = float(np.polyfit(alpha_values, target, 1)[0])
                moved = float(np.mean(by_alpha[attribute][alpha_max] > by_alpha[attribute][alpha_min]))
            else:
                slope, moved = float("nan"), float("nan")
            others = [name for name in score_columns if name != attribute]
            table_ii = {}
            for name in others:
                original = by_alpha[name][0.0]
                change = np.concatenate([np.abs(by_alpha[name][alpha_max] - original),
                                         np.abs(by_alpha[name][alpha_min] - original)])
                table_ii[name] = {"original": float(original.mean()),
                                  "edited_plus": float(by_alpha[name][alpha_max].mean()),
                                  "edited_minus": float(by_alpha[name][alpha_min].mean()),
                                  "mean_abs_change": float(change.mean())}
            lpips_edge = np.concatenate([by_alpha["lpips"][alpha_max], by_alpha["lpips"][alpha_min]])
            prefix = "" if mode == "plain" else "conditional_"
            entry.update({
                f"{prefix}slope": slope,
                f"{prefix}slope_std": slope / spread.get(attribute, 1.0) if attribute in spread else float("nan"),
                f"{prefix}moved_fraction": moved,
                f"{prefix}entanglement": float(np.mean([table_ii[n]["mean_abs_change"] / spread[n] for n in others])),
                f"{prefix}lpips": float(lpips_edge.mean()),
                f"{prefix}table_ii": table_ii,
            })
            for alpha in alphas:
                if attribute in score_columns:
                    values = by_alpha[attribute][float(alpha)]
                    curves.append({"direction": attribute, "mode": mode, "alpha": float(alpha),
                                   "target_mean": float(values.mean()), "target_std": float(values.std(ddof=0))})
        metrics["directions"][attribute] = entry
    for key in ("slope_std", "moved_fraction", "entanglement", "lpips"):
        values = [entry[key] for entry in metrics["directions"].values() if np.isfinite(entry.get(key, np.nan))]
        metrics["summary"][key] = float(np.mean(values)) if values else float("nan")
    return metrics, curves
