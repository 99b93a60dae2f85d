"""Pretrained generators behind one small protocol, found by name in ``params.yaml: generator.name``."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from stages.registry import Registry


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


GENERATORS: Registry[Generator] = Registry("generator")


def build_generator(name: str, **kwargs) -> Generator:
    """Build the generator registered (or importable) as ``name``, checking it meets the protocol."""
    generator = GENERATORS.build(name, **kwargs)
    missing = [attr for attr in ("z_dim", "latent_spaces", "resolution", "fingerprint", "synthesize", "map", "to")
               if not hasattr(generator, attr)]
    if missing:
        raise TypeError(f"generator {name!r} does not meet the Generator protocol: missing {missing}")
    return generator


from stages.generators import dcgan  # noqa: E402,F401  (registers the built-in generators)
