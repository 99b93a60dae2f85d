"""Perceptual path length (PPL) of latent edits: along straight directions and along nonlinear gradient paths.

PPL along a direction (the StyleGAN definition, Karras et al. 2019, with the interpolation replaced by a walk along
a unit direction n in latent space, as Lu et al. do)::

    PPL(n) = E_{z ~ N(0, I), t ~ U[−t_max, t_max]} [ d(G(z + t·n), G(z + (t + δ)·n)) ] / δ²,   δ = 1e-4

with d the LPIPS distance (already a squared distance, hence δ²). As in StyleGAN, samples outside the 1st–99th
percentile are discarded before averaging. Images go to LPIPS at the generator's native resolution (64×64 for the
face DCGAN; both LPIPS trunks run on it) and are bilinearly upsampled only if a side is below ``min_size``
(StyleGAN crops faces and upsamples to 256; we keep the generator's pixels). The same z and t are used for every
direction (common random numbers), so directions compare with less noise. TF32 is switched off during the
measurement: at δ = 1e-4 TF32's 10-bit mantissa would swamp the image difference on Ampere+ GPUs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from stages.latent.editing import FIELD_STEP, LatentField, follow_gradient
from stages.latent.perceptual import LPIPS_MIN_SIDE, resize_for_lpips

PPL_DELTA = 1e-4


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """Full-precision float32 matmuls and convolutions on CUDA (TF32 off) for the duration; restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def perceptual_path_length(
    generator: Any, directions: torch.Tensor | np.ndarray, lpips: nn.Module, **options: Any
) -> np.ndarray:
    """(K,) float64 perceptual path length along each of K directions: the mean of
    :func:`perceptual_path_length_terms` (same arguments)."""
    return np.array([terms.mean() for terms in perceptual_path_length_terms(generator, directions, lpips, **options)])


@torch.no_grad()
def perceptual_path_length_terms(
    generator: Any,
    directions: torch.Tensor | np.ndarray,
    lpips: nn.Module,
    n_samples: int = 64,
    t_max: float = 6.0,
    delta: float = PPL_DELTA,
    batch_size: int = 64,
    seed: int = 0,
    space: str = "z",
    min_size: int = LPIPS_MIN_SIDE,
    reject_outliers: bool = True,
    device: torch.device | str | None = None,
) -> list[np.ndarray]:
    """The per-sample terms of the perceptual path length along each of K directions (see the module docstring):
    their mean is the PPL, and an interval can be bootstrapped over them.

    Args:
        generator: any :class:`~stages.plugins.generators.Generator` (``synthesize(latents, space)``, ``map``,
        ``z_dim``). directions: (K, D) directions in ``space``; normalised to unit norm here (t is in latent units).
        lpips: a distance module, (N, 3, H, W) × (N, 3, H, W) in [-1, 1] → (N,), e.g.
        :func:`stages.latent.perceptual.build_lpips`. n_samples: (z, t) samples per direction.
        t_max: t ~ U[−t_max, t_max] (the methods pass their training ε_max).
        delta: the finite-difference step δ.
        batch_size: samples per generator/LPIPS call.
        seed: seed of z and t (the same for every direction).
        space: latent space the directions live in; for ``"w"`` etc. z is mapped first.
        min_size: images smaller than this (either side) are upsampled bilinearly before LPIPS.
        reject_outliers: keep only values within the 1st–99th percentile per direction (StyleGAN).
        device: where to run; default the generator's device (or the CPU).

    Returns:
        K float64 arrays, direction k's terms d / δ² of the (z, t) samples kept (all ``n_samples``, or those within
        the 1st–99th percentile).
    """
    vectors = torch.as_tensor(np.asarray(directions) if not torch.is_tensor(directions) else directions)
    vectors = F.normalize(vectors.detach().float().cpu(), dim=1)
    if device is None:
        device = getattr(generator, "device", torch.device("cpu"))
    device = torch.device(device)
    rng = torch.Generator().manual_seed(seed)
    latents_z = torch.randn(n_samples, int(generator.z_dim), generator=rng)
    steps = t_max * (2.0 * torch.rand(n_samples, generator=rng) - 1.0)
    base = latents_z if space == "z" else generator.map(latents_z.to(device))[space].float().cpu()
    if base.shape[1] != vectors.shape[1]:
        raise ValueError(
            f"directions are {vectors.shape[1]}-d but the generator's {space!r} space is {base.shape[1]}-d"
        )
    lpips = lpips.to(device)
    results = []
    with ieee_float32():
        for direction in vectors:
            distances = []
            for start in range(0, n_samples, batch_size):
                latents = base[start : start + batch_size].to(device)
                t = steps[start : start + batch_size, None].to(device)
                unit = direction.to(device)[None]
                near = generator.synthesize(latents + t * unit, space=space).float()
                far = generator.synthesize(latents + (t + delta) * unit, space=space).float()
                distances.append(
                    lpips(resize_for_lpips(near, min_size), resize_for_lpips(far, min_size)).double().cpu()
                )
            values = torch.cat(distances).numpy() / delta**2
            if reject_outliers and len(values) >= 3:
                low = np.percentile(values, 1, method="lower")
                high = np.percentile(values, 99, method="higher")
                values = values[(values >= low) & (values <= high)]
            results.append(values)
    return results


def field_perceptual_path_length(generator: Any, field: LatentField, lpips: torch.nn.Module, **options: Any) -> float:
    """Perceptual path length along a nonlinear model's gradient paths: the mean of
    :func:`field_perceptual_path_length_terms` (same arguments)."""
    return float(field_perceptual_path_length_terms(generator, field, lpips, **options).mean())


def field_perceptual_path_length_terms(
    generator: Any,
    field: LatentField,
    lpips: torch.nn.Module,
    space: str = "z",
    n_samples: int = 32,
    t_max: float = 3.0,
    seed: int = 0,
    batch_size: int = 64,
    step_size: float = FIELD_STEP,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """The per-sample terms of the perceptual path length along a nonlinear model's gradient paths (the PPL of
    :func:`perceptual_path_length` with the straight line replaced by the path the edit follows).

    For (z, t) samples (the same seeded draws as the linear PPL: z ~ N(0, I), t ~ U[−t_max, t_max]), x_t is z
    (or its w) moved along the path for length |t| (:func:`stages.latent.editing.follow_gradient`, sign of t), and
    ``d(G(x_t), G(x_t + δ u(x_t))) / δ²`` with u the unit gradient at x_t, δ = 1e-4; values outside the 1st–99th
    percentile are dropped. Returns the kept terms, (≤ n_samples,) float64.
    """
    from stages.latent.metrics import PPL_DELTA, ieee_float32

    device = torch.device(device)
    rng = torch.Generator().manual_seed(seed)
    latents_z = torch.randn(n_samples, int(generator.z_dim), generator=rng)
    steps = t_max * (2.0 * torch.rand(n_samples, generator=rng) - 1.0)
    base = latents_z if space == "z" else generator.map(latents_z.to(device))[space].float().cpu()
    starts = torch.cat(
        [
            follow_gradient(base[i : i + 1], field, np.array([float(steps[i])]), step_size=step_size)[0]
            for i in range(n_samples)
        ]
    )
    gradient = field.gradient(starts).detach().to(torch.float32)
    units = gradient / gradient.norm(dim=1, keepdim=True).clamp_min(1e-12)
    distances = []
    with ieee_float32(), torch.no_grad():
        for start in range(0, n_samples, batch_size):
            near_latents = starts[start : start + batch_size].to(device)
            far_latents = near_latents + PPL_DELTA * units[start : start + batch_size].to(device)
            near = generator.synthesize(near_latents, space=space).float()
            far = generator.synthesize(far_latents, space=space).float()
            distances.append(lpips(resize_for_lpips(near), resize_for_lpips(far)).double().reshape(-1).cpu())
    values = torch.cat(distances).numpy() / PPL_DELTA**2
    if len(values) >= 3:
        low, high = np.percentile(values, 1, method="lower"), np.percentile(values, 99, method="higher")
        values = values[(values >= low) & (values <= high)]
    return values
