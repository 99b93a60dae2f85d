"""Direction-finding methods behind one protocol, found by name in ``params.yaml: fit.methods``.

A method module registers a :class:`MethodSpec`: its pydantic params model and its ``fit`` function::

    @METHODS.register("interfacegan")
    def interfacegan_spec() -> MethodSpec:
        return MethodSpec(params_model=InterFaceGANParams, fit=fit_interfacegan, supervised=True)

``fit(context, params) -> DirectionSet`` receives everything through :class:`FitContext`, so it is a plain function
testable with small arrays and tiny generators.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydantic
import torch

from latentatlas.errors import LatentAtlasError
from latentatlas.registry import Registry
from stages.latent.directions import DirectionSet


@dataclass
class FitContext:
    """What a fitting method may use.

    Attributes:
        latents: latent arrays by space, each (N, D) float32 (``{"z": ...}``, plus ``"w"`` when the generator has it).
        labels: (N, A) attribute scores, one column per attribute, rows aligned with ``latents``.
        attributes: the attributes to fit directions for (supervised methods) or to name components by.
        generator: the generator (needed by SeFa, GANSpace and the unsupervised methods), or None.
        score_images: labeler callable, (N, 3, H, W) images in [-1, 1] → DataFrame of attribute scores; used to name
            unsupervised components by the attribute they move most. None when no labeler is at hand.
        device: torch device for training / inference.
        work_dir: a folder the method may use for checkpoints (kept across a killed run, for resume).
        input_fingerprint: fingerprint of the labeled store the latents and labels came from.
        progress: callback ``progress(step, total, metrics_dict)`` for long runs (Prefect artifact + terminal).
    """

    latents: dict[str, np.ndarray]
    labels: pd.DataFrame
    attributes: list[str]
    generator: Any = None
    score_images: Callable[[torch.Tensor], pd.DataFrame] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    work_dir: Path | None = None
    input_fingerprint: str = ""
    progress: Callable[[int, int, dict[str, float]], None] = lambda step, total, metrics: None


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Attributes:
        params_model: pydantic model of its ``params.yaml: fit.params.<method>`` section.
        fit: ``fit(context, params) -> DirectionSet``.
        supervised: whether it needs labels to find directions (unsupervised ones only use them for naming).
        separable: each attribute is fitted independently of the others, so the fit stage may run one task per
            attribute (``fit`` called with ``context.attributes`` = one name) and join the results with ``combine``.
        combine: joins per-attribute results of a separable method (default: concatenation,
            :func:`stages.latent.directions.concatenate_direction_sets`).
        needs_generator: ``fit`` uses ``context.generator`` (closed-form and unsupervised methods) and
            ``context.score_images`` to name what it finds.
    """

    params_model: type[pydantic.BaseModel]
    fit: Callable[[FitContext, Any], DirectionSet]
    supervised: bool = True
    separable: bool = False
    combine: Callable[[list[DirectionSet]], DirectionSet] | None = None
    needs_generator: bool = False


class MethodInputError(LatentAtlasError, ValueError):
    """The data handed to a method cannot be fitted (unknown attribute, constant column, too few samples, ...)."""


#: Built-in methods by name; each module registers its own (imported when the name is first used).
METHODS: Registry[MethodSpec] = Registry(
    "method",
    builtins={
        "interfacegan": "stages.plugins.methods.interfacegan",
        "ortho-linear": "stages.plugins.methods.ortho_linear",
        "tunagan": "stages.plugins.methods.tunagan",
        "tunagan-linear": "stages.plugins.methods.tunagan",
        "sefa": "stages.plugins.methods.sefa",
        "ganspace": "stages.plugins.methods.ganspace",
        "voynov": "stages.plugins.methods.voynov",
        "centroid": "stages.plugins.methods.centroid",
    },
)


def method_params_model(name: str) -> type[pydantic.BaseModel]:
    """The params model of method ``name``: what ``latentatlas.params.parse_params(method_models=...)`` needs.

    Raises:
        RegistryError: no such method.
    """
    return METHODS.build(name).params_model


def check_attributes(context: FitContext, method: str) -> None:
    """Raise :class:`MethodInputError` for an attribute the labels lack or a constant label column."""
    missing = [name for name in context.attributes if name not in context.labels.columns]
    if missing:
        raise MethodInputError(
            f"{method}: attribute(s) {missing} are not in the labels; they have "
            f"{[c for c in context.labels.columns if c != 'sample_id']}"
        )
    for name in context.attributes:
        column = context.labels[name].to_numpy()
        if np.nanstd(column) == 0:
            raise MethodInputError(f"{method}: label column {name!r} is constant ({column[0]!r}): nothing to separate")


def supervised_inputs(context: FitContext, method: str, space: str) -> np.ndarray:
    """The checks every supervised method makes before fitting, and the (N, D) latents of ``space`` it fits on.

    Raises:
        MethodInputError: an attribute missing from the labels or constant, no attributes, no latents for ``space``,
            or label rows that do not match the latent rows.
    """
    check_attributes(context, method)
    if not context.attributes:
        raise MethodInputError(f"{method}: no attributes to fit (context.attributes is empty)")
    if space not in context.latents:
        raise MethodInputError(
            f"{method}: no latents for space {space!r}; have {sorted(context.latents)} "
            f"(the generator may have no mapping network)"
        )
    latents = np.asarray(context.latents[space])
    if len(context.labels) != latents.shape[0]:
        raise MethodInputError(f"{method}: {len(context.labels)} label rows for {latents.shape[0]} latents")
    return latents


def unit(vector: np.ndarray) -> np.ndarray:
    """``vector`` scaled to unit norm along its last axis (float32)."""
    vector = np.asarray(vector, dtype=np.float64)
    return (vector / np.linalg.norm(vector, axis=-1, keepdims=True)).astype(np.float32)
