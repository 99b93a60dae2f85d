"""Shared by the benchmarks: the machine they ran on, and appending a section to BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"


def machine_summary() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB RAM, "
        f"{accelerator}; torch {torch.__version__}, {torch.get_num_threads()} intra-op threads."
    )


def append_section(title: str, body: str) -> None:
    """Append ``## title (date)`` and ``body`` to BENCHMARKS.md (created with a header if absent)."""
    if not BENCHMARKS.exists():
        BENCHMARKS.write_text(
            "# Benchmarks\n\nEach section is one benchmark run, appended by the script named in "
            "its title; ratios are measured within that one run.\n"
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with BENCHMARKS.open("a") as handle:
        handle.write(f"\n## {title} — {stamp}\n\n{body}\n")
