"""GAN inversion: photos → latents whose images look like them, by optimisation from an encoder's guess.

For target images x (N, 3, R, R) in [-1, 1], a generator G and a latent space (``z``, ``w`` or ``w+``), the latent
is optimised with Adam in standardised coordinates u (latent = μ + σ ⊙ u, μ and σ per dimension: 0 and 1 for z; the
mean and standard deviation of mapped w over 4096 seeded samples for W and W+), minimising per image

    L(u) = λ_lpips · LPIPS_vgg(G(u), x) + λ_pixel · mean((G(u) − x)²) + λ_prior · prior(u) [+ λ_layers · spread(u)]

- LPIPS with the VGG16 trunk: the VGG-feature inversion loss of TunaGAN and Image2StyleGAN (perceptual features
  make the optimisation follow faces, not pixels); the targets' features are computed once. Images above
  ``lpips_max_side`` are area-downsampled for it (the StyleGAN2 projector uses 256), below 64 px upsampled.
- the pixel MSE keeps colours right (Image2StyleGAN's combination of both).
- the prior keeps the latent where the generator was trained: for z the squared distance of ‖z‖²/D from 1 (a
  standard normal in D dimensions lives on that shell; z = 0 is as atypical as it gets); for W and W+ the
  Gaussian log-density mean(u²) of the standardised code.
- in W+, ``spread`` = mean over layers of mean((u_l − ū)²) keeps the per-layer codes near one another (so edits
  made with W directions behave as they would on a w; e4e's delta regularisation in spirit).

**Noise.** The StyleGAN2 projector also optimises the per-layer noise maps, with a multi-scale regulariser. The
project's StyleGAN implementations use the file's constant noise only (``noise_mode: const``; ``random`` is
refused so that an image depends on its latent alone; StyleGAN3 has none), and the Generator protocol drives
images from latents only, so the noise is not optimised and there is no noise term: an inverted latent stored in
``latents.zarr`` gives the same image everywhere.

The learning rate follows the StyleGAN2 projector's schedule (5 % linear warm-up, cosine ramp-down over the last
25 %). Every image's loss is summed, and Adam is per-element, so a batch of images is N independent inversions
(results differ between batch sizes only by floating-point rounding, which the optimisation can amplify). Initialisation
(``init``): ``encoder`` (the encoder of :mod:`stages.photo.encoder`, the "hybrid" scheme), ``mean`` (u = 0: the mean w;
W and W+ only, since z = 0 is no typical latent) or ``random`` (a seeded z ~ N(0, I), mapped for W / W+).

**The stage.** :class:`InvertStage` inverts a folder of photos (sorted by file name; a chunk is ``chunk_size``
photos) into ``<out>/latents.zarr``: the latents of the chosen space (array named after it: ``z`` (N, z_dim),
``w`` (N, w_dim) or ``w+`` (N, num_ws, w_dim)), the crop that was inverted (``aligned`` (N, R, R, 3) uint8), where it
lies in the photo (``crop_to_photo`` (N, 2, 3) float32), the reconstruction's ``reconstruction_lpips`` and
``reconstruction_psnr`` (N,), with the photos' names in the store's details. It is a chunked store like the
others (resumable, fingerprinted: photos' bytes, generator, settings, encoder), and :class:`ReconstructStage`
writes ``<out>/images.zarr`` from it, so ``latentatlas label --data-dir <out>`` labels the reconstructions and
``latentatlas.dataset.open(<out>)`` reads photos as a labeled latent dataset.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError
from torch import nn

from latentatlas.errors import LatentAtlasError
from latentatlas.layout import ENCODER_DIR, IMAGES_STORE, LATENTS_STORE
from latentatlas.locations import StorePath
from latentatlas.params import Params
from latentatlas.stores import ArraySpec, StoreInfo, ZarrChunkStore
from stages.latent.perceptual import LPIPS, build_lpips, resize_for_lpips
from stages.photo.align import (
    AlignedPhoto,
    AlignmentSettings,
    FaceDetector,
    canonical_face_for,
    file_sha256,
    is_face_generator,
    load_photo,
    prepare_photo,
)
from stages.photo.encoder import ENCODER_FILE, TrainedEncoder, load_encoder
from stages.plugins.generators import Generator, generator_for
from stages.plugins.generators.synthesis import ImageSynthesizer, images_to_uint8, uint8_to_images
from stages.runtime.chunked import ChunkedStage
from stages.runtime.device import CPU_THREADS, pinned_threads, resolve_device

LatentSpace = Literal["z", "w", "w+"]
#: File suffixes taken from a folder (a file named on the command line is taken whatever its suffix).
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})
#: Samples of the mapping network behind the W statistics (the StyleGAN2 projector uses 10,000).
W_STATISTICS_SAMPLES = 4096


class InversionError(LatentAtlasError, ValueError):
    """Bad inversion settings, a space the generator does not have, or no photos."""


class InversionSettings(BaseModel):
    """How latents are fitted to images (``latentatlas invert`` / ``edit`` options)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    space: LatentSpace | None = Field(None, description="z | w | w+; None: w+ for style-based generators, else z")
    steps: int = Field(100, ge=0, le=100_000, description="optimisation steps per image")
    learning_rate: float = Field(0.1, gt=0, description="Adam's peak step, in standard deviations of the latent")
    lpips_net: Literal["vgg", "alex"] = Field("vgg", description="LPIPS trunk of the loss")
    lpips_weight: float = Field(1.0, ge=0)
    pixel_weight: float = Field(1.0, ge=0, description="weight of the mean squared pixel error (images in [-1, 1])")
    prior_weight: float = Field(0.01, ge=0)
    layer_weight: float = Field(0.01, ge=0, description="W+ only: weight of the per-layer spread")
    lpips_max_side: PositiveInt = Field(256, description="larger images are area-downsampled for LPIPS")
    init: Literal["encoder", "mean", "random"] = Field("encoder", description="starting latent")
    batch_size: PositiveInt = Field(8, description="images optimised together")
    seed: int = Field(0, ge=0, description="random init and the W statistics' samples")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    amp: bool = Field(True, description="bf16 autocast of the forward passes on CUDA (ignored on the CPU)")


def inversion_settings(**values: Any) -> InversionSettings:
    """:class:`InversionSettings` from keyword values, or an InversionError naming the bad one."""
    try:
        return InversionSettings(**values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise InversionError(f"inversion {where}: {first['msg']} (got {first.get('input')!r})") from None


def resolve_space(requested: str | None, generator: Generator) -> str:
    """The latent space to invert into: ``requested``, or w+ for a style-based generator, else z.

    Raises:
        InversionError: the generator has no such space.
    """
    spaces = tuple(generator.latent_spaces)
    space = requested if requested is not None else ("w+" if "w+" in spaces else "z")
    if space not in spaces:
        raise InversionError(f"generator {generator.name!r} has latent spaces {list(spaces)}, not {space!r}")
    return space


# ------------------------------------------------------------------------------------------ latent coordinates


@dataclass(frozen=True)
class LatentStatistics:
    """Per-dimension mean and standard deviation of a latent space: (D,) float32 each (num_ws for W+)."""

    space: str
    mean: torch.Tensor
    std: torch.Tensor
    num_ws: int | None = None

    def shape(self, n: int) -> tuple[int, ...]:
        dim = int(self.mean.shape[0])
        return (n, self.num_ws, dim) if self.space == "w+" else (n, dim)

    def to_latent(self, standardised: torch.Tensor) -> torch.Tensor:
        return self.mean.to(standardised) + self.std.to(standardised) * standardised

    def standardise(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents - self.mean.to(latents)) / self.std.to(latents)


def latent_statistics(
    generator: Generator, space: str, device: torch.device, seed: int = 0, n_samples: int = W_STATISTICS_SAMPLES
) -> LatentStatistics:
    """The statistics of ``space``: N(0, I) for z; for W / W+ those of ``map(z)["w"]`` over ``n_samples`` seeded z."""
    if space == "z":
        return LatentStatistics("z", torch.zeros(generator.z_dim), torch.ones(generator.z_dim))
    rng = torch.Generator().manual_seed(seed)
    latents_z = torch.randn(n_samples, generator.z_dim, generator=rng)
    with torch.inference_mode():
        mapped = torch.cat(
            [
                generator.map(latents_z[start : start + 512].to(device))["w"].float().cpu()
                for start in range(0, n_samples, 512)
            ]
        )
    num_ws = int(generator.num_ws) if space == "w+" else None
    return LatentStatistics(space, mapped.mean(0), mapped.std(0).clamp_min(1e-6), num_ws)


def initial_latents(
    init: str,
    generator: Generator,
    statistics: LatentStatistics,
    targets: torch.Tensor,
    encoder: TrainedEncoder | None,
    seeds: Sequence[int],
) -> torch.Tensor:
    """The starting latents (in ``statistics.space``'s units) for (N, 3, R, R) ``targets``.

    ``encoder``: its prediction of the space (W+: its w repeated per layer, as the generator's ``w_plus``; W from an
    encoder that only predicts z: mapped). ``mean``: μ. ``random``: z ~ N(0, I) seeded per image with ``seeds``, mapped
    for W / W+.
    """
    n, device = targets.shape[0], targets.device
    space = statistics.space
    if init == "mean":
        if space == "z":
            raise InversionError(
                "init 'mean' is for W and W+ (the mean w); z = 0 is no typical latent (and the "
                "DCGAN's first layer is switched off there): use --init random or encoder"
            )
        return statistics.to_latent(torch.zeros(statistics.shape(n), device=device))
    if init == "random":
        latents_z = torch.stack(
            [torch.randn(generator.z_dim, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds]
        ).to(device)
        return _from_z(generator, latents_z, space)
    if init != "encoder":
        raise InversionError(f"init must be encoder, mean or random, got {init!r}")
    if encoder is None:
        raise InversionError("init 'encoder' needs a trained encoder")
    with torch.inference_mode():
        predicted = encoder.network(targets.float())
    if space == "z":
        if "z" not in predicted:
            raise InversionError(f"the encoder predicts {sorted(predicted)}, not z")
        return predicted["z"].clone()
    latents_w = predicted["w"] if "w" in predicted else _from_z(generator, predicted["z"], "w")
    return generator.w_plus(latents_w).clone() if space == "w+" else latents_w.clone()


def fallback_init(space: str) -> str:
    """The start without an encoder: the mean w in W / W+ (the StyleGAN2 projector's), a seeded random z in Z."""
    return "random" if space == "z" else "mean"


def choose_init(
    settings: InversionSettings, encoder_path: Path | None, space: str, encoder_named: bool
) -> tuple[InversionSettings, Path | None, str | None]:
    """The init to use: ``encoder`` needs ``encoder_path`` to exist; when it does not and the user did not name it
    (``encoder_named`` False: the default ``models/encoder/encoder.pt``), fall back to :func:`fallback_init`.

    Returns:
        (settings, the encoder to load or None, a line saying what was chosen instead, or None).

    Raises:
        EncoderError: a named encoder file that does not exist.
    """
    if settings.init != "encoder":
        return settings, None, None
    if encoder_path is not None and Path(encoder_path).is_file():
        return settings, Path(encoder_path), None
    if encoder_named or encoder_path is None:
        return settings, encoder_path, None  # load_encoder says what is missing
    fallback = fallback_init(space)
    note = (
        f"no encoder at {encoder_path} (train one: `latentatlas train-encoder` or `dvc repro train-encoder`); "
        f"starting from {'the mean w' if fallback == 'mean' else 'a random z'} instead"
    )
    return settings.model_copy(update={"init": fallback}), None, note


@dataclass(frozen=True)
class InversionPlan:
    """What ``invert`` and ``edit`` run with: their options resolved against the generator params name.

    Attributes:
        generator: the generator (built once here; ``edit`` hands it on).
        settings: the inversion settings, ``init`` falling back when the default encoder file is absent.
        alignment: how photos become crops.
        encoder_path: the encoder file to load (None when the init needs none).
        note: a line saying what was chosen instead of the default encoder, or None.
    """

    generator: Generator
    settings: InversionSettings
    alignment: AlignmentSettings
    encoder_path: Path | None
    note: str | None


def plan_inversion(
    params: Params,
    settings: InversionSettings,
    encoder_path: Path | None = None,
    align: bool | None = None,
    face_index: int | None = None,
    generator: Generator | None = None,
) -> InversionPlan:
    """Resolve the inversion options of ``invert`` / ``edit``: alignment by generator (:func:`default_alignment`),
    and the encoder: ``encoder_path``, or the default ``models/encoder/encoder.pt`` whose absence falls back to
    :func:`fallback_init` with a note (:func:`choose_init`).

    Raises:
        InversionError: the generator has no such space.
        EncoderError: a named encoder file that does not exist.
    """
    alignment = default_alignment(params.generator.name, align, face_index)
    generator = generator_for(params.generator, generator)
    named = encoder_path is not None
    path = encoder_path if named else Path(ENCODER_DIR) / ENCODER_FILE
    settings, path, note = choose_init(settings, path, resolve_space(settings.space, generator), named)
    return InversionPlan(generator, settings, alignment, path, note)


def _from_z(generator: Generator, latents_z: torch.Tensor, space: str) -> torch.Tensor:
    if space == "z":
        return latents_z
    with torch.inference_mode():
        latents_w = generator.map(latents_z)["w"].float()
    return generator.w_plus(latents_w).clone() if space == "w+" else latents_w.clone()


# ------------------------------------------------------------------------------------------------------ losses


def lpips_input(images: torch.Tensor, max_side: int) -> torch.Tensor:
    """(N, 3, H, W) → the size LPIPS sees: area-downsampled to ``max_side`` when larger, upsampled to 64 when
    smaller."""
    if images.shape[-1] > max_side:
        images = F.interpolate(images, size=(max_side, max_side), mode="area")
    return resize_for_lpips(images)


def lpips_to_features(lpips: LPIPS, images: torch.Tensor, target_features: list[torch.Tensor]) -> torch.Tensor:
    """LPIPS d(images, targets) (N,) from the targets' precomputed :meth:`LPIPS.features` (as ``LPIPS.forward``)."""
    distance = images.new_zeros(images.shape[0], dtype=torch.float32)
    for feature, target, linear in zip(lpips.features(images), target_features, lpips.linear_layers):
        distance = distance + linear((feature.float() - target) ** 2).mean(dim=(1, 2, 3))
    return distance


def prior_term(standardised: torch.Tensor, space: str) -> torch.Tensor:
    """(N, ...) standardised latents → (N,) prior penalty (see the module docstring)."""
    flat = standardised.flatten(1)
    if space == "z":
        return (flat.pow(2).mean(1) - 1.0) ** 2
    return flat.pow(2).mean(1)


def layer_spread(standardised: torch.Tensor) -> torch.Tensor:
    """(N, num_ws, D) standardised W+ codes → (N,) mean squared deviation of the layers from their mean."""
    return (standardised - standardised.mean(dim=1, keepdim=True)).pow(2).mean(dim=(1, 2))


def learning_rate_at(step: int, steps: int, peak: float, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """The StyleGAN2 projector's schedule: linear warm-up over ``rampup``, cosine ramp-down over the last
    ``rampdown`` of the steps."""
    t = step / max(steps, 1)
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return peak * ramp * min(1.0, t / rampup) if rampup > 0 else peak * ramp


def psnr(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N,) PSNR in dB between (N, 3, H, W) images in [-1, 1] (clamped), on the [0, 1] scale."""
    mse = ((images.float().clamp(-1, 1) - targets.float().clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


@contextlib.contextmanager
def frozen_parameters(owner: object) -> Iterator[None]:
    """Within the block, the ``nn.Module`` attributes of ``owner`` (a generator) compute no parameter gradients
    (inversion differentiates with respect to the input only); their flags are restored afterwards."""
    modules = [value for value in vars(owner).values() if isinstance(value, nn.Module)]
    saved = [(parameter, parameter.requires_grad) for module in modules for parameter in module.parameters()]
    for parameter, _ in saved:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in saved:
            parameter.requires_grad_(flag)


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[None]:
    if amp and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------------- inversion


@dataclass(frozen=True)
class InversionResult:
    """Inverted latents and how well their images match.

    Attributes:
        latents: (N, z_dim), (N, w_dim) or (N, num_ws, w_dim) float32 on the CPU.
        images: (N, 3, R, R) float32 reconstructions in [-1, 1] (clamped), on the CPU.
        lpips: (N,) LPIPS of the loss's trunk between reconstruction and target.
        psnr: (N,) PSNR in dB.
        seconds: wall time of the optimisation.
    """

    latents: torch.Tensor
    images: torch.Tensor
    lpips: torch.Tensor
    psnr: torch.Tensor
    seconds: float


class Inverter:
    """A generator, a loss and settings: ``invert(targets, init_latents)`` → :class:`InversionResult`.

    Args:
        generator: any generator of the protocol (moved to the settings' device).
        settings: the inversion settings (space resolved against the generator).
        lpips: an LPIPS module (built from the settings' trunk when None and LPIPS is weighted).
    """

    def __init__(self, generator: Generator, settings: InversionSettings, lpips: LPIPS | None = None) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.generator = generator.to(self.device)
        self.space = resolve_space(settings.space, generator)
        needs_lpips = settings.lpips_weight > 0
        self.lpips = (
            (lpips if lpips is not None else build_lpips(settings.lpips_net)).to(self.device) if needs_lpips else None
        )
        self.amp = settings.amp and self.device.type == "cuda"

    @functools.cached_property
    def statistics(self) -> LatentStatistics:
        return latent_statistics(self.generator, self.space, self.device, seed=self.settings.seed)

    def initial(self, targets: torch.Tensor, encoder: TrainedEncoder | None, seeds: Sequence[int]) -> torch.Tensor:
        """Starting latents for (N, 3, R, R) ``targets`` by the settings' ``init``."""
        return initial_latents(
            self.settings.init, self.generator, self.statistics, targets.to(self.device), encoder, seeds
        )

    def invert(
        self,
        targets: torch.Tensor,
        init_latents: torch.Tensor,
        progress: Callable[[int, int], None] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> InversionResult:
        """Fit latents to (N, 3, R, R) ``targets`` in [-1, 1] starting from ``init_latents`` (the space's shape),
        in batches of ``batch_size``; ``progress(images done, N)`` after each batch, ``on_step(steps done, steps)``
        after each optimisation step of a batch (an exception it raises stops the inversion: a cancel)."""
        started = time.perf_counter()
        outputs: list[tuple[torch.Tensor, ...]] = []
        size = self.settings.batch_size
        with pinned_threads(), frozen_parameters(self.generator):
            for start in range(0, targets.shape[0], size):
                outputs.append(
                    self._invert_batch(
                        targets[start : start + size].to(self.device).float(),
                        init_latents[start : start + size].to(self.device).float(),
                        on_step,
                    )
                )
                if progress is not None:
                    progress(min(start + size, targets.shape[0]), targets.shape[0])
        latents, images, lpips_values, psnr_values = (torch.cat(parts) for parts in zip(*outputs))
        return InversionResult(latents, images, lpips_values, psnr_values, time.perf_counter() - started)

    def _synthesize(self, latents: torch.Tensor, size: int) -> torch.Tensor:
        images = self.generator.synthesize(latents, self.space).float()
        if images.shape[-1] != size:
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", antialias=images.shape[-1] > size, align_corners=False
            )
        return images

    def _invert_batch(
        self, targets: torch.Tensor, init_latents: torch.Tensor, on_step: Callable[[int, int], None] | None = None
    ) -> tuple[torch.Tensor, ...]:
        settings, statistics = self.settings, self.statistics
        size = targets.shape[-1]
        target_features = None
        if self.lpips is not None:
            with torch.no_grad(), _autocast(self.device, self.amp):
                target_features = [
                    f.float() for f in self.lpips.features(lpips_input(targets, settings.lpips_max_side))
                ]
        standardised = statistics.standardise(init_latents).detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([standardised], lr=settings.learning_rate, betas=(0.9, 0.999))
        for step in range(settings.steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(step, settings.steps, settings.learning_rate)
            with _autocast(self.device, self.amp):
                images = self._synthesize(statistics.to_latent(standardised), size)
                loss = settings.pixel_weight * (images.float() - targets).pow(2).flatten(1).mean(1)
                if target_features is not None:
                    loss = loss + settings.lpips_weight * lpips_to_features(
                        self.lpips, lpips_input(images, settings.lpips_max_side), target_features
                    )
            loss = loss + settings.prior_weight * prior_term(standardised, self.space)
            if self.space == "w+" and settings.layer_weight > 0:
                loss = loss + settings.layer_weight * layer_spread(standardised)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
            if on_step is not None:
                on_step(step + 1, settings.steps)
        with torch.no_grad():
            latents = statistics.to_latent(standardised.detach())
            images = self._synthesize(latents, size).float().clamp(-1, 1)
            if target_features is not None:
                distances = lpips_to_features(self.lpips, lpips_input(images, settings.lpips_max_side), target_features)
            else:
                distances = torch.full((targets.shape[0],), float("nan"), device=targets.device)
        return latents.float().cpu(), images.cpu(), distances.float().cpu(), psnr(images, targets).cpu()


# ---------------------------------------------------------------------------------------------------- the stage


def collect_photos(paths: Sequence[Path]) -> list[Path]:
    """Photos named by ``paths`` (files as given; folders: their files with an image suffix, not recursive),
    without duplicates, sorted by file name (then path).

    Raises:
        InversionError: a path that does not exist, or no photo at all.
    """
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_file() and child.suffix.lower() in PHOTO_SUFFIXES:
                    found[child] = None
        elif path.exists():
            found[path] = None
        else:
            raise InversionError(f"{path}: no such file or folder")
    if not found:
        raise InversionError(f"no photos in {[str(p) for p in paths]} (looked for {', '.join(sorted(PHOTO_SUFFIXES))})")
    photos = sorted(found, key=lambda p: (p.name, str(p)))
    names = [photo.name for photo in photos]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise InversionError(
            f"photos with the same file name in different folders: {clashes}; rename them "
            f"(a store records photos by name)"
        )
    return photos


def default_alignment(
    generator_name: str, align: bool | None = None, face_index: int | None = None
) -> AlignmentSettings:
    """Alignment on for the embedded face generator (``align=None``), onto its canonical face."""
    return AlignmentSettings(
        align=is_face_generator(generator_name) if align is None else align,
        canonical=canonical_face_for(generator_name),
        face_index=face_index,
    )


def photo_seed(digest: str) -> int:
    """A per-photo seed for random init: the first 8 hex digits of its sha256 (independent of chunking)."""
    return int(digest[:8], 16)


class InvertStage(ChunkedStage):
    """Photos → ``<out_dir>/latents.zarr`` (see the module docstring), ``chunk_size`` photos per chunk.

    Built like every stage, ``InvertStage(params, out_dir, **options)``, so the engine runs it (and a worker
    process rebuilds it from a spec) as it runs the others.

    Args:
        params: the run's params (generator).
        out_dir: the folder that receives the store.
        photos: files and folders (see :func:`collect_photos`).
        settings: inversion settings.
        alignment: how photos become crops (default: :func:`default_alignment` for the generator).
        encoder_path: the trained encoder (needed when ``settings.init`` is ``encoder``).
        chunk_size: photos per chunk.
        generator: an injected generator (tests), else the one params names.
        attach: worker mode (the driver's store fingerprint), see :class:`stages.runtime.chunked.ChunkedStage`.
    """

    name = "invert"

    def __init__(
        self,
        params: Params,
        out_dir: str | StorePath,
        photos: Sequence[Path],
        settings: InversionSettings,
        alignment: AlignmentSettings | None = None,
        encoder_path: Path | None = None,
        chunk_size: int = 8,
        generator: Generator | None = None,
        *,
        attach: str | None = None,
    ) -> None:
        if chunk_size < 1:
            raise InversionError(f"chunk size must be at least 1, got {chunk_size}")
        collected = collect_photos(photos)
        alignment = alignment or default_alignment(params.generator.name)
        # What a worker needs to build this stage again: absolute paths, so its working folder does not matter.
        options = {
            "photos": tuple(photo.resolve() for photo in collected),
            "settings": settings,
            "alignment": alignment,
            "chunk_size": chunk_size,
            "encoder_path": Path(encoder_path).resolve() if encoder_path is not None else None,
        }
        super().__init__(params, out_dir, attach=attach, injected=generator is not None, options=options)
        self.photos = collected
        self.settings = settings
        self.inverter = Inverter(generator_for(params.generator, generator), settings)
        self.generator = self.inverter.generator
        self.space = self.inverter.space
        self.device = self.inverter.device
        self.alignment = alignment
        self.encoder: TrainedEncoder | None = None
        if settings.init == "encoder":
            if encoder_path is None:
                raise InversionError("init 'encoder' needs an encoder file (--encoder), or use --init mean")
            self.encoder = load_encoder(encoder_path, self.generator.fingerprint, self.inverter.device)
        self.digests = [file_sha256(photo) for photo in self.photos]
        resolution = int(self.generator.resolution)
        shape = tuple(self.inverter.statistics.shape(1)[1:])
        dims = ("sample", "layer", "w_dim") if self.space == "w+" else ("sample", f"{self.space}_dim")
        arrays = {
            self.space: ArraySpec(shape, "float32", dims),
            "aligned": ArraySpec((resolution, resolution, 3), "uint8", ("sample", "y", "x", "rgb")),
            "crop_to_photo": ArraySpec((2, 3), "float32", ("sample", "row", "column")),
            "reconstruction_lpips": ArraySpec((), "float32", ("sample",)),
            "reconstruction_psnr": ArraySpec((), "float32", ("sample",)),
        }
        inputs = {
            "stage": "invert",
            "photos": [[photo.name, digest] for photo, digest in zip(self.photos, self.digests)],
            "generator": self.generator.fingerprint,
            "space": self.space,
            "settings": settings.model_dump(mode="json", exclude={"batch_size", "device"}),
            "alignment": self.alignment.fingerprint_inputs(),
            "encoder": self.encoder.sha256 if self.encoder is not None else None,
            "device_type": self.inverter.device.type,
            "cpu_threads": CPU_THREADS,
        }
        info = StoreInfo(
            "latents",
            inputs,
            len(self.photos),
            chunk_size,
            details={
                "spaces": [self.space],
                "source": "inversion",
                "generator": params.generator.name,
                "photos": [photo.name for photo in self.photos],
                "photo_paths": [str(photo) for photo in self.photos],
                "photo_sha256": self.digests,
                "resolution": resolution,
                "lpips_net": settings.lpips_net if settings.lpips_weight > 0 else None,
            },
        )
        self.store: ZarrChunkStore = self._open_output(
            ZarrChunkStore, self.data_dir / LATENTS_STORE, info, arrays=arrays
        )

    @functools.cached_property
    def detector(self) -> FaceDetector:
        return FaceDetector(self.inverter.device)

    def aligned_photos(self, index: int) -> list[AlignedPhoto]:
        """The crops of chunk ``index``'s photos (detected and aligned, or centre-cropped)."""
        detector = self.detector if self.alignment.align else None
        rows = self.store.info.chunk_slice(index)
        return [
            prepare_photo(
                load_photo(self.photos[row]),
                int(self.generator.resolution),
                self.alignment,
                detector,
                str(self.photos[row]),
            )
            for row in range(rows.start, rows.stop)
        ]

    def run_chunk(self, index: int) -> None:
        rows = self.store.info.chunk_slice(index)
        crops = self.aligned_photos(index)
        pixels = np.stack([crop.pixels for crop in crops])
        targets = uint8_to_images(pixels, self.inverter.device)
        seeds = [photo_seed(self.digests[row]) for row in range(rows.start, rows.stop)]
        result = self.inverter.invert(targets, self.inverter.initial(targets, self.encoder, seeds))
        self.store.write_chunk(
            index,
            {
                self.space: result.latents.numpy().astype(np.float32),
                "aligned": pixels,
                "crop_to_photo": np.stack([crop.crop_to_photo for crop in crops]).astype(np.float32),
                "reconstruction_lpips": result.lpips.numpy().astype(np.float32),
                "reconstruction_psnr": result.psnr.numpy().astype(np.float32),
            },
        )


class ReconstructStage(ChunkedStage):
    """``<out_dir>/latents.zarr`` of an inversion → ``<out_dir>/images.zarr``: the generator's image of every
    inverted latent, as the synthesize stage stores images, so the label stage and the dataset reader take the
    folder like a pipeline run."""

    name = "reconstruct"

    def __init__(
        self, params: Params, out_dir: str | StorePath, generator: Generator | None = None, *, attach: str | None = None
    ) -> None:
        super().__init__(params, out_dir, attach=attach, injected=generator is not None)
        self.latents: ZarrChunkStore = self._open_input(ZarrChunkStore, self.data_dir / LATENTS_STORE, "latents")
        self.space = self.latents.info.details["spaces"][0]
        self.synthesizer = ImageSynthesizer(generator_for(params.generator, generator), params.synthesize)
        resolution = self.synthesizer.resolution
        inputs = {
            "stage": "synthesize",
            "latents": self.latents.info.fingerprint,
            "space": self.space,
            "keep_images": True,
            **self.synthesizer.fingerprint_inputs(),
        }
        info = StoreInfo(
            "images",
            inputs,
            self.latents.info.n_samples,
            self.latents.info.chunk_size,
            details={
                "images_kept": True,
                "resolution": resolution,
                "generator": params.generator.name,
                "space": self.space,
                "photos": self.latents.info.details.get("photos", []),
            },
        )
        arrays = {"images": ArraySpec((resolution, resolution, 3), "uint8", ("sample", "y", "x", "rgb"))}
        self.store: ZarrChunkStore = self._open_output(
            ZarrChunkStore, self.data_dir / IMAGES_STORE, info, arrays=arrays
        )

    def run_chunk(self, index: int) -> None:
        latents = np.asarray(self.latents.read_chunk(self.space, index))
        self.store.write_chunk(
            index, {"images": self.synthesizer.uint8(latents, self.space)}, upstream=self.upstream_of(index)
        )


def reconstruct_images(generator: Generator, latents: torch.Tensor, space: str, size: int) -> np.ndarray:
    """(N, ...) latents of ``space`` → (N, size, size, 3) uint8 images (no gradients)."""
    with torch.inference_mode():
        images = generator.synthesize(latents, space).float()
        if images.shape[-1] != size:
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", antialias=images.shape[-1] > size, align_corners=False
            )
    return images_to_uint8(images)
