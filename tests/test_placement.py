"""One worker per CUDA device: which device a chunk worker takes, by rank (no GPU needed: CUDA is faked)."""

from __future__ import annotations

import threading
import types

import distributed
import pytest
import torch

from latentatlas.params import parse_params
from pipeline.placement import _on_cuda_device, cuda_slot, worker_rank


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend this machine has ``count`` CUDA devices and no CUDA_VISIBLE_DEVICES."""

    def install(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    return install


def _in_thread(name: str, function):
    """``function()`` run in a thread called ``name`` (how ThreadPoolTaskRunner's workers are named)."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function()), name=name)
    thread.start()
    thread.join()
    return result["value"]


@pytest.mark.parametrize(
    "devices, thread_name, expected",
    [
        (0, "ThreadPoolExecutor-0_1", None),  # no CUDA: the CPU
        (1, "ThreadPoolExecutor-0_1", None),  # one device: everyone shares cuda:0 (= auto)
        (2, "ThreadPoolExecutor-0_0", None),  # rank 0 → device 0: keep auto (the driver's own stage)
        (2, "ThreadPoolExecutor-0_1", 1),
        (2, "ThreadPoolExecutor-3_2", None),  # rank 2 of 2 devices → device 0
        (4, "ThreadPoolExecutor-0_3", 3),
        (4, "MainThread", None),  # no rank
    ],
)
def test_thread_workers_take_one_device_each(fake_cuda, devices, thread_name, expected) -> None:
    fake_cuda(devices)
    assert _in_thread(thread_name, cuda_slot) == expected


def test_dask_worker_rank_from_its_name(fake_cuda, monkeypatch) -> None:
    fake_cuda(4)
    for name, rank in ((2, 2), ("tcp://10.0.0.5:4242-3", 3), ("gpu-node-1", 1), ("scheduler", None)):
        monkeypatch.setattr(distributed, "get_worker", lambda name=name: types.SimpleNamespace(name=name))
        assert worker_rank() == rank
    monkeypatch.setattr(distributed, "get_worker", lambda: types.SimpleNamespace(name=6))
    assert cuda_slot() == 2  # 6 mod 4


def test_pinned_launchers_keep_their_device(fake_cuda, monkeypatch) -> None:
    """dask-cuda and Ray set CUDA_VISIBLE_DEVICES per worker: each then sees one device, its own cuda:0."""
    fake_cuda(4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert _in_thread("ThreadPoolExecutor-0_3", cuda_slot) is None


def test_only_auto_devices_move_to_the_worker_slot() -> None:
    params = parse_params({"synthesize": {"device": "auto"}, "label": {"device": "cpu"}, "eval": {"device": "cuda:0"}})
    moved = _on_cuda_device(params, 3)
    assert (moved.synthesize.device, moved.label.device, moved.eval.device) == ("cuda:3", "cpu", "cuda:0")
    assert moved.sample == params.sample and moved.fit == params.fit
