"""Benchmark the InterFaceGAN-scale run: the ``params/interfacegan-500k.yaml`` preset, end to end, as a user runs it.

In a fresh clone of this repository (HEAD, so commit first), runs ``latentatlas repro --preset <preset>`` — that is
``dvc exp run -S sample.n_samples=500000 ...`` with a local Prefect server — and watches every process it starts:

- wall time of the whole run and of each stage process (first to last time it was seen);
- throughput of the spine: N / (sample + synthesize + label wall time), images/s;
- peak RSS of each stage process, sampled every 0.2 s (a stage's own process; threads run its chunk tasks), and
  the kernel's high-water mark over all of the run's processes (``RUSAGE_CHILDREN``, the Prefect server included);
- size on disk of each store and of DVC's cache.

Prints one markdown table and appends it, with the date and machine, to BENCHMARKS.md.

Usage::

    python -m bench.bench_scale [--preset params/interfacegan-500k.yaml] [--workdir /tmp/latentatlas-500k]
                                [--set sample.n_samples=20000 ...] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from bench.common import ROOT, append_section, machine_summary
from latentatlas.params import flatten_overrides, merge_overrides, parse_params

_STAGE_COMMAND = re.compile(r"pipeline\.cli (sample|synthesize|label|fit|evaluate|report)\b(?:.*--method (\S+))?")
SPINE = ("sample", "synthesize", "label")


@dataclass
class StageTrace:
    """What the monitor saw of one stage process."""

    first_seen: float
    last_seen: float
    peak_rss: int = 0
    pids: set[int] = field(default_factory=set)

    @property
    def wall_s(self) -> float:
        return self.last_seen - self.first_seen


def _stage_name(cmdline: list[str]) -> str | None:
    match = _STAGE_COMMAND.search(" ".join(cmdline))
    if match is None:
        return None
    return match.group(1) if match.group(2) is None else f"{match.group(1)}@{match.group(2)}"


class ProcessMonitor(threading.Thread):
    """Samples the RSS of every stage process under ``root_pid`` every ``interval_s`` seconds."""

    def __init__(self, root_pid: int, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.interval_s = root_pid, interval_s
        self.stages: dict[str, StageTrace] = {}
        self._done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
        except psutil.NoSuchProcess:
            return
        while not self._done.is_set():
            now = time.perf_counter()
            try:
                children = root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for process in children:
                try:
                    name = _stage_name(process.cmdline())
                    rss = process.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                if name is None:
                    continue
                trace = self.stages.setdefault(name, StageTrace(first_seen=now, last_seen=now))
                # `dvc` runs each command through a shell: keep the python process (the largest) per stage.
                trace.last_seen, trace.peak_rss = now, max(trace.peak_rss, rss)
                trace.pids.add(process.pid)
            self._done.wait(self.interval_s)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _disk_usage(path: Path) -> int:
    """Bytes on disk under ``path`` (allocated blocks, like ``du``)."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(entry.stat().st_blocks * 512 for entry in path.rglob("*") if entry.is_file() and not entry.is_symlink())


def _prepare_clone(workdir: Path) -> str:
    if workdir.exists():
        raise SystemExit(f"--workdir {workdir} exists; remove it or pick another (the run starts from a fresh clone)")
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(workdir)], check=True)
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=workdir, check=True, capture_output=True, text=True
    ).stdout.strip()


def _write_preset(workdir: Path, preset: Path, extra: list[str]) -> Path:
    """The preset, plus any ``--set key=value`` (YAML values) on top, as a file in the clone."""
    overrides = yaml.safe_load(preset.read_text()) or {}
    for assignment in extra:
        key, _, value = assignment.partition("=")
        nested: dict = {}
        cursor = nested
        *parents, leaf = key.split(".")
        for part in parents:
            cursor = cursor.setdefault(part, {})
        cursor[leaf] = yaml.safe_load(value)
        overrides = merge_overrides(overrides, nested)
    target = workdir / "params" / f"bench-{preset.stem}.yaml"
    target.parent.mkdir(exist_ok=True)
    target.write_text(yaml.safe_dump(overrides, sort_keys=False))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", type=Path, default=ROOT / "params" / "interfacegan-500k.yaml")
    parser.add_argument("--workdir", type=Path, default=None, help="where to clone (default: a new temp folder)")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="key=value on top of the preset")
    parser.add_argument("--keep", action="store_true", help="keep the clone and its stores afterwards")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="latentatlas-scale-")) / "repo"
    commit = _prepare_clone(workdir)
    preset = _write_preset(workdir, args.preset.resolve(), args.extra)
    params = parse_params(
        merge_overrides(yaml.safe_load((workdir / "params.yaml").read_text()), yaml.safe_load(preset.read_text()))
    )
    n_samples = params.sample.n_samples
    print(
        f"clone {workdir} @ {commit}; preset {args.preset.name}: "
        + ", ".join(f"{key}={value}" for key, value in flatten_overrides(yaml.safe_load(preset.read_text())))
    )

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)  # the run starts its own server, as `latentatlas repro` does for a user
    start = time.perf_counter()
    run = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "repro", "--preset", str(preset.relative_to(workdir))],
        cwd=workdir,
        env=env,
    )
    monitor = ProcessMonitor(run.pid)
    monitor.start()
    returncode = run.wait()
    wall_s = time.perf_counter() - start
    monitor.stop()
    if returncode != 0:
        raise SystemExit(f"the run failed (exit {returncode}); its stores are in {workdir}")
    children_peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    traces = monitor.stages
    spine_s = sum(traces[name].wall_s for name in SPINE)
    stores = {
        "data/latents.zarr": workdir / "data" / "latents.zarr",
        "data/images.zarr": workdir / "data" / "images.zarr",
        "data/labels": workdir / "data" / "labels",
        "directions/": workdir / "directions",
        "evaluations/": workdir / "evaluations",
        ".dvc/cache": workdir / ".dvc" / "cache",
    }
    sizes = {name: _disk_usage(path) for name, path in stores.items()}
    metrics_path = workdir / "metrics" / "interfacegan.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}

    rows = ["| stage | wall (s) | peak RSS (MiB) |", "|---|---:|---:|"]
    for name, trace in traces.items():
        rows.append(f"| {name} | {trace.wall_s:.0f} | {trace.peak_rss / 2**20:.0f} |")
    size_rows = ["| store | size on disk |", "|---|---:|"]
    size_rows += [f"| {name} | {size / 2**20:,.0f} MiB |" for name, size in sizes.items()]
    shown_preset = args.preset.relative_to(ROOT) if args.preset.is_relative_to(ROOT) else args.preset
    body = "\n".join(
        [
            machine_summary(),
            "",
            f"`latentatlas repro --preset {shown_preset}`"
            + (f" with {', '.join(args.extra)}" if args.extra else "")
            + f" in a fresh clone at {commit}: N = {n_samples:,}, chunk {params.sample.chunk_size}, "
            f"runner {params.runtime.task_runner} × {params.runtime.max_workers}, methods {params.fit.methods}.",
            "",
            f"- whole run (Prefect server start, every stage, DVC hashing and caching): **{wall_s / 60:.1f} min**",
            (
                f"- spine throughput (sample + synthesize + label): **{n_samples / spine_s:.0f} images/s** "
                f"({spine_s / 60:.1f} min)"
            ),
            (
                f"- peak RSS of any stage process: **{max(t.peak_rss for t in traces.values()) / 2**20:.0f} MiB** "
                f"(sampled every 0.2 s); kernel high-water mark over all the run's processes: "
                f"{children_peak_mib:.0f} MiB"
            ),
            "",
            *rows,
            "",
            *size_rows,
        ]
    )
    if metrics:
        body += (
            "\n\nSanity (edits of held-out z, `metrics/interfacegan.json`; slope in label std per unit α, "
            "fraction of samples moved the right way): "
            + ", ".join(
                f"{name} {entry['slope_std']:+.3f} / {entry['moved_fraction']:.2f}"
                for name, entry in metrics["directions"].items()
            )
        )
    print(body)
    if not args.no_write:
        append_section("InterFaceGAN-scale run (bench/bench_scale.py)", body)
    if not args.keep:
        shutil.rmtree(workdir.parent if args.workdir is None else workdir)


if __name__ == "__main__":
    main()
