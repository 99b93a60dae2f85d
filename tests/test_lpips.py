"""LPIPS loader checks on the LPIPS authors' reference images (read from the shared fixtures, not copied)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stages.latent.perceptual import LpipsError, build_lpips

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "lpips"  # shared/ beside the clone


def _load(name: str) -> torch.Tensor:
    """A fixture PNG as a (1, 3, 64, 64) tensor in [-1, 1]."""
    pixels = np.asarray(Image.open(FIXTURES / f"{name}.png").convert("RGB"), dtype=np.float32)
    return torch.from_numpy(pixels / 127.5 - 1.0).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def images() -> dict[str, torch.Tensor]:
    if not FIXTURES.is_dir():
        pytest.skip(f"{FIXTURES} is not present on this machine")
    return {name: _load(name) for name in ("ex_ref", "ex_p0", "ex_p1")}


def test_alexnet_matches_the_lpips_authors_numbers(images: dict[str, torch.Tensor]) -> None:
    metric = build_lpips("alex")
    with torch.no_grad():
        ref = torch.cat([images["ex_ref"]] * 3)
        distances = metric(ref, torch.cat([images["ex_p0"], images["ex_p1"], images["ex_ref"]]))
    assert distances.shape == (3,)
    # The LPIPS README's figures for v0.1 / alex: 0.722 and 0.138.
    assert distances[0].item() == pytest.approx(0.722, abs=1e-3)
    assert distances[1].item() == pytest.approx(0.138, abs=1e-3)
    assert distances[2].item() == 0.0
    # symmetric, and gradients reach the inputs (it can serve as a loss)
    x = images["ex_p0"].clone().requires_grad_(True)
    forward, backward = metric(images["ex_ref"], x), metric(x, images["ex_ref"])
    assert forward.item() == pytest.approx(backward.item(), rel=1e-6)
    forward.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in metric.parameters())


def test_vgg_loads_and_gives_the_lpips_package_numbers(images: dict[str, torch.Tensor]) -> None:
    metric = build_lpips("vgg")
    with torch.no_grad():
        distances = metric(
            torch.cat([images["ex_ref"]] * 3), torch.cat([images["ex_p0"], images["ex_p1"], images["ex_ref"]])
        )
    # Values of lpips==0.1.4's LPIPS(net="vgg") with the same conv weights copied in (checked when written).
    assert distances[0].item() == pytest.approx(0.5686, abs=1e-3)
    assert distances[1].item() == pytest.approx(0.4217, abs=1e-3)
    assert distances[2].item() == 0.0


def test_bad_inputs_raise() -> None:
    with pytest.raises(LpipsError, match="unknown LPIPS trunk"):
        build_lpips("squeeze")  # type: ignore[arg-type]
    metric = build_lpips("alex")
    with pytest.raises(LpipsError, match="equal shape"):
        metric(torch.zeros(1, 3, 64, 64), torch.zeros(2, 3, 64, 64))
    with pytest.raises(LpipsError, match="at least 32"):
        metric(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
