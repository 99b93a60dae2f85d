"""Benchmark every generator format: its bare forward pass against the pipeline's image stages, at fixture size.

For each official-format fixture under ``../shared/fixtures/generators/`` (the tiny random-weight files the loaders
are tested on) and the embedded ``dcgan-digiface``:

1. bare forward: ``synthesize(z, "z")`` in batches under ``inference_mode``, one torch thread (as the pipeline
   runs on the CPU), nothing stored — images/s;
2. pipeline: the ``sample`` then ``synthesize`` stages in this process (``run_stage``, no Prefect: the engine adds
   a fixed per-stage start-up cost measured in bench_spine.py), the same N, images stored as uint8 Zarr chunks with
   their checksum records — images/s and the ratio to (1).

Prints one markdown table and appends it, with the date and machine, to BENCHMARKS.md. Timings are medians of
``--repeats`` runs.

Usage::

    python -m bench.bench_generators [--n 256] [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import ROOT, append_section, machine_summary

FIXTURES = ROOT.parent / "shared" / "fixtures" / "generators"
#: (label, generator name, kwargs) — the kwargs are what a user writes in params.yaml.
GENERATORS: tuple[tuple[str, str, dict], ...] = (
    ("DCGAN 64² (embedded)", "dcgan-digiface", {}),
    ("StyleGAN2-ADA 32²", "stylegan2", {"path": str(FIXTURES / "stylegan2-ada" / "network-snapshot-000000.pkl")}),
    (
        "StyleGAN2-ADA cond. 64²",
        "stylegan2",
        {"path": str(FIXTURES / "stylegan2-ada-cond" / "network-snapshot-000000.pkl"), "class_index": 1},
    ),
    ("StyleGAN3-T 32²", "stylegan3", {"path": str(FIXTURES / "stylegan3" / "network-snapshot-000000.pkl")}),
    ("PGGAN 32² (InterFaceGAN)", "pggan", {"path": str(FIXTURES / "interfacegan-pggan" / "pggan_fixture.pth")}),
    (
        "StyleGAN 32² (InterFaceGAN)",
        "stylegan",
        {"path": str(FIXTURES / "interfacegan-stylegan" / "stylegan_fixture.pth")},
    ),
    ("BigGAN 32²", "biggan", {"path": str(FIXTURES / "biggan"), "class_index": 3}),
)


def bare_rate(name: str, kwargs: dict, n: int, batch_size: int) -> float:
    """Images/s of ``synthesize(z)`` alone (after one warm-up batch)."""
    from stages.plugins.generators import build_generator
    from stages.runtime.device import pinned_threads

    generator = build_generator(name, **kwargs)
    latents_z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(0))
    with pinned_threads(), torch.inference_mode():
        generator.synthesize(latents_z[:batch_size])
        start = time.perf_counter()
        for begin in range(0, n, batch_size):
            generator.synthesize(latents_z[begin : begin + batch_size])
        return n / (time.perf_counter() - start)


def pipeline_rate(name: str, kwargs: dict, n: int, batch_size: int) -> float:
    """Images/s of the sample + synthesize stages (models built once outside the timing)."""
    from latentatlas.params import parse_params
    from stages.plugins.generators import build_generator
    from stages.runtime.chunked import run_stage
    from stages.sample import SampleStage
    from stages.synthesize import SynthesizeStage

    params = parse_params(
        {
            "generator": {"name": name, "kwargs": kwargs},
            "sample": {"n_samples": n, "chunk_size": max(n // 4, 1)},
            "synthesize": {"batch_size": batch_size, "device": "cpu"},
        }
    )
    generator = build_generator(name, **kwargs)
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        start = time.perf_counter()
        run_stage(SampleStage(params, data_dir, generator=generator))
        run_stage(SynthesizeStage(params, data_dir, generator=generator))
        return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256, help="images per measurement")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is reported")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    rows = [
        "| generator | bare forward (img/s) | sample + synthesize (img/s) | pipeline / bare |",
        "|---|---:|---:|---:|",
    ]
    for label, name, kwargs in GENERATORS:
        if "path" in kwargs and not Path(kwargs["path"]).exists():
            rows.append(f"| {label} | fixture not found at {kwargs['path']} | | |")
            continue
        bare = statistics.median(bare_rate(name, kwargs, args.n, args.batch_size) for _ in range(args.repeats))
        piped = statistics.median(pipeline_rate(name, kwargs, args.n, args.batch_size) for _ in range(args.repeats))
        rows.append(f"| {label} | {bare:.0f} | {piped:.0f} | {piped / bare:.2f} |")
        print(rows[-1], flush=True)
    body = (
        f"{machine_summary()}\n\nN = {args.n} images per measurement, batch {args.batch_size}, CPU fp32 with one "
        f"torch thread (the pipeline's setting), median of {args.repeats}. The fixtures are the tiny "
        f"random-weight files in the official formats (../shared/fixtures/generators/), so absolute rates are "
        f"those of tiny networks: the ratio is the point (what storing chunks with checksums adds to the bare "
        f"forward). No GPU was available to measure fp16.\n\n" + "\n".join(rows)
    )
    print(body)
    if not args.no_write:
        append_section("Generators: bare forward vs the image pipeline, per format (bench/bench_generators.py)", body)


if __name__ == "__main__":
    main()
