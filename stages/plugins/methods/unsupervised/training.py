"""Joint training of a deformator A and a reconstructor R against a frozen generator G, resumable after a kill.

Objectives (:class:`Objective`):

- Voynov & Babenko 2020 (``two_shifts=False``): z ~ N(0, I), k ~ U{0..K-1}, ε as below;
  (k̂, ε̂) = R(G(z), G(z + A(e_k ε)));  L = CE(k̂, k) + λ·|ε̂ − ε|  (λ = 0.25).
- Lu et al. 2020 (``two_shifts=True``): a second, consecutive shift (k₂, ε₂);
  R sees both pairs (G(z), G(z + A₁)) → (k₁, ε₁) and (G(z + A₁), G(z + A₁ + A₂)) → (k₂, ε₂), with
  A_i = A(e_{k_i} ε_i); L_cl and L_r average over the 2N pairs; L = L_cl + λ·L_r + γ·L_c (λ = 0.5, γ = 0.25)
  with the centroid loss :func:`centroid_loss` over the 2N shift codes of the batch.

ε sampling follows Voynov's code: ε = ε_max·U[−1, 1], then magnitudes below ε_min are raised to ±ε_min (same sign),
so |ε| ≥ ε_min (the values ±ε_min carry probability ε_min/ε_max together).

All randomness of the loop (z, k, ε) comes from one CPU ``torch.Generator`` seeded by ``seed`` (samples are moved to
the device), so the stream is the same on CPU and CUDA and its state is checkpointed. Networks are initialised from
``seed`` (deformator) and ``seed + 1`` (reconstructor) with the global RNG forked. One Adam (constant lr) updates A and
R; G is frozen (``requires_grad`` False, eval mode) but gradients flow *through* it to A.

Checkpoints (``<work_dir>/<name>-checkpoint.pt``, written atomically every ``checkpoint_every`` steps and at the end)
hold A, R, the optimiser, the step, the RNG state and the loss history, plus a fingerprint of everything that
changes the trajectory (training params, objective, K, generator fingerprint). On start a checkpoint with the same
fingerprint is resumed from its step (``steps``, logging and evaluation settings are not in the fingerprint: raising
``steps`` continues a finished run); any other checkpoint is ignored with a warning and training starts fresh. On
the CPU a resumed run ends bit-identical to an uninterrupted one (same thread count).

On CUDA the per-step losses stay on the device and are read once per report (no per-step sync), samples go over
through pinned memory, and ``amp`` runs G and R under bf16 autocast (A, the losses and the optimiser stay fp32).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn import functional as F

from latentatlas.atomic import atomic_write_bytes
from stages.plugins.methods.unsupervised.deformator import Deformator, build_deformator, check_direction_count
from stages.plugins.methods.unsupervised.reconstructor import build_reconstructor

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
PAPER_DIRECTIONS = 128  # K in both papers


class UnsupervisedParams(BaseModel):
    """Training, evaluation and naming settings shared by the ``voynov`` and ``centroid`` methods."""

    model_config = ConfigDict(extra="forbid")

    n_directions: int | None = Field(
        None,
        ge=1,
        description="K, the number of directions to discover. None: the papers' 128, capped at the latent dimension "
        "for the linear/orthonormal deformators (100 for the face DCGAN; the cap is logged). An explicit "
        "K larger than the latent dimension with a linear type is an error.",
    )
    deformator_type: Literal["linear", "orthonormal", "fc"] = Field(
        "orthonormal",
        description="linear: D×K matrix with unit-length columns; orthonormal: K columns of "
        "exp(S − Sᵀ); fc: 3-layer MLP (1024 hidden units, ELU, bias-free)",
    )
    reconstructor: Literal["lenet", "resnet18"] = Field(
        "lenet", description="lenet for ≈64×64 images, resnet18 (random init) for larger ones"
    )
    epsilon_max: float = Field(6.0, gt=0, description="shift magnitudes ε are drawn from ε_max·U[−1, 1]")
    epsilon_min: float = Field(0.5, gt=0, description="|ε| below this is raised to ±epsilon_min")
    lambda_shift: float = Field(0.25, ge=0, description="λ, weight of the mean-absolute ε regression loss L_r")
    steps: int = Field(100_000, ge=1, description="training steps (Voynov: 1e5; Lu et al.: 2e5)")
    batch_size: int = Field(32, ge=2, description="latents per step (≥ 2: the reconstructor has batch norm)")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate for A and R, constant")
    checkpoint_every: int = Field(1000, ge=1, description="steps between checkpoints in the work dir")
    log_every: int = Field(100, ge=1, description="steps between progress reports (window-averaged losses)")
    seed: int = Field(0, description="seed of the network initialisation and of the z, k, ε stream")
    amp: bool = Field(False, description="bf16 autocast of G and R on CUDA (ignored on the CPU)")
    eval_batches: int = Field(
        100, ge=1, description="held-out batches of batch_size pairs (fresh z, own seed) for the RCA (Voynov: 100)"
    )
    ppl_samples: int = Field(64, ge=1, description="path-length samples per direction")
    ppl_net: Literal["alex", "vgg"] = Field("vgg", description="LPIPS trunk of the path length (paper: VGG16)")
    ppl_batch_size: int = Field(64, ge=1, description="samples per generator/LPIPS call in the path length")

    @model_validator(mode="after")
    def _check_epsilons(self) -> UnsupervisedParams:
        if self.epsilon_min >= self.epsilon_max:
            raise ValueError(f"epsilon_min ({self.epsilon_min}) must be below epsilon_max ({self.epsilon_max})")
        return self


@dataclass(frozen=True)
class Objective:
    """What is minimised: Voynov's single shift, or Lu et al.'s two consecutive shifts plus the centroid loss."""

    name: str  # "voynov" | "centroid": also names the checkpoint file
    two_shifts: bool
    lambda_shift: float
    gamma_centroid: float = 0.0


@dataclass
class TrainingResult:
    """A trained deformator/reconstructor pair and how training went."""

    deformator: Deformator
    reconstructor: nn.Module
    steps: int
    resumed_from: int  # the checkpoint step training continued from (0: fresh start)
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per progress report

    @property
    def final_losses(self) -> dict[str, float]:
        return dict(self.history[-1]) if self.history else {}


def resolve_n_directions(requested: int | None, deformator_type: str, latent_dim: int) -> int:
    """K to train: ``requested``, or the papers' 128 capped at ``latent_dim`` for linear types (logged).

    Raises:
        DeformatorConfigError: an explicit K above ``latent_dim`` with a linear/orthonormal deformator.
    """
    if requested is None:
        count = PAPER_DIRECTIONS
        if deformator_type in ("linear", "orthonormal") and latent_dim < PAPER_DIRECTIONS:
            count = latent_dim
            logger.warning(
                "n_directions unset: the papers' K = %d exceeds the latent dimension %d, so the %s "
                "deformator gets K = %d directions",
                PAPER_DIRECTIONS,
                latent_dim,
                deformator_type,
                count,
            )
    else:
        count = requested
    check_direction_count(deformator_type, count, latent_dim)
    return count


def sample_magnitudes(count: int, epsilon_min: float, epsilon_max: float, rng: torch.Generator) -> torch.Tensor:
    """(count,) ε = ε_max·U[−1, 1] with |ε| < ε_min raised to ±ε_min (Voynov's scheme), on the CPU."""
    magnitudes = epsilon_max * (2.0 * torch.rand(count, generator=rng) - 1.0)
    small = magnitudes.abs() < epsilon_min
    signs = torch.where(magnitudes < 0, -1.0, 1.0)
    return torch.where(small, signs * epsilon_min, magnitudes)


def sample_shift_batch(
    batch_size: int, latent_dim: int, n_directions: int, epsilon_min: float, epsilon_max: float, rng: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch of z (N, D) ~ N(0, I), direction indices (N,) ~ U{0..K−1} and magnitudes (N,), on the CPU."""
    latents = torch.randn(batch_size, latent_dim, generator=rng)
    indices = torch.randint(0, n_directions, (batch_size,), generator=rng)
    return latents, indices, sample_magnitudes(batch_size, epsilon_min, epsilon_max, rng)


def centroid_loss(
    shifts: torch.Tensor, indices: torch.Tensor, magnitudes: torch.Tensor, n_directions: int
) -> torch.Tensor:
    """Lu et al.'s centroid loss L_c over a batch of shift codes.

    The centroid of direction k is the sum of the batch's shift codes of direction k (Eq. 3, recomputed every
    iteration, gradients flowing through it), and each code is pulled towards its centroid by cosine similarity::

        a_m = sign(ε_m)·A(e_{k_m} ε_m),   c_k = Σ_{m: k_m = k} a_m,   L_c = (1/M) Σ_m [1 − cos(a_m, c_{k_m})]

    Two readings of the printed equations: (i) codes are sign-aligned by sign(ε) — with ε of both signs, an odd
    deformator's A(e_k ε) and A(e_k −ε) point in opposite directions, so the literal sum would cancel and the
    cosine would be ±1 whatever A does (for ε > 0 this is exactly Eq. 3); (ii) the loss is 1 − cos (Eq. 5 as
    printed is the mean similarity, which minimising would push codes *away* from their centroid, contrary to the
    text: "penalize the distances between the shifted codes and their corresponding centers"). A direction with a
    single code in the batch contributes 0; linear deformators always give L_c = 0.

    Args:
        shifts: (M, D) shift codes A(e_k ε).
        indices: (M,) their direction indices k.
        magnitudes: (M,) their ε (nonzero).
        n_directions: K.

    Returns:
        scalar tensor.
    """
    aligned = shifts * torch.sign(magnitudes).to(shifts.dtype)[:, None]
    centroids = shifts.new_zeros(n_directions, shifts.shape[1]).index_add(0, indices, aligned)
    similarity = F.cosine_similarity(aligned, centroids[indices], dim=1, eps=1e-8)
    return (1.0 - similarity).mean()


def training_fingerprint(
    params: UnsupervisedParams, objective: Objective, n_directions: int, generator_fingerprint: str, latent_dim: int
) -> str:
    """sha256 of everything that changes the training trajectory (not ``steps``, logging or evaluation settings)."""
    relevant = params.model_dump(
        include={
            "deformator_type",
            "reconstructor",
            "epsilon_max",
            "epsilon_min",
            "lambda_shift",
            "batch_size",
            "lr",
            "seed",
            "amp",
        }
    )
    payload = {
        "format": CHECKPOINT_FORMAT,
        "params": relevant,
        "objective": asdict(objective),
        "n_directions": n_directions,
        "generator": generator_fingerprint,
        "latent_dim": latent_dim,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode with ``requires_grad`` False for the duration; flags and mode restored after."""
    flags = [p.requires_grad for p in module.parameters()]
    was_training = module.training
    module.requires_grad_(False).eval()
    try:
        yield
    finally:
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)
        module.train(was_training)


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _generator_module(generator: Any) -> nn.Module:
    net = getattr(generator, "net", None)
    if not isinstance(net, nn.Module):
        raise TypeError(
            f"generator {getattr(generator, 'name', generator)!r} exposes no nn.Module as `.net`; the "
            f"unsupervised methods need it to freeze the weights"
        )
    return net


def _load_checkpoint(path: Path, fingerprint: str, steps: int, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it exists, is readable and matches ``fingerprint``; None otherwise (logged)."""
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # noqa: BLE001 — any unreadable checkpoint means: start fresh
        logger.warning("%s: unreadable checkpoint (%s); starting fresh", path, error)
        return None
    if checkpoint.get("fingerprint") != fingerprint:
        logger.warning(
            "%s: checkpoint was written for other training params (fingerprint %.12s, now %.12s); "
            "ignoring it and starting fresh",
            path,
            checkpoint.get("fingerprint"),
            fingerprint,
        )
        return None
    if checkpoint["step"] > steps:
        logger.warning(
            "%s: checkpoint is at step %d, beyond the %d steps asked for; starting fresh",
            path,
            checkpoint["step"],
            steps,
        )
        return None
    return checkpoint


def _save_checkpoint(
    path: Path,
    fingerprint: str,
    step: int,
    deformator: nn.Module,
    reconstructor: nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: torch.Generator,
    history: list[dict[str, float]],
) -> None:
    buffer = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": fingerprint,
            "step": step,
            "deformator": deformator.state_dict(),
            "reconstructor": reconstructor.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng_state": rng.get_state(),
            "history": history,
        },
        buffer,
    )
    atomic_write_bytes(path, buffer.getvalue())


def train_deformator(
    generator: Any,
    params: UnsupervisedParams,
    objective: Objective,
    n_directions: int,
    device: torch.device,
    work_dir: Path | None = None,
    progress: Callable[[int, int, dict[str, float]], None] = lambda step, total, metrics: None,
) -> TrainingResult:
    """Train A and R for ``params.steps`` steps against ``generator`` (z space), resuming from ``work_dir``.

    Args:
        generator: a :class:`~stages.plugins.generators.Generator` whose ``.net`` is its nn.Module (frozen here).
        params: training settings; ``n_directions`` is given resolved (see :func:`resolve_n_directions`).
        objective: Voynov's or Lu et al.'s loss.
        device: where A, R and G run (G is moved there).
        work_dir: folder for ``<objective.name>-checkpoint.pt``; None disables checkpointing (logged).
        progress: called every ``log_every`` steps and at the end with window-averaged ``loss_cls``,
            ``loss_shift``, (``loss_centroid``), ``loss``, ``accuracy`` (train top-1) and ``steps_per_s``.
    """
    device = torch.device(device)
    latent_dim = int(generator.z_dim)
    check_direction_count(params.deformator_type, n_directions, latent_dim)
    fingerprint = training_fingerprint(params, objective, n_directions, str(generator.fingerprint), latent_dim)
    generator.to(device)
    deformator = build_deformator(params.deformator_type, n_directions, latent_dim, seed=params.seed).to(device)
    reconstructor = build_reconstructor(params.reconstructor, n_directions, seed=params.seed + 1).to(device)
    optimizer = torch.optim.Adam([*deformator.parameters(), *reconstructor.parameters()], lr=params.lr)
    rng = torch.Generator().manual_seed(params.seed)
    history: list[dict[str, float]] = []
    start = 0

    checkpoint_path = Path(work_dir) / f"{objective.name}-checkpoint.pt" if work_dir is not None else None
    if checkpoint_path is None:
        logger.warning("%s: no work dir, so no checkpoints: a killed run will start over", objective.name)
    else:
        checkpoint = _load_checkpoint(checkpoint_path, fingerprint, params.steps, device)
        if checkpoint is not None:
            deformator.load_state_dict(checkpoint["deformator"])
            reconstructor.load_state_dict(checkpoint["reconstructor"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            rng.set_state(checkpoint["rng_state"].cpu())
            history = list(checkpoint["history"])
            start = int(checkpoint["step"])
            logger.info("%s: resuming from %s at step %d of %d", objective.name, checkpoint_path, start, params.steps)

    with frozen(_generator_module(generator)):
        deformator.train()
        reconstructor.train()
        window: dict[str, torch.Tensor] = {}  # sums of the step values, kept on the device (no per-step sync)
        window_steps, window_start = 0, time.perf_counter()
        for step in range(start, params.steps):
            losses = _training_step(
                generator,
                deformator,
                reconstructor,
                optimizer,
                params,
                objective,
                n_directions,
                latent_dim,
                rng,
                device,
            )
            for key, value in losses.items():
                window[key] = window[key] + value if key in window else value
            window_steps += 1
            done = step + 1
            report_now = done % params.log_every == 0 or done == params.steps
            if report_now:
                metrics = _window_means(window, window_steps, done, window_start)
                history.append(metrics)
            if checkpoint_path is not None and (done % params.checkpoint_every == 0 or done == params.steps):
                _save_checkpoint(checkpoint_path, fingerprint, done, deformator, reconstructor, optimizer, rng, history)
            if report_now:
                progress(done, params.steps, {k: v for k, v in metrics.items() if k != "step"})
                window, window_steps, window_start = {}, 0, time.perf_counter()
    deformator.eval()
    reconstructor.eval()
    return TrainingResult(
        deformator=deformator, reconstructor=reconstructor, steps=params.steps, resumed_from=start, history=history
    )


def _window_means(
    window: dict[str, torch.Tensor], window_steps: int, step: int, window_start: float
) -> dict[str, float]:
    metrics = {key: float(value) / max(window_steps, 1) for key, value in window.items()}  # syncs the device
    elapsed = max(time.perf_counter() - window_start, 1e-9)
    metrics["steps_per_s"] = window_steps / elapsed
    metrics["step"] = float(step)
    return metrics


def _training_step(
    generator: Any,
    deformator: Deformator,
    reconstructor: nn.Module,
    optimizer: torch.optim.Optimizer,
    params: UnsupervisedParams,
    objective: Objective,
    n_directions: int,
    latent_dim: int,
    rng: torch.Generator,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """One optimiser step; returns the batch's loss terms and top-1 accuracy as detached 0-d device tensors."""
    latents, indices, magnitudes = (
        _to_device(t, device)
        for t in sample_shift_batch(
            params.batch_size, latent_dim, n_directions, params.epsilon_min, params.epsilon_max, rng
        )
    )
    shift = deformator.shift(indices, magnitudes)
    with _autocast(device, params.amp):
        with torch.no_grad():
            images = generator.synthesize(latents)
        shifted = generator.synthesize(latents + shift)
        if objective.two_shifts:
            second_indices, second_magnitudes = (
                _to_device(t, device)
                for t in sample_shift_batch(
                    params.batch_size, latent_dim, n_directions, params.epsilon_min, params.epsilon_max, rng
                )[1:]
            )
            with torch.autocast(device.type, enabled=False):
                second_shift = deformator.shift(second_indices, second_magnitudes)
            twice_shifted = generator.synthesize(latents + shift + second_shift)
            logits, predicted = reconstructor(torch.cat([images, shifted]), torch.cat([shifted, twice_shifted]))
            indices = torch.cat([indices, second_indices])
            magnitudes = torch.cat([magnitudes, second_magnitudes])
        else:
            logits, predicted = reconstructor(images, shifted)
    loss_cls = F.cross_entropy(logits.float(), indices)
    loss_shift = (predicted.float() - magnitudes).abs().mean()
    loss = loss_cls + objective.lambda_shift * loss_shift
    terms = {"loss_cls": loss_cls, "loss_shift": loss_shift}
    if objective.two_shifts:
        loss_c = centroid_loss(torch.cat([shift, second_shift]), indices, magnitudes, n_directions)
        loss = loss + objective.gamma_centroid * loss_c
        terms["loss_centroid"] = loss_c
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    accuracy = (logits.detach().argmax(dim=1) == indices).float().mean()
    values = {key: value.detach() for key, value in terms.items()}
    values["loss"] = loss.detach()
    values["accuracy"] = accuracy
    return values


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU sample on ``device``; on CUDA through pinned memory, asynchronously (a pageable copy would sync)."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
