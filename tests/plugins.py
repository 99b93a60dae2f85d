"""Tiny real plugins for fast tests: a labeler of image colour statistics (no weights, exact values)."""

from __future__ import annotations

import torch

from latentatlas.registry import plugin


class ColorStatsLabeler:
    """Mean of each RGB channel and overall brightness of (N, 3, H, W) images in [-1, 1] → (N, 4)."""

    name = "color-stats"
    attributes = ("red", "green", "blue", "brightness")
    fingerprint = "color-stats/1"

    def to(self, device: torch.device) -> ColorStatsLabeler:
        return self

    def score(self, images: torch.Tensor) -> torch.Tensor:
        channel_means = images.float().mean(dim=(2, 3))
        return torch.cat([channel_means, channel_means.mean(dim=1, keepdim=True)], dim=1)


@plugin("labeler")
def build_color_labeler() -> ColorStatsLabeler:
    return ColorStatsLabeler()


class FaultyLabeler(ColorStatsLabeler):
    """The colour labeler, broken on purpose: ``nan`` scores (a user error the scoring check reports) or a ``bug``
    (a RuntimeError from inside the network, which must keep its traceback)."""

    def __init__(self, fault: str) -> None:
        self.fault = fault

    def score(self, images: torch.Tensor) -> torch.Tensor:
        if self.fault == "bug":
            raise RuntimeError("faulty labeler: a bug inside score()")
        return torch.full((images.shape[0], len(self.attributes)), float("nan"))


@plugin("labeler")
def build_faulty_labeler(fault: str) -> FaultyLabeler:
    return FaultyLabeler(fault)
