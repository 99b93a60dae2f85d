"""The shape every chunked stage shares: lock the output store, find the pending chunks, run them, finish.

A stage is used as a context manager (the store lock is held inside it)::

    with SampleStage(params, data_dir) as stage:
        for index in stage.pending:
            stage.run_chunk(index)        # any order, any worker; independent chunks
        stage.finish()

Prefect flows (``pipeline/flows.py``) do exactly this with one task per chunk; tests call it directly.

**Worker processes.** A stage object holds the store lock, open stores and models: it never travels. The process
that prepared the store (the *driver*) describes it with a small picklable :class:`StageSpec` (stage class, params
as JSON, data dir, options, and the fingerprint of the store it prepared); a worker process turns the spec back
into a stage with :func:`attached_stage` — the stage built in *attach* mode (``attach=`` the driver's
fingerprint): same models, same fingerprint computation, but it opens the existing output store without locking,
preparing or wiping it, and refuses a store whose fingerprint is not the driver's, or inputs that give another one.
Built stages are kept in a small per-process cache keyed by the spec, so a worker builds its generator/labeler
once, not once per chunk. The driver registers its own stage in that cache (:func:`serving`), so chunk tasks that
run in the driver's threads use it directly at no extra cost.
"""

from __future__ import annotations

import abc
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pipeline.locations import StorePath, location_string, store_path
from pipeline.stores import ChunkedStore, StoreError, StoreInfo, store_lock

if TYPE_CHECKING:
    from pipeline.params import Params


class StageAttachError(StoreError):
    """A worker cannot attach to the store the driver prepared (missing, replaced, or computed differently)."""


class ChunkedStage(abc.ABC):
    """Base of the chunked stages: owns the output store and, unless attached, its lock.

    Args:
        params, data_dir: what every stage is built from (kept for :class:`StageSpec`).
        attach: worker mode, given the fingerprint of the output store the driver prepared: open that store, never
            lock, prepare or wipe it.
        injected: the caller passed model objects (generator, labeler, ...) instead of letting the stage build them
            from ``params``; such a stage cannot be rebuilt from a spec in another process.
        options: the stage's other constructor arguments, as strings (e.g. the evaluated method).
    """

    name: str

    def __init__(self, params: "Params", data_dir: str | StorePath, *, attach: str | None = None,
                 injected: bool = False, options: Mapping[str, str] | None = None) -> None:
        self.params = params
        self.data_dir = store_path(data_dir)
        self.driver_fingerprint = attach
        self.attached = attach is not None
        self.injected = injected
        self.options = dict(options or {})
        self._exit_stack = contextlib.ExitStack()
        self.store: ChunkedStore

    def _lock(self, path: Path) -> None:
        self._exit_stack.enter_context(store_lock(path))

    def _open_output(self, store_cls: type[ChunkedStore], path: Path, info: StoreInfo,
                     **layout: Any) -> ChunkedStore:
        """Driver: lock the output store and prepare it (resume, or wipe and create on a fingerprint change).
        Attached worker: open it as it is, and check it is the driver's store and the one this worker's inputs
        describe.

        Raises:
            StageAttachError: (attached) the store is missing, is not the one the driver prepared (replaced since),
                or this worker's inputs give another fingerprint (other model weights, package versions or device
                type than the driver's).
        """
        if self.driver_fingerprint is None:
            self._lock(path)
            return store_cls.prepare(path, info, **layout)
        host = socket.gethostname()
        try:
            store = store_cls.open(path, expected_kind=info.kind)
        except StoreError as error:
            raise StageAttachError(f"worker on {host}: {error} — the data dir must be on a filesystem every worker "
                                   f"sees, at the same path") from None
        if store.info.fingerprint != self.driver_fingerprint:
            raise StageAttachError(_replaced(host, path, f"fingerprint {store.info.fingerprint}",
                                             self.driver_fingerprint))
        if info.fingerprint != self.driver_fingerprint:
            raise StageAttachError(f"worker on {host}: {path} is the driver's ({self.driver_fingerprint}), but this "
                                   f"worker computes {info.fingerprint} from its inputs: its models, package versions "
                                   f"or device type differ from the driver's")
        return store

    def __enter__(self) -> "ChunkedStage":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._exit_stack.close()

    @property
    def n_chunks(self) -> int:
        return self.store.info.n_chunks

    @property
    def pending(self) -> list[int]:
        """Chunks not yet written (empty for a complete store)."""
        if self.store.info.complete:
            return []
        return self.store.pending_chunks()

    def chunk_length(self, index: int) -> int:
        rows = self.store.info.chunk_slice(index)
        return rows.stop - rows.start

    @abc.abstractmethod
    def run_chunk(self, index: int) -> None:
        """Compute and write chunk ``index`` (idempotent: rewriting a chunk gives the same bytes)."""

    def finish(self) -> None:
        """Mark the store complete once every chunk is written."""
        if self.attached:
            raise StageAttachError(f"{self.store.path}: an attached (worker) stage writes chunks only; the driver "
                                   f"finishes the store")
        if not self.store.info.complete:
            self.store.mark_complete()


def run_stage(stage: ChunkedStage) -> None:
    """Run a stage's pending chunks in order, in this process (no Prefect): for tests and scripting."""
    with stage:
        for index in stage.pending:
            stage.run_chunk(index)
        stage.finish()


# -- worker processes ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageSpec:
    """Everything a worker needs to attach to a stage the driver prepared: small, picklable, hashable.

    Attributes:
        stage_class: ``module:QualifiedName`` of the stage class.
        params_json: the params, as canonical JSON (the spec's identity).
        data_dir: absolute path of the data dir (workers may run elsewhere: it must be the same path there).
        fingerprint: the fingerprint of the output store the driver prepared.
        options: the stage's other constructor arguments (absolute paths, names), sorted.
        params: the driver's validated params object (a few KB pickled; not part of the identity). A worker uses it
            as is: validating ``params_json`` again would import every fit method (seconds per worker process).
    """

    stage_class: str
    params_json: str
    data_dir: str
    fingerprint: str
    options: tuple[tuple[str, str], ...] = ()
    params: "Params | None" = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, stage: ChunkedStage) -> "StageSpec":
        """The spec of a driver's stage.

        Raises:
            ValueError: the stage holds injected models (it cannot be rebuilt from params elsewhere).
        """
        if stage.injected:
            raise ValueError(f"{stage.name}: a stage built with injected models (generator=, labeler=, ...) "
                             f"cannot run on worker processes; let it build them from params")
        params_json = json.dumps(stage.params.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return cls(stage_class=f"{type(stage).__module__}:{type(stage).__qualname__}", params_json=params_json,
                   data_dir=location_string(stage.data_dir), fingerprint=stage.store.info.fingerprint,
                   options=tuple(sorted(stage.options.items())), params=stage.params)

    def build(self, cuda_index: int | None = None) -> ChunkedStage:
        """Build the stage in attach mode (``cuda_index``: put its models on that CUDA device where the params say
        ``auto``); its constructor checks the output store is the driver's.

        Raises:
            StageAttachError: the data dir is not visible here, the store is not the one the driver prepared, or
                this process's inputs give another fingerprint than the driver's.
        """
        from pipeline.params import parse_params

        data_dir = store_path(self.data_dir)
        if not data_dir.is_dir():
            raise StageAttachError(f"worker on {socket.gethostname()}: data dir {self.data_dir} does not exist "
                                   f"here; the data dir must be on a filesystem every worker sees, at the same path")
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
            raise StageAttachError(_replaced(socket.gethostname(), store.path, found, self.fingerprint))


def _replaced(host: str, path: Path, found: str, fingerprint: str) -> str:
    return (f"worker on {host}: {path} holds {found}, but the driver prepared {fingerprint}: the store was replaced "
            f"while this run was going (another run, or a params change?); rerun the stage")


def _on_cuda_device(params: "Params", index: int) -> "Params":
    """``params`` with every ``device: auto`` of the stage sections replaced by ``cuda:<index>``."""
    updates = {name: section.model_copy(update={"device": f"cuda:{index}"})
               for name in ("synthesize", "label", "eval")
               if (section := getattr(params, name)).device == "auto"}
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
    import torch

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
class ChunkReport:
    """What a chunk task reports back: where it ran and where its time went."""

    index: int
    host: str
    pid: int
    thread: int  # native id of the thread that ran it (threads runner: several per process)
    build_s: float  # building the stage in this process (first chunk of a worker only)
    compute_s: float  # stage.run_chunk: compute and write
    started: float  # time.time() at the task body's start and end
    ended: float


def run_chunk_from_spec(spec: StageSpec, index: int, torch_threads: int | None = None) -> ChunkReport:
    """Write chunk ``index`` of the stage ``spec`` describes, in this process (a worker or the driver's thread).

    Args:
        torch_threads: intra-op threads for torch in this process (None: leave as is).

    Raises:
        StageAttachError: the store is not (or no longer) the one the driver prepared.
    """
    started = time.time()
    if torch_threads is not None:
        import torch

        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
    stage, build_s = attached_stage(spec)
    spec.check(stage.store)
    start = time.perf_counter()
    stage.run_chunk(index)
    compute_s = time.perf_counter() - start
    return ChunkReport(index=index, host=socket.gethostname(), pid=os.getpid(), thread=threading.get_native_id(),
                       build_s=build_s, compute_s=compute_s, started=started, ended=time.time())
