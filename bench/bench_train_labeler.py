"""Benchmark ``latentatlas train-labeler``: does a ResNet learn planted attributes, how well, and how fast per epoch.

Data: N synthetic side × side PNGs (grey noise, values 64–191) with three planted binary attributes, each present with
probability 1/2: a red square (side/5), a blue square (side/5), a green horizontal bar (side/2 × side/10), at random
places (they may overlap). A CSV ``file,red_square,blue_square,green_bar``; ``val_fraction`` held out (seeded).
Training: ``stages.plugins.labelers.training`` with a torchvision ResNet-18 from random init, one-cycle AdamW,
progressive resizing, on the CPU. Then the written checkpoint is loaded as the ``torch-classifier`` labeler and its
throughput measured on side × side images.

Prints one markdown table and appends it, with the date and machine, to BENCHMARKS.md.

Usage::

    python bench/bench_train_labeler.py [--n 3000] [--side 64] [--epochs 6] [--sizes 32,48,64] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import append_section, machine_summary  # noqa: E402
from stages.plugins.labelers import build_labeler  # noqa: E402
from stages.plugins.labelers.training import parse_train_params, train_labeler  # noqa: E402

ATTRIBUTES = ("red_square", "blue_square", "green_bar")


def write_planted(folder: Path, n: int, side: int, seed: int = 0) -> Path:
    """The images and the CSV described in the module docstring; returns the CSV path."""
    from PIL import Image

    images = folder / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lines = ["file," + ",".join(ATTRIBUTES)]
    square, bar_height, bar_width = side // 5, max(side // 10, 1), side // 2
    for index in range(n):
        pixels = (rng.integers(0, 256, size=(side, side, 3)) // 2 + 64).astype(np.uint8)
        present = rng.random(3) < 0.5
        if present[0]:
            top, left = rng.integers(0, side - square, size=2)
            pixels[top : top + square, left : left + square] = (230, 20, 20)
        if present[1]:
            top, left = rng.integers(0, side - square, size=2)
            pixels[top : top + square, left : left + square] = (20, 20, 230)
        if present[2]:
            top, left = rng.integers(0, side - bar_height), rng.integers(0, side - bar_width)
            pixels[top : top + bar_height, left : left + bar_width] = (20, 210, 20)
        name = f"{index:06d}.png"
        Image.fromarray(pixels).save(images / name)
        lines.append(name + "," + ",".join(str(int(flag)) for flag in present))
    (folder / "attrs.csv").write_text("\n".join(lines) + "\n")
    return folder / "attrs.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--sizes", default="32,48,64", help="image side by epoch, the last repeated")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-lr", type=float, default=0.003)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(size) for size in args.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-train-labeler-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        write_planted(folder, args.n, args.side)
        data_seconds = time.perf_counter() - start
        params = parse_train_params(
            {
                "images": str(folder / "images"),
                "labels": str(folder / "attrs.csv"),
                "val_fraction": 0.2,
                "architecture": "resnet18",
                "epochs": args.epochs,
                "image_sizes": sizes,
                "batch_size": args.batch_size,
                "max_lr": args.max_lr,
                "beta": args.beta,
                "device": "cpu",
                "out": str(folder / "model"),
                "work_dir": str(folder / "work"),
            }
        )
        load_start = os.getloadavg()[0]
        epochs = []

        def report(result) -> None:
            epochs.append(result)
            print(
                f"epoch {result.epoch + 1}: size {result.image_size}, {result.seconds:.1f} s, "
                f"val accuracy {result.val_accuracy_mean:.4f}",
                flush=True,
            )

        start = time.perf_counter()
        metrics = train_labeler(params, on_epoch=report)
        train_seconds = time.perf_counter() - start
        labeler = build_labeler("torch-classifier", checkpoint=str(folder / "model" / "model.pt"))
        batch = torch.rand(512, 3, args.side, args.side, generator=torch.Generator().manual_seed(0)) * 2 - 1
        labeler.score(batch[:64])  # warm-up
        start = time.perf_counter()
        labeler.score(batch)
        labeler_rate = len(batch) / (time.perf_counter() - start)
        load_end = os.getloadavg()[0]

    rows = [
        "| epoch | image side | train loss | val loss | val accuracy (mean) | val F-beta (mean) | seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows += [
        f"| {r.epoch + 1} | {r.image_size} | {r.train_loss:.4f} | {r.val_loss:.4f} | "
        f"{r.val_accuracy_mean:.4f} | {r.val_fbeta_mean:.4f} | {r.seconds:.1f} |"
        for r in epochs
    ]
    per_attribute = ["| attribute | val accuracy | val F-beta | precision | recall |", "|---|---:|---:|---:|---:|"]
    per_attribute += [
        f"| {name} | {metrics['val']['accuracy'][name]:.4f} | {metrics['val']['fbeta'][name]:.4f} | "
        f"{metrics['val']['precision'][name]:.4f} | {metrics['val']['recall'][name]:.4f} |"
        for name in metrics["attributes"]
    ]
    train_images = metrics["n_train"]
    epoch_seconds = [r.seconds for r in epochs]
    body = "\n".join(
        [
            machine_summary(),
            "",
            f"Data: {args.n} synthetic {args.side}×{args.side} PNGs with three planted attributes (red square, blue "
            f"square, green bar; each present with probability 1/2), {train_images} train / {metrics['n_val']} val. "
            f"ResNet-18 (torchvision, weights=None, random init), AdamW + OneCycleLR (max lr {args.max_lr}), batch "
            f"{args.batch_size}, image side by epoch {sizes} (last repeated), threshold 0.5, beta {args.beta:g}, CPU. "
            f"Writing the data took {data_seconds:.0f} s.",
            "",
            *rows,
            "",
            *per_attribute,
            "",
            f"Training wall time {train_seconds:.0f} s for {args.epochs} epochs ({min(epoch_seconds):.1f}–"
            f"{max(epoch_seconds):.1f} s per epoch, {train_images / np.mean(epoch_seconds):.0f} training images/s "
            f"averaged over the sizes, validation included). The checkpoint as a `torch-classifier` labeler scores "
            f"{labeler_rate:.0f} images/s ({args.side}×{args.side}, resized to {sizes[-1]}). 1-min load average "
            f"{load_start:.1f} at the start, {load_end:.1f} at the end.",
        ]
    )
    print(body)
    if not args.no_write:
        append_section("Attribute classifier training (`bench/bench_train_labeler.py`)", body)


if __name__ == "__main__":
    main()
