"""Zero-cost plugins for measuring the pipeline's own ceiling: a generator and a labeler that cost (almost) nothing,
so that what a run's throughput is limited by is everything else — sampling, resizing and the uint8 conversion,
compression, checksums, fsync, reading the stores back.

``params.yaml``::

    generator: {name: "bench.zero_cost:build_zero_cost_generator", kwargs: {resolution: 1024}}
    label: {labeler: "bench.zero_cost:build_zero_cost_labeler"}

The generator holds one batch of distinct images made once at build time (seeded: smooth random fields plus pixel
grain, so they compress about as photographs do, not as flat colour or pure noise) and returns a view of its first N
rows for any N latents: no arithmetic, no copy. The labeler returns the per-image mean of the pixels it is given
(one reduction over data the pipeline has already brought in).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latentatlas.registry import plugin


class ZeroCostGenerator:
    """(N, z_dim) z → (N, 3, R, R) float32 images in [-1, 1], a view of a fixed bank (N ≤ ``bank_size``).

    Attributes:
        bank: (bank_size, 3, R, R) float32 images, distinct per row.
    """

    name = "zero-cost"
    latent_spaces = ("z",)

    def __init__(self, resolution: int = 1024, z_dim: int = 512, bank_size: int = 64, seed: int = 0) -> None:
        if resolution < 4 or bank_size < 1:
            raise ValueError(f"resolution must be ≥ 4 and bank_size ≥ 1, got {resolution}, {bank_size}")
        self.resolution, self.z_dim, self.bank_size = resolution, z_dim, bank_size
        self.fingerprint = f"zero-cost:r{resolution}:z{z_dim}:bank{bank_size}:seed{seed}"
        generator = torch.Generator().manual_seed(seed)
        coarse = torch.rand(bank_size, 3, 8, 8, generator=generator) * 2 - 1
        smooth = F.interpolate(coarse, size=(resolution, resolution), mode="bicubic", align_corners=False)
        grain = torch.randn(bank_size, 3, resolution, resolution, generator=generator) * 0.1
        self.bank = (smooth * 0.8 + grain).clamp(-1, 1).contiguous()

    @property
    def device(self) -> torch.device:
        return self.bank.device

    def to(self, device: torch.device) -> ZeroCostGenerator:
        self.bank = self.bank.to(device)
        return self

    def map(self, latents_z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def synthesize(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:
        """(N, z_dim) → (N, 3, R, R): the bank's first N images (a view; N ≤ bank_size)."""
        if space != "z":
            raise ValueError(f"generator {self.name!r} has only the latent space 'z', not {space!r}")
        if latents.dim() != 2 or latents.shape[1] != self.z_dim:
            raise ValueError(
                f"generator {self.name!r} expects latents of shape (N, {self.z_dim}), got {tuple(latents.shape)}"
            )
        if latents.shape[0] > self.bank_size:
            raise ValueError(
                f"generator {self.name!r} holds {self.bank_size} images; use synthesize.batch_size ≤ "
                f"{self.bank_size} (or a larger bank_size)"
            )
        return self.bank[: latents.shape[0]]


class ZeroCostLabeler:
    """(N, 3, H, W) images → (N, 1) their mean value: the cheapest score that still reads every pixel."""

    name = "zero-cost"
    attributes = ("mean",)
    fingerprint = "zero-cost-labeler/1"

    def to(self, device: torch.device) -> ZeroCostLabeler:
        return self

    def score(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mean(dim=(1, 2, 3)).unsqueeze(1)


@plugin("generator")
def build_zero_cost_generator(
    resolution: int = 1024, z_dim: int = 512, bank_size: int = 64, seed: int = 0
) -> ZeroCostGenerator:
    """A :class:`ZeroCostGenerator` (see the module docstring)."""
    return ZeroCostGenerator(resolution, z_dim, bank_size, seed)


@plugin("labeler")
def build_zero_cost_labeler() -> ZeroCostLabeler:
    """A :class:`ZeroCostLabeler`."""
    return ZeroCostLabeler()
