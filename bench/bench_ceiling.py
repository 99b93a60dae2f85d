"""The pipeline's own ceiling: how many 1024² images/s everything but the generator absorbs, per CPU core.

The generator is the zero-cost plugin (bench/zero_cost.py: a view of a fixed bank of 1024² images, no arithmetic),
the labeler its zero-cost twin (one mean per image), so every second measured is the pipeline's: sampling and
storing latents, resizing 1024² → 256² (antialiased) and converting to uint8 (on the generator's device: here the
CPU), compressing, checksumming (CRC32C) and fsyncing chunks with their records, and the label stage's input path
(reading a chunk back: checksum, decode; then uint8 → float). One torch thread; each figure is one part alone, so its
images/s is per core. Stages run in this process (``run_stage``, no Prefect: the engine's fixed start-up cost is
measured in bench_spine.py).

Working assumption for the target (not measured here: no GPU was lent): one H200-class GPU generates 500 images/s
of StyleGAN2 1024² in fp16. On a GPU host the resize and the uint8 conversion run on the GPU, so the host's cores
carry sampling, the store writes and the label stage's reads (uint8 chunks go to the GPU, floats are made there);
a 16-core host keeps up with 5 such GPUs (2,500 images/s) when that per-image host work runs at ≥ 2,500 / 16 ≈ 156
images/s per core.

Usage::

    python -m bench.bench_ceiling [--n 512] [--chunk 256] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import append_section, machine_summary

ZERO_COST = "bench.zero_cost:build_zero_cost_generator"
TARGET_GPU_RATE = 500  # images/s, StyleGAN2 1024² fp16 on one H200-class GPU (working assumption)
GPUS, HOST_CORES = 5, 16


def _params(n: int, chunk: int, store_resolution: int | None, batch: int):
    from latentatlas.params import parse_params

    return parse_params(
        {
            "generator": {"name": ZERO_COST, "kwargs": {"resolution": 1024, "bank_size": batch}},
            "sample": {"n_samples": n, "chunk_size": chunk},
            "synthesize": {"batch_size": batch, "device": "cpu", "store_resolution": store_resolution},
            "label": {
                "labeler": "bench.zero_cost:build_zero_cost_labeler",
                "batch_size": batch,
                "device": "cpu",
                "contact_sheet_samples": 0,
            },
        }
    )


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(n: int, chunk: int, batch: int, n_full: int) -> list[tuple[str, float]]:
    """(what, images/s) for each part of the pipeline alone, one core each (``n_full`` images for the 1024² store
    parts, ``n`` for the others)."""
    from latentatlas.stores import ArraySpec, StoreInfo, ZarrChunkStore
    from stages.label import LabelStage
    from stages.plugins.generators import generator_for
    from stages.plugins.generators.synthesis import ImageSynthesizer
    from stages.runtime.chunked import run_stage
    from stages.runtime.device import pinned_threads
    from stages.sample import SampleStage
    from stages.synthesize import SynthesizeStage

    rates: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="ceiling-", dir=os.environ.get("BENCH_TMP")) as folder, pinned_threads():
        root = Path(folder)
        params = _params(n, chunk, 256, batch)
        seconds = _timed(lambda: run_stage(SampleStage(params, root)))
        rates.append(("sampling: z (512-d) drawn and stored with chunk records", n / seconds))

        synthesizer = ImageSynthesizer(generator_for(params.generator), params.synthesize)
        full = ImageSynthesizer(synthesizer.generator, params.synthesize.model_copy(update={"store_resolution": None}))
        latents_z = np.zeros((chunk, 512), np.float32)
        synthesizer.uint8(latents_z[:batch])  # warm-up
        seconds = _timed(lambda: synthesizer.uint8(latents_z))
        rates.append(("resize 1024² → 256² (antialiased) + uint8, on the device (here: the CPU)", chunk / seconds))
        seconds = _timed(lambda: full.uint8(latents_z[: batch * 2]))
        rates.append(("uint8 conversion at 1024², on the device (here: the CPU)", batch * 2 / seconds))

        for side, count in ((256, n), (1024, n_full)):
            pixels = (synthesizer if side == 256 else full).uint8(latents_z[: min(chunk, count)])
            per_chunk = pixels.shape[0]
            path = root / f"write-{side}.zarr"
            store = ZarrChunkStore.prepare(
                path,
                StoreInfo("images", {"bench": side}, count, per_chunk),
                arrays={"images": ArraySpec((side, side, 3), "uint8", ("sample", "y", "x", "rgb"))},
            )
            chunks = range(count // per_chunk)
            seconds = _timed(
                lambda store=store, pixels=pixels, chunks=chunks: [
                    store.write_chunk(index, {"images": pixels}) for index in chunks
                ]
            )
            size = sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
            rates.append(
                (
                    f"store write {side}² uint8: compress, CRC32C, fsync, record ({size / count / 1024:.0f} KiB "
                    f"per image on disk, {pixels.nbytes / per_chunk / 1024:.0f} KiB raw)",
                    count / seconds,
                )
            )
            reader = ZarrChunkStore.open(path, "images")
            seconds = _timed(
                lambda reader=reader, chunks=chunks: [reader.read_chunk("images", index) for index in chunks]
            )
            rates.append((f"store read {side}²: read chunk, CRC32C check, decode to uint8", count / seconds))

        for write_behind in (False, True):
            stage = SynthesizeStage(params, root, write_behind=write_behind)
            seconds = _timed(lambda stage=stage: run_stage(stage))
            how = "writes behind on a second thread" if write_behind else "writes in line"
            rates.append((f"synthesize stage, zero-cost G 1024² → stored 256², {how}", n / seconds))
            if not write_behind:
                shutil.rmtree(root / "images.zarr")
        seconds = _timed(lambda: run_stage(LabelStage(params, root)))
        rates.append(
            (
                "label stage at 256² on the CPU: read + check + decode, uint8 → float, zero-cost labeler, "
                "labels stored",
                n / seconds,
            )
        )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2048, help="images per measurement (256² parts)")
    parser.add_argument("--n-full", type=int, default=256, help="images per 1024² store write and read")
    parser.add_argument("--chunk", type=int, default=256, help="chunk size")
    parser.add_argument("--batch", type=int, default=32, help="generator batch (the bank's size)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    rates = measure(args.n, args.chunk, args.batch, args.n_full)
    rows = ["| part (one core) | images/s |", "|---|---:|"] + [f"| {what} | {rate:,.0f} |" for what, rate in rates]
    by_name = dict(rates)
    sample = by_name["sampling: z (512-d) drawn and stored with chunk records"]
    write = next(rate for what, rate in rates if what.startswith("store write 256²"))
    read = next(rate for what, rate in rates if what.startswith("store read 256²"))
    resize = next(rate for what, rate in rates if what.startswith("resize 1024²"))
    host = 1 / (1 / sample + 1 / write + 1 / read)
    cpu_only = 1 / (1 / sample + 1 / resize + 1 / write + 1 / read)
    need = TARGET_GPU_RATE * GPUS / HOST_CORES
    rows += [
        f"| **host ceiling per core, 1024² → 256² stored** (sampling + store write + the label stage's read; "
        f"resize, uint8 and float conversions on the GPU) | **{host:,.0f}** |",
        f"| same with the resize and uint8 on the CPU too | {cpu_only:,.0f} |",
    ]
    verdict = "meets" if host >= need else "misses"
    body = (
        f"{machine_summary()}\n\nN = {args.n} images per part ({args.n_full} for the 1024² store), chunk "
        f"{args.chunk}, batch {args.batch}, one torch thread, local disk; zero-cost generator (1024²) and "
        f"labeler (bench/zero_cost.py). 1-min load average {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end.\n\n"
        + "\n".join(rows)
        + f"\n\nTarget (working assumption: one H200-class GPU makes {TARGET_GPU_RATE} images/s of StyleGAN2 "
        f"1024² in fp16): a {HOST_CORES}-core host keeps up with {GPUS} GPUs ({TARGET_GPU_RATE * GPUS:,} "
        f"images/s) at ≥ {need:.0f} images/s per core of host work. Measured: {host:,.0f} per core → "
        f"{host * HOST_CORES:,.0f} images/s on {HOST_CORES} cores, {host * HOST_CORES / TARGET_GPU_RATE:.1f} "
        f"GPUs' worth: the target is **{verdict}**."
    )
    print(body)
    if not args.no_write:
        append_section("The pipeline's own ceiling, 1024² zero-cost generator (bench/bench_ceiling.py)", body)


if __name__ == "__main__":
    main()
