"""Benchmark resume: kill a stage at ~50 % with SIGKILL, run it again, and measure the work that was redone.

One stage (``synthesize`` by default) runs as ``dvc repro`` would run it (its own process, Prefect flow against a
local Prefect server). When at least ``--kill-at`` of its chunks are on disk, the whole process group gets SIGKILL
(no clean-up of any kind runs). Then the same command runs again. From the Prefect server's task runs and the store:

- chunks on disk at the kill, and chunk tasks in flight (started, not on disk);
- work lost = time the in-flight tasks had run when killed, in chunk-durations (the mean duration of the first
  run's completed chunk tasks), overall and **per worker**: the resume target is "at most the chunks in flight",
  i.e. at most 1 chunk per worker;
- chunk tasks the second run executed, and how many of them had been on disk already (must be 0);
- whether the resumed store equals an uninterrupted run of the same stage, array by array (bit-identical).

Prints one markdown table and appends it, with the date and machine, to BENCHMARKS.md.

Usage::

    python -m bench.bench_resume [--n 40000] [--chunk-size 2000] [--runner threads|dask] [--kill-at 0.5] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from bench.common import ROOT, append_section, machine_summary
from latentatlas.stores import ParquetChunkStore, StoreError, ZarrChunkStore
from pipeline.prefect_server import local_prefect_server

STORE_OF_STAGE = {"synthesize": ("images.zarr", ZarrChunkStore), "label": ("labels", ParquetChunkStore)}
UPSTREAM = {"synthesize": ["sample"], "label": ["sample", "synthesize"]}


@dataclass(frozen=True)
class TaskRun:
    index: int
    state: str
    start: dt.datetime | None
    end: dt.datetime | None


def _write_params(path: Path, n: int, chunk_size: int, runner: str, workers: int) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["sample"].update(n_samples=n, chunk_size=chunk_size)
    params["runtime"].update(task_runner=runner, max_workers=workers)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _stage_command(stage: str, params_path: Path, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", stage, "--params", str(params_path), "--data-dir", str(data_dir)]


def _run(stage: str, params_path: Path, data_dir: Path, env: dict) -> None:
    subprocess.run(
        _stage_command(stage, params_path, data_dir),
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _chunks_on_disk(stage: str, data_dir: Path) -> set[int]:
    name, store_cls = STORE_OF_STAGE[stage]
    try:
        store = store_cls.open(data_dir / name)
    except StoreError:  # not created yet
        return set()
    return set(range(store.info.n_chunks)) - set(store.pending_chunks())


def _task_runs(stage: str) -> list[list[TaskRun]]:
    """Chunk task runs of each flow run of ``latentatlas-<stage>``, oldest flow run first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[f"latentatlas-{stage}"])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        )
        result = []
        for flow_run in flow_runs:
            task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
            result.append(
                [
                    TaskRun(
                        int(run.name.rsplit("-", 1)[1]),
                        run.state_type.value if run.state_type else "?",
                        run.start_time,
                        run.end_time,
                    )
                    for run in task_runs
                    if run.name.startswith(f"{stage}-chunk-")
                ]
            )
        return result


def _same_store(stage: str, left: Path, right: Path) -> bool:
    name, store_cls = STORE_OF_STAGE[stage]
    a, b = store_cls.open(left / name), store_cls.open(right / name)
    if store_cls is ZarrChunkStore:
        return all(np.array_equal(a.arrays[key][:], b.arrays[key][:]) for key in a.arrays)
    return all(a.read_chunk(index).equals(b.read_chunk(index)) for index in range(a.info.n_chunks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=sorted(STORE_OF_STAGE), default="synthesize")
    parser.add_argument("--n", type=int, default=40_000)
    parser.add_argument("--chunk-size", type=int, default=2_000)
    parser.add_argument("--runner", choices=["threads", "dask"], default="threads")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction of chunks on disk when the kill comes")
    parser.add_argument(
        "--kill-delay",
        type=float,
        default=0.5,
        help="then wait this fraction of a chunk's duration before the kill (0: just after one lands)",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="bench-resume-") as scratch_name,
        local_prefect_server(Path(scratch_name) / "prefect-home") as api_url,
    ):
        scratch = Path(scratch_name)
        os.environ["PREFECT_API_URL"] = api_url  # for this process's client too (read_task_runs)
        env = {**os.environ}
        params_path = scratch / "params.yaml"
        _write_params(params_path, args.n, args.chunk_size, args.runner, args.workers)
        killed_dir, reference_dir = scratch / "killed", scratch / "reference"
        for data_dir in (killed_dir, reference_dir):
            for upstream in UPSTREAM[args.stage]:
                _run(upstream, params_path, data_dir, env)
        n_chunks = -(-args.n // args.chunk_size)

        run = subprocess.Popen(
            _stage_command(args.stage, params_path, killed_dir),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        first_chunk_at = None
        while (done := len(_chunks_on_disk(args.stage, killed_dir))) < args.kill_at * n_chunks:
            if run.poll() is not None:
                raise SystemExit(f"{args.stage} finished (exit {run.returncode}) before the kill")
            if done and first_chunk_at is None:
                first_chunk_at = time.perf_counter()
            time.sleep(0.05)
        # Right after a chunk lands, its worker has lost nothing yet: wait a share of a chunk's duration (estimated
        # from the pace so far) so the kill finds the workers mid-chunk, as a real kill would.
        wall_per_chunk = (time.perf_counter() - first_chunk_at) / max(done - 1, 1) if first_chunk_at else 0.0
        time.sleep(args.kill_delay * wall_per_chunk * args.workers)
        os.killpg(run.pid, signal.SIGKILL)
        killed_at = dt.datetime.now(dt.UTC)
        run.wait()
        on_disk = _chunks_on_disk(args.stage, killed_dir)
        time.sleep(2.0)  # let the server record the last state events it was sent
        (first,) = _task_runs(args.stage)
        completed = [t for t in first if t.state == "COMPLETED" and t.start and t.end]
        chunk_s = float(np.mean([(t.end - t.start).total_seconds() for t in completed]))
        in_flight = [t for t in first if t.index not in on_disk and t.start is not None]
        lost_s = sum((killed_at - t.start).total_seconds() for t in in_flight)

        _run(args.stage, params_path, killed_dir, env)
        _run(args.stage, params_path, reference_dir, env)
        second = _task_runs(args.stage)[1]
        redone_finished = sorted(t.index for t in second if t.index in on_disk)
        identical = _same_store(args.stage, killed_dir, reference_dir)

    lost_chunks = lost_s / chunk_s
    rows = [
        "| measure | value |",
        "|---|---:|",
        f"| chunks (N / chunk size) | {n_chunks} ({args.n:,} / {args.chunk_size:,}) |",
        f"| workers ({args.runner}) | {args.workers} |",
        f"| chunks on disk at the kill | {len(on_disk)} ({len(on_disk) / n_chunks:.0%}) |",
        f"| chunk tasks in flight at the kill | {len(in_flight)} |",
        f"| mean chunk task duration | {chunk_s:.1f} s |",
        f"| work lost (in-flight time at the kill) | {lost_s:.1f} s = {lost_chunks:.2f} chunks |",
        f"| **work redone per worker** | **{lost_chunks / args.workers:.2f} chunk** |",
        f"| chunk tasks run on resume | {len(second)} (expected {n_chunks - len(on_disk)}) |",
        f"| finished chunks recomputed on resume | {len(redone_finished)} |",
        f"| resumed store bit-identical to an uninterrupted run | {'yes' if identical else '**NO**'} |",
    ]
    body = "\n".join(
        [
            machine_summary(),
            "",
            f"`{args.stage}` killed with SIGKILL (process group) {args.kill_delay:g} chunk-durations after "
            f"{args.kill_at:.0%} of its chunks were on disk, then run again. In flight: tasks whose start reached the "
            f"Prefect server and whose chunk was not on disk. Target: resume redoes at most the chunks in flight "
            f"(≤ 1 chunk per worker) and no finished chunk.",
            "",
            *rows,
        ]
    )
    print(body)
    if not args.no_write:
        append_section(f"Kill and resume, {args.stage} ({args.runner}) (bench/bench_resume.py)", body)


if __name__ == "__main__":
    main()
