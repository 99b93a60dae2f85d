"""A 100K-sample run at 256² end to end on this machine: throughput against the bare generator, peak RSS against N,
disk use against the stores, and a kill and resume.

Generator: the embedded ``dcgan-digiface`` upscaled to 256² (``synthesize.store_resolution: 256``): a real network
cheap enough for 100,000 images on 2 CPU cores; each image is 192 KiB of uint8, ≈ 20 GB for the run before
compression. Stages run as the CLI runs them (``latentatlas <stage> --engine local``: one process per stage, no
Prefect; one torch thread, chunks written behind on a second thread).

1. bare G: the DCGAN's forward at 64², one torch thread, batch 256 — images/s;
2. ``sample`` then ``synthesize`` at N = ``--n``: ``synthesize`` is killed (SIGKILL) once half its chunks are on disk
   and run again; throughput = N / (sample + both synthesize runs' wall time), its ratio to (1);
3. after the resume: every chunk checked against its record (read and CRC32C'd), the chunks done before the kill
   untouched (record files not rewritten), disk use of the data dir against the stores' own bytes;
4. peak RSS of the synthesize process at N and at ``--small-n`` (must not grow with N).

The data dir is deleted at the end.

Usage::

    python -m bench.bench_100k [--n 100000] [--small-n 10000] [--chunk 2000] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
import yaml

from bench.common import ROOT, append_section, machine_summary


def _params(path: Path, n: int, chunk: int) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["sample"].update(n_samples=n, chunk_size=chunk)
    raw["synthesize"].update(device="cpu", store_resolution=256, batch_size=256)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _command(stage: str, params: Path, data_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline.cli",
        stage,
        "--params",
        str(params),
        "--data-dir",
        str(data_dir),
        "--engine",
        "local",
    ]


class PeakRSS(threading.Thread):
    """Samples a process's RSS every 0.2 s; ``peak`` in bytes."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self._done = pid, 0, threading.Event()

    def run(self) -> None:
        try:
            process = psutil.Process(self.pid)
            while not self._done.is_set():
                self.peak = max(self.peak, process.memory_info().rss)
                self._done.wait(0.2)
        except psutil.NoSuchProcess:
            return

    def stop(self) -> None:
        self._done.set()
        self.join()


def _run_stage(stage: str, params: Path, data_dir: Path, kill_when=None) -> tuple[float, int, bool]:
    """(wall seconds, peak RSS bytes, killed) of one stage process; ``kill_when()`` true: SIGKILL its group."""
    start = time.perf_counter()
    process = subprocess.Popen(
        _command(stage, params, data_dir),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    monitor = PeakRSS(process.pid)
    monitor.start()
    killed = False
    while process.poll() is None:
        if kill_when is not None and kill_when():
            os.killpg(process.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.5)
    process.wait()
    monitor.stop()
    if process.returncode != 0 and not killed:
        raise RuntimeError(f"{stage} failed: {process.stderr.read().decode()[-2000:]}")
    return time.perf_counter() - start, monitor.peak, killed


def _records(data_dir: Path) -> dict[str, int]:
    folder = data_dir / "images.zarr" / "images" / "_records"
    return {path.name: path.stat().st_mtime_ns for path in folder.glob("*.json")} if folder.exists() else {}


def _disk(path: Path) -> int:
    return sum(entry.stat().st_blocks * 512 for entry in path.rglob("*") if entry.is_file())


def bare_rate(n: int = 4096, batch: int = 256) -> float:
    from stages.plugins.generators import build_generator
    from stages.runtime.device import pinned_threads

    generator = build_generator("dcgan-digiface")
    latents_z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(0))
    with pinned_threads(), torch.inference_mode():
        generator.synthesize(latents_z[:batch])
        start = time.perf_counter()
        for begin in range(0, n, batch):
            generator.synthesize(latents_z[begin : begin + batch])
        return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--small-n", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=2000)
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    from latentatlas.stores import ZarrChunkStore, inspect_store

    load_start = os.getloadavg()[0]
    bare = bare_rate()
    with tempfile.TemporaryDirectory(prefix="run-100k-", dir=os.environ.get("BENCH_TMP")) as folder:
        root = Path(folder)
        small_dir, small_params = root / "small", _params(root / "small.yaml", args.small_n, args.chunk)
        small_dir.mkdir()
        _run_stage("sample", small_params, small_dir)
        _, small_rss, _ = _run_stage("synthesize", small_params, small_dir)
        shutil.rmtree(small_dir)

        data_dir, params = root / "data", _params(root / "params.yaml", args.n, args.chunk)
        data_dir.mkdir()
        sample_s, _, _ = _run_stage("sample", params, data_dir)
        n_chunks = -(-args.n // args.chunk)

        def half_on_disk() -> bool:
            return len(_records(data_dir)) >= n_chunks // 2

        first_s, first_rss, killed = _run_stage("synthesize", params, data_dir, kill_when=half_on_disk)
        before = _records(data_dir)
        resume_s, resume_rss, _ = _run_stage("synthesize", params, data_dir)
        after = _records(data_dir)
        kept = sum(1 for name, mtime in before.items() if after.get(name) == mtime)
        report = inspect_store(data_dir / "images.zarr", deep=True)
        images = ZarrChunkStore.open(data_dir / "images.zarr", "images", require_complete=True)
        raw_bytes = images.info.n_samples * 256 * 256 * 3
        store_bytes = {name: _disk(data_dir / name) for name in ("latents.zarr", "images.zarr")}
        total_bytes = _disk(data_dir)
    rate = args.n / (sample_s + first_s + resume_s)
    gib = 2**30
    rows = [
        "| measure | value |",
        "|---|---:|",
        f"| bare G: DCGAN 64² forward, 1 torch thread (images/s) | {bare:,.0f} |",
        f"| run: sample + synthesize at 256², killed at 50 % and resumed (images/s) | {rate:,.0f} |",
        f"| **run / bare G** | **{rate / bare:.2f}** |",
        f"| wall: sample / synthesize until the kill / resume (s) | {sample_s:.0f} / {first_s:.0f} / {resume_s:.0f} |",
        f"| killed with SIGKILL mid-run | {'yes' if killed else 'no (finished first)'} |",
        f"| chunks on disk at the kill / recomputed on resume of those | {len(before)} / {len(before) - kept} |",
        f"| chunks after resume / checked sound (read + CRC32C) | {images.info.n_chunks} / {report.done} |",
        f"| peak RSS synthesize, N = {args.small_n:,} (MiB) | {small_rss / 2**20:,.0f} |",
        f"| peak RSS synthesize, N = {args.n:,}: first run / resume (MiB) | {first_rss / 2**20:,.0f} / "
        f"{resume_rss / 2**20:,.0f} |",
        f"| images raw (uint8) / images store on disk (GiB) | {raw_bytes / gib:.2f} / "
        f"{store_bytes['images.zarr'] / gib:.2f} |",
        f"| data dir on disk / latents + images stores (GiB) | {total_bytes / gib:.2f} / "
        f"{sum(store_bytes.values()) / gib:.2f} |",
    ]
    body = (
        f"{machine_summary()}\n\nN = {args.n:,}, chunk {args.chunk:,}, `dcgan-digiface` upscaled to 256² "
        f"(`store_resolution: 256`), CPU, batch 256; each stage one process (`--engine local`), one torch "
        f"thread, chunks written behind on a second thread. 1-min load average {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end. The data dir was deleted afterwards.\n\n" + "\n".join(rows)
    )
    print(body)
    if not args.no_write:
        append_section("100K samples at 256² end to end, kill and resume (bench/bench_100k.py)", body)


if __name__ == "__main__":
    main()
