"""Benchmark GAN inversion on the embedded 64×64 DCGAN: generated images (true latent known) and real photos.

1. Held-out generated faces (z from ``torch.Generator().manual_seed(12345)``, never in the pipeline's stores, which
   draw from numpy's PCG64): reconstruction LPIPS (VGG, the loss's trunk; AlexNet, an independent check), PSNR and
   the relative latent error ‖ẑ − z‖ / ‖z‖, with the encoder's start and with a random start, at equal steps.
2. Real face photos that ship in installed packages — matplotlib's ``grace_hopper.jpg`` (the only face photo
   among the installed packages' data files), plus its mirror image and a 15°-rotated grayscale copy (what the
   alignment must undo) — detected and aligned with MTCNN, then inverted from the encoder's start: LPIPS, PSNR and
   seconds per image (alignment and inversion apart).

Prints the tables and appends them, with the date and machine, to BENCHMARKS.md.

Usage::

    python -m bench.bench_invert --encoder models/encoder/encoder.pt [--n 6] [--steps 50,100,200] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import append_section, machine_summary  # noqa: E402
from stages.latent.perceptual import build_lpips  # noqa: E402
from stages.photo.align import FaceDetector, load_photo, prepare_photo  # noqa: E402
from stages.photo.encoder import load_encoder  # noqa: E402
from stages.photo.invert import Inverter, default_alignment, inversion_settings, lpips_input  # noqa: E402
from stages.plugins.generators import build_generator  # noqa: E402
from stages.plugins.generators.synthesis import uint8_to_images  # noqa: E402
from stages.runtime.device import CPU_THREADS  # noqa: E402


def grace_hopper_variants() -> list[tuple[str, np.ndarray]]:
    """matplotlib's grace_hopper.jpg, its mirror image and a 15°-rotated grayscale copy, as (name, RGB uint8)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    photo = Image.fromarray(load_photo(path))
    turned = photo.rotate(15, resample=Image.BICUBIC, expand=True, fillcolor=(128, 128, 128)).convert("L")
    return [
        ("grace_hopper.jpg", np.asarray(photo)),
        ("grace_hopper, mirrored", np.asarray(ImageOps.mirror(photo))),
        ("grace_hopper, 15° grayscale", np.asarray(turned.convert("RGB"))),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", type=Path, default=ROOT / "models" / "encoder" / "encoder.pt")
    parser.add_argument("--n", type=int, default=6, help="held-out generated images")
    parser.add_argument("--steps", default="50,100,200")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(CPU_THREADS)
    load_start = os.getloadavg()[0]
    generator = build_generator("dcgan-digiface")
    encoder = load_encoder(args.encoder, generator.fingerprint)
    alex = build_lpips("alex")
    true = torch.randn(args.n, generator.z_dim, generator=torch.Generator().manual_seed(12345))
    with torch.no_grad():
        targets = generator.synthesize(true).clamp(-1, 1)
    step_counts = [int(s) for s in args.steps.split(",")]
    rows = [
        "| start | steps | LPIPS VGG | LPIPS Alex | PSNR (dB) | latent error | s / image |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for init in ("encoder", "random"):
        for steps in [0, *step_counts]:
            settings = inversion_settings(init=init, steps=steps, device="cpu", batch_size=args.n)
            inverter = Inverter(generator, settings)
            result = inverter.invert(targets, inverter.initial(targets, encoder, list(range(args.n))))
            with torch.no_grad():
                alex_values = alex(lpips_input(result.images, 256), lpips_input(targets, 256))
            error = ((result.latents - true).norm(dim=1) / true.norm(dim=1)).mean()
            rows.append(
                f"| {init} | {steps} | {result.lpips.mean():.3f} | {alex_values.mean():.3f} | "
                f"{result.psnr.mean():.1f} | {error:.3f} | {result.seconds / args.n:.2f} |"
            )
            print(rows[-1], flush=True)
    generated = "\n".join(rows)

    detector = FaceDetector("cpu")
    alignment = default_alignment("dcgan-digiface")
    settings = inversion_settings(init="encoder", steps=100, device="cpu", batch_size=1)
    inverter = Inverter(generator, settings)
    photo_rows = [
        "| photo | size | face prob. | align (s) | invert (s) | LPIPS VGG | LPIPS Alex | PSNR (dB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, photo in grace_hopper_variants():
        started = time.perf_counter()
        crop = prepare_photo(photo, generator.resolution, alignment, detector, name)
        align_seconds = time.perf_counter() - started
        target = uint8_to_images(crop.pixels[None])
        result = inverter.invert(target, inverter.initial(target, encoder, [0]))
        with torch.no_grad():
            alex_value = float(alex(lpips_input(result.images, 256), lpips_input(target, 256))[0])
        photo_rows.append(
            f"| {name} | {photo.shape[1]}×{photo.shape[0]} | {crop.face.probability:.3f} | "
            f"{align_seconds:.2f} | {result.seconds:.1f} | {float(result.lpips[0]):.3f} | "
            f"{alex_value:.3f} | {float(result.psnr[0]):.1f} |"
        )
        print(photo_rows[-1], flush=True)
    photos = "\n".join(photo_rows)
    load_end = os.getloadavg()[0]
    meta = encoder.meta
    body = (
        f"{machine_summary()}\n\nGenerator `dcgan-digiface` (64×64, z ∈ R^100), inversion in z: Adam, peak step "
        f"{settings.learning_rate} (in σ of z), LPIPS-VGG + pixel MSE + {settings.prior_weight} × shell prior, "
        f"batch {args.n}. Encoder: `{args.encoder}` (input {meta['settings']['input_size']} px, width "
        f"{meta['settings']['width']}, {meta['settings']['epochs']} epochs on the default run's 19,500 training "
        f"pairs; validation R² of z {meta['validation']['z']['r2']:.3f}, cosine "
        f"{meta['validation']['z']['cosine']:.3f}). Random start: z ~ N(0, I), seeded.\n\n"
        f"**Held-out generated faces** ({args.n}, true z known; latent error = mean ‖ẑ − z‖ / ‖z‖; steps 0 = the "
        f"start itself):\n\n{generated}\n\n**Real photos** (MTCNN detection + similarity alignment onto the "
        f"DCGAN's canonical face, then 100 steps from the encoder's start, one photo at a time):\n\n{photos}\n\n"
        f"1-min load average {load_start:.1f} at the start, {load_end:.1f} at the end.\n"
    )
    print(body)
    if not args.no_write:
        append_section("GAN inversion: encoder start vs random start, real photos (`bench/bench_invert.py`)", body)


if __name__ == "__main__":
    main()
