"""Benchmark ``latentatlas explore`` in a real browser: slider input → new image painted.

Issue 21's target: p95 ≤ 100 ms for the embedded DCGAN on 2 CPU cores; the StyleGAN2-ADA fixture (32×32, W+) is
reported beside it. For each generator a tiny finished run is built (samples, the ``faces`` labelers, InterFaceGAN
fitted on ``happy`` and ``male``: in z for the DCGAN, in w for StyleGAN2), ``latentatlas explore`` is started as its
own process, as a user starts it, and headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by
Selenium) opens the page:

1. **steps**: ``--moves`` single slider moves (an arrow key on the ``happy`` slider), each waited for until painted;
2. **drag**: the slider's thumb dragged back and forth with the mouse, a pointer move every 16 ms (60 Hz), for
   ``--moves`` moves: inputs come faster than renders, so requests coalesce (the newest position wins).

Latency is measured by the page itself (``window.exploreStats.latencies``): from the input event's timestamp to
after the frame that shows the new image is painted (its ``requestAnimationFrame`` callback, then a posted
message), for every painted frame. For comparison, the server's round trip for one render over HTTP (generator +
PNG + request, no browser) is timed from this process. The machine's load average is recorded: other processes on
the same cores inflate every number.

Prints one table and appends it, with the date and machine, to BENCHMARKS.md.

Usage::

    python -m bench.bench_explore [--moves 120] [--generators dcgan,stylegan2] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import append_section, machine_summary  # noqa: E402

STYLEGAN2_FIXTURE = ROOT.parent / "shared" / "fixtures" / "generators" / "stylegan2-ada" / "network-snapshot-000000.pkl"
TARGET_P95_MS = 100.0


def build_run(root: Path, generator: dict, n_samples: int = 400) -> Path:
    """A finished tiny run under ``root``: stores, InterFaceGAN directions (happy, male) and its params.yaml."""
    import torch
    import yaml

    from latentatlas.layout import OutputLayout
    from latentatlas.params import parse_params
    from stages.fit import run_fit
    from stages.label import LabelStage
    from stages.plugins.labelers import labeler_for
    from stages.plugins.methods import method_params_model
    from stages.runtime.chunked import run_stage
    from stages.sample import SampleStage
    from stages.synthesize import SynthesizeStage

    torch.set_num_threads(1)
    space = "w" if generator["name"] != "dcgan-digiface" else "z"
    raw = {
        "generator": generator,
        "sample": {"n_samples": n_samples, "chunk_size": n_samples // 2, "seed": 7},
        "synthesize": {"batch_size": 64, "device": "cpu"},
        "label": {"labeler": "faces", "batch_size": 64, "device": "cpu", "contact_sheet_samples": 8},
        "fit": {
            "methods": ["interfacegan"],
            "attributes": ["happy", "male"],
            "device": "cpu",
            "params": {"interfacegan": {"ratio": 0.25, "space": space}},
        },
    }
    params = parse_params(raw, method_models=method_params_model)
    labeler = labeler_for(params.label)
    run_stage(SampleStage(params, root / "data"))
    run_stage(SynthesizeStage(params, root / "data"))
    run_stage(LabelStage(params, root / "data", labeler=labeler))
    run_fit(params, root / "data", "interfacegan", layout=OutputLayout(root), labeler=labeler)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return root / "params.yaml"


def start_server(root: Path, params_path: Path) -> tuple[subprocess.Popen, str, str]:
    """``latentatlas explore`` on a free port, as its own process; returns it, the URL and the notes it printed."""
    command = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "explore",
        "--params",
        str(params_path),
        "--data-dir",
        str(root / "data"),
        "--out-root",
        str(root),
        "--port",
        "0",
        "--device",
        "cpu",
    ]
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.time() + 300
    lines = []
    while time.time() < deadline:
        line = server.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"open (http://\S+)", line)
        if match:
            notes = [line.strip().removeprefix("note: ") for line in lines if line.startswith("note:")]
            return server, match.group(1), "; ".join(notes)
    server.kill()
    raise SystemExit("latentatlas explore did not start:\n" + "".join(lines))


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise SystemExit(
            "the explorer benchmark needs Debian's chromium and chromium-driver "
            "(apt-get install -y chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


def _wait(driver, script: str, seconds: float = 120.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.01)
    raise RuntimeError(f"timed out: {script}")


SETTLED = """
    const query = queryOf(state);
    return document.getElementById('view').dataset.key === query
        && document.getElementById('scores').dataset.key === query;"""
RESET = (
    "window.exploreStats.latencies = []; window.exploreStats.server = []; window.exploreStats.renders = 0; "
    "window.exploreStats.inputs = 0;"
)


def measure(driver, url: str, slider_id: str, moves: int) -> dict[str, dict]:
    """Both phases on one page: {phase: {"latencies": [...], "inputs": n, "renders": n}}."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.get(url)
    _wait(driver, "return document.body.dataset.ready === 'yes'")
    _wait(driver, SETTLED)
    slider = driver.find_element("css selector", f'input[data-slider="{slider_id}"]')
    results = {}
    # 1. single moves, each painted before the next
    driver.execute_script(RESET)
    key = Keys.ARROW_RIGHT
    for move in range(moves):
        if move % 40 == 0 and move:
            key = Keys.ARROW_LEFT if key == Keys.ARROW_RIGHT else Keys.ARROW_RIGHT
        slider.send_keys(key)
        _wait(driver, f"return window.exploreStats.renders >= {move + 1}")
    _wait(driver, SETTLED)
    results["steps"] = driver.execute_script("return window.exploreStats")
    # 2. a drag at 60 Hz: back and forth across the thumb's track
    width = slider.size["width"]
    driver.execute_script(RESET)
    actions = ActionChains(driver, duration=16)
    actions.move_to_element_with_offset(slider, -width // 2 + 4, 0).click_and_hold()
    position, step = -width // 2 + 4, 2
    for _ in range(moves):
        if not -width // 2 + 4 <= position + step <= width // 2 - 4:
            step = -step
        position += step
        actions.move_by_offset(step, 0)
    actions.release().perform()
    _wait(driver, SETTLED)
    results["drag"] = driver.execute_script("return window.exploreStats")
    return results


def _load() -> str:
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moves", type=int, default=120, help="slider moves per phase (at least 100 for p95)")
    parser.add_argument("--generators", default="dcgan,stylegan2")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    generators = {"dcgan": ("embedded DCGAN, 64×64 (z)", {"name": "dcgan-digiface", "kwargs": {}})}
    if STYLEGAN2_FIXTURE.is_file():
        generators["stylegan2"] = (
            "StyleGAN2-ADA fixture, 32×32 (w)",
            {"name": "stylegan2", "kwargs": {"path": str(STYLEGAN2_FIXTURE)}},
        )
    rows, notes = [], []
    driver = browser()
    try:
        for name in args.generators.split(","):
            if name not in generators:
                notes.append(f"{name}: skipped (fixture not found at {STYLEGAN2_FIXTURE})")
                continue
            title, generator = generators[name]
            with tempfile.TemporaryDirectory(prefix=f"bench-explore-{name}-") as folder:
                root = Path(folder)
                started = time.perf_counter()
                params_path = build_run(root, generator)
                print(f"{name}: run built in {time.perf_counter() - started:.0f} s", flush=True)
                server, url, server_notes = start_server(root, params_path)
                try:
                    load_before = _load()
                    results = measure(driver, url, "interfacegan/happy", args.moves)
                    load_after = _load()
                finally:
                    server.send_signal(signal.SIGINT)
                    try:
                        server.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        server.kill()
            for phase, stats in results.items():
                latencies = np.array(stats["latencies"])
                p50, p95 = np.percentile(latencies, [50, 95])
                server_p50, server_p95 = np.percentile(np.array(stats["server"]), [50, 95])
                rows.append(
                    f"| {title} | {phase} | {stats['inputs']} | {len(latencies)} | {p50:.0f} | {p95:.0f} | "
                    f"{latencies.max():.0f} | {'yes' if p95 <= TARGET_P95_MS else 'no'} | "
                    f"{server_p50:.0f} / {server_p95:.0f} |"
                )
                print(rows[-1], flush=True)
            notes.append(
                f"{title}: 1/5/15-min load average {load_before} before, {load_after} after; server: {server_notes}"
            )
    finally:
        driver.quit()
    table = (
        "| generator | input | slider inputs | images painted | p50 (ms) | p95 (ms) | max (ms) | p95 ≤ 100 ms | "
        "server p50 / p95 (ms) |\n|---|---|---:|---:|---:|---:|---:|---|---:|\n" + "\n".join(rows)
    )
    body = (
        f"{machine_summary()}\n\n{table}\n\nInput event → the frame showing the new image painted, measured in "
        f"headless Chromium (`window.exploreStats`); steps: one arrow key per move, each painted before the next; "
        f"drag: the mouse dragging the thumb, a move every 16 ms (inputs beyond the images painted were "
        f"coalesced: the newest position won). Server: `latentatlas explore` as its own process, one torch "
        f"thread rendering and one scoring; its time per image (latent, generator, PNG) is "
        f"its Server-Timing header. Browser, server and this script share the machine's cores.\n\n"
        + "\n".join(f"- {note}" for note in notes)
    )
    print(body)
    if not args.no_write:
        append_section("Explorer latency in a real browser (`bench/bench_explore.py`)", body)


if __name__ == "__main__":
    main()
