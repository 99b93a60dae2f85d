"""Lu, Lee, Tseng & Yang (2020), "Unsupervised Discovery of Disentangled Manifolds in GANs": Voynov's deformator /
reconstructor training with two consecutive shifts and a centroid loss.

Per step (:mod:`stages.plugins.methods.unsupervised.training`, ``two_shifts=True``): images G(z), G(z + A₁), G(z + A₁ +
A₂) with A_i = A(e_{k_i} ε_i); the reconstructor classifies and regresses both consecutive pairs, and the centroid loss
(:func:`stages.plugins.methods.unsupervised.training.centroid_loss`) pulls each of the 2N shift codes towards the sum of
the batch's (sign-aligned) codes of its direction: L = L_cl + λ·L_r + γ·L_c with the paper's λ = 0.5, γ = 0.25, a
3-layer fully connected deformator with 1024 hidden units, K = 128, ε ~ U[−6, 6], Adam lr 1e-4 constant, 2·10⁵ steps.

Output, naming and stats are those of :mod:`stages.plugins.methods.voynov` (method ``"centroid"``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stages.latent.directions import DirectionSet
from stages.plugins.methods.base import METHODS, FitContext, MethodSpec
from stages.plugins.methods.naming import NamingParams
from stages.plugins.methods.unsupervised.training import Objective, UnsupervisedParams
from stages.plugins.methods.voynov import fit_unsupervised

METHOD = "centroid"


class CentroidParams(UnsupervisedParams):
    """Parameters of :func:`fit_centroid` (defaults from Lu et al. 2020).

    As :class:`~stages.plugins.methods.voynov.VoynovParams`, with the paper's ``deformator_type`` "fc", ``lambda_shift``
    0.5 and ``steps`` 200 000, plus ``gamma_centroid``.
    """

    deformator_type: Literal["linear", "orthonormal", "fc"] = Field(
        "fc",
        description="the paper's 3 fully connected layers (1024 hidden units); linear / orthonormal also work "
        "(their centroid loss is identically 0)",
    )
    lambda_shift: float = Field(0.5, ge=0, description="λ, weight of the ε regression loss (paper: 0.5)")
    gamma_centroid: float = Field(0.25, ge=0, description="γ, weight of the centroid loss L_c (paper: 0.25)")
    steps: int = Field(200_000, ge=1, description="training steps (paper: 2·10⁵)")
    naming: NamingParams = Field(
        default_factory=NamingParams, description="how components are named by the attribute they move most"
    )


def fit_centroid(context: FitContext, params: CentroidParams) -> DirectionSet:
    """Lu et al.'s two-shift + centroid-loss training; see :mod:`stages.plugins.methods.voynov` for the output."""
    objective = Objective(
        name=METHOD, two_shifts=True, lambda_shift=params.lambda_shift, gamma_centroid=params.gamma_centroid
    )
    return fit_unsupervised(context, params, objective, params.naming)


@METHODS.register(METHOD)
def centroid_spec() -> MethodSpec:
    return MethodSpec(params_model=CentroidParams, fit=fit_centroid, supervised=False, needs_generator=True)
