"""Benchmark what chunk records and verification cost, per stage of the spine.

Runs sample → synthesize → label (``params.yaml``'s generator and labeler, in this process, no Prefect) on N
samples, timing each stage as a whole. Then, on the stores it wrote, times separately what integrity adds:

- **read**: reading every chunk of the stage's output with verification (record read + CRC32C of the bytes) and
  without (``verify=False``);
- **write**: writing the same chunks into a fresh store through the store (durable write: fsync + rename + record)
  and as plain Zarr / pyarrow writes (what the stores did before records: no fsync, no record);
- **startup check**: the check a stage runs before its chunks (``pending``: every record and file size, every
  record compared with its upstream; a file changed after its record is also read and checksummed).

The overhead of a stage is (verified read − plain read of its *input*) + (recorded write − plain write of its
output) + its startup check, as a share of the stage's time. Prints one markdown table and appends it, with the date
and machine, to BENCHMARKS.md.

Usage::

    python -m bench.bench_integrity [--n 4000] [--chunk-size 1000] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import yaml
import zarr

from bench.common import ROOT, append_section, machine_summary
from latentatlas.params import load_params
from latentatlas.stores import ArraySpec, ChunkedStore, ParquetChunkStore, StoreInfo, ZarrChunkStore, open_store
from stages.label import LabelStage
from stages.plugins.methods import method_params_model
from stages.runtime.chunked import run_stage
from stages.sample import SampleStage
from stages.synthesize import SynthesizeStage

STAGES = (
    ("sample", SampleStage, None, "latents.zarr"),
    ("synthesize", SynthesizeStage, "latents.zarr", "images.zarr"),
    ("label", LabelStage, "images.zarr", "labels"),
)


def _seconds(action: Callable[[], object], repeats: int = 3) -> float:
    """Best of ``repeats`` wall times (the page cache is warm after the first: we time the CPU work)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def _read_all(store: ChunkedStore) -> None:
    for index in range(store.info.n_chunks):
        if isinstance(store, ParquetChunkStore):
            store.read_chunk(index)
        else:
            for name in store.arrays:
                store.read_chunk(name, index)


def _write_costs(store: ChunkedStore, scratch: Path) -> tuple[float, float]:
    """(recorded, plain) seconds to write every chunk of ``store`` again into a fresh store in ``scratch``."""
    info = StoreInfo(
        store.info.kind, {"bench": True}, store.info.n_samples, store.info.chunk_size, dict(store.info.details)
    )
    if isinstance(store, ParquetChunkStore):
        tables = [store.read_chunk(index) for index in range(store.info.n_chunks)]

        def recorded() -> None:
            shutil.rmtree(scratch / "labels", ignore_errors=True)
            target = ParquetChunkStore.prepare(scratch / "labels", info)
            for index, table in enumerate(tables):
                target.write_chunk(index, table, upstream={"images.zarr": {"fingerprint": "x", "files": {}}})

        def plain() -> None:
            shutil.rmtree(scratch / "plain", ignore_errors=True)
            (scratch / "plain").mkdir()
            for index, table in enumerate(tables):
                staging = scratch / "plain" / f".part-{index:05d}.tmp"
                pq.write_table(table, staging, compression="zstd", use_dictionary=False)
                os.replace(staging, scratch / "plain" / f"part-{index:05d}.parquet")

        return _seconds(recorded), _seconds(plain)
    arrays = {
        name: ArraySpec(tuple(array.shape[1:]), str(array.dtype), tuple(array.metadata.dimension_names))
        for name, array in store.arrays.items()
    }
    chunks = [{name: store.read_chunk(name, index) for name in store.arrays} for index in range(store.info.n_chunks)]

    def recorded_zarr() -> None:
        shutil.rmtree(scratch / "store.zarr", ignore_errors=True)
        target = ZarrChunkStore.prepare(scratch / "store.zarr", info, arrays=arrays)
        for index, values in enumerate(chunks):
            target.write_chunk(index, values, upstream={"latents.zarr": {"fingerprint": "x", "files": {}}})

    def plain_zarr() -> None:
        shutil.rmtree(scratch / "plain.zarr", ignore_errors=True)
        group = zarr.open_group(str(scratch / "plain.zarr"), mode="w")
        created = {
            name: group.create_array(
                name,
                shape=(info.n_samples, *spec.tail_shape),
                chunks=(info.chunk_size, *spec.tail_shape),
                dtype=spec.dtype,
                fill_value=0,
                config={"write_empty_chunks": True},
            )
            for name, spec in arrays.items()
        }
        for index, values in enumerate(chunks):
            rows = info.chunk_slice(index)
            for name, value in values.items():
                created[name][rows] = value

    return _seconds(recorded_zarr), _seconds(plain_zarr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["sample"].update(n_samples=args.n, chunk_size=args.chunk_size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-integrity-") as tmp:
        params_path = Path(tmp) / "params.yaml"
        params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        params = load_params(params_path, method_models=method_params_model)
        data_dir, scratch = Path(tmp) / "data", Path(tmp) / "scratch"
        scratch.mkdir()
        load_start = os.getloadavg()[0]
        for name, stage_cls, input_name, output_name in STAGES:
            start = time.perf_counter()
            run_stage(stage_cls(params, data_dir))
            stage_s = time.perf_counter() - start
            output = open_store(data_dir / output_name)
            read_in = read_in_plain = 0.0
            if input_name is not None:
                read_in = _seconds(lambda name=input_name: _read_all(open_store(data_dir / name)))
                read_in_plain = _seconds(lambda name=input_name: _read_all(open_store(data_dir / name, verify=False)))
            write_recorded, write_plain = _write_costs(output, scratch)
            with stage_cls(params, data_dir) as stage:
                check_s = _seconds(lambda: stage.pending)
            overhead = max(read_in - read_in_plain, 0.0) + max(write_recorded - write_plain, 0.0) + check_s
            size_mib = sum(p.stat().st_size for p in (data_dir / output_name).rglob("*") if p.is_file()) / 2**20
            rows.append(
                (
                    name,
                    stage_s,
                    size_mib,
                    read_in_plain,
                    read_in,
                    write_plain,
                    write_recorded,
                    check_s,
                    100 * overhead / stage_s,
                )
            )
        load_end = os.getloadavg()[0]

    header = (
        "| stage | stage (s) | output (MiB) | read input plain (s) | read input verified (s) | write plain (s) "
        "| write recorded (s) | startup check (s) | overhead |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [
        f"| {name} | {stage_s:.2f} | {size:.1f} | {rp:.3f} | {rv:.3f} | {wp:.3f} | {wr:.3f} | {check:.3f} | "
        f"{share:.1f} % |"
        for name, stage_s, size, rp, rv, wp, wr, check, share in rows
    ]
    table = "\n".join([header, *lines])
    body = (
        f"{machine_summary()}\n\nN = {args.n}, chunk size {args.chunk_size}, generator "
        f"`{params.generator.name}`, labeler `{params.label.labeler}`, local disk, run in-process without "
        f"Prefect. Reads and writes: best of 3 (warm page cache). Overhead = (verified − plain read of the "
        f"input) + (recorded − plain write of the output) + the startup check, as a share of the stage's time. "
        f"1-min load average {load_start:.1f} at the start, {load_end:.1f} at the end.\n\n{table}\n"
    )
    print(body)
    if not args.no_write:
        append_section("Integrity: chunk records and verification (bench/bench_integrity.py)", body)


if __name__ == "__main__":
    main()
