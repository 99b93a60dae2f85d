"""Compiled synthesis vs the eager path on full-size networks (random weights, see bench/fullsize.py), on the CPU.

For each network, in a fresh process with an empty inductor cache (what a first run pays), one torch thread (as
the pipeline runs on the CPU), ``--batch`` images per forward:

(Rates are measured in turns, a batch of each path then the next, each from its fastest batch.)

1. eager: ``generator.synthesize`` with NVIDIA's reference formulation (the path whose outputs equal the official
   code's, bit for bit on the fixtures) — images/s;
2. compiler's form, eager: ``generator.for_compiler()`` without compiling (shared-weight modulated convolutions,
   polyphase / strided resampling), to show what the formulation alone gives;
3. compiled: what ``synthesize.compile: true`` runs (``ImageSynthesizer``'s ``compile_synthesize``): seconds of the
   first call (the compile), then images/s; and the largest |compiled − eager| pixel difference (images in [-1, 1]);
4. compile again in a second process on the warm on-disk cache (what every later run pays).

Break-even: the number of images after which compiling has paid for itself, compile_s / (1/eager − 1/compiled).

Usage::

    python -m bench.bench_compile [--networks stylegan2-f-256 stylegan3-t-256 ...] [--batch 4] [--images 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from bench.common import ROOT, append_section, machine_summary

DEFAULT_NETWORKS = ("dcgan-digiface", "stylegan2-f-256", "stylegan3-t-256", "pggan-1024")


def _generator(name: str):
    if name == "dcgan-digiface":
        from stages.plugins.generators import build_generator

        return build_generator(name)
    from bench.fullsize import build_fullsize

    return build_fullsize(name)


def _interleaved_rates(functions: dict[str, object], latents: torch.Tensor, batch: int) -> dict[str, float]:
    """Images/s of each function, measured in turns — one batch of each, then the next batch of each — and taken
    from its fastest batch: on a machine shared with other jobs, the load changes within seconds, and turns expose
    every function to the same load while the best batch is the one least disturbed."""
    best = {name: float("inf") for name in functions}
    for begin in range(0, latents.shape[0], batch):
        for name, function in functions.items():
            start = time.perf_counter()
            function(latents[begin : begin + batch])
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: batch / seconds for name, seconds in best.items()}


def measure_one(name: str, batch: int, images: int, compile_only: bool) -> dict:
    """The figures of one network, in this process (see the module docstring)."""
    from stages.plugins.generators.synthesis import compile_synthesize
    from stages.runtime.device import pinned_threads

    generator = _generator(name)
    latents_z = torch.randn(images, generator.z_dim, generator=torch.Generator().manual_seed(0))
    result: dict = {"network": name, "resolution": generator.resolution}
    with pinned_threads(), torch.inference_mode():
        compiled = compile_synthesize(generator)
        start = time.perf_counter()
        first = compiled(latents_z[:batch], "z")
        result["compile_s"] = time.perf_counter() - start
        if compile_only:
            return result
        reference = generator.synthesize(latents_z[:batch])
        result["max_abs_diff"] = float((first - reference).abs().max())
        result["reference_std"] = float(reference.std())
        functions = {"eager": generator.synthesize, "compiled": lambda z: compiled(z, "z")}
        if hasattr(generator, "for_compiler"):
            functions["compiler_form_eager"] = generator.for_compiler().synthesize
        result.update(_interleaved_rates(functions, latents_z, batch))
    return result


def _in_subprocess(name: str, args: argparse.Namespace, cache_dir: str, compile_only: bool) -> dict:
    command = [
        sys.executable,
        "-m",
        "bench.bench_compile",
        "--one",
        name,
        "--batch",
        str(args.batch),
        "--images",
        str(args.images),
    ] + (["--compile-only"] if compile_only else [])
    environment = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir}
    output = subprocess.run(command, cwd=ROOT, env=environment, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", default=list(DEFAULT_NETWORKS))
    parser.add_argument("--batch", type=int, default=4, help="images per forward pass")
    parser.add_argument("--images", type=int, default=8, help="images per measurement (in turns of a batch)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.batch, args.images, args.compile_only)))
        return
    load_start = os.getloadavg()[0]
    rows = [
        "| network | eager = NVIDIA's reference ops (img/s) | compiler's form, eager (img/s) | compiled "
        "(img/s) | compiled / eager | compile, cold cache (s) | compile, warm cache (s) | break-even "
        "(images, cold) | max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in args.networks:
        with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache_dir:
            cold = _in_subprocess(name, args, cache_dir, compile_only=False)
            warm = _in_subprocess(name, args, cache_dir, compile_only=True)
        eager, compiled = cold["eager"], cold["compiled"]
        gain_per_image = 1 / eager - 1 / compiled
        break_even = f"{cold['compile_s'] / gain_per_image:,.0f}" if gain_per_image > 0 else "never"
        form = cold.get("compiler_form_eager")
        rows.append(
            f"| {name} ({cold['resolution']}²) | {eager:.3g} | {form:.3g} | {compiled:.3g} | "
            f"**{compiled / eager:.2f}** | {cold['compile_s']:.0f} | {warm['compile_s']:.0f} | {break_even} | "
            f"{cold['max_abs_diff']:.1e} |"
            if form is not None
            else f"| {name} ({cold['resolution']}²) | {eager:.3g} | — | {compiled:.3g} | "
            f"**{compiled / eager:.2f}** | {cold['compile_s']:.0f} | {warm['compile_s']:.0f} | {break_even} | "
            f"{cold['max_abs_diff']:.1e} |"
        )
        print(rows[-1], flush=True)
    body = (
        f"{machine_summary()}\n\nCPU, fp32, one torch thread (the pipeline's setting), batch {args.batch}, "
        f"{args.images} images per path, measured in turns (a batch of each path, then the next) and taken "
        f"from each path's fastest batch (the machine is shared); random-weight full-size networks built by "
        f"bench/fullsize.py (the official configurations' layers and shapes; no NVIDIA code). Eager is the "
        f"reference formulation, whose outputs equal the official code's; compiled is `synthesize.compile: "
        f"true` (torch.compile, inductor, weights frozen, on the generator's `for_compiler()` form). Compile "
        f"times are the first call in a fresh process, with an empty and then a warm inductor cache. 1-min load "
        f"average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (2 cores shared with other "
        f"jobs inflate every time; the ratios are within one run).\n\n" + "\n".join(rows)
    )
    print(body)
    if not args.no_write:
        append_section("Compiled synthesis vs eager, full-size networks (bench/bench_compile.py)", body)


if __name__ == "__main__":
    main()
