"""``latentatlas experiments``: the headline metric of every DVC experiment, one attribute at a time, in a table that
reads in a terminal.

``dvc exp show`` gives every tracked param and code dependency a column of its own (157 on the default run), so its
table does not fit a screen. This reads the same data (``dvc exp show --json``) and prints, per attribute, one row per
fitted entry and one column per experiment: the entry's rank group in ``reports/ranking.json`` (1 = the best group;
entries in different groups differ significantly after Holm's correction), ``–`` where an experiment has no rank for
it. Only DVC's own output is read; nothing is written.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from latentatlas.errors import LatentAtlasError

RANKING = "reports/ranking.json"
BEST_GROUP = "best_group"


class ExperimentsError(LatentAtlasError, RuntimeError):
    """``dvc exp show`` failed, or its output holds no ranking to show."""


@dataclass(frozen=True)
class ExperimentRanking:
    """One row of ``dvc exp show``: its label (``workspace``, the experiment's name or a short commit) and its
    ``reports/ranking.json`` (``{attribute: {entry: group}, "best_group": {attribute: "a, b"}}``; empty when the
    experiment has none)."""

    label: str
    ranking: dict[str, Any]


def _label(record: dict[str, Any]) -> str:
    return record.get("name") or ("workspace" if record["rev"] == "workspace" else record["rev"][:7])


def _ranking(record: dict[str, Any]) -> dict[str, Any]:
    metrics = (record.get("data") or {}).get("metrics") or {}
    return (metrics.get(RANKING) or {}).get("data") or {}


def experiment_rankings(show_json: list[dict[str, Any]]) -> list[ExperimentRanking]:
    """Every row of ``dvc exp show --json`` in its order (workspace, each baseline commit followed by its
    experiments) with its ranking.

    Raises:
        ExperimentsError: no row has a ranking (nothing has been run, or the params are not this project's).
    """
    rows = []
    for baseline in show_json:
        rows.append(ExperimentRanking(_label(baseline), _ranking(baseline)))
        for experiment in baseline.get("experiments") or []:
            for revision in experiment.get("revs") or []:
                rows.append(ExperimentRanking(_label(revision), _ranking(revision)))
    if not any(row.ranking for row in rows):
        raise ExperimentsError(f"no experiment has {RANKING}: run the pipeline first (`latentatlas repro`)")
    return rows


def format_rankings(rows: Sequence[ExperimentRanking], attributes: Sequence[str] = ()) -> str:
    """Per attribute (all, or ``attributes``), a table: entries down, experiments across, rank groups in the cells,
    then each experiment's best group.

    Raises:
        ExperimentsError: an attribute asked for is in no ranking.
    """
    known = list(dict.fromkeys(a for row in rows for a in row.ranking if a != BEST_GROUP))
    unknown = [attribute for attribute in attributes if attribute not in known]
    if unknown:
        raise ExperimentsError(f"--attribute {', '.join(unknown)}: not ranked in any experiment; ranked: {known}")
    shown = [row for row in rows if row.ranking]
    width = max(len(row.label) for row in shown)
    blocks = []
    for attribute in attributes or known:
        entries = sorted({entry for row in shown for entry in row.ranking.get(attribute, {})})
        name_width = max(len("entry"), *(len(entry) for entry in entries))
        lines = [f"{attribute}: rank group (1 = best)", "  " + "entry".ljust(name_width)]
        lines[1] += "".join(f"  {row.label.rjust(width)}" for row in shown)
        for entry in entries:
            cells = "".join(f"  {str(row.ranking.get(attribute, {}).get(entry, '–')).rjust(width)}" for row in shown)
            lines.append("  " + entry.ljust(name_width) + cells)
        best = {row.label: row.ranking.get(BEST_GROUP, {}).get(attribute) for row in shown}
        best = {label: members for label, members in best.items() if members is not None}
        if len(set(best.values())) == 1 and len(best) == len(shown):
            lines.append(f"  best group in every experiment: {next(iter(best.values()))}")
        else:
            lines += [f"  best group, {label}: {members}" for label, members in best.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def dvc_exp_show(dvc_args: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``dvc exp show --json [DVC_ARGS]`` in the current folder, parsed.

    Raises:
        ExperimentsError: DVC is missing, fails, or prints no JSON.
    """
    command = ["dvc", "exp", "show", "--json", *dvc_args]
    try:
        finished = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ExperimentsError("dvc: not found on PATH (install the project: `make setup`)") from None
    if finished.returncode != 0:
        last = (finished.stderr.strip().splitlines() or ["no message"])[-1]
        raise ExperimentsError(f"`{' '.join(command)}` failed: {last}")
    try:
        return json.loads(finished.stdout)
    except json.JSONDecodeError:
        raise ExperimentsError(f"`{' '.join(command)}` printed no JSON: {finished.stdout[:200]!r}") from None
