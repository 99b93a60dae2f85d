"""Stage 2, synthesize: latents → images, batched, no autograd, AMP on CUDA, stored as uint8.

Store ``images.zarr``: array ``images`` (N, R, R, 3) uint8 RGB at ``store_resolution`` R, one Zarr chunk per
pipeline chunk. With ``keep_images: false`` the store holds no array, only its fingerprint; the label stage then
synthesizes each chunk again and scores the generator's float output directly (for runs where N images would not
fit on disk).

Resizing and the uint8 conversion run on the generator's device, batch by batch, before anything crosses to the
host. A driver writes chunks on a background thread (:class:`ChunkWriter`, at most one chunk waiting): the device
computes chunk i + 1 while chunk i is compressed, checksummed and fsynced, so storage does not stall the generator
unless it is slower than it. The bytes written are the same as writing in line.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from latentatlas.layout import IMAGES_STORE, LATENTS_STORE
from latentatlas.params import Params
from latentatlas.stores import ArraySpec, StoreInfo, ZarrChunkStore
from stages.plugins.generators import Generator, generator_for
from stages.plugins.generators.synthesis import ImageSynthesizer
from stages.runtime.chunked import ChunkedStage, MemoryNeed


class ChunkWriter:
    """Runs chunk writes on one background thread, in submission order, with at most ``depth`` waiting.

    :meth:`submit` blocks while ``depth`` writes wait (memory stays bounded: the chunk being written, ``depth``
    waiting, and the one the caller computes next). A write that fails is reported by the next :meth:`submit`,
    :meth:`drain` or :meth:`close` (the exception itself, traceback kept); its chunk stays unrecorded, so a rerun
    recomputes it, and the writes after it are skipped.
    """

    def __init__(self, depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"depth must be ≥ 1, got {depth}")
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._reported = False
        self._start_lock = threading.Lock()

    def submit(self, write: Callable[[], None]) -> None:
        """Queue ``write`` (blocks while the queue is full).

        Raises:
            BaseException: an earlier write's error.
        """
        self._raise_error()
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="latentatlas-chunk-writer", daemon=True)
                self._thread.start()
        self._queue.put(write)

    def _run(self) -> None:
        while True:
            write = self._queue.get()
            try:
                if write is None:
                    return
                if self._error is None:
                    write()
            except BaseException as error:  # noqa: BLE001 (handed to the submitting thread, re-raised there)
                self._error = error
            finally:
                self._queue.task_done()

    def _raise_error(self) -> None:
        if self._error is not None and not self._reported:
            self._reported = True
            raise self._error

    def drain(self) -> None:
        """Wait until every queued write is done.

        Raises:
            BaseException: a write's error (once).
        """
        if self._thread is not None:
            self._queue.join()
        self._raise_error()

    def close(self, raise_error: bool = True) -> None:
        """Finish the queued writes and stop the thread.

        Raises:
            BaseException: (``raise_error``) a write's error not reported yet.
        """
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()
        if raise_error:
            self._raise_error()


class SynthesizeStage(ChunkedStage):
    name = "synthesize"

    def __init__(
        self,
        params: Params,
        data_dir: Path,
        generator: Generator | None = None,
        *,
        attach: str | None = None,
        write_behind: bool = True,
    ) -> None:
        """``attach``: worker mode (the driver's store fingerprint), see :class:`stages.runtime.chunked.ChunkedStage`.
        ``write_behind``: a driver writes chunks on a background thread while computing the next (an attached
        worker always writes in line: its driver marks the store complete once every task has returned)."""
        super().__init__(params, data_dir, attach=attach, injected=generator is not None)
        self.latents: ZarrChunkStore = self._open_input(ZarrChunkStore, self.data_dir / LATENTS_STORE, "latents")
        self.synthesizer = ImageSynthesizer(generator_for(params.generator, generator), params.synthesize)
        self.keep_images = params.synthesize.keep_images
        resolution = self.synthesizer.resolution
        arrays = {"images": ArraySpec((resolution, resolution, 3), "uint8", ("sample", "y", "x", "rgb"))}
        inputs = {
            "stage": "synthesize",
            "latents": self.latents.info.fingerprint,
            "keep_images": self.keep_images,
            **self.synthesizer.fingerprint_inputs(),
        }
        latents_info = self.latents.info
        info = StoreInfo(
            "images",
            inputs,
            latents_info.n_samples,
            latents_info.chunk_size,
            details={"images_kept": self.keep_images, "resolution": resolution, "generator": params.generator.name},
        )
        path = self.data_dir / IMAGES_STORE
        needs: list[MemoryNeed] = []
        if self.keep_images:  # else no chunk is computed here (the label stage synthesizes them)
            rows = min(latents_info.chunk_size, latents_info.n_samples)
            z_shape = tuple(self.latents.arrays["z"].shape[1:])
            needs = [
                MemoryNeed(f"{LATENTS_STORE} chunk", latents_info.chunk_size, z_shape, "float32"),
                MemoryNeed("the chunk's pixels", rows, arrays["images"].tail_shape, "uint8"),
                MemoryNeed(f"{IMAGES_STORE} chunk", latents_info.chunk_size, arrays["images"].tail_shape, "uint8"),
                *self.synthesizer.memory_needs(rows),
            ]
        self.store: ZarrChunkStore = self._open_output(
            ZarrChunkStore,
            path,
            info,
            arrays=arrays if self.keep_images else {},
            memory=(needs, "sample.chunk_size, synthesize.batch_size or synthesize.store_resolution"),
        )
        self.writer = ChunkWriter(depth=1) if write_behind and not self.attached else None

    def run_chunk(self, index: int) -> None:
        """Compute chunk ``index`` and write it (a driver: queue the write and return; :meth:`finish` waits)."""
        pixels = self.synthesizer.uint8(self.latents.read_chunk("z", index))
        upstream = self.upstream_of(index)

        def write() -> None:
            self.store.write_chunk(index, {"images": pixels}, upstream=upstream)

        if self.writer is None:
            write()
        else:
            self.writer.submit(write)

    def finish(self) -> None:
        if self.writer is not None:
            self.writer.drain()
        super().finish()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """Close; while another error propagates, a write error behind it is not raised over it (its chunk stays
        unrecorded either way)."""
        if self.writer is not None and exc_type is not None:
            self.writer.close(raise_error=False)
        self.close()

    def close(self) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
        finally:
            super().close()
