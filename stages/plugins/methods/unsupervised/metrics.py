"""Metrics of discovered directions: reconstructor classification accuracy (RCA).

RCA (Voynov & Babenko 2020): top-1 accuracy of the reconstructor at telling which of the K directions moved
G(z) to G(z + A(e_k ε)), on held-out batches (fresh z, k, ε from their own seed, same ε distribution as training;
single shifts for both methods so their RCAs compare). Chance is 1/K.

PPL is :func:`stages.latent.metrics.perceptual_path_length` (shared with evaluation).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stages.plugins.methods.unsupervised.deformator import Deformator
from stages.plugins.methods.unsupervised.training import sample_shift_batch


@torch.no_grad()
def reconstructor_accuracy(
    generator: Any,
    deformator: Deformator,
    reconstructor: nn.Module,
    n_batches: int,
    batch_size: int,
    epsilon_min: float,
    epsilon_max: float,
    seed: int,
    device: torch.device,
) -> dict[str, float]:
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
            latents, indices, magnitudes = (
                t.to(device)
                for t in sample_shift_batch(
                    batch_size, int(generator.z_dim), deformator.n_directions, epsilon_min, epsilon_max, rng
                )
            )
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
