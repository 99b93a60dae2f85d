"""NVlabs StyleGAN2-ADA / StyleGAN3 snapshot pickles: read as data, reproduce the official outputs.

The fixtures (``shared/fixtures/generators/``, see their HOW.md) are tiny random-weight snapshots written by NVlabs'
own training code, with ``reference.npz`` computed by the official networks; here they are loaded with our own
networks and must match within 1e-4 (in practice bitwise). Other configurations are built by our modules, written
to a pickle of the same structure and loaded back through the shape inference.
"""

from __future__ import annotations

import collections
import io
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from latentatlas.params import ParamsError
from stages.plugins.generators import build_generator
from stages.plugins.generators import nvlabs_stylegan2 as stylegan2_module
from stages.plugins.generators import nvlabs_stylegan3 as stylegan3_module
from stages.plugins.generators.base import GeneratorFileError
from stages.plugins.generators.nvlabs_common import MappingNetwork, StyleGANGenerator, StyleGANNet
from stages.plugins.generators.nvlabs_pickle import RecordedModule, read_nvlabs_snapshot
from stages.plugins.generators.nvlabs_stylegan2 import SynthesisNetwork as StyleGAN2Synthesis
from stages.plugins.generators.nvlabs_stylegan3 import SynthesisNetwork as StyleGAN3Synthesis
from stages.plugins.generators.nvlabs_stylegan3 import design_lowpass_filter, layer_schedule

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "generators"
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(),  # only tests that read them skip without them
    reason=f"NVlabs generator fixtures not found at {FIXTURES}",
)
SG2 = FIXTURES / "stylegan2-ada" / "network-snapshot-000000.pkl"
SG2_COND = FIXTURES / "stylegan2-ada-cond" / "network-snapshot-000000.pkl"
SG3 = FIXTURES / "stylegan3" / "network-snapshot-000000.pkl"
TOLERANCE = 1e-4


def reference(pkl: Path) -> dict[str, np.ndarray]:
    return dict(np.load(pkl.parent / "reference.npz"))


def max_diff(a: torch.Tensor, b: np.ndarray) -> float:
    return float((a.detach().double() - torch.from_numpy(b).double()).abs().max())


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """generate.py's conversion: (N, 3, R, R) float → (N, R, R, 3) uint8."""
    return (images.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)


# ------------------------------------------------------------------------------------ reproducing the references


@needs_fixtures
@pytest.mark.parametrize(("name", "pkl"), [("stylegan2", SG2), ("stylegan3", SG3)])
def test_unconditional_reproduces_reference(name: str, pkl: Path) -> None:
    ref = reference(pkl)
    z = torch.from_numpy(ref["z"])
    plain = build_generator(name, path=str(pkl))
    truncated = build_generator(name, path=str(pkl), truncation_psi=0.7)
    num_ws = ref["w"].shape[1]
    assert (plain.z_dim, plain.w_dim, plain.num_ws, plain.resolution) == (
        z.shape[1],
        ref["w"].shape[2],
        num_ws,
        ref["img"].shape[-1],
    )
    with torch.no_grad():
        w = plain.map(z)["w"]
        w07 = truncated.map(z)["w"]
        diffs = {
            "w": max_diff(w, ref["w"][:, 0]),
            "w_psi07": max_diff(w07, ref["w_psi07"][:, 0]),
            "w_avg": max_diff(plain.net.mapping.w_avg, ref["w_avg"]),
            "img (w+)": max_diff(plain.synthesize(torch.from_numpy(ref["w"]), "w+"), ref["img"]),
            "img (w)": max_diff(plain.synthesize(w, "w"), ref["img"]),
            "img (z)": max_diff(plain.synthesize(z, "z"), ref["img"]),
            "img_psi07 (w+)": max_diff(truncated.synthesize(torch.from_numpy(ref["w_psi07"]), "w+"), ref["img_psi07"]),
            "img_psi07 (z)": max_diff(truncated.synthesize(z, "z"), ref["img_psi07"]),
        }
        pixels = to_uint8(plain.synthesize(z)).numpy().astype(int)
    assert max(diffs.values()) < TOLERANCE, diffs
    assert np.abs(pixels - ref["img_uint8"]).max() <= 1
    assert np.allclose(ref["w"], ref["w"][:, :1])  # the reference's W+ rows are one w repeated, as map() assumes


@needs_fixtures
def test_conditional_reproduces_reference_per_class() -> None:
    ref = reference(SG2_COND)
    z = torch.from_numpy(ref["z"])
    for class_index in sorted(set(ref["class_idx"].tolist())):
        rows = np.flatnonzero(ref["class_idx"] == class_index)
        by_index = build_generator("stylegan2", path=str(SG2_COND), class_index=class_index)
        by_vector = build_generator(
            "stylegan2", path=str(SG2_COND), truncation_psi=0.7, class_onehot=ref["c"][rows[0]].tolist()
        )
        with torch.no_grad():
            diffs = {
                "w": max_diff(by_index.map(z[rows])["w"], ref["w"][rows, 0]),
                "img (z)": max_diff(by_index.synthesize(z[rows]), ref["img"][rows]),
                "w_psi07": max_diff(by_vector.map(z[rows])["w"], ref["w_psi07"][rows, 0]),
                "img_psi07 (z)": max_diff(by_vector.synthesize(z[rows]), ref["img_psi07"][rows]),
                "img_psi07 (w+)": max_diff(
                    by_vector.synthesize(torch.from_numpy(ref["w_psi07"][rows]), "w+"), ref["img_psi07"][rows]
                ),
            }
        assert max(diffs.values()) < TOLERANCE, (class_index, diffs)
    assert by_index.c_dim == 5 and by_index.num_ws == 10 and by_index.resolution == 64


@needs_fixtures
def test_stylegan3_filter_design_matches_the_files_filters() -> None:
    """Our Kaiser-sinc design from the recorded arguments gives the filters the file stores (so the per-layer
    schedule of cutoffs, widths and sampling rates is the paper's)."""
    generator = build_generator("stylegan3", path=str(SG3))
    synthesis = generator.net.synthesis
    plan = layer_schedule(32, 3, 512, 32, 14, 2, 2, 2**2.1, 2**0.3, 10)
    checked = 0
    for index, name in enumerate(synthesis.layer_names):
        layer = getattr(synthesis, name)
        rate = max(plan["sampling_rates"][max(index - 1, 0)], plan["sampling_rates"][index]) * (
            1 if layer.is_torgb else 2
        )
        up = design_lowpass_filter(
            layer.up_taps, plan["cutoffs"][max(index - 1, 0)], plan["half_widths"][max(index - 1, 0)] * 2, rate
        )
        down = design_lowpass_filter(layer.down_taps, plan["cutoffs"][index], plan["half_widths"][index] * 2, rate)
        for ours, stored in ((up, layer.up_filter), (down, layer.down_filter)):
            assert (ours is None) == (stored is None)
            if ours is not None:
                assert torch.allclose(ours, stored, atol=1e-7), name
                checked += 1
    assert checked == 28  # 14 layers × (up, down); the ToRGB layer has none


# ------------------------------------------------------------------------------------------ generator protocol


@needs_fixtures
def test_protocol_attributes_and_spaces() -> None:
    generator = build_generator("stylegan2", path=str(SG2), truncation_psi=0.5)
    assert isinstance(generator, StyleGANGenerator)
    assert generator.latent_spaces == ("z", "w", "w+")
    assert generator.to(torch.device("cpu")) is generator
    z = torch.randn(3, generator.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = generator.map(z)["w"]
        assert w.shape == (3, generator.w_dim) and w.dtype == torch.float32
        from_z = generator.synthesize(z)
        assert from_z.shape == (3, 3, 32, 32) and from_z.dtype == torch.float32
        assert torch.equal(from_z, generator.synthesize(w, "w"))
        assert torch.equal(from_z, generator.synthesize(w[:, None].expand(-1, generator.num_ws, -1), "w+"))
        assert torch.equal(from_z, generator.synthesize(z))  # deterministic
        # truncation: ψ = 0.5 halves the distance to w_avg
        untruncated = build_generator("stylegan2", path=str(SG2)).map(z)["w"]
        w_avg = generator.net.mapping.w_avg
        assert torch.allclose(w - w_avg, 0.5 * (untruncated - w_avg), atol=1e-6)
    with pytest.raises(ValueError, match="w\\+ latents of shape"):
        generator.synthesize(w, "w+")
    with pytest.raises(ValueError, match="not 'y'"):
        generator.synthesize(z, "y")


@needs_fixtures
def test_style_weights_give_the_layers_styles() -> None:
    for name, pkl, count, with_torgb in (("stylegan2", SG2, 7, 11), ("stylegan3", SG3, 14, 15)):
        generator = build_generator(name, path=str(pkl))
        weights, names = generator.style_weights(), generator.style_layer_names()
        assert len(weights) == len(names) == count
        assert len(generator.style_weights(include_torgb=True)) == with_torgb
        w = torch.randn(4, generator.w_dim, generator=torch.Generator().manual_seed(1))
        for (layer_name, affine), matrix in zip(
            generator.net.synthesis.style_layers(True), generator.style_weights(True)
        ):
            assert matrix.shape == (affine.out_features, generator.w_dim)
            with torch.no_grad():
                styles = w @ matrix.T + affine.bias * affine.bias_gain
                assert torch.allclose(styles, affine(w), atol=1e-5), layer_name
    sg2 = build_generator("stylegan2", path=str(SG2))
    assert sg2.style_layer_names()[:4] == ["b4.conv1", "b8.conv0", "b8.conv1", "b16.conv0"]
    assert sg2.style_layer_names(include_torgb=True)[:3] == ["b4.conv1", "b4.torgb", "b8.conv0"]
    assert torch.equal(sg2.style_weights()[1], sg2.net.synthesis.b8.conv0.affine.effective_weight())
    sg3 = build_generator("stylegan3", path=str(SG3))
    assert sg3.style_layer_names()[0] == "L0_36_32" and sg3.style_layer_names()[-1] == "L13_32_16"


@needs_fixtures
def test_fingerprint_follows_file_and_output_changing_kwargs() -> None:
    sha = "7935abb8310e639002608d22a3d9f7f948a5652f9e0609af7411e0d6c1a5fd3f"  # HOW.md
    base = build_generator("stylegan2", path=str(SG2))
    assert sha in base.fingerprint
    assert base.fingerprint == build_generator("stylegan2", path=str(SG2)).fingerprint
    others = {
        build_generator("stylegan2", path=str(SG2), truncation_psi=0.7).fingerprint,
        build_generator("stylegan2", path=str(SG2), noise_mode="none").fingerprint,
        build_generator("stylegan2", path=str(SG2_COND), class_index=0).fingerprint,
        build_generator("stylegan2", path=str(SG2_COND), class_index=1).fingerprint,
        base.fingerprint,
    }
    assert len(others) == 5


@needs_fixtures
def test_noise_modes() -> None:
    z = torch.randn(2, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        const = build_generator("stylegan2", path=str(SG2)).synthesize(z)
        quiet = build_generator("stylegan2", path=str(SG2), noise_mode="none").synthesize(z)
        assert (const - quiet).abs().max() > 1e-3  # the fixture's noise strengths are non-zero
        assert torch.equal(
            build_generator("stylegan3", path=str(SG3)).synthesize(z),
            build_generator("stylegan3", path=str(SG3), noise_mode="none").synthesize(z),
        )
    with pytest.raises(ParamsError, match="kwargs.noise_mode: .*'random' is refused"):
        build_generator("stylegan2", path=str(SG2), noise_mode="random")


@needs_fixtures
def test_loading_runs_no_code_from_the_file() -> None:
    def recorded_strings(value: Any) -> list[str]:
        """Every string the record holds: in any attribute of a RecordedModule, any container, keys included."""
        if isinstance(value, str):
            return [value]
        if isinstance(value, RecordedModule):
            value = vars(value)
        if isinstance(value, dict):
            return [text for key, item in value.items() for text in recorded_strings(key) + recorded_strings(item)]
        if isinstance(value, (list, tuple, set, frozenset)):
            return [text for item in value for text in recorded_strings(item)]
        return []

    snapshot = read_nvlabs_snapshot(SG2)
    assert not {"torch_utils", "dnnlib", "training"} & set(sys.modules)
    assert snapshot.generator.class_name == "Generator"
    assert SG2.read_bytes().count(b"def forward(") > 1  # the file carries NVlabs' module source (module_src)...
    strings = recorded_strings(snapshot.generator)
    assert "mapping" in strings and not [text for text in strings if "def forward(" in text]  # ...dropped unread
    assert snapshot.kwargs["synthesis_kwargs"]["channel_max"] == 64
    assert snapshot.tensors["mapping.w_avg"].shape == (64,)


# -------------------------------------------------------------- other configurations through the shape inference


class _FakeModules:
    """Importable stand-ins named like NVlabs' ``torch_utils.persistence`` and ``dnnlib.util``, so that the test
    can write pickles with the same globals as a real snapshot (no NVIDIA code involved)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        persistence = types.ModuleType("torch_utils.persistence")
        util = types.ModuleType("dnnlib.util")

        def _reconstruct_persistent_obj(meta: dict) -> Any:  # never called: the loader maps the name to its own
            raise AssertionError("the loader must not resolve NVlabs globals by import")

        _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
        _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
        persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
        easy_dict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
        util.EasyDict = easy_dict
        for name, module in (
            ("torch_utils", types.ModuleType("torch_utils")),
            ("torch_utils.persistence", persistence),
            ("dnnlib", types.ModuleType("dnnlib")),
            ("dnnlib.util", util),
        ):
            monkeypatch.setitem(sys.modules, name, module)
        self.reconstruct, self.easy_dict = _reconstruct_persistent_obj, easy_dict


class _Persistent:
    """Pickles like an NVlabs persistent network: ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, reconstruct: Any, class_name: str, state: dict) -> None:
        self.reconstruct, self.class_name, self.state = reconstruct, class_name, state

    def __reduce__(self) -> tuple:
        meta = dict(type="class", version=6, module_src="# not code", class_name=self.class_name, state=self.state)
        return self.reconstruct, (meta,)


def write_snapshot(
    path: Path, net: nn.Module, kwargs: dict, fakes: _FakeModules, recorded: dict[str, dict] | None = None
) -> None:
    """Write ``net`` as a snapshot pickle's G_ema (and G), with ``kwargs`` as its recorded constructor arguments and
    ``recorded`` extra plain attributes by dotted module path."""

    def convert(module: nn.Module, prefix: str) -> _Persistent:
        state: dict[str, Any] = {
            "training": False,
            "_parameters": collections.OrderedDict((k, v) for k, v in module._parameters.items()),
            "_buffers": collections.OrderedDict((k, v) for k, v in module._buffers.items()),
            "_modules": collections.OrderedDict((k, convert(v, f"{prefix}{k}.")) for k, v in module._modules.items()),
            **(recorded or {}).get(prefix.rstrip("."), {}),
        }
        if not prefix:
            state["_init_args"] = ()
            state["_init_kwargs"] = fakes.easy_dict(kwargs)
        return _Persistent(fakes.reconstruct, type(module).__name__.replace("StyleGANNet", "Generator"), state)

    snapshot = {
        "G": convert(net, ""),
        "D": None,
        "G_ema": convert(net, ""),
        "training_set_kwargs": fakes.easy_dict(path="~/x.zip", use_labels=False),
    }
    path.write_bytes(pickle.dumps(snapshot, protocol=4))


def randomize(net: nn.Module, seed: int) -> None:
    """Non-trivial biases, noise strengths, input magnitudes and w_avg."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(net.named_parameters()) + list(net.named_buffers()):
            if name.endswith(("bias", "noise_strength", "w_avg")):
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.1)
            elif name.endswith("magnitude_ema"):
                tensor.fill_(0.5 + float(torch.rand([], generator=generator)))


def assert_fp16_layers_run_close(
    generator: StyleGANGenerator, z: torch.Tensor, expected: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fp16 path (used on CUDA for the layers the file marks) runs and stays close to fp32: forced here on the
    CPU, which supports fp16 convolutions. Also: a caller's autocast does not change the network's precision."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(generator.synthesize(z), expected)
    forced = lambda use_fp16, device: torch.float16 if use_fp16 else torch.float32  # noqa: E731
    monkeypatch.setattr(stylegan2_module, "compute_dtype", forced)
    monkeypatch.setattr(stylegan3_module, "compute_dtype", forced)
    with torch.no_grad():
        half = generator.synthesize(z)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert 0 < float((half - expected).abs().max()) < 0.02 * float(expected.abs().max())


def test_stylegan2_other_configuration_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """16 px, z 16, w 24, 3 mapping layers, 3 classes, fp16 for 2 resolutions, no clamp, flat synthesis kwargs (the
    stylegan3 repository's StyleGAN2 layout)."""
    fakes = _FakeModules(monkeypatch)
    torch.manual_seed(5)
    synthesis = StyleGAN2Synthesis(
        24,
        16,
        3,
        channel_base=256,
        channel_max=32,
        num_fp16_res=2,
        conv_clamp=None,
        resample_filter=[1, 3, 3, 1],
        kernel_size=3,
        use_noise=True,
    )
    net = StyleGANNet(MappingNetwork(16, 3, 24, num_layers=3), synthesis)
    randomize(net, 5)
    kwargs = dict(
        z_dim=16,
        c_dim=3,
        w_dim=24,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs={"num_layers": 3},
        channel_base=256,
        channel_max=32,
        num_fp16_res=2,
        conv_clamp=None,
        fused_modconv_default="inference_only",
    )
    path = tmp_path / "sg2.pkl"
    write_snapshot(path, net, kwargs, fakes)
    generator = build_generator("stylegan2", path=str(path), class_index=2, truncation_psi=0.8)
    assert (generator.z_dim, generator.w_dim, generator.num_ws, generator.resolution, generator.c_dim) == (
        16,
        24,
        6,
        16,
        3,
    )
    assert [block.use_fp16 for block in generator.net.synthesis.blocks()] == [False, True, True]  # 8 and 16 px
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(6))
    c = torch.nn.functional.one_hot(torch.full([4], 2), 3).float()
    with torch.no_grad():
        ws = net.mapping.truncate(net.mapping(z, c), 0.8)
        expected = net.synthesis(ws[:, None].expand(-1, 6, -1))
        assert torch.equal(generator.map(z)["w"], ws)
        assert torch.equal(generator.synthesize(z), expected)
        assert expected.shape == (4, 3, 16, 16) and expected.std() > 0.01
    assert_fp16_layers_run_close(generator, z, expected, monkeypatch)


def test_stylegan3_r_configuration_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """StyleGAN3-R (1×1 convs, radial down-sampling filters), 16 px, 6 layers, 2 classes, mapping depth 1."""
    fakes = _FakeModules(monkeypatch)
    torch.manual_seed(7)
    layer_args = dict(
        channel_base=256,
        channel_max=16,
        num_layers=6,
        num_critical=2,
        first_cutoff=2,
        first_stopband=2**2.1,
        last_stopband_rel=2**0.3,
        margin_size=4,
        output_scale=0.25,
        num_fp16_res=4,
        conv_kernel=1,
        filter_size=6,
        lrelu_upsampling=2,
        use_radial_filters=True,
        conv_clamp=256,
    )
    synthesis = StyleGAN3Synthesis(20, 16, 3, **layer_args)
    net = StyleGANNet(MappingNetwork(8, 2, 20, num_layers=1), synthesis)
    randomize(net, 7)
    with torch.no_grad():
        synthesis.input.affine.weight.normal_(0, 0.3)
    radial = [
        name
        for name in synthesis.layer_names
        if getattr(synthesis, name).down_filter is not None and getattr(synthesis, name).down_filter.dim() == 2
    ]
    assert radial  # config R has 2-D (radial) down-sampling filters in the non-critical layers
    kwargs = dict(
        z_dim=8,
        c_dim=2,
        w_dim=20,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs={"num_layers": 1},
        magnitude_ema_beta=0.999,
        **{
            k: v
            for k, v in layer_args.items()
            if k
            in (
                "channel_base",
                "channel_max",
                "num_layers",
                "margin_size",
                "conv_kernel",
                "use_radial_filters",
                "conv_clamp",
            )
        },
    )
    recorded = {
        f"synthesis.{name}": {
            "padding": getattr(synthesis, name).padding,
            "up_factor": getattr(synthesis, name).up_factor,
        }
        for name in synthesis.layer_names
    }
    path = tmp_path / "sg3r.pkl"
    write_snapshot(path, net, kwargs, fakes, recorded)
    generator = build_generator("stylegan3", path=str(path), class_onehot=[0.0, 1.0])
    assert (generator.z_dim, generator.w_dim, generator.num_ws, generator.resolution) == (8, 20, 8, 16)
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        ws = net.mapping(z, torch.tensor([[0.0, 1.0]]).expand(3, -1))
        expected = net.synthesis(ws[:, None].expand(-1, 8, -1))
        assert torch.equal(generator.synthesize(z), expected)
        assert expected.shape == (3, 3, 16, 16) and expected.std() > 1e-3
    assert_fp16_layers_run_close(generator, z, expected, monkeypatch)

    # A recorded layer attribute our derivation disagrees with is an error, not other images.
    first = synthesis.layer_names[0]
    recorded[f"synthesis.{first}"]["padding"] = [0, 0, 0, 0]
    write_snapshot(path, net, kwargs, fakes, recorded)
    with pytest.raises(GeneratorFileError, match=f"G_ema.synthesis.{first}.padding .* cannot reproduce"):
        build_generator("stylegan3", path=str(path), class_index=0)


# ------------------------------------------------------------------------------------------------- bad input


@needs_fixtures
def test_missing_truncated_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(GeneratorFileError, match="nope.pkl: no such file"):
        build_generator("stylegan2", path=str(tmp_path / "nope.pkl"))
    with pytest.raises(GeneratorFileError, match="is not a file"):
        build_generator("stylegan3", path=str(tmp_path))
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(SG2.read_bytes()[:1_000_000])
    with pytest.raises(GeneratorFileError, match="truncated.pkl: not a readable NVlabs snapshot pickle"):
        build_generator("stylegan2", path=str(truncated))
    state_dict = tmp_path / "state_dict.pt"
    torch.save({"weight": torch.zeros(3)}, state_dict)
    with pytest.raises(GeneratorFileError, match="state_dict.pt: not a readable NVlabs snapshot pickle"):
        build_generator("stylegan2", path=str(state_dict))
    noise = tmp_path / "noise.pkl"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(GeneratorFileError, match="noise.pkl: not a readable"):
        build_generator("stylegan3", path=str(noise))
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"G": 1}))
    with pytest.raises(
        GeneratorFileError,
        match="plain.pkl: expected an NVlabs snapshot pickle, a dict with key 'G_ema'; found \\['G'\\]",
    ):
        build_generator("stylegan2", path=str(plain))


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (io.StringIO, ("would have run",))


def test_foreign_globals_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _RunsCode()}))
    with pytest.raises(GeneratorFileError) as caught:
        build_generator("stylegan2", path=str(path))
    message = str(caught.value)
    assert "evil.pkl" in message and "refused to load the global _io.StringIO" in message and "\n" not in message


@needs_fixtures
def test_wrong_network_for_the_name() -> None:
    with pytest.raises(
        GeneratorFileError,
        match="stylegan3/network-snapshot-000000.pkl: this is a StyleGAN3 generator.*use generator name 'stylegan3'",
    ):
        build_generator("stylegan2", path=str(SG3))
    with pytest.raises(GeneratorFileError, match="this is a StyleGAN2 generator.*use generator name 'stylegan2'"):
        build_generator("stylegan3", path=str(SG2))


@needs_fixtures
def test_class_arguments_are_checked() -> None:
    with pytest.raises(GeneratorFileError, match="class-conditional \\(c_dim 5\\): set generator.kwargs.class_index"):
        build_generator("stylegan2", path=str(SG2_COND))
    with pytest.raises(GeneratorFileError, match="class_index must be an integer in 0..4, got 5"):
        build_generator("stylegan2", path=str(SG2_COND), class_index=5)
    with pytest.raises(ParamsError, match=r"kwargs\.class_index: Input should be a valid integer \(got True\)"):
        build_generator("stylegan2", path=str(SG2_COND), class_index=True)
    with pytest.raises(GeneratorFileError, match="class_onehot must be a list of 5 finite numbers"):
        build_generator("stylegan2", path=str(SG2_COND), class_onehot=[1, 0])
    with pytest.raises(GeneratorFileError, match="either class_index or class_onehot, not both"):
        build_generator("stylegan2", path=str(SG2_COND), class_index=1, class_onehot=[0, 1, 0, 0, 0])
    with pytest.raises(GeneratorFileError, match="unconditional \\(c_dim 0\\); remove class_index"):
        build_generator("stylegan3", path=str(SG3), class_index=0)
    with pytest.raises(ParamsError, match=r"kwargs\.truncation_psi: Input should be a finite number"):
        build_generator("stylegan2", path=str(SG2), truncation_psi=float("nan"))


@needs_fixtures
def test_unknown_recorded_arguments_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fakes = _FakeModules(monkeypatch)
    snapshot = read_nvlabs_snapshot(SG2)
    net = build_generator("stylegan2", path=str(SG2)).net
    kwargs = {**snapshot.kwargs, "synthesis_kwargs": {**snapshot.kwargs["synthesis_kwargs"], "architecture": "resnet"}}
    path = tmp_path / "resnet.pkl"
    write_snapshot(path, net, kwargs, fakes)
    with pytest.raises(GeneratorFileError, match="resnet.pkl: only the 'skip' generator architecture"):
        build_generator("stylegan2", path=str(path))
    kwargs = {**snapshot.kwargs, "mapping_kwargs": {"num_layers": 2, "mystery": 1}}
    write_snapshot(path, net, kwargs, fakes)
    with pytest.raises(
        GeneratorFileError,
        match="mapping records constructor arguments this loader does not implement: \\['mystery'\\]",
    ):
        build_generator("stylegan2", path=str(path))
    kwargs = {**snapshot.kwargs, "mapping_kwargs": {"num_layers": 3}}  # tensors for 2 layers only
    write_snapshot(path, net, kwargs, fakes)
    with pytest.raises(
        GeneratorFileError, match="tensors do not match a StyleGAN2 generator.*missing \\['mapping.fc2.bias'"
    ):
        build_generator("stylegan2", path=str(path))


@needs_fixtures
def test_recorded_module_tensors_skip_absent_filters() -> None:
    snapshot = read_nvlabs_snapshot(SG3)
    assert "synthesis.L14_32_3.up_filter" not in snapshot.tensors  # an identity filter is recorded as None
    assert snapshot.tensors["synthesis.L5_52_32.up_filter"].shape == (24,)
    assert isinstance(snapshot.generator.children()["synthesis"], RecordedModule)
