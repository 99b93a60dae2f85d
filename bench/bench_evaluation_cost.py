"""What the evaluation and report cost now against an earlier revision, on the same finished run.

Issue 20 made the evaluation keep per-sample records, raised the default ``eval.n_samples`` and added bootstrap
intervals and rank groups to the report; its budget is that ``make run`` grows by at most 5 minutes on 2 cores.
Only the evaluate and report stages changed, so this benchmark runs exactly those, for every fitted entry, with the
code and ``params.yaml`` of each revision, on one finished run's data and directions:

1. ``--before REV`` is extracted with ``git archive`` into a temporary folder (the current checkout is "after");
2. each side gets a workspace: its own revision's ``params.yaml``, the run's ``data`` and ``models`` linked, its
   ``directions`` copied (the stages write ``metrics/``, ``evaluations/`` and ``reports/`` there);
3. per entry, ``python -m pipeline.cli evaluate --method ENTRY`` runs for one side and then the other (the order
   alternates from entry to entry, so a drift in the machine's load falls on both), then ``report`` for each;
4. wall time and the child processes' CPU time are taken per command. With ``--entries`` naming only some entries
   the report is not run (it needs every entry's evaluation).

Prints one table and appends it, with the date and machine, to BENCHMARKS.md.

Usage::

    python -m bench.bench_evaluation_cost --run RUN_DIR --before REV [--entries a,b] [--no-write]

``RUN_DIR`` is a finished run of this checkout (``make run``: ``data/``, ``directions/``, ``models/``).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import append_section, machine_summary  # noqa: E402

BUDGET_S = 300.0  # the budget for the whole run's growth


def extract_revision(revision: str, into: Path) -> Path:
    """The tree of ``revision`` of this repository, written under ``into`` (no worktree is registered)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def workspace(code: Path, run: Path, into: Path) -> Path:
    """A folder to run ``code``'s evaluate and report in: its params.yaml, the run's data and models linked, the
    run's directions copied."""
    into.mkdir(parents=True)
    shutil.copy2(code / "params.yaml", into / "params.yaml")
    for name in ("data", "models"):
        if (run / name).exists():
            (into / name).symlink_to((run / name).resolve())
    shutil.copytree(run / "directions", into / "directions")
    return into


def entries_of(params_path: Path) -> list[str]:
    """Every fitted entry of a params file: ``fit.methods`` then ``fit.variants``."""
    fit = yaml.safe_load(params_path.read_text())["fit"]
    return list(fit["methods"]) + list(fit.get("variants") or {})


def timed(command: list[str], code: Path, cwd: Path) -> tuple[float, float]:
    """Run ``command`` in ``cwd`` with ``code`` first on the import path; (wall s, child CPU s). Raises on failure
    with the command's output."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    finished = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if finished.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} in {cwd} failed:\n{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}"
        )
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def load_average() -> str:
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run of this checkout (make run)")
    parser.add_argument("--before", required=True, help="the git revision to compare against")
    parser.add_argument("--entries", default=None, help="comma-separated entries (default: every fitted entry)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    run = args.run.resolve()
    for needed in ("data", "directions"):
        if not (run / needed).is_dir():
            raise SystemExit(f"--run {run}: no {needed}/ folder; expected a finished run (make run)")

    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-evaluation-cost-") as tmp:
        root = Path(tmp)
        codes = {"before": extract_revision(args.before, root / "code-before"), "after": ROOT}
        spaces = {side: workspace(code, run, root / f"run-{side}") for side, code in codes.items()}
        n_samples = {
            side: yaml.safe_load((spaces[side] / "params.yaml").read_text())["eval"]["n_samples"] for side in spaces
        }
        entries = args.entries.split(",") if args.entries else entries_of(spaces["after"] / "params.yaml")
        missing = [entry for entry in entries if entry not in entries_of(spaces["before"] / "params.yaml")]
        if missing:
            raise SystemExit(f"--before {args.before}: its params.yaml does not fit {missing}; pass --entries")
        load_start = load_average()
        rows: list[tuple[str, dict[str, tuple[float, float]]]] = []
        for index, entry in enumerate(entries):
            order = ("before", "after") if index % 2 == 0 else ("after", "before")
            times = {}
            for side in order:
                command = [python, "-m", "pipeline.cli", "evaluate", "--method", entry, "--params", "params.yaml"]
                times[side] = timed([*command, "--data-dir", "data"], codes[side], spaces[side])
                print(f"evaluate {entry} ({side}): {times[side][0]:.1f} s", flush=True)
            rows.append((f"evaluate {entry}", times))
        every_entry = set(entries) == set(entries_of(spaces["after"] / "params.yaml"))
        times = {}
        for side in ("before", "after") if every_entry else ():  # the report needs every entry's evaluation
            command = [python, "-m", "pipeline.cli", "report", "--params", "params.yaml", "--data-dir", "data"]
            times[side] = timed(command, codes[side], spaces[side])
            print(f"report ({side}): {times[side][0]:.1f} s", flush=True)
        if every_entry:
            rows.append(("report", times))
        load_end = load_average()
        revision = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", args.before], check=True, capture_output=True, text=True
        ).stdout.strip()
        current = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()

    lines = [
        machine_summary(),
        "",
        f"Before: {revision} (`eval.n_samples` {n_samples['before']}); after: {current} (`eval.n_samples` "
        f"{n_samples['after']}), the working tree as it was. Same run: {run.name}'s data and directions; each side's "
        f"own params.yaml. 1/5/15-min load average {load_start} at the start, {load_end} at the end.",
        "",
        "| stage | before: wall (s) | after: wall (s) | after − before (s) | before: CPU (s) | after: CPU (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    totals = {"before": [0.0, 0.0], "after": [0.0, 0.0]}
    for name, times in rows:
        for side in totals:
            totals[side][0] += times[side][0]
            totals[side][1] += times[side][1]
        lines.append(
            f"| {name} | {times['before'][0]:.1f} | {times['after'][0]:.1f} | "
            f"{times['after'][0] - times['before'][0]:+.1f} | {times['before'][1]:.1f} | {times['after'][1]:.1f} |"
        )
    growth = totals["after"][0] - totals["before"][0]
    lines += [
        f"| **all** | **{totals['before'][0]:.1f}** | **{totals['after'][0]:.1f}** | **{growth:+.1f}** | "
        f"{totals['before'][1]:.1f} | {totals['after'][1]:.1f} |",
        "",
        f"The run grows by {growth / 60:+.1f} min in these stages (budget: +{BUDGET_S / 60:.0f} min): "
        f"{'within' if growth <= BUDGET_S else 'OVER'} the budget. `dvc repro` runs these stages one after another as "
        f"here, so the difference adds to `make run` as it is.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        append_section("Evaluation and report cost against an earlier revision (bench/bench_evaluation_cost.py)", body)


if __name__ == "__main__":
    main()
