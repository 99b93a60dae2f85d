"""The generator protocol and registry, found by name in ``params.yaml: generator.name``.

Implementations (``stages/plugins/generators/<network>.py``) import this module and register themselves; it never
imports them (the registry loads a built-in's module when its name is first used).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from latentatlas.params import GeneratorParams
from latentatlas.registry import Registry, RegistryError
from stages.runtime.weight_files import WeightFileError

#: A generator weights file (or its config) that is missing, unreadable, not the format its name expects, or refused
#: as unsafe: the weight-file error of :mod:`stages.runtime.weight_files`, under the name generator code uses.
GeneratorFileError = WeightFileError


@runtime_checkable
class Generator(Protocol):
    """What the pipeline needs of a generator.

    Attributes:
        name: registry name, stored in the stores' metadata.
        z_dim: dimension of the prior latent z ~ N(0, I).
        latent_spaces: spaces it can be driven from: ``("z",)``; ``("z", "w", "w+")`` for a style-based generator
            (a mapping network z → w, and one w per synthesis layer in W+).
        resolution: side of the square images it produces.
        fingerprint: a string that changes whenever its outputs would (weights hash, architecture, kwargs).

    Latent shapes: ``z`` (N, z_dim); ``w`` (N, w_dim), the same w fed to every synthesis layer; ``w+``
    (N, num_ws, w_dim), one w per layer. A generator with W also has ``w_dim`` and ``num_ws`` attributes.
    ``map`` applies the generator's truncation (ψ, from its kwargs, towards the file's w_avg), so ``synthesize(z,
    "z")`` equals ``synthesize(map(z)["w"], "w")``. A generator with W turns a w into its W+ code with
    ``w_plus(w) -> (N, num_ws, w_dim)``, the code ``synthesize(·, "w+")`` turns into the same image as
    ``synthesize(w, "w")`` (w repeated per layer for NVlabs' networks; InterFaceGAN's StyleGAN truncates only some
    layers). A class-conditional generator is built for one class (its
    kwargs) and behaves as an unconditional one.
    """

    name: str
    z_dim: int
    latent_spaces: tuple[str, ...]
    resolution: int
    fingerprint: str

    def to(self, device: torch.device) -> Generator: ...

    def map(self, latents_z: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, z_dim) z → the stored latent spaces besides z: ``{}`` without a mapping network, else
        ``{"w": (N, w_dim)}`` (truncated as the generator's kwargs say; W+ is w repeated, never stored)."""
        ...

    def synthesize(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:
        """Latents of ``space`` (shapes above) → (N, 3, resolution, resolution) float images, nominally in [-1, 1]
        (not clamped)."""
        ...


@runtime_checkable
class FactorizableGenerator(Protocol):
    """A generator whose latent enters through a linear projection, for the closed-form methods (SeFa, GANSpace)."""

    def projection_matrix(self) -> torch.Tensor:
        """(F, z_dim) matrix A of the first layer: its output is ``A @ z`` (before any bias or normalisation)."""
        ...

    def early_features(self, latents: torch.Tensor, layer: int = 1) -> torch.Tensor:
        """(N, z_dim) z → (N, F_layer) flattened activations after block ``layer`` (1 = the first block)."""
        ...


#: Built-in generators by name; each module registers its own (imported when the name is first used).
GENERATORS: Registry[Generator] = Registry(
    "generator",
    builtins={
        "dcgan-digiface": "stages.plugins.generators.dcgan",
        "stylegan2": "stages.plugins.generators.nvlabs_stylegan2",
        "stylegan3": "stages.plugins.generators.nvlabs_stylegan3",
        "pggan": "stages.plugins.generators.pggan",
        "stylegan": "stages.plugins.generators.stylegan1",
        "biggan": "stages.plugins.generators.biggan",
    },
)


def build_generator(name: str, /, **kwargs: Any) -> Generator:
    """Build the generator registered (or importable) as ``name``, checking it meets the protocol."""
    generator = GENERATORS.build(name, **kwargs)
    missing = [
        attr
        for attr in ("z_dim", "latent_spaces", "resolution", "fingerprint", "synthesize", "map", "to")
        if not hasattr(generator, attr)
    ]
    if "w" in getattr(generator, "latent_spaces", ()):
        missing += [attr for attr in ("w_dim", "num_ws", "w_plus") if not hasattr(generator, attr)]
    if missing:
        raise RegistryError(f"generator {name!r} does not meet the Generator protocol: missing {missing}")
    return generator


def generator_for(section: GeneratorParams, given: Generator | None = None) -> Generator:
    """``given`` (a generator a caller injected), else the one ``params.yaml: generator`` names."""
    return given if given is not None else build_generator(section.name, **section.kwargs)
