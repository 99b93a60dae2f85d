"""What a stage start costs on a 500K-sample images store: the old full check (read and checksum every chunk)
against the start check (records, sizes, modification times; no chunk data read).

Builds, in a temporary folder on the local disk, the stores an InterFaceGAN-scale run leaves: 500,000 latents
(z ∈ R^100) and 500,000 images of 64² in chunks of 5,000 (the ``interfacegan-500k`` preset's layout; images from
the zero-cost generator, bench/zero_cost.py, so the store is built in minutes, not in the 18 minutes a generator
takes), then opens the synthesize stage on it (everything done: a rerun) and times

- **full check** (what ``pending`` did before): ``check_chunks(deep=True)`` — every chunk file read and CRC32C'd;
- **start check** (what ``pending`` does now): ``check_chunks_at_start()``;

each with the store's files in the page cache (warm: the best case) and dropped from it (cold:
``posix_fadvise(DONTNEED)`` on each file, the store as a fresh boot or another machine sees it). The stage's own time
for reference: the synthesize stage of the 500K preset on this machine's class (BENCHMARKS.md, 2 CPU cores,
``dcgan-digiface``: 1,083 s) and what a GPU would take.

Usage::

    python -m bench.bench_start [--n 500000] [--chunk 5000] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.common import append_section, machine_summary

#: The synthesize stage of the 500K preset, measured by bench/bench_scale.py (BENCHMARKS.md, 2026-11-23 15:36).
STAGE_500K_CPU_S = 1083.0


def _drop_from_page_cache(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)


def _timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500_000)
    parser.add_argument("--chunk", type=int, default=5000)
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    import torch

    from latentatlas.params import parse_params
    from stages.runtime.chunked import run_stage
    from stages.sample import SampleStage
    from stages.synthesize import SynthesizeStage

    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    params = parse_params(
        {
            "generator": {
                "name": "bench.zero_cost:build_zero_cost_generator",
                "kwargs": {"resolution": 64, "z_dim": 100, "bank_size": 250},
            },
            "sample": {"n_samples": args.n, "chunk_size": args.chunk},
            "synthesize": {"batch_size": 250, "device": "cpu"},
        }
    )
    with tempfile.TemporaryDirectory(prefix="start-cost-", dir=os.environ.get("BENCH_TMP")) as folder:
        data_dir = Path(folder)
        build_s, _ = _timed(
            lambda: (run_stage(SampleStage(params, data_dir)), run_stage(SynthesizeStage(params, data_dir)))
        )
        images = data_dir / "images.zarr"
        size = sum(path.stat().st_size for path in images.rglob("*") if path.is_file())
        rows = [
            "| check | page cache | chunk bytes read | seconds | share of the 500K synthesize stage (1,083 s) |",
            "|---|---|---:|---:|---:|",
        ]
        figures = {}
        with SynthesizeStage(params, data_dir) as stage:
            upstream = stage.lineage_inputs
            for name, check in (
                (
                    "full check (read + CRC32C every chunk), the old start",
                    lambda: stage.store.check_chunks(deep=True, upstream=upstream),
                ),
                (
                    "start check (records, sizes, times), the new start",
                    lambda: stage.store.check_chunks_at_start(upstream=upstream),
                ),
            ):
                for cache in ("cold", "warm"):
                    if cache == "cold":
                        _drop_from_page_cache(data_dir)
                    else:
                        check()  # fill the cache
                    seconds, problems = _timed(check)
                    assert not problems, problems[:3]
                    figures[(name, cache)] = seconds
                    read = f"{size / 2**30:.2f} GiB" if name.startswith("full") else "0"
                    rows.append(
                        f"| {name} | {cache} | {read} | {seconds:.3f} | {100 * seconds / STAGE_500K_CPU_S:.3f} % |"
                    )
                    print(rows[-1], flush=True)
    new_cold = figures[("start check (records, sizes, times), the new start", "cold")]
    old_cold = figures[("full check (read + CRC32C every chunk), the old start", "cold")]
    gpu_stage = args.n / 20_000
    body = (
        f"{machine_summary()}\n\nN = {args.n:,} samples in chunks of {args.chunk:,} "
        f"({args.n // args.chunk} chunks): latents z ∈ R^100 and 64² uint8 images ({size / 2**30:.2f} GiB on "
        f"disk; built in {build_s:.0f} s with the zero-cost generator), local disk; the synthesize stage opened "
        f"on the finished stores (a rerun: nothing to do but the check). Cold: the store's files dropped from the "
        f"page cache first (posix_fadvise DONTNEED). 1-min load average {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end.\n\n"
        + "\n".join(rows)
        + f"\n\nThe start now costs {new_cold:.2f} s cold ({100 * new_cold / STAGE_500K_CPU_S:.3f} % of the CPU "
        f"stage; {old_cold / new_cold:.0f}× less than the full check). Against a GPU stage — say a 64² DCGAN at "
        f"20,000 images/s, {gpu_stage:.0f} s for {args.n:,} images — it is {100 * new_cold / gpu_stage:.1f} %, "
        f"where the full check would be {100 * old_cold / gpu_stage:.0f} %."
    )
    print(body)
    if not args.no_write:
        append_section("Stage start cost at 500K (bench/bench_start.py)", body)


if __name__ == "__main__":
    main()
