"""Reconstructor R: sees an image pair (x, x') and predicts which direction k moved x to x' and by how much (ε).

Input: the pair concatenated along channels, (N, 6, H, W) in [-1, 1]. Output: (N, K) direction logits and (N,) ε.

- ``lenet`` (default, for 64×64 images; Voynov & Babenko's ``LeNetShiftPredictor`` with width 2):
  conv5×5 6→6, BN, ReLU, maxpool2 → conv5×5 6→16, BN, ReLU, maxpool2 → conv5×5 16→120, BN, ReLU → spatial mean
  → (N, 120), then two heads Linear 120→84, BN, ReLU, Linear 84→K (logits) / 84→1 (ε).
  For 64×64: 60×60 → 30×30 → 26×26 → 13×13 → 9×9 → mean.
- ``resnet18`` (for larger images): torchvision ``resnet18(weights=None)`` — random init, no download — with a
  6-channel first conv, its 512-d pooled features feeding Linear 512→K and Linear 512→1.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torchvision.models import resnet18

from latentatlas.errors import LatentAtlasError

ReconstructorType = Literal["lenet", "resnet18"]


class ReconstructorConfigError(LatentAtlasError, ValueError):
    """An unknown reconstructor type."""


class LeNetReconstructor(nn.Module):
    """LeNet-sized reconstructor for small (≈64×64) image pairs."""

    def __init__(self, n_directions: int, width: int = 2, image_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(2 * image_channels, 3 * width, kernel_size=5),
            nn.BatchNorm2d(3 * width),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(3 * width, 8 * width, kernel_size=5),
            nn.BatchNorm2d(8 * width),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(8 * width, 60 * width, kernel_size=5),
            nn.BatchNorm2d(60 * width),
            nn.ReLU(),
        )
        self.direction_head = nn.Sequential(
            nn.Linear(60 * width, 42 * width),
            nn.BatchNorm1d(42 * width),
            nn.ReLU(),
            nn.Linear(42 * width, n_directions),
        )
        self.magnitude_head = nn.Sequential(
            nn.Linear(60 * width, 42 * width), nn.BatchNorm1d(42 * width), nn.ReLU(), nn.Linear(42 * width, 1)
        )

    def forward(self, images: torch.Tensor, shifted_images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) and (N, 3, H, W) → logits (N, K), ε̂ (N,)."""
        features = self.features(torch.cat([images, shifted_images], dim=1)).mean(dim=(2, 3))
        return self.direction_head(features), self.magnitude_head(features).squeeze(1)


class ResNet18Reconstructor(nn.Module):
    """ResNet-18 (random init) reconstructor for larger image pairs."""

    def __init__(self, n_directions: int, image_channels: int = 3) -> None:
        super().__init__()
        backbone = resnet18(weights=None)
        backbone.conv1 = nn.Conv2d(2 * image_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.direction_head = nn.Linear(512, n_directions)
        self.magnitude_head = nn.Linear(512, 1)

    def forward(self, images: torch.Tensor, shifted_images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) and (N, 3, H, W) → logits (N, K), ε̂ (N,)."""
        features = self.backbone(torch.cat([images, shifted_images], dim=1))
        return self.direction_head(features), self.magnitude_head(features).squeeze(1)


def build_reconstructor(reconstructor_type: ReconstructorType, n_directions: int, seed: int = 0) -> nn.Module:
    """The reconstructor ``reconstructor_type`` for K = ``n_directions``, initialised from ``seed`` (global RNG forked,
    the caller's state untouched), on the CPU."""
    classes = {"lenet": LeNetReconstructor, "resnet18": ResNet18Reconstructor}
    if reconstructor_type not in classes:
        raise ReconstructorConfigError(
            f"unknown reconstructor {reconstructor_type!r}; expected one of {sorted(classes)}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return classes[reconstructor_type](n_directions)
