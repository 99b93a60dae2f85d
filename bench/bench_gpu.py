"""One command for the first lent GPU: is latentatlas at least as fast as NVIDIA's code with its CUDA kernels?

For the embedded DCGAN (64²), StyleGAN2 config-f 1024² and StyleGAN3-T 256² (random weights at full size, built by
bench/fullsize.py: the official networks' compute), in fp16 and fp32, it measures images/s of

- **bare G, eager**: ``generator.synthesize`` in batches, nothing else (NVIDIA's reference formulation: its
  outputs equal the official code's; without the official fused CUDA kernels);
- **bare G, compiled**: what ``synthesize.compile: true`` runs (torch.compile / inductor: Triton kernels on CUDA),
  with the seconds its first call took (the compile);
- **pipeline, eager / compiled**: the ``sample`` and ``synthesize`` stages in this process (latents drawn and
  stored, generator, resize to 256² and uint8 on the device, chunks compressed, checksummed and fsynced on a
  background thread while the device computes the next chunk);
- **labeled spine**: sample + synthesize + label with the default ``faces`` labeler, DCGAN, fp16.

fp16: StyleGAN2/3 run their 4 highest resolutions in fp16 (NVIDIA's ``num_fp16_res = 4``), the DCGAN under AMP;
fp32: no fp16 anywhere. Reference to compare with: the working assumption that NVIDIA's code makes ≈ 500 images/s
of StyleGAN2 1024² in fp16 on one H200-class GPU (replace it with a measured figure when there is one).

The whole run keeps to ``--budget-s`` (default 270 s, so that it ends within 5 minutes with start-up): rows that
would start after the budget is spent are reported as skipped. ``--device cpu --quick`` runs narrow 32² networks
and a handful of images: the smoke test of the script itself (seconds per row; its figures mean nothing).

Usage::

    python -m bench.bench_gpu                       # on a GPU machine: appends its table to BENCHMARKS.md
    python -m bench.bench_gpu --device cpu --quick --no-write
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.common import append_section, machine_summary

NVIDIA_SG2_1024_FP16 = 500.0  # images/s on one H200-class GPU: the working assumption (see the docstring)


@dataclass(frozen=True)
class Network:
    """One network to measure: its builder name, batch size and images per measurement (full / quick)."""

    label: str
    name: str  # "dcgan-digiface" or a bench/fullsize.py name
    quick_name: str
    batch: int
    images: int
    store_resolution: int | None


NETWORKS = (
    Network("StyleGAN2 config-f 1024²", "stylegan2-f-1024", "stylegan2-tiny-32", 16, 512, 256),
    Network("StyleGAN3-T 256²", "stylegan3-t-256", "stylegan3-t-tiny-32", 32, 512, None),
    Network("DCGAN 64² (embedded)", "dcgan-digiface", "dcgan-digiface", 256, 8192, None),
)


def _build(name: str, fp16: bool):
    if name == "dcgan-digiface":
        from stages.plugins.generators import build_generator

        return build_generator(name)
    from bench.fullsize import build_fullsize

    return build_fullsize(name, fp16=fp16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_rate(
    synthesize: Callable, latents: torch.Tensor, batch: int, device: torch.device, amp: bool
) -> tuple[float, float]:
    """(images/s, seconds of the first batch) of ``synthesize`` over ``latents`` in batches, on ``device``."""
    from stages.runtime.device import inference_context

    with inference_context(device, amp):
        start = time.perf_counter()
        synthesize(latents[:batch].to(device), "z")
        _sync(device)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        for begin in range(0, latents.shape[0], batch):
            synthesize(latents[begin : begin + batch].to(device), "z")
        _sync(device)
        return latents.shape[0] / (time.perf_counter() - start), first_s


def pipeline_rate(
    network: Network, name: str, fp16: bool, compiled: bool, device: str, images: int, labeled: bool = False
) -> float:
    """Images/s of sample + synthesize (+ label) in this process on a fresh data dir, the models built before; the
    first synthesize chunk (the warm-up, and the compile when compiled) is not timed: steady state."""
    from latentatlas.params import parse_params
    from stages.label import LabelStage
    from stages.runtime.chunked import run_stage
    from stages.sample import SampleStage
    from stages.synthesize import SynthesizeStage

    generator = _build(name, fp16)
    chunk = max(images // 4, network.batch)
    params = parse_params(
        {
            "generator": {"name": "dcgan-digiface"},
            "sample": {"n_samples": images, "chunk_size": chunk},
            "synthesize": {
                "batch_size": network.batch,
                "device": device,
                "amp": fp16,
                "compile": compiled,
                "store_resolution": network.store_resolution,
            },
            "label": {"batch_size": 256, "device": device, "contact_sheet_samples": 0},
        }
    )
    with tempfile.TemporaryDirectory(prefix="bench-gpu-", dir=os.environ.get("BENCH_TMP")) as folder:
        data_dir = Path(folder)
        start = time.perf_counter()
        run_stage(SampleStage(params, data_dir, generator=generator))
        sample_s = time.perf_counter() - start
        with SynthesizeStage(params, data_dir, generator=generator) as stage:
            pending = stage.pending
            stage.run_chunk(pending[0])
            stage.writer.drain() if stage.writer is not None else None
            _sync(torch.device(device))
            start = time.perf_counter()
            for index in pending[1:]:
                stage.run_chunk(index)
            stage.finish()
            _sync(torch.device(device))
            synthesize_s = time.perf_counter() - start
        label_s = 0.0
        if labeled:
            start = time.perf_counter()
            run_stage(LabelStage(params, data_dir))
            _sync(torch.device(device))
            label_s = time.perf_counter() - start
        timed_images = images - stage.chunk_length(pending[0])
        return 1 / (sample_s / images + synthesize_s / max(timed_images, 1) + label_s / images)


def run(device_spec: str, quick: bool, budget_s: float, compile_backend: str = "inductor") -> list[str]:
    """The table's rows (markdown), measuring until ``budget_s`` is spent."""
    from stages.plugins.generators.synthesis import check_compile_backend, compile_synthesize
    from stages.runtime.device import resolve_device

    device = resolve_device(device_spec)
    check_compile_backend(device, compile_backend)
    deadline = time.perf_counter() + budget_s
    rows = [
        "| network | precision | bare G eager (img/s) | bare G compiled (img/s) | compile (s) | "
        "pipeline eager (img/s) | pipeline compiled (img/s) | compiled / eager | pipeline / bare (compiled) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for network in NETWORKS:
        name = network.quick_name if quick else network.name
        images = 2 * min(network.batch, 4) if quick else network.images
        batch = min(network.batch, 4) if quick else network.batch
        for fp16 in (True, False):
            precision = "fp16" if fp16 else "fp32"
            if device.type != "cuda" and fp16 and not quick:
                continue  # fp16 runs only on CUDA
            if time.perf_counter() > deadline:
                rows.append(f"| {network.label} | {precision} | skipped (time budget) | | | | | | |")
                continue
            generator = _build(name, fp16).to(device)
            latents = torch.randn(images, generator.z_dim, generator=torch.Generator().manual_seed(0))
            amp = fp16 and device.type == "cuda"
            eager, _ = bare_rate(generator.synthesize, latents, batch, device, amp)
            if compile_backend == "inductor":
                compiled_fn = compile_synthesize(generator)
            else:
                compiled_fn = torch.compile(generator.synthesize, backend=compile_backend, dynamic=False)
            compiled, compile_s = bare_rate(compiled_fn, latents, batch, device, amp)
            sized = Network(network.label, name, name, batch, images, network.store_resolution)
            piped = pipeline_rate(sized, name, fp16, False, device_spec, images)
            piped_compiled = (
                pipeline_rate(sized, name, fp16, True, device_spec, images)
                if compile_backend == "inductor" and time.perf_counter() < deadline
                else float("nan")
            )
            rows.append(
                f"| {network.label}{' (quick: ' + name + ')' if quick else ''} | {precision} | {eager:,.1f} | "
                f"{compiled:,.1f} | {compile_s:.0f} | {piped:,.1f} | {piped_compiled:,.1f} | "
                f"{compiled / eager:.2f} | {piped_compiled / compiled:.2f} |"
            )
            print(rows[-1], flush=True)
    if time.perf_counter() < deadline:
        network = NETWORKS[-1]
        images = 8 if quick else network.images
        labeled = pipeline_rate(
            Network(network.label, "dcgan-digiface", "dcgan-digiface", min(network.batch, images), images, None),
            "dcgan-digiface",
            True,
            False,
            device_spec,
            images,
            labeled=True,
        )
        rows.append(
            f"| labeled spine: DCGAN 64² + `faces` labeler (sample + synthesize + label) | fp16 | | | | "
            f"{labeled:,.1f} | | | |"
        )
    else:
        rows.append("| labeled spine | | skipped (time budget) | | | | | | |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cuda | cuda:<k> | cpu")
    parser.add_argument("--quick", action="store_true", help="narrow 32² networks, a few images: a smoke test")
    parser.add_argument("--budget-s", type=float, default=270.0, help="stop starting new rows after this")
    parser.add_argument("--compile-backend", default="inductor", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = run(args.device, args.quick, args.budget_s, args.compile_backend)
    body = (
        f"{machine_summary()}\n\nRandom-weight full-size networks (bench/fullsize.py), fp16 = NVIDIA's "
        f"num_fp16_res 4 (StyleGAN) / AMP (DCGAN); pipeline = sample + synthesize stages in-process, "
        f"StyleGAN2 1024² stored at 256². Reference: NVIDIA's code at ≈ {NVIDIA_SG2_1024_FP16:.0f} images/s "
        f"for StyleGAN2 1024² fp16 on one H200-class GPU (working assumption). Whole run "
        f"{time.perf_counter() - start:.0f} s.\n\n" + "\n".join(rows)
    )
    print(body)
    if not args.no_write and not args.quick:
        append_section("GPU: bare G vs compiled vs pipeline (bench/bench_gpu.py)", body)


if __name__ == "__main__":
    main()
