"""Where unit tasks run: the small picklable description of a stage a worker attaches to, the per-process cache of
attached stages, and one worker per GPU.

Only stages whose units travel (``units_travel``: the chunked stages) are described by a spec; the others (fit)
run their units in the threads of the process that holds them, and their tasks receive the stage itself.

A stage object holds the store lock, open stores and models: it never travels. The process that prepared the store
(the *driver*) describes it with a small picklable :class:`StageSpec` (stage class, params, data dir, options, and
the fingerprint of the store it prepared); a worker process turns the spec back into a stage with
:func:`attached_stage` — the stage built in *attach* mode (see :class:`stages.runtime.chunked.ChunkedStage`). Built
stages are kept in a small per-process cache keyed by the spec, so a worker builds its generator/labeler once, not once
per chunk. The driver registers its own stage in that cache (:func:`serving`), so chunk tasks that run in the driver's
threads use it directly at no extra cost.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import importlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from latentatlas.locations import location_string, store_path
from latentatlas.params import Params, parse_params
from latentatlas.stores import ChunkedStore, StoreError
from stages.runtime.chunked import ChunkedStage, StageAttachError, replaced_message
from stages.runtime.stage import Stage, UnitProgress


@dataclass(frozen=True)
class StageSpec:
    """Everything a worker needs to attach to a stage the driver prepared: small, picklable, hashable.

    Attributes:
        stage_class: ``module:QualifiedName`` of the stage class.
        params_json: the params, as canonical JSON (the spec's identity).
        data_dir: absolute path of the data dir (workers may run elsewhere: it must be the same path there).
        fingerprint: the fingerprint of the output store the driver prepared.
        options: the stage's other constructor arguments (names, an output layout with an absolute root), sorted.
        params: the driver's validated params object (a few KB pickled; not part of the identity). A worker uses it
            as is: validating ``params_json`` again would import every fit method (seconds per worker process).
    """

    stage_class: str
    params_json: str
    data_dir: str
    fingerprint: str
    options: tuple[tuple[str, Any], ...] = ()
    params: Params | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, stage: ChunkedStage) -> StageSpec:
        """The spec of a driver's stage.

        Raises:
            ValueError: the stage holds injected models (it cannot be rebuilt from params elsewhere).
        """
        if stage.injected:
            raise ValueError(
                f"{stage.name}: a stage built with injected models (generator=, labeler=, ...) "
                f"cannot run on worker processes; let it build them from params"
            )
        params_json = json.dumps(stage.params.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return cls(
            stage_class=f"{type(stage).__module__}:{type(stage).__qualname__}",
            params_json=params_json,
            data_dir=location_string(stage.data_dir),
            fingerprint=stage.store.info.fingerprint,
            options=tuple(sorted(stage.options.items())),
            params=stage.params,
        )

    def build(self, cuda_index: int | None = None) -> ChunkedStage:
        """Build the stage in attach mode (``cuda_index``: put its models on that CUDA device where the params say
        ``auto``); its constructor checks the output store is the driver's.

        Raises:
            StageAttachError: the data dir is not visible here, the store is not the one the driver prepared, or
                this process's inputs give another fingerprint than the driver's.
        """
        data_dir = store_path(self.data_dir)
        if not data_dir.is_dir():
            raise StageAttachError(
                f"worker on {socket.gethostname()}: data dir {self.data_dir} does not exist "
                f"here; the data dir must be on a filesystem every worker sees, at the same path"
            )
        module_name, _, class_name = self.stage_class.partition(":")
        stage_cls = getattr(importlib.import_module(module_name), class_name)
        params = self.params if self.params is not None else parse_params(json.loads(self.params_json))
        if cuda_index is not None:
            params = _on_cuda_device(params, cuda_index)
        return stage_cls(params, data_dir, attach=self.fingerprint, **dict(self.options))

    def check(self, store: ChunkedStore) -> None:
        """Re-read the store's metadata from disk and check it is still the one the driver prepared.

        Raises:
            StageAttachError: it was wiped, replaced or removed since (another run, a params change).
        """
        try:
            found = f"fingerprint {type(store).open(store.path).info.fingerprint}"
        except StoreError as error:
            found = f"no readable store ({error})"
        if found != f"fingerprint {self.fingerprint}":
            raise StageAttachError(replaced_message(socket.gethostname(), store.path, found, self.fingerprint))


def _on_cuda_device(params: Params, index: int) -> Params:
    """``params`` with every ``device: auto`` of the stage sections replaced by ``cuda:<index>``."""
    updates = {
        name: section.model_copy(update={"device": f"cuda:{index}"})
        for name in ("synthesize", "label", "eval")
        if (section := getattr(params, name)).device == "auto"
    }
    return params.model_copy(update=updates)


def worker_rank() -> int | None:
    """This worker's rank: a Dask worker's name (``0``, ``1``… in a LocalCluster; a trailing ``-<k>`` otherwise),
    or a ThreadPoolExecutor thread's index; None when it has none (e.g. a Ray worker, the main thread)."""
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        name = threading.current_thread().name
        match = re.fullmatch(r"ThreadPoolExecutor-\d+_(\d+)", name)
        return int(match.group(1)) if match else None
    if isinstance(name, int):
        return name
    match = re.search(r"(?:^|-)(\d+)$", str(name))
    return int(match.group(1)) if match else None


def cuda_slot() -> int | None:
    """The CUDA device this worker should use where the params say ``auto``: one worker per device, by rank.

    None (keep ``auto``, i.e. ``cuda:0`` of what this process sees) when there are fewer than two devices, when
    ``CUDA_VISIBLE_DEVICES`` is set in this process (the launcher — dask-cuda, Ray, you — already pinned the
    devices), when the worker has no rank, or when its rank maps to device 0.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None or not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    rank = worker_rank()
    if count < 2 or rank is None:
        return None
    return rank % count or None


# The per-process cache of built stages: (spec, CUDA slot) → stage, least recently used first. It holds at most
# _CACHE_SIZE stages (evicted ones are closed); the driver's own stages are registered by `serving` and never
# evicted. A process-wide lock serialises builds (two threads never build the same stage twice).
_CACHE_SIZE = 2
_ATTACHED: collections.OrderedDict[tuple[StageSpec, int | None], ChunkedStage] = collections.OrderedDict()
_SERVED: dict[StageSpec, ChunkedStage] = {}
_CACHE_LOCK = threading.Lock()


@contextlib.contextmanager
def serving(stage: ChunkedStage) -> Iterator[StageSpec]:
    """Register the driver's ``stage`` in this process's cache for the ``with`` block; yield its spec.

    Chunk tasks that run in this process (threads) then use ``stage`` itself; worker processes build their own.
    """
    spec = StageSpec.of(stage)
    with _CACHE_LOCK:
        if spec in _SERVED:
            raise StageAttachError(f"{stage.store.path}: this process already serves this stage")
        _SERVED[spec] = stage
    try:
        yield spec
    finally:
        with _CACHE_LOCK:
            _SERVED.pop(spec, None)


def attached_stage(spec: StageSpec) -> tuple[ChunkedStage, float]:
    """The stage for ``spec`` in this process (the driver's own, a cached one, or freshly built in attach mode)
    and the seconds spent building it now (0 when it was already there)."""
    slot = cuda_slot()
    with _CACHE_LOCK:
        if slot is None and spec in _SERVED:
            return _SERVED[spec], 0.0
        key = (spec, slot)
        if key in _ATTACHED:
            _ATTACHED.move_to_end(key)
            return _ATTACHED[key], 0.0
        start = time.perf_counter()
        stage = spec.build(slot)
        _ATTACHED[key] = stage
        if not _SERVED:
            # A worker process (a driver serves its own stages): its modules and models live until it exits, so
            # move them out of the collector's sight. Otherwise the interpreter's final collection over torch's
            # object graph takes seconds, and Dask SIGKILLs a worker still collecting after 4 s.
            gc.freeze()
        while len(_ATTACHED) > _CACHE_SIZE:
            _, evicted = _ATTACHED.popitem(last=False)
            evicted.close()
        return stage, time.perf_counter() - start


@dataclass(frozen=True)
class UnitReport:
    """What a unit task reports back: where it ran, what it wrote and where its time went."""

    index: int  # the unit (a chunk's index)
    name: str  # the unit's name (``chunk 00003``, ``interfacegan happy``)
    host: str
    pid: int
    thread: int  # native id of the thread that ran it (threads runner: several per process)
    build_s: float  # building the stage in this process (first unit of a worker only)
    compute_s: float  # stage.run_unit: compute and write
    started: float  # time.time() at the task body's start and end
    ended: float
    size: int  # what the unit holds (a chunk's samples, a fit unit's attributes)
    size_noun: str  # what ``size`` counts (``samples``, ``attributes``)
    device: str  # where the stage computes (``cpu``, ``cuda:1``)
    gpu_peak_bytes: int | None  # peak CUDA memory allocated on that device during the unit (None off CUDA)


def stage_device(stage: Stage) -> torch.device:
    """The device ``stage`` computes on (its labeler's, or its generator's; the CPU for a stage without one)."""
    synthesizer = getattr(stage, "synthesizer", None)
    device = getattr(stage, "device", None) or (synthesizer.device if synthesizer is not None else None)
    return torch.device(device or "cpu")


def run_unit_on(target: StageSpec | Stage, unit: int, progress: UnitProgress | None = None) -> UnitReport:
    """Run ``unit`` of ``target`` in this process: a stage this process holds (one whose units do not travel), or
    the stage a spec describes (a worker's, or the driver's own when this is one of its threads).

    Torch runs :data:`stages.runtime.device.CPU_THREADS` intra-op threads for it, whatever the runner: the bytes of a
    unit never depend on where it ran.

    Raises:
        StageAttachError: (a spec) the store is not (or no longer) the one the driver prepared.
    """
    from stages.runtime.device import pinned_threads

    started = time.time()
    with pinned_threads():
        if isinstance(target, StageSpec):
            stage, build_s = attached_stage(target)
            target.check(stage.store)
        else:
            stage, build_s = target, 0.0
        device = stage_device(stage)
        on_cuda = device.type == "cuda"
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        stage.run_unit(unit, progress)
        compute_s = time.perf_counter() - start
    return UnitReport(
        index=unit,
        name=stage.unit_name(unit),
        host=socket.gethostname(),
        pid=os.getpid(),
        thread=threading.get_native_id(),
        build_s=build_s,
        compute_s=compute_s,
        started=started,
        ended=time.time(),
        size=stage.unit_size(unit),
        size_noun=stage.size_noun,
        device=str(device),
        gpu_peak_bytes=torch.cuda.max_memory_allocated(device) if on_cuda else None,
    )
