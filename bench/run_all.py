"""Run every benchmark in turn (``make bench``), each appending its table to BENCHMARKS.md.

Run it on an otherwise idle machine: the benchmarks time CPU work, and other jobs on the same cores distort them.
The InterFaceGAN-scale run (``bench/bench_scale.py``, 36 min on 2 CPU cores) and the 100K run at 256²
(``bench/bench_100k.py``) are included only with ``--scale``; the GPU benchmark (``bench/bench_gpu.py``) only where
CUDA is available.

Usage::

    python -m bench.run_all [--scale] [--no-write]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import ROOT

BENCHMARKS: tuple[tuple[str, list[str]], ...] = (
    ("(1), (2) throughput ratio and peak RSS against N", ["bench.bench_spine"]),
    ("(3) kill at 50 % and resume, threads", ["bench.bench_resume"]),
    ("(3) kill at 50 % and resume, Dask", ["bench.bench_resume", "--runner", "dask"]),
    ("(4) SVM at 10K per side vs SVC(kernel='linear')", ["bench.bench_svm"]),
    ("(5) Dask with 2 workers vs threads", ["bench.bench_dask"]),
    ("Integrity: checksums, records and verification per stage", ["bench.bench_integrity"]),
    ("Generators: bare forward vs the image pipeline, per format", ["bench.bench_generators"]),
    ("Training the attribute classifier on planted attributes", ["bench.bench_train_labeler"]),
    ("Explorer latency in a real browser", ["bench.bench_explore"]),
    ("Compiled synthesis vs eager, full-size networks (CPU)", ["bench.bench_compile"]),
    ("The pipeline's own ceiling, zero-cost 1024² generator", ["bench.bench_ceiling"]),
    ("Stage start cost at 500K", ["bench.bench_start"]),
)
#: Long runs, only with --scale: 36 min and ≈ 30 min on 2 CPU cores.
SCALE = (
    ("InterFaceGAN-scale run (500K)", ["bench.bench_scale"]),
    ("100K samples at 256² end to end, kill and resume", ["bench.bench_100k"]),
)
#: Only where a CUDA device is present (≤ 5 min on one GPU).
GPU = ("GPU: bare G vs eager vs compiled vs pipeline", ["bench.bench_gpu"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scale",
        action="store_true",
        help="also run the 500K preset and the 100K run at 256² end to end (≈ 1 h on 2 cores)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    failed = []
    import torch

    gpu = (GPU,) if torch.cuda.is_available() else ()
    for title, module in (*BENCHMARKS, *(SCALE if args.scale else ()), *gpu):
        print(f"\n=== {title}: python -m {' '.join(module)}", flush=True)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", *module, *(["--no-write"] if args.no_write else [])], cwd=ROOT)
        print(f"=== {title}: exit {result.returncode} after {time.perf_counter() - start:.0f} s", flush=True)
        if result.returncode != 0:
            failed.append(title)
    if failed:
        raise SystemExit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
