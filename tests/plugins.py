"""Tiny real plugins for fast tests: a labeler of image colour statistics (no weights, exact values)."""

from __future__ import annotations

import torch

from latentatlas.registry import plugin


class ColorStatsLabeler:
    """Mean of each RGB channel and overall brightness of (N, 3, H, W) images in [-1, 1] → (N, 4)."""

    name = "color-stats"
    attributes = ("red", "green", "blue", "brightness")
    fingerprint = "color-stats/1"

    def to(self, device: torch.device) -> "ColorStatsLabeler":
        return self

    def score(self, images: torch.Tensor) -> torch.Tensor:
        channel_means = images.float().mean(dim=(2, 3))
        return torch.cat([channel_means, channel_means.mean(dim=1, keepdim=True)], dim=1)


@plugin("labeler")
def build_color_labeler() -> ColorStatsLabeler:
    return ColorStatsLabeler()
