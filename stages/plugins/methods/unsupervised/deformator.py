"""Deformator A: maps a direction code e_k·ε (one-hot k of K, times a magnitude ε) to a latent shift.

Three types (Voynov & Babenko 2020; Lu et al. 2020 use the fully connected one):

- ``linear``: Voynov's "linear operator with unit-length columns": A(c) = Ŵ c with Ŵ the column-normalised
  W ∈ R^{D×K} (their code's ``proj`` type, which rescales W·e_k ε to norm |ε|). Without the normalisation the
  optimiser can inflate the columns until every shift is trivially recognisable (as the unconstrained fc does);
  the unit length keeps ε the step length in latent units. W is initialised to the first K coordinate axes plus
  0.1·N(0, 1) noise (their code's default ``random_init``).
- ``orthonormal``: A(c) = Q[:, :K] c with Q = exp(S − Sᵀ) ∈ SO(D) the matrix exponential of a skew-symmetric matrix
  (Voynov's parametrisation, S initialised to N(0, 1) as their default ``random_init``). Columns are exactly
  orthonormal at every step. Voynov's code needs K = D for this type and, for K < D, rotates only the first K
  coordinates of z; taking the first K columns of a D×D rotation lets the K directions lie anywhere in R^D.
- ``fc``: three fully connected layers K → 1024 → 1024 → D with ELU between them (the paper's "3 fully-connected
  layers, 1024 hidden units"). The layers have **no biases**, so A(0) = 0: a zero shift leaves the image unchanged
  and the shift is a function of the direction code alone (with biases A would add a constant offset to every
  shifted latent). Voynov's own FC variant also has batch norm and residual sums; they are left out here because
  batch-norm makes A(e_k ε) depend on the rest of the batch, and a direction must be a property of k. As in both
  papers the shift norm is not constrained: with a large learning rate the deformator learns to inflate it (see the
  ``gain`` returned by :func:`direction_vectors`).

Shapes: ``forward`` (N, K) codes → (N, D) shifts; ``shift(indices (N,), magnitudes (N,))`` builds the codes.

For linear types K ≤ D (a D-dimensional space has at most D independent directions): :func:`build_deformator`
raises :class:`DeformatorConfigError` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from latentatlas.errors import LatentAtlasError

DeformatorType = Literal["linear", "orthonormal", "fc"]
DEFORMATOR_TYPES: tuple[str, ...] = ("linear", "orthonormal", "fc")
LINEAR_TYPES: tuple[str, ...] = ("linear", "orthonormal")
FC_HIDDEN = 1024


class DeformatorConfigError(LatentAtlasError, ValueError):
    """A deformator that cannot be built: unknown type, K < 1, or more directions than a linear map allows."""


class Deformator(nn.Module):
    """Base class: K direction codes → D-dimensional latent shifts."""

    n_directions: int
    latent_dim: int
    is_linear: bool = True

    def shift(self, indices: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
        """A(e_k ε) for (N,) direction indices and (N,) magnitudes → (N, D)."""
        codes = F.one_hot(indices, self.n_directions).to(magnitudes.dtype) * magnitudes[:, None]
        return self(codes)

    def direction_matrix(self) -> torch.Tensor:
        """(D, K) matrix whose column k is the shift of e_k·1 (linear types only; they override this)."""
        raise TypeError(f"{type(self).__name__} is not linear: it has no direction matrix (use shift())")


class LinearDeformator(Deformator):
    """A(c) = Ŵ c, Ŵ = W with unit-length columns; W ∈ R^{D×K} starts at the first K axes + 0.1·N(0, 1)."""

    def __init__(self, n_directions: int, latent_dim: int) -> None:
        super().__init__()
        self.n_directions, self.latent_dim = n_directions, latent_dim
        self.weight = nn.Parameter(torch.eye(latent_dim, n_directions) + 0.1 * torch.randn(latent_dim, n_directions))

    def direction_matrix(self) -> torch.Tensor:
        return F.normalize(self.weight, dim=0)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.direction_matrix().T


class OrthonormalDeformator(Deformator):
    """A(c) = Q[:, :K] c with Q = matrix_exp(S − Sᵀ) orthogonal (D×D); S is the free parameter."""

    def __init__(self, n_directions: int, latent_dim: int) -> None:
        super().__init__()
        self.n_directions, self.latent_dim = n_directions, latent_dim
        self.log_rotation_half = nn.Parameter(torch.randn(latent_dim, latent_dim))

    def direction_matrix(self) -> torch.Tensor:
        skew = self.log_rotation_half - self.log_rotation_half.T
        return torch.linalg.matrix_exp(skew)[:, : self.n_directions]

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.direction_matrix().T


class FullyConnectedDeformator(Deformator):
    """A(c) = L3(ELU(L2(ELU(L1 c)))), bias-free layers K → 1024 → 1024 → D (so A(0) = 0)."""

    is_linear = False

    def __init__(self, n_directions: int, latent_dim: int, hidden: int = FC_HIDDEN) -> None:
        super().__init__()
        self.n_directions, self.latent_dim = n_directions, latent_dim
        self.layers = nn.Sequential(
            nn.Linear(n_directions, hidden, bias=False),
            nn.ELU(),
            nn.Linear(hidden, hidden, bias=False),
            nn.ELU(),
            nn.Linear(hidden, latent_dim, bias=False),
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.layers(codes)


def check_direction_count(deformator_type: str, n_directions: int, latent_dim: int) -> None:
    """Raise :class:`DeformatorConfigError` for an unknown type, K < 1, or K > D with a linear type."""
    if deformator_type not in DEFORMATOR_TYPES:
        raise DeformatorConfigError(
            f"unknown deformator type {deformator_type!r}; expected one of {list(DEFORMATOR_TYPES)}"
        )
    if n_directions < 1:
        raise DeformatorConfigError(f"n_directions must be at least 1, got {n_directions}")
    if deformator_type in LINEAR_TYPES and n_directions > latent_dim:
        raise DeformatorConfigError(
            f"a {deformator_type} deformator can hold at most latent_dim = {latent_dim} directions, but "
            f"n_directions = {n_directions} was asked for: set n_directions <= {latent_dim} (or leave it unset to get "
            f"min(128, {latent_dim})), or use deformator_type 'fc'"
        )


def build_deformator(deformator_type: DeformatorType, n_directions: int, latent_dim: int, seed: int = 0) -> Deformator:
    """A deformator of ``deformator_type`` with K = ``n_directions`` codes and D = ``latent_dim`` outputs.

    Initialised from ``seed`` (the global torch RNG is forked, so the caller's RNG state is untouched). Built on the
    CPU; move it with ``.to(device)``.
    """
    check_direction_count(deformator_type, n_directions, latent_dim)
    classes = {"linear": LinearDeformator, "orthonormal": OrthonormalDeformator, "fc": FullyConnectedDeformator}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return classes[deformator_type](n_directions, latent_dim)


@dataclass
class DirectionSummary:
    """What a trained deformator's K directions are, as straight lines.

    Attributes:
        vectors: (K, D) unit-norm directions.
        straightness: (K,) mean cosine between each A(e_k ε)/ε and the direction (1 for linear types).
        gain: (K,) mean ‖A(e_k ε)‖/|ε|, latent distance moved per unit of ε (1 for linear types).
    """

    vectors: torch.Tensor
    straightness: torch.Tensor
    gain: torch.Tensor


@torch.no_grad()
def direction_vectors(
    deformator: Deformator, epsilon_min: float, epsilon_max: float, n_magnitudes: int = 32
) -> DirectionSummary:
    """The K unit-norm latent directions of ``deformator``, how straight each is, and its gain.

    Linear types: the columns of the (unit-column) direction matrix.
    ``fc``: the normalised mean of A(e_k ε)/ε over ``n_magnitudes`` magnitudes ε evenly spread over
    ±[epsilon_min, epsilon_max] (the training range, both signs) — the best straight-line summary of the curve the
    deformator traces for direction k. Straightness is the mean cosine between each A(e_k ε)/ε and that mean
    (1 = a straight line through 0; the centroid loss pushes it up).
    """
    k = deformator.n_directions
    if deformator.is_linear:
        columns = deformator.direction_matrix().T.float()
        ones = torch.ones(k, device=columns.device)
        return DirectionSummary(F.normalize(columns, dim=1), ones, columns.norm(dim=1))
    half = torch.linspace(epsilon_min, epsilon_max, max(n_magnitudes // 2, 1))
    magnitudes = torch.cat([-half.flip(0), half]).to(next(deformator.parameters()).device)
    indices = torch.arange(k, device=magnitudes.device).repeat_interleave(len(magnitudes))
    per_unit = deformator.shift(indices, magnitudes.repeat(k)) / magnitudes.repeat(k)[:, None]
    per_unit = per_unit.view(k, len(magnitudes), -1).float()
    mean = F.normalize(per_unit.mean(dim=1), dim=1)
    straightness = F.cosine_similarity(per_unit, mean[:, None, :], dim=2).mean(dim=1)
    return DirectionSummary(mean, straightness, per_unit.norm(dim=2).mean(dim=1))
