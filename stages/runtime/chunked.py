"""The shape every chunked stage shares: lock the output store, find the pending chunks, run them, finish.

A stage is used as a context manager (the store lock is held inside it)::

    with SampleStage(params, data_dir) as stage:
        for index in stage.pending:
            stage.run_chunk(index)        # any order, any worker; independent chunks
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
"""

from __future__ import annotations

import abc
import contextlib
import socket
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from latentatlas.locations import StorePath, store_path
from latentatlas.params import Params
from latentatlas.chunk_records import GAP_KINDS
from latentatlas.stores import ChunkedStore, StoreError, StoreInfo, store_lock, store_read_lock


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
        options: the stage's other constructor arguments (hashable, picklable: the evaluated method, the output
            layout), so a worker can build the same stage.
    """

    name: str

    def __init__(self, params: Params, data_dir: str | StorePath, *, attach: str | None = None,
                 injected: bool = False, options: Mapping[str, Any] | None = None) -> None:
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

    def _open_input(self, store_cls: type[ChunkedStore], path: StorePath, kind: str,
                    lineage: bool = True) -> ChunkedStore:
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
            raise StageAttachError(replaced_message(host, path, f"fingerprint {store.info.fingerprint}",
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
            warnings.warn(f"{self.store.path}: recomputing {len({p.index for p in damage})} bad chunks: "
                          f"{shown}{more}", stacklevel=2)
            if complete:
                self.store.mark_incomplete()
        return sorted({problem.index for problem in problems})

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


def replaced_message(host: str, path: Path, found: str, fingerprint: str) -> str:
    """The message of a worker that finds at ``path`` another store than the one the driver prepared."""
    return (f"worker on {host}: {path} holds {found}, but the driver prepared {fingerprint}: the store was replaced "
            f"while this run was going (another run, or a params change?); rerun the stage")
