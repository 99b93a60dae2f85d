"""The shape every chunked stage shares: lock the output store, find the pending chunks, run them, finish.

A stage is used as a context manager (the store lock is held inside it)::

    with SampleStage(params, data_dir) as stage:
        for index in stage.pending:
            stage.run_chunk(index)        # any order, any worker; independent chunks
        stage.finish()

Prefect flows (``pipeline/flows.py``) do exactly this with one task per chunk; tests call it directly.
"""

from __future__ import annotations

import abc
import contextlib
from pathlib import Path
from types import TracebackType

from pipeline.stores import ChunkedStore, store_lock


class ChunkedStage(abc.ABC):
    """Base of the chunked stages: owns the output store and its lock."""

    name: str

    def __init__(self) -> None:
        self._exit_stack = contextlib.ExitStack()
        self.store: ChunkedStore

    def _lock(self, path: Path) -> None:
        self._exit_stack.enter_context(store_lock(path))

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
        if not self.store.info.complete:
            self.store.mark_complete()


def run_stage(stage: ChunkedStage) -> None:
    """Run a stage's pending chunks in order, in this process (no Prefect): for tests and scripting."""
    with stage:
        for index in stage.pending:
            stage.run_chunk(index)
        stage.finish()
