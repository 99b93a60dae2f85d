"""Benchmark the spine: bare generator vs pipeline throughput, labeler throughput, peak RSS against N.

What is measured (one run, one machine; ratios are the point, absolute numbers depend on the machine):

1. bare generator: ``dcgan-digiface`` forward passes at batch 256 under ``inference_mode``, nothing stored.
2. pipeline: the ``sample``, ``synthesize`` and ``label`` stage commands exactly as ``dvc repro`` runs them (one
   process each, Prefect flows against a local Prefect server started once, so the ~15 s ephemeral-server start
   is not charged to every stage), on the same N, images stored. Reported: sample+synthesize (the image
   pipeline) and sample+synthesize+label (the whole spine), each as images/s and as a ratio to (1).
3. labeler: the ``faces`` suite alone on stored images at batch 256.
4. peak RSS of the stage processes at each N in ``--rss-n`` (must not grow with N: nothing holds all N).

Prints one markdown table and appends it, with the date and machine, to BENCHMARKS.md.

Usage::

    python -m bench.bench_spine [--n 10000] [--rss-n 20000 100000] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from bench.common import ROOT, append_section, machine_summary
from pipeline.prefect_server import local_prefect_server


def bare_generator_rate(n: int, batch_size: int = 256) -> float:
    """Images/s of the bare generator forward pass (best of the full run after one warm-up batch)."""
    from stages.plugins.generators import build_generator

    generator = build_generator("dcgan-digiface")
    latents_z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        generator.synthesize(latents_z[:batch_size])
        start = time.perf_counter()
        for begin in range(0, n, batch_size):
            generator.synthesize(latents_z[begin : begin + batch_size])
        return n / (time.perf_counter() - start)


def labeler_rate(data_dir: Path, n: int = 4096, batch_size: int = 256) -> float:
    """Images/s of the ``faces`` suite on stored images."""
    from latentatlas.stores import ZarrChunkStore
    from stages.plugins.generators.synthesis import uint8_to_images
    from stages.plugins.labelers import build_labeler

    labeler = build_labeler("faces").to(torch.device("cpu"))
    images = uint8_to_images(ZarrChunkStore.open(data_dir / "images.zarr").arrays["images"][:n])
    with torch.inference_mode():
        labeler.score(images[:batch_size])
        start = time.perf_counter()
        for begin in range(0, images.shape[0], batch_size):
            labeler.score(images[begin : begin + batch_size])
        return images.shape[0] / (time.perf_counter() - start)


def run_stages(n: int, data_dir: Path, api_url: str) -> dict[str, float]:
    """Run the three stage commands as ``dvc repro`` would; wall seconds per stage and their peak RSS (MiB)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["sample"]["n_samples"] = n
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    params_path = data_dir.parent / f"params-{n}.yaml"
    params_path.write_text(yaml.safe_dump(params))
    env = {**os.environ, "PREFECT_API_URL": api_url}
    timings: dict[str, float] = {}
    peak_rss_mib = 0.0
    for stage in ("sample", "synthesize", "label"):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "pipeline.cli", stage, "--params", str(params_path), "--data-dir", str(data_dir)],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        timings[stage] = time.perf_counter() - start
        # RUSAGE_CHILDREN: the largest peak RSS among finished children, i.e. the stage processes so far
        peak_rss_mib = max(peak_rss_mib, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    timings["peak_rss_mib"] = peak_rss_mib
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="samples for the throughput comparison")
    parser.add_argument("--rss-n", type=int, nargs="*", default=[20_000, 100_000], help="N values for peak RSS")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()

    bare = bare_generator_rate(args.n)
    rows = [
        "| measure | N | value | ratio to bare generator |",
        "|---|---:|---:|---:|",
        f"| bare generator forward (images/s) | {args.n} | {bare:.0f} | 1.00 |",
    ]
    with (
        tempfile.TemporaryDirectory(prefix="latentatlas-bench-") as scratch,
        local_prefect_server(Path(scratch) / "prefect-home") as api_url,
    ):
        data_dir = Path(scratch) / f"data-{args.n}"
        timings = run_stages(args.n, data_dir, api_url)
        image_rate = args.n / (timings["sample"] + timings["synthesize"])
        spine_rate = args.n / (timings["sample"] + timings["synthesize"] + timings["label"])
        rows += [
            f"| sample + synthesize, images stored (images/s) | {args.n} | {image_rate:.0f} "
            f"| {image_rate / bare:.2f} |",
            f"| sample + synthesize + label (images/s) | {args.n} | {spine_rate:.0f} | {spine_rate / bare:.2f} |",
            f"| stage wall times sample / synthesize / label (s) | {args.n} | "
            f"{timings['sample']:.1f} / {timings['synthesize']:.1f} / {timings['label']:.1f} | |",
            f"| `faces` labeler suite alone (images/s) | 4096 | {labeler_rate(data_dir):.0f} | |",
        ]
        for n in args.rss_n:
            # A fresh measuring process per N, so RUSAGE_CHILDREN holds only that N's stage processes.
            result = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys, json; from pathlib import Path; from bench.bench_spine import "
                    "run_stages; print(json.dumps(run_stages(int(sys.argv[1]), Path(sys.argv[2]), "
                    "sys.argv[3])))",
                    str(n),
                    str(Path(scratch) / f"rss-{n}" / "data"),
                    api_url,
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise SystemExit(f"peak-RSS run at N = {n} failed:\n{result.stderr[-3000:]}")
            rss = yaml.safe_load(result.stdout.strip().splitlines()[-1])
            rows.append(f"| peak RSS of the stage processes (MiB) | {n} | {rss['peak_rss_mib']:.0f} | |")
            rows.append(
                f"| whole spine at N = {n}: sample / synthesize / label (s) | {n} | "
                f"{rss['sample']:.0f} / {rss['synthesize']:.0f} / {rss['label']:.0f} | |"
            )
    table = "\n".join(rows)
    print(table)
    if not args.no_write:
        append_section("Spine throughput and memory (`bench/bench_spine.py`)", f"{machine_summary()}\n\n{table}\n")


if __name__ == "__main__":
    main()
