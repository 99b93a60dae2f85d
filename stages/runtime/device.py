"""Device selection, mixed precision and the CPU thread count, shared by every stage that runs a network."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from latentatlas.errors import LatentAtlasError

#: Torch intra-op threads for every network forward (and the chunk work around it), whoever runs it: the local
#: loop, Prefect's threads, a Dask or Ray worker, any ``runtime.max_workers``. Part of every store's fingerprint.
#: Torch splits some CPU reductions differently for other thread counts (the ``faces`` labelers' scores move by up
#: to 2e-5), so a count that followed the machine's cores or the worker count would give other bytes under the
#: same fingerprint. One thread per chunk in flight: CPU parallelism comes from ``runtime.max_workers``.
CPU_THREADS = 1


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
def pinned_threads(threads: int = CPU_THREADS) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads in the calling thread, as it was afterwards.

    Torch keeps the count per OS thread (OpenMP's and MKL's per-thread settings; new threads start from the last
    count set anywhere), so concurrent chunk tasks on threads pin their own count without disturbing each other.
    """
    previous = torch.get_num_threads()
    # Set unconditionally: in a freshly started thread get_num_threads() can report a count that is not in force
    # there, so "already equal" is no proof (measured: 60 small backward passes 0.44 s unpinned vs 0.018 s pinned).
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def inference_context(device: torch.device, amp: bool) -> Iterator[None]:
    """No autograd, :data:`CPU_THREADS` intra-op threads; fp16 autocast on CUDA when ``amp`` (on the CPU, AMP is
    off: it would only be slower)."""
    with pinned_threads(), torch.inference_mode():
        if amp and device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                yield
        else:
            yield
