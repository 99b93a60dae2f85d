"""The generator protocol and registry, found by name in ``params.yaml: generator.name``.

Implementations (``stages/generators/<network>.py``) import this module and register themselves; it never imports
them (the registry loads a built-in's module when its name is first used).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from latentatlas.params import GeneratorParams
from latentatlas.registry import Registry, RegistryError


@runtime_checkable
class Generator(Protocol):
    """What the pipeline needs of a generator.

    Attributes:
        name: registry name, stored in the stores' metadata.
        z_dim: dimension of the prior latent z ~ N(0, I).
        latent_spaces: spaces it can be driven from, ``("z",)`` or ``("z", "w")`` for a mapping network.
        resolution: side of the square images it produces.
        fingerprint: a string that changes whenever its outputs would (weights hash, architecture, kwargs).
    """

    name: str
    z_dim: int
    latent_spaces: tuple[str, ...]
    resolution: int
    fingerprint: str

    def to(self, device: torch.device) -> "Generator": ...

    def map(self, latents_z: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, z_dim) z → every latent space besides z that the generator has, e.g. ``{"w": (N, w_dim)}``."""
        ...

    def synthesize(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:
        """(N, dim) latents of ``space`` → (N, 3, resolution, resolution) images in [-1, 1]."""
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
GENERATORS: Registry[Generator] = Registry("generator", builtins={"dcgan-digiface": "stages.generators.dcgan"})


def build_generator(name: str, **kwargs) -> Generator:
    """Build the generator registered (or importable) as ``name``, checking it meets the protocol."""
    generator = GENERATORS.build(name, **kwargs)
    missing = [attr for attr in ("z_dim", "latent_spaces", "resolution", "fingerprint", "synthesize", "map", "to")
               if not hasattr(generator, attr)]
    if missing:
        raise RegistryError(f"generator {name!r} does not meet the Generator protocol: missing {missing}")
    return generator


def generator_for(section: GeneratorParams, given: Generator | None = None) -> Generator:
    """``given`` (a generator a caller injected), else the one ``params.yaml: generator`` names."""
    return given if given is not None else build_generator(section.name, **section.kwargs)

