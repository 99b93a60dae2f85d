"""Benchmark InterFaceGAN's SVM solvers: our LinearSVC (liblinear) against the official SVC(kernel='linear').

Data (the planted toy, at the paper's scale): N latents z ~ N(0, I_D), D = 100, one planted unit direction n and a
binary-like score ``sigmoid(2.5 nᵀz + σ ε)`` (σ = 0.3: clean extremes; σ = 3: overlapping classes, like a real
classifier in a GAN's Z space). InterFaceGAN takes the top / bottom 2% (10K per side for N = 500K), trains on 70% and
validates on 30%. Both solvers run through the same :func:`stages.plugins.methods.interfacegan.fit_attribute`
(same selection, split and accuracy code), so only the solver differs.

Prints one markdown table and appends it, with the date and machine, to ``BENCHMARKS.md`` at the repository root.

Usage::

    python bench/bench_svm.py [--n 500000] [--dim 100] [--repeats 1] [--logit-noise 0.3,3] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stages.plugins.methods.interfacegan import InterFaceGANParams, fit_attribute, make_classifier, select_samples  # noqa: E402
from tests.toy import SHARPNESS, planted_directions  # noqa: E402


def make_data(n: int, dim: int, logit_noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    direction = planted_directions(dim, seed)["smile"]
    latents = rng.standard_normal((n, dim), dtype=np.float32)
    logits = SHARPNESS * (latents @ direction) + logit_noise * rng.standard_normal(n)
    return latents, 1.0 / (1.0 + np.exp(-logits)), direction


def _timed(function, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def run(n: int, dim: int, noises: list[float], repeats: int) -> tuple[str, float]:
    rows = [
        "| logit noise | solver | solver fit (s) | fit_attribute (s) | cos(·, SVC) | cos(·, planted) | val acc | "
        "remaining acc |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes, worst_cos = [], 1.0
    for noise in noises:
        latents, scores, planted = make_data(n, dim, noise)
        results = {}
        for solver, loss in (("svc", "hinge"), ("linear_svc_hinge", "hinge"), ("linear_svc", "squared_hinge")):
            params = InterFaceGANParams(solver=solver.removesuffix("_hinge"), loss=loss)
            selection = select_samples(scores, params, "smile")
            train_x = latents[selection.train_idx].astype(np.float64)
            solver_time, _ = _timed(
                lambda p=params, x=train_x, s=selection: make_classifier(p).fit(x, s.train_y), repeats
            )
            total_time, (vector, stats) = _timed(
                lambda p=params, x=latents, y=scores: fit_attribute(x, y, p, "smile"), repeats
            )
            results[solver] = {
                "vector": vector.astype(np.float64),
                "solver_time": solver_time,
                "total_time": total_time,
                **stats,
            }
        ours, reference = results["linear_svc"], results["svc"]
        cos_pair = float(ours["vector"] @ reference["vector"])
        worst_cos = min(worst_cos, cos_pair, float(results["linear_svc_hinge"]["vector"] @ reference["vector"]))
        for label, result in (
            ("SVC(kernel='linear') (official code)", reference),
            ("LinearSVC hinge, dual (loss='hinge')", results["linear_svc_hinge"]),
            ("LinearSVC squared hinge, primal (default)", ours),
        ):
            rows.append(
                f"| {noise:g} | {label} | {result['solver_time']:.2f} | {result['total_time']:.2f} | "
                f"{float(result['vector'] @ reference['vector']):.4f} | "
                f"{float(result['vector'] @ planted):.4f} | {result['val_accuracy']:.4f} | "
                f"{result['remaining_accuracy']:.4f} |"
            )
        notes.append(
            f"logit noise {noise:g}: cos(default, SVC) = {cos_pair:.4f}, solver speed ratio SVC / default "
            f"= {reference['solver_time'] / ours['solver_time']:.0f}×, SVC / hinge-dual = "
            f"{reference['solver_time'] / results['linear_svc_hinge']['solver_time']:.1f}×"
        )
    summary = (
        f"N = {n:,} latents, D = {dim}, {ours['n_per_side']:,} per side ({ours['n_train']:,} train, "
        f"{ours['n_val']:,} val, {ours['n_remaining']:,} remaining); scores sigmoid({SHARPNESS:g}·nᵀz + "
        f"noise·ε); times are the best of {repeats}. " + "; ".join(notes) + "."
    )
    return "\n".join(rows) + "\n\n" + summary, worst_cos


def append_benchmarks(text: str, path: Path) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, 1-min load average {os.getloadavg()[0]:.1f} at the end"
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = f"\n## InterFaceGAN SVM solver ({stamp}, {machine})\n\n{text}\n"
    if not path.exists():
        path.write_text("# Benchmarks\n")
    with path.open("a") as handle:
        handle.write(section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500_000, help="latents sampled (10K per side at 500K)")
    parser.add_argument("--dim", type=int, default=100, help="latent dimension")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats per solver (best is kept)")
    parser.add_argument(
        "--logit-noise",
        type=str,
        default="0.3,3",
        help="comma-separated logit noise levels: 0.3 = clean extremes, 3 = overlapping classes",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    noises = [float(value) for value in args.logit_noise.split(",")]
    text, worst_cos = run(args.n, args.dim, noises, args.repeats)
    print(text)
    if not args.no_write:
        append_benchmarks(text, ROOT / "BENCHMARKS.md")
    if worst_cos < 0.99:
        sys.exit(f"cosine(ours, SVC) = {worst_cos:.4f} < 0.99")


if __name__ == "__main__":
    main()
