"""Benchmark chunk tasks on a local Dask cluster against threads: where does the Dask overhead go?

Both runs do the same work: ``sample`` then ``synthesize`` (the real ``dcgan-digiface`` face DCGAN, CPU, images
stored) on N latents, as Prefect flows in this process against a local Prefect server started once, with
``max_workers`` = 2 (two threads, or a ``LocalCluster`` of two single-threaded worker processes, each with its
share of the cores for torch). What is reported, per chunk size, runner and stage:

- wall: the whole flow as ``dvc repro`` would pay it (driver builds its stage, prepares the store, runs the chunks,
  marks the store complete; for Dask also starting and stopping the cluster);
- compute per chunk: ``stage.run_chunk`` (compute and write) as timed inside the worker;
- per-chunk task overhead: for each worker, the span from the start of its first task body to the end of its last,
  minus the compute and model-build time inside it, summed over workers and divided by the chunks — Prefect's
  per-task orchestration, Dask scheduling and the spec check, i.e. wall − compute per chunk;
- model build per worker: a worker process attaching to the stage (building its generator) at its first chunk;
- fixed: what is left of the wall once the chunks' compute, builds and per-chunk overhead are spread over the
  workers (driver set-up, cluster start-up and shutdown, imbalance at the end).

Worker start-up is also measured alone: a 2-worker ``LocalCluster`` started, every worker importing the pipeline
(``pipeline.flows``: torch, Prefect, the stages), and closed.

Prints one markdown table and appends it, with the date and machine, to BENCHMARKS.md.

Usage::

    python -m bench.bench_dask [--n 8000] [--chunk-sizes 1000 2000] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.common import append_section, machine_summary

STAGES = ("sample", "synthesize")


def _import_pipeline() -> None:
    import pipeline.flows  # noqa: F401


def worker_startup(n_workers: int = 2) -> dict[str, float]:
    """Seconds to start a LocalCluster of ``n_workers`` processes, to import the pipeline in all of them, and to
    close it."""
    from distributed import Client, LocalCluster

    start = time.perf_counter()
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(n_workers)
    started = time.perf_counter()
    client.run(_import_pipeline)
    imported = time.perf_counter()
    client.close()
    cluster.close()
    return {"start": started - start, "import": imported - started, "close": time.perf_counter() - imported}


def run_once(runner: str, n: int, chunk_size: int, data_dir: Path) -> list[dict[str, float]]:
    """Run ``sample`` and ``synthesize`` on ``runner``; one row of measurements per stage."""
    from latentatlas.params import parse_params
    from pipeline.flows import run_stage_flow

    params = parse_params(
        {
            "sample": {"n_samples": n, "chunk_size": chunk_size, "seed": 0},
            "synthesize": {"device": "cpu", "batch_size": 256},
            "runtime": {"task_runner": runner, "max_workers": 2},
        }
    )
    rows = []
    for stage in STAGES:
        start = time.perf_counter()
        run = run_stage_flow(stage, params, data_dir)
        wall = time.perf_counter() - start
        reports = run.reports
        workers = {(report.host, report.pid, report.thread) for report in reports}  # threads or processes
        compute = sum(report.compute_s for report in reports)
        build = sum(report.build_s for report in reports)
        spans = 0.0
        for worker in workers:
            mine = [report for report in reports if (report.host, report.pid, report.thread) == worker]
            spans += max(report.ended for report in mine) - min(report.started for report in mine)
        per_chunk_overhead = (spans - compute - build) / len(reports)
        busy_per_worker = (compute + build + per_chunk_overhead * len(reports)) / params.runtime.max_workers
        rows.append(
            {
                "stage": stage,
                "chunks": len(reports),
                "wall": wall,
                "compute_per_chunk": compute / len(reports),
                "overhead_per_chunk": per_chunk_overhead,
                "build_per_worker": build / len(workers) if runner != "threads" else 0.0,
                "fixed": wall - busy_per_worker,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8000, help="latents to sample and synthesize")
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[1000, 2000], help="chunk sizes to compare")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()

    from pipeline.settings import apply_defaults

    apply_defaults()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipeline.prefect_server import local_prefect_server

    rows = [
        "| chunk size | runner | stage | chunks | wall (s) | compute per chunk (s) | per-chunk task overhead (s) "
        "| overhead / chunk compute | model build per worker (s) | fixed: set-up, cluster start/stop (s) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    totals = []
    load_start = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="latentatlas-bench-dask-") as scratch,
        local_prefect_server(Path(scratch) / "prefect-home") as api_url,
        temporary_settings(updates={PREFECT_API_URL: api_url}),
    ):
        startup = worker_startup()
        for chunk_size in args.chunk_sizes:
            walls = {}
            for runner in ("threads", "dask"):
                measured = run_once(runner, args.n, chunk_size, Path(scratch) / f"{runner}-{chunk_size}")
                walls[runner] = sum(row["wall"] for row in measured)
                for row in measured:
                    ratio = row["overhead_per_chunk"] / row["compute_per_chunk"]
                    rows.append(
                        f"| {chunk_size} | {runner} | {row['stage']} | {row['chunks']} | {row['wall']:.1f} | "
                        f"{row['compute_per_chunk']:.3f} | {row['overhead_per_chunk']:.3f} | "
                        f"{100 * ratio:.1f} % | {row['build_per_worker']:.2f} | {row['fixed']:.1f} |"
                    )
            totals.append(
                f"| {chunk_size} | {walls['threads']:.1f} | {walls['dask']:.1f} | "
                f"{walls['dask'] / walls['threads']:.2f} |"
            )
    table = "\n".join(
        rows
        + [
            "",
            f"N = {args.n}, sample + synthesize (`dcgan-digiface`, CPU, batch 256), max_workers = 2.",
            "",
            "| chunk size | threads wall (s) | dask wall (s) | dask / threads |",
            "|---:|---:|---:|---:|",
            *totals,
            "",
            f"Dask worker start-up alone (2 workers): cluster start {startup['start']:.1f} s, importing the pipeline "
            f"in every worker {startup['import']:.1f} s, close {startup['close']:.1f} s. 1-min load average "
            f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (2 cores: above ~2, other jobs shared "
            f"the machine and inflate compute times).",
        ]
    )
    print(table)
    if not args.no_write:
        append_section("Dask vs threads (`bench/bench_dask.py`)", f"{machine_summary()}\n\n{table}\n")


if __name__ == "__main__":
    main()
