"""``latentatlas experiments``: the rank groups of every DVC experiment, read from ``dvc exp show --json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.experiments import ExperimentRanking, ExperimentsError, experiment_rankings, format_rankings

WRITE_RANKING = """
import json, yaml
floor = yaml.safe_load(open("params.yaml"))["report"]["min_fit_r2"]
ranking = {"happy": {"interfacegan": 1, "ortho-linear": 1 if floor < 0.2 else 3, "sefa": 2},
           "best_group": {"happy": "interfacegan, ortho-linear" if floor < 0.2 else "interfacegan"}}
json.dump(ranking, open("reports/ranking.json", "w"))
"""


def test_rank_groups_of_every_experiment_side_by_side() -> None:
    rows = [
        ExperimentRanking("workspace", {"happy": {"a": 1, "b": 2}, "best_group": {"happy": "a"}}),
        ExperimentRanking("1a2b3c4", {}),  # a commit without a ranking is left out
        ExperimentRanking("lam-0", {"happy": {"a": 2, "b": 1}, "yaw": {"a": 1}, "best_group": {"happy": "b"}}),
    ]
    text = format_rankings(rows)
    assert text.splitlines()[:4] == [
        "happy: rank group (1 = best)",
        "  entry  workspace      lam-0",
        "  a              1          2",
        "  b              2          1",
    ]
    assert "  best group, workspace: a" in text and "  best group, lam-0: b" in text
    assert "yaw: rank group (1 = best)\n  entry  workspace      lam-0\n  a              –          1" in text
    assert format_rankings(rows, ["yaw"]).startswith("yaw:")
    with pytest.raises(ExperimentsError, match=r"--attribute smile: not ranked in any experiment; ranked: \['happy'"):
        format_rankings(rows, ["smile"])
    with pytest.raises(ExperimentsError, match="no experiment has reports/ranking.json"):
        experiment_rankings([{"rev": "workspace", "name": None, "data": {"metrics": {}}, "experiments": None}])


def test_reads_a_real_dvc_experiment(tmp_path: Path) -> None:
    """A DVC project whose stage writes reports/ranking.json from params; an experiment changes the param; the
    command shows the baseline and the experiment side by side, as DVC records them."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    (tmp_path / "reports").mkdir()
    (tmp_path / "rank.py").write_text(WRITE_RANKING)
    (tmp_path / "params.yaml").write_text("report:\n  min_fit_r2: 0.1\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  report:\n    cmd: python rank.py\n    deps: [rank.py]\n    params: [report.min_fit_r2]\n"
        "    metrics:\n      - reports/ranking.json:\n          cache: false\n"
    )
    for command in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "test@example.com"],
        ["git", "config", "user.name", "test"],
        ["dvc", "init", "-q"],
        ["dvc", "repro", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "baseline"],
        ["dvc", "exp", "run", "-q", "-n", "floor-0.3", "-S", "report.min_fit_r2=0.3"],
    ):
        subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        result = CliRunner().invoke(main, ["experiments"], env=env)
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "happy: rank group (1 = best)"
    header = lines[1].split()
    assert header[0] == "entry" and header[1] == "workspace" and header[3] == "floor-0.3" and len(header) == 4
    assert lines[2].split() == ["interfacegan", "1", "1", "1"]
    assert lines[3].split() == ["ortho-linear", "3", "1", "3"]  # the experiment (applied to the workspace) demotes it
    assert f"  best group, {header[2]}: interfacegan, ortho-linear" in result.output
    assert json.loads((tmp_path / "reports" / "ranking.json").read_text())["happy"]["ortho-linear"] == 3
