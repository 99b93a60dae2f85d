"""Presets: partial params files (``params/*.yaml``) run as ``dvc exp run -S ...`` after validating the merge."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from latentatlas.params import ParamsError, flatten_overrides, load_params, load_preset, merge_overrides, parse_params
from pipeline.cli import main, preset_command
from stages.plugins.methods import method_params_model

ROOT = Path(__file__).resolve().parents[1]


def test_merge_replaces_lists_and_merges_mappings() -> None:
    base = {"fit": {"methods": ["a", "b"], "params": {"a": {"x": 1}, "b": {}}}, "sample": {"n_samples": 5}}
    merged = merge_overrides(base, {"fit": {"methods": ["a"], "params": {"a": {"y": 2}}}})
    assert merged == {"fit": {"methods": ["a"], "params": {"a": {"x": 1, "y": 2}, "b": {}}}, "sample": {"n_samples": 5}}
    assert base["fit"]["methods"] == ["a", "b"]  # the base is not modified
    assert flatten_overrides({"fit": {"methods": ["a"], "params": {"a": {"y": 2}, "b": {}}}}) == [
        ("fit.methods", ["a"]),
        ("fit.params.a.y", 2),
        ("fit.params.b", {}),
    ]


def test_shipped_interfacegan_500k_preset() -> None:
    """The shipped preset validates against the shipped params.yaml and asks for InterFaceGAN's protocol."""
    overrides = dict(load_preset(ROOT / "params" / "interfacegan-500k.yaml", ROOT / "params.yaml"))
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    merged = parse_params(
        merge_overrides(raw, yaml.safe_load((ROOT / "params/interfacegan-500k.yaml").read_text())),
        method_models=method_params_model,
    )
    assert merged.sample.n_samples == 500_000 and merged.fit.methods == ["interfacegan"]
    assert merged.fit.method_params("interfacegan").ratio == 0.02  # top and bottom 2 %: 10K per side
    assert merged.label == load_params(ROOT / "params.yaml").label  # everything else as in params.yaml
    assert overrides["sample.n_samples"] == 500_000
    command = preset_command(ROOT / "params" / "interfacegan-500k.yaml", ROOT / "params.yaml", ("--temp",))
    assert command[:3] == ["dvc", "exp", "run"] and command[-1] == "--temp"
    assert "sample.n_samples=500000" in command and 'fit.methods=["interfacegan"]' in command


def test_bad_preset_names_the_file_and_key(tmp_path) -> None:
    params_path = tmp_path / "params.yaml"
    params_path.write_text((ROOT / "params.yaml").read_text())
    preset = tmp_path / "typo.yaml"
    preset.write_text("sample:\n  n_sample: 10\n")
    with pytest.raises(ParamsError, match=r"typo\.yaml: sample\.n_sample: unknown key"):
        load_preset(preset, params_path)
    preset.write_text("fit:\n  methods: [interfacegan, no-such-method]\n")
    with pytest.raises(ParamsError, match=r"typo\.yaml: fit"):
        load_preset(preset, params_path)
    preset.write_text("")
    with pytest.raises(ParamsError, match="typo.yaml: the file is empty"):
        load_preset(preset, params_path)
    preset.write_text("{}\n")
    with pytest.raises(ParamsError, match="changes no key"):
        load_preset(preset, params_path)
    with pytest.raises(ParamsError, match=r"missing\.yaml: file not found"):
        load_preset(tmp_path / "missing.yaml", params_path)


def test_repro_with_a_bad_preset_is_one_error_line_and_runs_nothing(tmp_path, monkeypatch) -> None:
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "bad.yaml").write_text("sample:\n  chunk_size: 0\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["repro", "--preset", "bad.yaml"])
    assert result.exit_code == 1
    assert "bad.yaml: sample.chunk_size: Input should be greater than 0" in result.output
    assert not (tmp_path / "dvc.lock").exists()


def test_shipped_stylegan2_preset_validates() -> None:
    """The StyleGAN2 preset validates against params.yaml, fits in W and stores no full-size images."""
    load_preset(ROOT / "params" / "stylegan2-ffhq.yaml", ROOT / "params.yaml", method_models=method_params_model)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    merged = parse_params(
        merge_overrides(raw, yaml.safe_load((ROOT / "params/stylegan2-ffhq.yaml").read_text())),
        method_models=method_params_model,
    )
    assert merged.generator.name == "stylegan2" and merged.synthesize.keep_images is False
    assert merged.synthesize.store_resolution == 256
    assert {merged.fit.method_params(m).space for m in merged.fit.methods} == {"w"}
