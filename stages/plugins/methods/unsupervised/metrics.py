"""Metrics of discovered directions: reconstructor classification accuracy (RCA) and perceptual path length (PPL).

RCA (Voynov & Babenko 2020): top-1 accuracy of the reconstructor at telling which of the K directions moved
G(z) to G(z + A(e_k ε)), on held-out batches (fresh z, k, ε from their own seed, same ε distribution as training;
single shifts for both methods so their RCAs compare). Chance is 1/K.

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

from stages.latent.perceptual import LPIPS_MIN_SIDE, resize_for_lpips
from stages.plugins.methods.unsupervised.deformator import Deformator
from stages.plugins.methods.unsupervised.training import sample_shift_batch

PPL_DELTA = 1e-4


@torch.no_grad()
def reconstructor_accuracy(generator: Any, deformator: Deformator, reconstructor: nn.Module, n_batches: int,
                           batch_size: int, epsilon_min: float, epsilon_max: float, seed: int,
                           device: torch.device) -> dict[str, float]:
    """RCA on ``n_batches`` held-out batches of single shifts.

    Returns:
        ``{"rca": top-1 accuracy, "shift_mae": mean |ε̂ − ε|, "n_pairs": pairs evaluated}``.
    """
    rng = torch.Generator().manual_seed(seed)
    was_training = reconstructor.training, deformator.training
    reconstructor.eval()
    deformator.eval()
    correct, absolute_error, count = 0, 0.0, 0
    try:
        for _ in range(n_batches):
            latents, indices, magnitudes = (t.to(device) for t in sample_shift_batch(
                batch_size, int(generator.z_dim), deformator.n_directions, epsilon_min, epsilon_max, rng))
            images = generator.synthesize(latents)
            shifted = generator.synthesize(latents + deformator.shift(indices, magnitudes))
            logits, predicted = reconstructor(images, shifted)
            correct += int((logits.argmax(dim=1) == indices).sum())
            absolute_error += float((predicted.float() - magnitudes).abs().sum())
            count += batch_size
    finally:
        reconstructor.train(was_training[0])
        deformator.train(was_training[1])
    return {"rca": correct / count, "shift_mae": absolute_error / count, "n_pairs": count}


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


@torch.no_grad()
def perceptual_path_length(generator: Any, directions: torch.Tensor | np.ndarray, lpips: nn.Module,
                           n_samples: int = 64, t_max: float = 6.0, delta: float = PPL_DELTA, batch_size: int = 64,
                           seed: int = 0, space: str = "z", min_size: int = LPIPS_MIN_SIDE, reject_outliers: bool = True,
                           device: torch.device | str | None = None) -> np.ndarray:
    """Perceptual path length along each of K directions (see the module docstring).

    Args:
        generator: any :class:`~stages.plugins.generators.Generator` (``synthesize(latents, space)``, ``map``, ``z_dim``).
        directions: (K, D) directions in ``space``; normalised to unit norm here (t is in latent units).
        lpips: a distance module, (N, 3, H, W) × (N, 3, H, W) in [-1, 1] → (N,), e.g. :func:`stages.latent.perceptual.build_lpips`.
        n_samples: (z, t) samples per direction.
        t_max: t ~ U[−t_max, t_max] (the methods pass their training ε_max).
        delta: the finite-difference step δ.
        batch_size: samples per generator/LPIPS call.
        seed: seed of z and t (the same for every direction).
        space: latent space the directions live in; for ``"w"`` etc. z is mapped first.
        min_size: images smaller than this (either side) are upsampled bilinearly before LPIPS.
        reject_outliers: keep only values within the 1st–99th percentile per direction (StyleGAN).
        device: where to run; default the generator's device (or the CPU).

    Returns:
        (K,) float64 PPL per direction.
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
        raise ValueError(f"directions are {vectors.shape[1]}-d but the generator's {space!r} space is "
                         f"{base.shape[1]}-d")
    lpips = lpips.to(device)
    results = np.zeros(len(vectors), dtype=np.float64)
    with ieee_float32():
        for k, direction in enumerate(vectors):
            distances = []
            for start in range(0, n_samples, batch_size):
                latents = base[start:start + batch_size].to(device)
                t = steps[start:start + batch_size, None].to(device)
                unit = direction.to(device)[None]
                near = generator.synthesize(latents + t * unit, space=space).float()
                far = generator.synthesize(latents + (t + delta) * unit, space=space).float()
                distances.append(lpips(resize_for_lpips(near, min_size), resize_for_lpips(far, min_size)).double().cpu())
            values = torch.cat(distances).numpy() / delta ** 2
            if reject_outliers and len(values) >= 3:
                low = np.percentile(values, 1, method="lower")
                high = np.percentile(values, 99, method="higher")
                values = values[(values >= low) & (values <= high)]
            results[k] = float(values.mean())
    return results
