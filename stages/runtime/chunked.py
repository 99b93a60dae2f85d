"""The shape every chunked stage shares: lock the output store, find the pending chunks, run them, finish.

A chunked stage is a :class:`stages.runtime.stage.Stage` whose units are the chunks of its output store, and it is
used as every stage is (the store lock is held inside the ``with``)::

    with SampleStage(params, data_dir) as stage:
        for index in stage.pending:
            stage.run_chunk(index)        # any order, any worker; independent chunks (``run_unit`` too)
        stage.finish()

Prefect flows (``pipeline/flows.py``) do exactly this with one task per chunk; tests call it directly.

**Attach mode.** A stage object holds the store lock, open stores and models: it never travels. A worker process
builds its own copy of the driver's stage in *attach* mode (``attach=`` the fingerprint of the store the driver
prepared): same models, same fingerprint computation, but it opens the existing output store without locking,
preparing or wiping it, and refuses a store whose fingerprint is not the driver's, or inputs that give another one.

**Inputs and lineage.** A driver holds its input stores read-locked (:func:`latentatlas.stores.store_read_lock`)
from the moment it opens them until it closes, so no upstream run rewrites them meanwhile (an attached worker takes
no lock: its driver holds them). Every chunk it writes records the input chunks it was computed from
(:meth:`ChunkedStage.upstream_of`); :attr:`ChunkedStage.pending` lists the chunks that are not done, that no longer
match their records (missing, damaged, wrong size) or that were computed from other input chunks than the current
ones, so a rerun recomputes exactly those.
How stages travel to workers and are placed on devices is orchestration: see ``pipeline/placement.py``.

**Sizes against memory.** Before a driver prepares its output store (which may wipe an old one), it checks that the
buffers one chunk needs at once (:class:`MemoryNeed`: the Zarr chunk, the chunk's images, a model's batch) fit in
**half of the memory available now** on each device they live on (host RAM, or the GPU's free memory); the other
half is left for what is not counted (models' activations, codec copies, other processes). A chunk that does not
fit is refused in one line naming each buffer, the sum, the allowance and the params to lower
(:class:`MemoryBudgetError`), and nothing is wiped.
"""

from __future__ import annotations

import abc
import contextlib
import math
import os
import socket
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import numpy as np

from latentatlas.chunk_records import GAP_KINDS
from latentatlas.locations import StorePath, store_path
from latentatlas.params import Params, ParamsError
from latentatlas.stores import ChunkedStore, StoreError, StoreInfo, store_lock, store_read_lock
from stages.runtime.stage import UnitProgress, run_stage

__all__ = ["ChunkedStage", "StageAttachError", "replaced_message", "run_stage"]


class StageAttachError(StoreError):
    """A worker cannot attach to the store the driver prepared (missing, replaced, or computed differently)."""


class MemoryBudgetError(ParamsError):
    """The buffers one chunk needs do not fit in the memory a chunk may use (see the module docstring)."""


#: The share of the memory available now that one chunk's counted buffers may use.
MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class MemoryNeed:
    """One buffer a stage holds while it computes a chunk: ``count`` items of ``item_shape`` ``dtype``, on
    ``device``, e.g. the Zarr chunk of latents: (chunk_size, z_dim) float32 on the host."""

    what: str
    count: int
    item_shape: tuple[int, ...]
    dtype: str
    device: str = "cpu"

    @property
    def n_bytes(self) -> int:
        return self.count * math.prod(self.item_shape) * np.dtype(self.dtype).itemsize

    def __str__(self) -> str:
        shape = "×".join(str(side) for side in self.item_shape)
        return f"{self.what}: {self.count} × {shape} {self.dtype} = {format_bytes(self.n_bytes)}"


def format_bytes(n_bytes: float) -> str:
    """``1.5 GiB``, ``75.0 MiB``, ``12.0 KiB``, ``512 B``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{int(n_bytes)} B"


def host_memory_available() -> int:
    """Bytes of RAM this process can still get now: the kernel's MemAvailable, capped by the cgroup's limit (a
    container's ``memory.max`` less its usage) where there is one."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:  # not Linux: free pages
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            available = min(available, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return available


def device_memory_available(device: str) -> int:
    """Bytes free now on ``device`` (``cpu``: the host's, see :func:`host_memory_available`; ``cuda:<k>``: the
    GPU's free memory)."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return host_memory_available()


def check_memory(stage: str, needs: Sequence[MemoryNeed], keys: str) -> None:
    """Check that the buffers one chunk of ``stage`` needs fit, device by device, in :data:`MEMORY_SHARE` of the
    memory available there now.

    Args:
        keys: the params that size these buffers, as the error names them (``sample.chunk_size``).

    Raises:
        MemoryBudgetError: one line: each buffer, the sum, the allowance and ``keys``.
    """
    by_device: dict[str, list[MemoryNeed]] = {}
    for need in needs:
        device = "cpu" if need.device in ("cpu", "mps") else need.device
        by_device.setdefault(device, []).append(need)
    for device, device_needs in by_device.items():
        total = sum(need.n_bytes for need in device_needs)
        available = device_memory_available(device)
        allowed = int(available * MEMORY_SHARE)
        if total > allowed:
            where = "host memory" if device == "cpu" else f"{device} memory"
            raise MemoryBudgetError(
                f"{stage}: one chunk needs {format_bytes(total)} of {where} ({'; '.join(map(str, device_needs))}), "
                f"more than the {format_bytes(allowed)} a chunk may use (half of the {format_bytes(available)} "
                f"available now); lower {keys}"
            )


class ChunkedStage(abc.ABC):
    """Base of the chunked stages: owns the output store and, unless attached, its lock.

    Args:
        params, data_dir: what every stage is built from (kept for :class:`StageSpec`).
        attach: worker mode, given the fingerprint of the output store the driver prepared: open that store, never
            lock, prepare or wipe it.
        injected: the caller passed model objects (generator, labeler, ...) instead of letting the stage build them
            from ``params``; such a stage cannot be rebuilt from a spec in another process.
        options: the stage's other constructor arguments (hashable, picklable: the evaluated method, the output
            layout), so a worker can build the same stage.
    """

    name: str
    #: Chunks may be written by worker processes that rebuild the stage from a spec (unless models were injected).
    units_travel: ClassVar[bool] = True
    unit_noun: ClassVar[str] = "chunk"
    size_noun: ClassVar[str] = "samples"

    def __init__(
        self,
        params: Params,
        data_dir: str | StorePath,
        *,
        attach: str | None = None,
        injected: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.params = params
        self.data_dir = store_path(data_dir)
        self.driver_fingerprint = attach
        self.attached = attach is not None
        self.injected = injected
        self.options = dict(options or {})
        self._exit_stack = contextlib.ExitStack()
        self.store: ChunkedStore
        #: Input stores each chunk is computed from (chunk i from their chunk i), by store name.
        self.lineage_inputs: dict[str, ChunkedStore] = {}

    def _lock(self, path: Path) -> None:
        self._exit_stack.enter_context(store_lock(path))

    def _read_lock(self, path: StorePath) -> None:
        """Driver: hold ``path`` read-locked until the stage closes (an upstream store this stage's output depends
        on without reading it chunk by chunk, e.g. the latents of the images it labels)."""
        if not self.attached:
            self._exit_stack.enter_context(store_read_lock(path))

    def _open_input(
        self, store_cls: type[ChunkedStore], path: StorePath, kind: str, lineage: bool = True
    ) -> ChunkedStore:
        """Read-lock (driver only) and open the complete input store at ``path``; with ``lineage``, chunk i of the
        output is computed from its chunk i and records so.

        Raises:
            StoreLockedError: a run is writing it now.
            StoreError: it is missing, foreign, of another kind or incomplete.
        """
        if not self.attached:
            self._exit_stack.enter_context(store_read_lock(path))
        store = store_cls.open(path, expected_kind=kind, require_complete=True)
        if lineage:
            self.lineage_inputs[store.path.name] = store
        return store

    def upstream_of(self, index: int) -> dict[str, Any]:
        """What chunk ``index`` is computed from: :meth:`ChunkedStore.lineage` of each lineage input, by name."""
        return {name: store.lineage(index) for name, store in self.lineage_inputs.items()}

    def _open_output(
        self,
        store_cls: type[ChunkedStore],
        path: Path,
        info: StoreInfo,
        memory: tuple[Sequence[MemoryNeed], str] | None = None,
        **layout: Any,
    ) -> ChunkedStore:
        """Driver: check ``memory`` (the buffers one chunk needs, and the params that size them: see
        :func:`check_memory`), then lock the output store and prepare it (resume, or wipe and create on a
        fingerprint change). Attached worker: open it as it is, and check it is the driver's store and the one this
        worker's inputs describe (its driver checked the sizes).

        Raises:
            MemoryBudgetError: (driver) one chunk would not fit in memory; nothing is locked or wiped.
            StageAttachError: (attached) the store is missing, is not the one the driver prepared (replaced since),
                or this worker's inputs give another fingerprint (other model weights, package versions or device
                type than the driver's).
        """
        if self.driver_fingerprint is None:
            if memory is not None:  # before the lock and the prepare: a run that cannot start wipes nothing
                needs, keys = memory
                check_memory(self.name, needs, keys)
            self._lock(path)
            return store_cls.prepare(path, info, **layout)
        host = socket.gethostname()
        try:
            store = store_cls.open(path, expected_kind=info.kind)
        except StoreError as error:
            raise StageAttachError(
                f"worker on {host}: {error} — the data dir must be on a filesystem every worker sees, at the same path"
            ) from None
        if store.info.fingerprint != self.driver_fingerprint:
            raise StageAttachError(
                replaced_message(host, path, f"fingerprint {store.info.fingerprint}", self.driver_fingerprint)
            )
        if info.fingerprint != self.driver_fingerprint:
            raise StageAttachError(
                f"worker on {host}: {path} is the driver's ({self.driver_fingerprint}), but this "
                f"worker computes {info.fingerprint} from its inputs: its models, package versions "
                f"or device type differ from the driver's"
            )
        return store

    def __enter__(self) -> ChunkedStage:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._exit_stack.close()

    @property
    def n_chunks(self) -> int:
        return self.store.info.n_chunks

    @property
    def pending(self) -> list[int]:
        """Chunks to compute: not yet written, or no longer matching their records (missing, damaged, wrong size,
        unrecorded) or computed from other input chunks than the current ones. Reads records and file sizes, not
        chunk data: a start costs the same at 5 GB as at 5 MB (a file changed after its record is checksummed;
        full checksums are ``latentatlas verify``'s, and every reader checks the chunks it reads). A driver that
        finds bad chunks in a complete store says which, and marks the store incomplete until they are
        recomputed (readers refuse it meanwhile)."""
        problems = self.store.check_chunks_at_start(upstream=self.lineage_inputs)
        complete = self.store.info.complete
        damage = [problem for problem in problems if complete or problem.kind not in GAP_KINDS]
        if damage and not self.attached:
            shown = "; ".join(str(problem) for problem in damage[:5])
            more = f" (and {len(damage) - 5} more)" if len(damage) > 5 else ""
            warnings.warn(
                f"{self.store.path}: recomputing {len({p.index for p in damage})} bad chunks: {shown}{more}",
                stacklevel=2,
            )
            if complete:
                self.store.mark_incomplete()
        return sorted({problem.index for problem in problems})

    def chunk_length(self, index: int) -> int:
        rows = self.store.info.chunk_slice(index)
        return rows.stop - rows.start

    @abc.abstractmethod
    def run_chunk(self, index: int) -> None:
        """Compute and write chunk ``index`` (idempotent: rewriting a chunk gives the same bytes)."""

    # -- the Stage protocol (stages/runtime/stage.py): a unit is a chunk

    @property
    def n_units(self) -> int:
        return self.n_chunks

    @property
    def output(self) -> Any:
        return self.store.path

    def unit_name(self, unit: int) -> str:
        return f"chunk {unit:05d}"

    def unit_size(self, unit: int) -> int:
        return self.chunk_length(unit)

    def run_unit(self, unit: int, progress: UnitProgress | None = None) -> None:
        """:meth:`run_chunk` (a chunk is short: it reports no progress)."""
        self.run_chunk(unit)

    def finish(self) -> None:
        """Mark the store complete once every chunk is written."""
        if self.attached:
            raise StageAttachError(
                f"{self.store.path}: an attached (worker) stage writes chunks only; the driver finishes the store"
            )
        if not self.store.info.complete:
            self.store.mark_complete()


def replaced_message(host: str, path: Path, found: str, fingerprint: str) -> str:
    """The message of a worker that finds at ``path`` another store than the one the driver prepared."""
    return (
        f"worker on {host}: {path} holds {found}, but the driver prepared {fingerprint}: the store was replaced "
        f"while this run was going (another run, or a params change?); rerun the stage"
    )
