"""Without ../shared only the tests that read a fixture skip (the security checks among the others still run); on
CI a missing ../shared fails the session, naming the path it expected.

Real pytest sessions on copies of the test modules in a folder with no shared/ beside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from tests.conftest import REPO_ROOT

MODULES = ("conftest.py", "test_generators_nvlabs.py", "test_generators_biggan.py", "test_lpips.py")
#: test → whether it reads a fixture under shared/ (and so may skip without it).
SELECTED = {
    "test_foreign_globals_are_refused_by_name": False,
    "test_loading_runs_no_code_from_the_file": True,
    "test_standard_normal_maps_to_the_truncated_normal_distribution": False,
    "test_reads_its_architecture_from_config_and_weights": True,
    "test_bad_inputs_raise": False,
    "test_alexnet_matches_the_lpips_authors_numbers": True,
}


def _session(clone: Path, ci: str | None) -> subprocess.CompletedProcess:
    """pytest on the copied modules, with ``CI`` unset (None) or set to ``ci``; the junit report in clone/."""
    env = {name: value for name, value in os.environ.items() if name != "CI"}
    env |= {"PYTHONPATH": str(REPO_ROOT)} | ({"CI": ci} if ci is not None else {})
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            "pytest.ini",
            "--junitxml",
            "report.xml",
            "-k",
            " or ".join(SELECTED),
            "tests",
        ],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_without_shared_only_fixture_readers_skip_and_ci_fails(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    (clone / "tests").mkdir(parents=True)
    (clone / "pytest.ini").write_text("[pytest]\n")
    for name in MODULES:
        shutil.copy(REPO_ROOT / "tests" / name, clone / "tests" / name)
    assert not (tmp_path / "shared").exists()

    local = _session(clone, ci=None)
    assert local.returncode == 0, local.stdout + local.stderr
    cases = ElementTree.parse(clone / "report.xml").getroot().iter("testcase")
    skipped = {case.get("name"): case.find("skipped") is not None for case in cases}
    assert skipped == SELECTED, local.stdout  # each fixture reader skipped, every other test ran (and passed)

    ci = _session(clone, ci="true")  # as CI runs .ci/run
    assert ci.returncode != 0 and "collected" not in ci.stdout, ci.stdout
    assert f"expected {tmp_path / 'shared'}" in ci.stdout + ci.stderr, ci.stdout + ci.stderr
