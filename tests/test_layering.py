"""The house is one-way, and DVC's deps follow the code.

- Imports run one way: ``latentatlas`` (the core) ← ``stages`` ← ``pipeline``. Read from the source (every
  ``import``, at module level or inside a function), so a lazy import cannot hide a wrong-way arrow.
- No import cycles between project files at module level (registries sit in base modules their implementations
  import; a base never imports its implementations back).
- Every project file a DVC stage's code imports (directly, lazily, or as a built-in plugin its registry loads by
  name) is covered by that stage's ``deps`` in ``dvc.yaml``: change how edits are scored and ``evaluate`` reruns.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"latentatlas": 0, "stages": 1, "pipeline": 2}

#: Each DVC stage and the module that holds its logic (the command only parses arguments and orchestrates:
#: orchestration never changes what a stage computes, see tests/test_distributed.py).
STAGE_ENTRY = {
    "sample": "stages.sample",
    "synthesize": "stages.synthesize",
    "label": "stages.label",
    "fit": "stages.fit",
    "evaluate": "stages.evaluate",
    "report": "stages.report",
    "fit-variant": "stages.fit",
    "evaluate-variant": "stages.evaluate",
    "train-encoder": "stages.train_encoder",
}


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {_module_of(path): path for layer in LAYERS for path in sorted((ROOT / layer).rglob("*.py"))}


MODULES = project_modules()


def _resolve(name: str) -> str | None:
    """The project module ``name`` refers to (``pkg.mod.attr`` → ``pkg.mod``), or None outside the project."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, top_level_only: bool = False) -> set[str]:
    """Project modules that ``module`` imports (each ``from a.b import c`` counts ``a.b.c`` if it is a module)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        found |= {resolved for name in names if (resolved := _resolve(name)) and resolved != module}
    return found


def _registry_builtins() -> dict[str, set[str]]:
    """Base module → the modules of the built-in plugins its registry imports by name."""
    from stages.plugins.generators.base import GENERATORS
    from stages.plugins.labelers.base import LABELERS
    from stages.plugins.methods.base import METHODS

    return {
        "stages.plugins.generators.base": set(GENERATORS.builtins.values()),
        "stages.plugins.labelers.base": set(LABELERS.builtins.values()),
        "stages.plugins.methods.base": set(METHODS.builtins.values()),
    }


def closure(entry: str) -> set[str]:
    builtins = _registry_builtins()
    seen, todo = set(), [entry]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(imports_of(module) | builtins.get(module, set()))
    return seen


def test_imports_run_one_way() -> None:
    wrong = [
        f"{module} imports {target}"
        for module in MODULES
        for target in imports_of(module)
        if LAYERS[target.split(".")[0]] > LAYERS[module.split(".")[0]]
    ]
    assert not wrong, "imports must run latentatlas ← stages ← pipeline:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles_between_files() -> None:
    graph = {module: imports_of(module, top_level_only=True) for module in MODULES}
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in graph[module]:
            if state.get(target) == 1:
                cycles.append(" → ".join(stack[stack.index(target) :] + [module, target]))
            elif target not in state:
                visit(target, stack + [module])
        state[module] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_lazy_and_wrong_way_imports(tmp_path, monkeypatch) -> None:
    """The layering test can fail: a function-level import of the orchestration from the core is caught."""
    bad = ROOT / "latentatlas" / "_layering_probe.py"
    bad.write_text("def f():\n    from pipeline.engine import run\n    return run\n")
    try:
        monkeypatch.setitem(MODULES, "latentatlas._layering_probe", bad)
        assert "pipeline.engine" in imports_of("latentatlas._layering_probe")
        with pytest.raises(AssertionError, match="latentatlas._layering_probe imports pipeline.engine"):
            test_imports_run_one_way()
    finally:
        bad.unlink()


def _dvc_stages() -> dict[str, list[str]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: (stage.get("do", stage)).get("deps", []) for name, stage in stages.items()}


def uncovered(stage: str, deps: list[str]) -> list[str]:
    code_deps = [dep.rstrip("/") for dep in deps]
    missing = []
    for module in sorted(closure(STAGE_ENTRY[stage])):
        relative = MODULES[module].relative_to(ROOT).as_posix()
        if not any(relative == dep or relative.startswith(dep + "/") for dep in code_deps):
            missing.append(relative)
    return missing


def superfluous(stage: str, deps: list[str]) -> list[str]:
    """Code deps (project files or folders) that hold no module the stage imports: a change there would rerun the
    stage for nothing."""
    used = {MODULES[module].relative_to(ROOT).as_posix() for module in closure(STAGE_ENTRY[stage])}
    code_deps = [dep.rstrip("/") for dep in deps if dep.split("/")[0] in LAYERS]
    return [dep for dep in code_deps if not any(path == dep or path.startswith(dep + "/") for path in used)]


@pytest.mark.parametrize("stage", sorted(STAGE_ENTRY))
def test_dvc_deps_list_no_code_the_stage_does_not_import(stage: str) -> None:
    extra = superfluous(stage, _dvc_stages()[stage])
    assert not extra, f"dvc.yaml: stage {stage!r} lists code deps it never imports: {extra}"


@pytest.mark.parametrize("stage", sorted(STAGE_ENTRY))
def test_dvc_deps_cover_every_module_the_stage_imports(stage: str) -> None:
    deps = _dvc_stages()[stage]
    missing = uncovered(stage, deps)
    assert not missing, (
        f"dvc.yaml: stage {stage!r} imports project files its deps do not list; add them (or their "
        f"folder) to its deps, else `dvc repro` keeps stale outputs when they change:\n  - " + "\n  - ".join(missing)
    )


def test_deps_check_can_fail() -> None:
    """Dropping a dependency the stage really imports is caught."""
    deps = _dvc_stages()["evaluate"]
    assert uncovered("evaluate", deps) == []
    without_editing = [dep for dep in deps if dep not in ("stages/latent/editing.py", "stages")]
    assert "stages/latent/editing.py" in uncovered("evaluate", without_editing)
    # and listing code the stage never imports is caught too
    assert superfluous("sample", [*_dvc_stages()["sample"], "stages/evaluate.py"]) == ["stages/evaluate.py"]


def test_the_top_level_of_stages_holds_exactly_the_dvc_stages() -> None:
    """``stages/*.py`` shows the DAG: one module per ``dvc.yaml`` stage and nothing else at that level (supporting
    code lives in subpackages named by role)."""
    dvc_stages = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    assert set(STAGE_ENTRY) == dvc_stages, "STAGE_ENTRY must name the module of every dvc.yaml stage"
    top_level = {f"stages.{path.stem}" for path in (ROOT / "stages").glob("*.py") if path.name != "__init__.py"}
    assert top_level == set(STAGE_ENTRY.values())


def test_no_stage_module_imports_another_or_is_imported_by_stage_parts() -> None:
    """Stages share code through the role subpackages, never by reaching into a sibling stage: a stage module is
    imported only by the orchestration (and tests)."""
    stage_modules = set(STAGE_ENTRY.values())
    sideways = sorted(
        f"{module} imports {target}"
        for module in MODULES
        if module.startswith("stages")
        for target in imports_of(module) & stage_modules
        if target != module
    )
    assert not sideways, "stage modules reached sideways:\n" + "\n".join(sideways)
