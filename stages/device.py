"""Device selection and mixed precision, shared by every stage that runs a network."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from latentatlas.errors import LatentAtlasError


class DeviceError(LatentAtlasError, ValueError):
    """A device was asked for that this machine does not have."""


def resolve_device(spec: str) -> torch.device:
    """``auto`` → the first CUDA device when there is one, else the CPU; ``cpu`` / ``cuda`` / ``cuda:k`` as given.

    Raises:
        DeviceError: CUDA was asked for and is not available, or the index does not exist.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r}: CUDA is not available on this machine (use 'auto' or 'cpu')")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device


@contextlib.contextmanager
def inference_context(device: torch.device, amp: bool) -> Iterator[None]:
    """No autograd; fp16 autocast on CUDA when ``amp`` (on the CPU, AMP is off: it would only be slower)."""
    with torch.inference_mode():
        if amp and device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                yield
        else:
            yield
