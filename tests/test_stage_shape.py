"""One stage shape: every stage the engine runs (fit and invert included) meets the Stage protocol, and the engine
and flows run them all by it, with no code for any one stage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.catalog import STAGE_NAMES, STAGES, build_stage, flow_name, stage_class
from stages.runtime.stage import Stage

ROOT = Path(__file__).resolve().parents[1]
#: What the engine uses of a stage class before building it, and of a stage once built.
CLASS_MEMBERS = ("name", "units_travel", "unit_noun", "size_noun")
STAGE_MEMBERS = (
    "n_units",
    "pending",
    "output",
    "unit_name",
    "unit_size",
    "run_unit",
    "finish",
    "__enter__",
    "__exit__",
)


@pytest.mark.parametrize("stage_name", STAGE_NAMES)
def test_every_catalog_stage_has_the_stage_shape(stage_name: str) -> None:
    cls = stage_class(stage_name)
    assert all(hasattr(cls, member) for member in (*CLASS_MEMBERS, *STAGE_MEMBERS)), stage_name
    assert set(Stage.__annotations__) >= set(CLASS_MEMBERS)  # the protocol declares what is checked here
    assert isinstance(cls.units_travel, bool)
    assert cls.units_travel == (stage_name != "fit")  # fit's units share the latents it loaded: threads only


def test_the_orchestration_names_no_stage() -> None:
    """engine.py and flows.py hold no stage's name and import no stage class: no branch for one stage (the catalog
    is the only table of them)."""
    for module in ("engine", "flows"):
        tree = ast.parse((ROOT / "pipeline" / f"{module}.py").read_text())
        named = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in STAGES}
        assert not named, f"pipeline/{module}.py names the stages {sorted(named)}"
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
            if alias.name.endswith("Stage") and alias.name != "Stage"
        }
        assert not imported, f"pipeline/{module}.py imports the stage classes {sorted(imported)}"


def test_unknown_stage_and_flow_names() -> None:
    with pytest.raises(ValueError, match="unknown stage 'smaple'; expected one of"):
        build_stage("smaple", None, ".")  # type: ignore[arg-type]
    assert flow_name("fit", method="ortho-linear-noreg") == "latentatlas-fit-ortho-linear-noreg"
    assert flow_name("sample") == "latentatlas-sample"
