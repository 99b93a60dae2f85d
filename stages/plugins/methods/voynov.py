"""Voynov & Babenko (ICML 2020): unsupervised discovery of interpretable directions in a GAN's latent space.

A deformator A (K direction codes → latent shifts) and a reconstructor R (image pair → which direction, how far) are
trained jointly against the frozen generator, so that the K directions produce image changes that are easy to tell
apart (see :mod:`stages.plugins.methods.unsupervised.training`). This module also holds :func:`fit_unsupervised`, the
fit shared with the ``centroid`` method (Lu et al. 2020, :mod:`stages.plugins.methods.centroid`).

Output (space ``"z"``): K unit-norm directions named ``c000``…, in the deformator's order.

- linear / orthonormal deformators: the normalised columns of A.
- ``fc``: the normalised mean of A(e_k ε)/ε over 32 magnitudes spread over ±[ε_min, ε_max] — the best straight-line
  summary of the curve A traces for direction k (``stats[name]["straightness"]`` says how straight it is; the
  full nonlinear deformator is saved beside the directions as ``deformator.pt``).

Each direction is then named by the attribute it moves most (:func:`stages.plugins.methods.naming.orient_and_name`: edit
held-out latents by ±α, score with ``context.score_images``) and oriented so that the attribute increases along it
(``flipped`` records a sign flip relative to the deformator's +ε). Stats per direction: ``attribute``,
``correlation``, ``correlations``, ``naming_source``, ``flipped``, ``ppl`` (LPIPS path length, see
:mod:`stages.plugins.methods.unsupervised.metrics`), ``deformator_index``, ``straightness`` and ``gain`` (mean ‖A(e_k
ε)‖/|ε|: 1 for the unit-column linear types; for ``fc`` how far the deformator learned to push z per unit of ε).
Meta: ``rca``, ``shift_mae``, ``final_losses``, ``training_curve``, ``steps``, ``resumed_from``, ``n_directions``,
``params``, ``input_fingerprint`` and the definitions used.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from pydantic import Field

from stages.latent.directions import DirectionSet
from stages.latent.metrics import PPL_DELTA, perceptual_path_length
from stages.latent.perceptual import build_lpips
from stages.plugins.methods.base import METHODS, FitContext, MethodInputError, MethodSpec
from stages.plugins.methods.naming import NamingParams, component_names, orient_and_name
from stages.plugins.methods.unsupervised.deformator import DeformatorConfigError, direction_vectors
from stages.plugins.methods.unsupervised.metrics import reconstructor_accuracy
from stages.plugins.methods.unsupervised.training import (
    Objective,
    TrainingResult,
    UnsupervisedParams,
    resolve_n_directions,
    train_deformator,
)

logger = logging.getLogger(__name__)

METHOD = "voynov"
CURVE_POINTS = 200  # at most this many training-curve entries go into the directions' meta
RCA_SEED_OFFSET = 1_000_003  # held-out RCA batches use seed + this (an independent stream from training)
PPL_SEED_OFFSET = 2_000_003


class VoynovParams(UnsupervisedParams):
    """Parameters of :func:`fit_voynov` (defaults from Voynov & Babenko 2020 and their code).

    Inherits the training/evaluation fields of
    :class:`~stages.plugins.methods.unsupervised.training.UnsupervisedParams`: ``n_directions`` (None → 128 capped at
    the latent dimension), ``deformator_type`` ("orthonormal"), ``reconstructor`` ("lenet"), ``epsilon_max`` (6),
    ``epsilon_min`` (0.5), ``lambda_shift`` (0.25), ``steps`` (100 000), ``batch_size`` (32), ``lr`` (1e-4),
    ``checkpoint_every`` (1000), ``log_every`` (100), ``seed`` (0), ``amp`` (False), ``eval_batches`` (100),
    ``ppl_samples`` (64), ``ppl_net`` ("vgg"), ``ppl_batch_size`` (64).
    """

    naming: NamingParams = Field(
        default_factory=NamingParams, description="how components are named by the attribute they move most"
    )


def fit_unsupervised(
    context: FitContext, params: UnsupervisedParams, objective: Objective, naming: NamingParams
) -> DirectionSet:
    """Train, evaluate (RCA, PPL), extract, name and package the directions of one unsupervised method."""
    method = objective.name
    generator = context.generator
    if generator is None:
        raise MethodInputError(f"{method}: needs the generator (context.generator is None)")
    if "z" not in getattr(generator, "latent_spaces", ("z",)):
        raise MethodInputError(f"{method}: the generator has no 'z' latent space")
    latent_dim = int(generator.z_dim)
    try:
        n_directions = resolve_n_directions(params.n_directions, params.deformator_type, latent_dim)
    except DeformatorConfigError as error:
        raise MethodInputError(f"{method}: {error}") from error
    device = torch.device(context.device)

    result = train_deformator(generator, params, objective, n_directions, device, context.work_dir, context.progress)
    accuracy = reconstructor_accuracy(
        generator,
        result.deformator,
        result.reconstructor,
        params.eval_batches,
        params.batch_size,
        params.epsilon_min,
        params.epsilon_max,
        seed=params.seed + RCA_SEED_OFFSET,
        device=device,
    )
    summary = direction_vectors(result.deformator, params.epsilon_min, params.epsilon_max)
    vectors = summary.vectors.cpu().double().numpy()
    oriented, namings = orient_and_name(vectors, context, naming, space="z")
    lpips = build_lpips(params.ppl_net, device)
    ppl = perceptual_path_length(
        generator,
        oriented,
        lpips,
        n_samples=params.ppl_samples,
        t_max=params.epsilon_max,
        batch_size=params.ppl_batch_size,
        seed=params.seed + PPL_SEED_OFFSET,
        space="z",
        device=device,
    )

    names = component_names(n_directions)
    stats: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        stats[name] = {
            **namings[k],
            "ppl": float(ppl[k]),
            "deformator_index": k,
            "straightness": float(summary.straightness[k]),
            "gain": float(summary.gain[k]),
        }
    logger.info(
        "%s: K = %d, RCA %.3f (chance %.3f), mean PPL %.4g",
        method,
        n_directions,
        accuracy["rca"],
        1.0 / n_directions,
        float(np.mean(ppl)),
    )
    meta = {
        "method": method,
        "objective": asdict(objective),
        "n_directions": n_directions,
        "n_directions_requested": params.n_directions,
        "rca": accuracy["rca"],
        "rca_chance": 1.0 / n_directions,
        "shift_mae": accuracy["shift_mae"],
        "rca_pairs": accuracy["n_pairs"],
        "ppl_mean": float(np.mean(ppl)),
        "ppl_definition": (
            f"E[LPIPS-{params.ppl_net}(G(z + t n), G(z + (t + d) n))] / d^2, d = {PPL_DELTA}, "
            f"t ~ U[-{params.epsilon_max}, {params.epsilon_max}], {params.ppl_samples} samples per "
            f"direction, native resolution, 1-99th percentile kept"
        ),
        "direction_definition": (
            "normalised columns of the deformator"
            if result.deformator.is_linear
            else "normalised mean of A(e_k eps)/eps over 32 eps in +-[eps_min, eps_max]"
        ),
        "final_losses": result.final_losses,
        "training_curve": _thin(result.history, CURVE_POINTS),
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "generator": getattr(generator, "name", None),
        "generator_fingerprint": getattr(generator, "fingerprint", None),
        "params": params.model_dump(mode="json"),
        "naming": naming.model_dump(mode="json"),
        "input_fingerprint": context.input_fingerprint,
    }
    return DirectionSet(
        method=method,
        space="z",
        names=names,
        vectors=oriented.astype(np.float32),
        stats=stats,
        meta=meta,
        extras={"deformator.pt": _deformator_bytes(result, params)},
    )


def _deformator_bytes(result: TrainingResult, params: UnsupervisedParams) -> bytes:
    """The trained deformator as a torch file: ``{"type", "n_directions", "latent_dim", "state_dict"}``."""
    buffer = io.BytesIO()
    deformator = result.deformator
    torch.save(
        {
            "type": params.deformator_type,
            "n_directions": deformator.n_directions,
            "latent_dim": deformator.latent_dim,
            "state_dict": {k: v.detach().cpu() for k, v in deformator.state_dict().items()},
        },
        buffer,
    )
    return buffer.getvalue()


def _thin(history: list[dict[str, float]], points: int) -> list[dict[str, float]]:
    if len(history) <= points:
        return [dict(entry) for entry in history]
    keep = np.unique(np.linspace(0, len(history) - 1, points).round().astype(int))
    return [dict(history[i]) for i in keep]


def fit_voynov(context: FitContext, params: VoynovParams) -> DirectionSet:
    """Voynov & Babenko's deformator/reconstructor training; see the module docstring for the output."""
    objective = Objective(name=METHOD, two_shifts=False, lambda_shift=params.lambda_shift)
    return fit_unsupervised(context, params, objective, params.naming)


@METHODS.register(METHOD)
def voynov_spec() -> MethodSpec:
    return MethodSpec(params_model=VoynovParams, fit=fit_voynov, supervised=False, needs_generator=True)
