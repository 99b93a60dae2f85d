"""The explorer's engine: a finished run opened once, then edit states → latents → images → scores.

**What it opens.** The generator and labelers of the run's params (labelers that look scores up by sample id cannot
score new images and are left out), every directions set under ``<out root>/directions`` as sliders
(:mod:`stages.explore.catalog`), the run's latents store for ``sample:<id>`` starts, and its encoder for photos
(:mod:`stages.explore.photos`).

**How a state becomes a latent** (:meth:`ExploreEngine.latent`): the start's z (a seeded draw
``torch.randn(z_dim, generator=torch.Generator().manual_seed(seed))``, a stored sample's z, or an inverted photo)
moves along every moved z slider in turn; on a generator with W it is then mapped to w, truncated
``w̄ + ψ (w − w̄)`` (w̄ the mean mapped w of 4096 seeded draws, so ψ acts on top of the params' own truncation), and
moved along every W slider — the w itself when all layers move, else only W+ layers ``[start, stop)`` of its W+ code
(:func:`stages.latent.editing.edit_layers`). A photo inverted into W+ starts there (z sliders cannot move it). Each
slider's direction is first made orthogonal to the held attributes' directions of its own set (InterFaceGAN's
conditional editing); a set's nonlinear model edits along its per-sample gradient path. Vector edits commute;
gradient paths are taken in the order the sliders were moved.

**Rendering** runs the generator on one batch under a lock (one render at a time, one intra-op thread), scoring
the labelers under another, so an image and the previous image's scores are computed on two cores at once. The
last renders are kept by their state, so scoring what was just shown does not render it again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from latentatlas.errors import LatentAtlasError
from latentatlas.layout import ENCODER_DIR, LATENTS_STORE, OutputLayout
from latentatlas.locations import StorePath, store_path
from latentatlas.params import Params
from latentatlas.stores import StoreError, ZarrChunkStore
from stages.explore.catalog import Catalog, Slider, open_catalog
from stages.explore.photos import PhotoInversions, UploadLimits
from stages.explore.state import ExploreInputError, ExploreState, Start
from stages.latent.editing import EditError
from stages.photo.encoder import ENCODER_FILE
from stages.photo.invert import InversionSettings, default_alignment, latent_statistics
from stages.plugins.generators import Generator, generator_for
from stages.plugins.generators.synthesis import images_to_uint8
from stages.plugins.labelers import Labeler, labeler_for
from stages.plugins.labelers.base import labeler_members, reads_sample_ids
from stages.plugins.labelers.scoring import score_images
from stages.runtime.device import CPU_THREADS, inference_context, resolve_device

#: Under the out root: photos uploaded to the explorer, inverted (one ``<photo id>.npz`` each, so links that start
#: from a photo survive a restart). Named here, not in latentatlas.layout: no DVC stage reads or writes it, and
#: every stage depends on that file.
EXPLORE_DIR = ".cache/explore"
#: Renders kept by state (a render is one image: a few KiB).
RENDER_CACHE = 32
#: Steps of a photo's inversion in the explorer (the CLI's ``edit`` takes 100): a start, not a reconstruction.
EXPLORE_INVERT_STEPS = 40


def pin_this_thread() -> None:
    """Give the calling thread :data:`CPU_THREADS` torch intra-op threads, unconditionally.

    The web server runs requests on worker threads. A fresh thread's OpenMP count need not be what
    ``torch.get_num_threads()`` reports, so :func:`stages.runtime.device.pinned_threads`, which sets the count only
    when that report differs, can leave it unset: autograd there (gradient-path edits, photo inversion) ran 10×
    slower than on the main thread.
    """
    torch.set_num_threads(CPU_THREADS)


class ExploreError(LatentAtlasError, ValueError):
    """A run the explorer cannot open: no directions sets, none that fits the generator, a bad setting."""


@dataclass(frozen=True)
class Rendered:
    """One image of a state: ``pixels`` (R, R, 3) uint8 and the ``latent`` it was synthesised from, (1, D) in z or
    w, or (1, num_ws, w_dim) in w+."""

    pixels: np.ndarray
    space: str
    latent: np.ndarray


class ExploreEngine:
    """A finished run, opened for live editing (see the module docstring).

    Args:
        params: the run's params (generator, labelers, score resolution).
        data_dir: the run's stores (``sample:<id>`` starts read its latents store; optional).
        out_root: the root of ``directions/`` and ``models/encoder/``; photos are kept in ``.cache/explore`` there.
        generator, labeler: injected plugins (tests, benchmarks), else the params' ones.
        device: auto | cpu | cuda | cuda:<k>.
        invert_steps: optimisation steps of a photo's inversion.
        inversion: other inversion settings (space and steps are set here).
        limits: what an uploaded photo may be.

    Raises:
        ExploreError: no directions sets under ``out_root``, or none that can edit the generator.
    """

    def __init__(
        self,
        params: Params,
        data_dir: str | StorePath,
        out_root: Path,
        generator: Generator | None = None,
        labeler: Labeler | None = None,
        device: str = "auto",
        invert_steps: int = EXPLORE_INVERT_STEPS,
        inversion: InversionSettings | None = None,
        limits: UploadLimits = UploadLimits(),
    ) -> None:
        self.params = params
        self.data_dir = store_path(data_dir)
        self.layout = OutputLayout(Path(out_root))
        self.device = resolve_device(device)
        self.generator = generator_for(params.generator, generator).to(self.device)
        self.spaces = tuple(self.generator.latent_spaces)
        self.has_w = "w" in self.spaces
        self.num_ws = int(self.generator.num_ws) if self.has_w else None
        directions_root = self.layout.directions_root()
        self.catalog: Catalog = open_catalog(directions_root, self.generator, self.data_dir)
        if not self.catalog.sliders:
            reasons = "; ".join(f"{name}: {why}" for name, why in self.catalog.skipped.items())
            why = f" ({reasons})" if reasons else "; finish a run first (`make run`, or `latentatlas fit`)"
            raise ExploreError(
                f"{directions_root}: no directions set that can edit generator {self.generator.name!r}{why}"
            )
        built = labeler_for(params.label, labeler)
        self.scorers = [member.to(self.device) for member in labeler_members(built) if not reads_sample_ids(member)]
        self.attributes = [name for member in self.scorers for name in member.attributes]
        self.score_size = int(params.synthesize.store_resolution or self.generator.resolution)
        self.label_batch = int(params.label.batch_size)
        self.latents_store, self.store_note = self._open_latents()
        self.w_mean = latent_statistics(self.generator, "w", self.device).mean.float().cpu() if self.has_w else None
        photo_space = "w+" if self.has_w and any(s.space == "w" for s in self.catalog.sliders) else "z"
        settings = (inversion or InversionSettings()).model_copy(
            update={"steps": int(invert_steps), "space": photo_space, "device": str(self.device)}
        )
        self.photos = PhotoInversions(
            self.generator,
            photo_space,
            settings,
            default_alignment(params.generator.name),
            self.layout.root / ENCODER_DIR / ENCODER_FILE,
            self.layout.root / EXPLORE_DIR,
            limits,
        )
        self._render_lock = threading.Lock()
        self._score_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._renders: OrderedDict[str, Rendered] = OrderedDict()
        self._scores: OrderedDict[str, np.ndarray] = OrderedDict()
        self._chunks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._compares: OrderedDict[str, tuple[list[Slider], list[Rendered]]] = OrderedDict()

    def _open_latents(self) -> tuple[ZarrChunkStore | None, str | None]:
        try:
            return ZarrChunkStore.open(self.data_dir / LATENTS_STORE, "latents"), None
        except StoreError as error:
            return None, f"no stored samples to start from ({error})"

    # ------------------------------------------------------------------------------------------------ describing

    def describe(self) -> dict[str, Any]:
        """What the page needs to draw itself: the generator, the sliders by group, attributes, notes."""
        sets = {
            name: {
                "method": directions.method,
                "space": directions.space,
                "imported": bool(directions.meta.get("imported")),
                "attributes": sorted(
                    {s.attribute for s in self.catalog.sliders if s.set_name == name and s.attribute is not None}
                ),
            }
            for name, directions in self.catalog.sets.items()
        }
        return {
            "generator": {
                "name": self.generator.name,
                "resolution": int(self.generator.resolution),
                "spaces": list(self.spaces),
                "has_w": self.has_w,
                "num_ws": self.num_ws,
            },
            "groups": [
                {"attribute": group, "sliders": [slider.to_json() for slider in sliders]}
                for group, sliders in self.catalog.groups().items()
            ],
            "sets": sets,
            "skipped": self.catalog.skipped,
            "notes": self.catalog.notes,
            "scores": self.attributes,
            "compare_attributes": [group for group in self.catalog.groups() if self.catalog.for_attribute(group)],
            "samples": int(self.latents_store.info.n_samples) if self.latents_store is not None else 0,
            "samples_note": self.store_note,
            "photo": {
                "space": self.photos.space,
                "steps": self.photos.settings.steps,
                "init": self.photos.settings.init,
                "encoder_note": self.photos.note,
                "limits": self.photos.limits.to_json(),
            },
        }

    # ------------------------------------------------------------------------------------------------ latents

    def start_latent(self, start: Start) -> tuple[str, torch.Tensor]:
        """The start's latent: ("z", (z_dim,)) or, for a photo inverted into W+, ("w+", (num_ws, w_dim))."""
        if start.kind == "seed":
            return "z", torch.randn(int(self.generator.z_dim), generator=torch.Generator().manual_seed(int(start.key)))
        if start.kind == "sample":
            return "z", torch.from_numpy(self._stored_z(int(start.key)).copy())
        photo = self.photos.load(str(start.key))
        return photo.space, torch.from_numpy(photo.latent.copy())

    def _stored_z(self, sample_id: int) -> np.ndarray:
        store = self.latents_store
        if store is None:
            raise ExploreInputError(f"start sample:{sample_id}: {self.store_note}")
        if not 0 <= sample_id < store.info.n_samples:
            raise ExploreInputError(f"start sample:{sample_id}: the run has samples 0..{store.info.n_samples - 1}")
        index = sample_id // store.info.chunk_size
        with self._cache_lock:
            chunk = self._chunks.get(index)
        if chunk is None:
            try:
                chunk = np.asarray(store.read_chunk("z", index), dtype=np.float32)
            except StoreError as error:
                raise ExploreInputError(f"start sample:{sample_id}: {error}") from None
            with self._cache_lock:
                self._chunks[index] = chunk
                while len(self._chunks) > 4:
                    self._chunks.popitem(last=False)
        return chunk[sample_id - index * store.info.chunk_size]

    def slider(self, slider_id: str) -> Slider:
        try:
            return self.catalog.by_id[slider_id]
        except KeyError:
            raise ExploreInputError(
                f"no slider {slider_id!r} in this run (sets: {', '.join(self.catalog.sets)})"
            ) from None

    def _keep_vectors(self, slider: Slider, keep: tuple[str, ...]) -> list[np.ndarray] | None:
        """The held attributes' directions in ``slider``'s own set (its own attribute excluded)."""
        vectors = [
            other.edit.vector
            for name in keep
            if name != slider.attribute
            for other in self.catalog.for_attribute(name)
            if other.set_name == slider.set_name and other.id != slider.id
        ]
        return vectors or None

    def _check(self, state: ExploreState, start_space: str) -> list[tuple[Slider, float]]:
        moved = [(self.slider(slider_id), alpha) for slider_id, alpha in state.moved.items()]
        known = {slider.attribute for slider in self.catalog.sliders}
        unknown = [name for name in state.keep if name not in known]
        if unknown:
            raise ExploreInputError(
                f"keep {unknown}: no set has a direction for it (attributes with directions: "
                f"{sorted(a for a in known if a is not None)})"
            )
        if not self.has_w and (state.layers is not None or state.psi != 1.0):
            raise ExploreInputError(
                f"layers and psi apply to generators with W; {self.generator.name!r} has {list(self.spaces)}"
            )
        if state.layers is not None and state.layers[1] > int(self.num_ws):
            raise ExploreInputError(
                f"layers {state.layers[0]},{state.layers[1]}: the generator has {self.num_ws} "
                f"W+ layers (stop at most {self.num_ws})"
            )
        if start_space == "w+":
            in_z = [slider.id for slider, _ in moved if slider.space == "z"]
            if in_z:
                raise ExploreInputError(
                    f"{in_z}: z directions cannot move a photo inverted into W+; use W "
                    f"directions, or start from a seed or sample"
                )
        return moved

    def latent(self, state: ExploreState) -> tuple[str, torch.Tensor]:
        """The (1, ...) latent ``state`` shows and its space (``z``, ``w`` or ``w+``): see the module docstring.

        Raises:
            ExploreInputError: an unknown slider or held attribute, settings the generator lacks, a slider whose
                direction lies in the span of the held ones.
        """
        pin_this_thread()
        start_space, start = self.start_latent(state.start)
        moved = self._check(state, start_space)
        try:
            return self._compose(state, start_space, start, moved)
        except EditError as error:
            raise ExploreInputError(f"{error} (release a held attribute)") from None

    def _apply(
        self,
        slider: Slider,
        latents: torch.Tensor,
        alpha: float,
        keep: tuple[str, ...],
        layers: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        vectors = self._keep_vectors(slider, keep)
        if layers is not None:
            return slider.edit.apply_layers(latents, [alpha], layers, keep=vectors)[0]
        return slider.edit.apply(latents, [alpha], keep=vectors)[0]

    def _truncate(self, latents: torch.Tensor, psi: float) -> torch.Tensor:
        return latents if psi == 1.0 else self.w_mean + psi * (latents - self.w_mean)

    def _compose(
        self, state: ExploreState, start_space: str, start: torch.Tensor, moved: list[tuple[Slider, float]]
    ) -> tuple[str, torch.Tensor]:
        in_w = [(slider, alpha) for slider, alpha in moved if slider.space == "w"]
        if start_space == "z":
            latents = start[None].float()
            for slider, alpha in moved:
                if slider.space == "z":
                    latents = self._apply(slider, latents, alpha, state.keep)
            if not self.has_w:
                return "z", latents
            with torch.no_grad():
                latents_w = self.generator.map(latents.to(self.device))["w"].float().cpu()
            latents_w = self._truncate(latents_w, state.psi)
            if state.layers is None:
                for slider, alpha in in_w:
                    latents_w = self._apply(slider, latents_w, alpha, state.keep)
                return "w", latents_w
            with torch.no_grad():
                codes = self.generator.w_plus(latents_w.to(self.device)).float().cpu()
        else:
            codes = self._truncate(start[None].float(), state.psi)
        layers = state.layers or (0, int(self.num_ws))
        for slider, alpha in in_w:
            codes = self._apply(slider, codes, alpha, state.keep, layers)
        return "w+", codes

    # ------------------------------------------------------------------------------------------------ images

    def synthesize(self, space: str, latents: torch.Tensor) -> np.ndarray:
        """(N, ...) latents of ``space`` → (N, R, R, 3) uint8, one generator call (under the render lock)."""
        pin_this_thread()
        with self._render_lock, inference_context(self.device, amp=False):
            images = self.generator.synthesize(latents.to(self.device), space).float()
            return images_to_uint8(images)

    def render(self, state: ExploreState) -> Rendered:
        """The image ``state`` shows (kept by :meth:`ExploreState.render_key` for the next score request)."""
        key = state.render_key()
        with self._cache_lock:
            cached = self._renders.get(key)
        if cached is not None:
            return cached
        space, latents = self.latent(state)
        rendered = Rendered(self.synthesize(space, latents)[0], space, latents.numpy().astype(np.float32))
        with self._cache_lock:
            self._renders[key] = rendered
            while len(self._renders) > RENDER_CACHE:
                self._renders.popitem(last=False)
        return rendered

    def render_many(self, states: list[ExploreState]) -> list[Rendered]:
        """Several states' images, one generator call per latent space (compare mode, strips, traversals)."""
        composed = [self.latent(state) for state in states]
        pixels: list[np.ndarray | None] = [None] * len(states)
        for space in dict.fromkeys(space for space, _ in composed):
            rows = [index for index, (other, _) in enumerate(composed) if other == space]
            images = self.synthesize(space, torch.cat([composed[index][1] for index in rows]))
            for row, image in zip(rows, images):
                pixels[row] = image
        return [
            Rendered(image, space, latents.numpy().astype(np.float32))
            for image, (space, latents) in zip(pixels, composed)
        ]

    # ------------------------------------------------------------------------------------------------ scores

    def score_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, R, R, 3) uint8 → (N, A) float32 scores of every image labeler, at the run's label resolution."""
        images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if images.shape[-1] != self.score_size:
            images = F.interpolate(
                images,
                size=(self.score_size, self.score_size),
                mode="bilinear",
                antialias=images.shape[-1] > self.score_size,
                align_corners=False,
            )
        if not self.scorers:
            return np.zeros((len(pixels), 0), dtype=np.float32)
        pin_this_thread()
        with self._score_lock, inference_context(self.device, amp=False):
            images = images.to(self.device)
            return np.concatenate(
                [score_images(member, images, self.label_batch) for member in self.scorers], axis=1
            ).astype(np.float32)

    def scores(self, state: ExploreState) -> dict[str, float]:
        """Attribute → the labelers' score of the image ``state`` shows."""
        key = state.render_key()
        with self._cache_lock:
            cached = self._scores.get(key)
        if cached is None:
            cached = self.score_pixels(self.render(state).pixels[None])[0]
            with self._cache_lock:
                self._scores[key] = cached
                while len(self._scores) > RENDER_CACHE:
                    self._scores.popitem(last=False)
        return {name: float(value) for name, value in zip(self.attributes, cached)}

    # ------------------------------------------------------------------------------------------------ compare

    def compare_sliders(self, attribute: str) -> list[Slider]:
        """Per set, the slider that moves ``attribute`` (compare mode's tiles, after the start).

        Raises:
            ExploreInputError: no set has a direction for it.
        """
        sliders = self.catalog.for_attribute(attribute)
        if not sliders:
            raise ExploreInputError(
                f"cmp {attribute!r}: no set has a direction for it (compare one of "
                f"{self.describe()['compare_attributes']})"
            )
        return sliders

    def compare(self, state: ExploreState) -> tuple[list[Slider], list[Rendered]]:
        """Compare mode: the start (first image) and, per set, the start moved by ``state.compare_alpha`` along
        its direction for ``state.compare`` — held attributes, layers and ψ as in ``state``, other sliders not."""
        if state.compare is None:
            raise ExploreInputError("compare mode needs cmp=<attribute>")
        key = f"{state.with_edits(()).render_key()}|{state.compare}|{state.compare_alpha!r}"
        with self._cache_lock:
            cached = self._compares.get(key)
        if cached is not None:
            return cached
        sliders = self.compare_sliders(state.compare)
        if self.start_latent(state.start)[0] == "w+":  # a photo in W+: z directions cannot move it
            sliders = [slider for slider in sliders if slider.space != "z"] or sliders
        base = state.with_edits(())
        states = [base] + [base.with_edits([(slider.id, state.compare_alpha)]) for slider in sliders]
        result = (sliders, self.render_many(states))
        with self._cache_lock:
            self._compares[key] = result
            while len(self._compares) > 8:
                self._compares.popitem(last=False)
        return result
