"""InterFaceGAN PGGAN and StyleGAN (v1) ``.pth`` loaders reproduce the official code, infer any architecture from the
file, and refuse wrong files in one line.

Fixtures: tiny random-weight files in InterFaceGAN's format with ``reference.npz`` from the official code
(``shared/fixtures/generators/interfacegan-{pggan,stylegan}/HOW.md``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentatlas.params import ParamsError
from stages.plugins.generators import FactorizableGenerator, Generator, build_generator
from stages.plugins.generators.base import GeneratorFileError
from stages.plugins.generators.pggan import PGGANArchitecture, PGGANGenerator, PGGANNet, pixel_norm, sphere_normalize
from stages.plugins.generators.stylegan1 import StyleGANArchitecture, StyleGANGenerator, StyleGANNet

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "generators"
PGGAN_DIR = FIXTURES / "interfacegan-pggan"
STYLEGAN_DIR = FIXTURES / "interfacegan-stylegan"
BIGGAN_BIN = FIXTURES / "biggan" / "pytorch_model.bin"
TOLERANCE = 1e-4

needs_pggan = pytest.mark.skipif(
    not (PGGAN_DIR / "pggan_fixture.pth").is_file(), reason=f"InterFaceGAN PGGAN fixture absent: {PGGAN_DIR}"
)
needs_stylegan = pytest.mark.skipif(
    not (STYLEGAN_DIR / "stylegan_fixture.pth").is_file(),
    reason=f"InterFaceGAN StyleGAN fixture absent: {STYLEGAN_DIR}",
)


def max_abs(got: torch.Tensor, want: np.ndarray) -> float:
    return float(np.abs(got.detach().double().cpu().numpy() - want.astype(np.float64)).max())


@pytest.fixture(scope="module")
def pggan_reference() -> dict[str, np.ndarray]:
    return dict(np.load(PGGAN_DIR / "reference.npz"))


@pytest.fixture(scope="module")
def stylegan_reference() -> dict[str, np.ndarray]:
    return dict(np.load(STYLEGAN_DIR / "reference.npz"))


@pytest.fixture(scope="module")
def pggan() -> PGGANGenerator:
    return build_generator("pggan", path=str(PGGAN_DIR / "pggan_fixture.pth"))


@pytest.fixture(scope="module")
def stylegan() -> StyleGANGenerator:
    return build_generator("stylegan", path=str(STYLEGAN_DIR / "stylegan_fixture.pth"))


def interfacegan_uint8(images: torch.Tensor) -> np.ndarray:
    """InterFaceGAN's ``postprocess``: (N, 3, H, W) → (N, H, W, 3) uint8."""
    pixels = (images.numpy() + 1) * 255 / 2 + 0.5
    return np.clip(pixels, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def one_line_naming(error: pytest.ExceptionInfo, *names: str) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, (name, message)
    return message


# ------------------------------------------------------------------------------------------------ PGGAN: reference


@needs_pggan
def test_pggan_reads_its_architecture_from_the_file(pggan: PGGANGenerator) -> None:
    assert isinstance(pggan, Generator) and isinstance(pggan, FactorizableGenerator)
    assert (pggan.z_dim, pggan.resolution, pggan.latent_spaces) == (32, 32, ("z",))
    assert pggan.net.architecture == PGGANArchitecture(32, (48, 32, 24, 16), (False,) * 4)
    assert pggan.fingerprint.startswith("pggan:a9f9e23dfae975070bf37f89fe59c4cbb37cd1a75bab42cdade111043a28113f")
    assert pggan.map(torch.zeros(2, 32)) == {}
    assert pggan.to(torch.device("cpu")) is pggan


@needs_pggan
def test_pggan_reproduces_the_official_images(pggan: PGGANGenerator, pggan_reference: dict) -> None:
    z_raw = torch.from_numpy(pggan_reference["z_raw"])
    with torch.no_grad():
        assert max_abs(sphere_normalize(z_raw), pggan_reference["z"]) < 1e-6  # InterFaceGAN's preprocess
        images = pggan.synthesize(z_raw)
        assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
        assert max_abs(images, pggan_reference["img"]) < TOLERANCE
        assert max_abs(pggan.synthesize(torch.from_numpy(pggan_reference["z"])), pggan_reference["img"]) < TOLERANCE
        assert max_abs(pggan.net(z_raw), pggan_reference["img_raw_z"]) < TOLERANCE  # the bare model, no preprocess
    pixels = interfacegan_uint8(images)
    assert np.abs(pixels.astype(int) - pggan_reference["img_uint8"]).max() <= 1
    assert float(pggan.net.lod) == float(pggan_reference["lod"]) == 0.0


@needs_pggan
def test_pggan_projection_matrix_is_the_first_layer(pggan: PGGANGenerator, pggan_reference: dict) -> None:
    """A @ (normalized z) + bias, LeakyReLU'd, is layer0's (C1, 4, 4) output; the last block's ToRGB gives the image."""
    z_raw = torch.from_numpy(pggan_reference["z_raw"])
    matrix = pggan.projection_matrix()
    assert matrix.shape == (48 * 16, 32)
    with torch.no_grad():
        z = pixel_norm(sphere_normalize(z_raw)[:, :, None, None]).flatten(1)
        bias = pggan.net.layer0.wscale.bias.repeat_interleave(16)
        predicted = F.leaky_relu(z @ matrix.T + bias, 0.2)
        actual = pggan.net.layer0(sphere_normalize(z_raw)[:, :, None, None]).flatten(1)
        assert float((predicted - actual).abs().max()) < 1e-5
        assert pggan.early_features(z_raw, 1).shape == (8, 48 * 4 * 4)
        last = pggan.early_features(z_raw, 4)
        assert last.shape == (8, 16 * 32 * 32)
        assert max_abs(pggan.net.output3(last.view(8, 16, 32, 32)), pggan_reference["img"]) < TOLERANCE
    with pytest.raises(ValueError, match=r"layer must be in 1\.\.4"):
        pggan.early_features(z_raw, 5)


# ---------------------------------------------------------------------------------------------- PGGAN: other files


def random_pggan(architecture: PGGANArchitecture, seed: int) -> PGGANNet:
    torch.manual_seed(seed)
    net = PGGANNet(architecture)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            parameter.copy_(torch.randn_like(parameter) * (0.1 if name.endswith("bias") else 1.0))
    return net.eval()


def test_pggan_loads_another_configuration(tmp_path: Path) -> None:
    """16 px, latent 20, channels 40 / 24 / 12, in the zip serialization: inferred from the shapes, same outputs."""
    architecture = PGGANArchitecture(20, (40, 24, 12), (False, False, False))
    net = random_pggan(architecture, seed=3)
    path = tmp_path / "pggan_other.pth"
    torch.save(net.state_dict(), path)
    generator = build_generator("pggan", path=str(path))
    assert (generator.z_dim, generator.resolution) == (20, 16)
    assert generator.net.architecture == architecture
    latents = torch.randn(5, 20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(sphere_normalize(latents))
        assert float((generator.synthesize(latents) - expected).abs().max()) == 0.0
    assert generator.fingerprint.startswith("pggan:") and len(generator.fingerprint.split(":")[1]) == 64


def test_pggan_fused_scale_layers_equal_upsample_then_conv(tmp_path: Path) -> None:
    """A fused-scale file (``layer{2b}.weight`` in TF layout, as InterFaceGAN writes for fused models) gives the
    images of nearest ×2 + 3×3 conv with the same (flipped) kernel: TF's fused upscale2d_conv2d identity."""
    plain = random_pggan(PGGANArchitecture(16, (24, 16, 8), (False, False, False)), seed=4)
    state = plain.state_dict()
    for layer in ("layer2", "layer4"):
        # (out, in, 3, 3) conv weight → (3, 3, in, out), spatially flipped (a transposed conv flips its kernel)
        state[f"{layer}.weight"] = state.pop(f"{layer}.conv.weight").permute(2, 3, 1, 0).flip(0, 1).contiguous()
    path = tmp_path / "pggan_fused.pth"
    torch.save(state, path)
    fused = build_generator("pggan", path=str(path))
    assert fused.net.architecture.fused_scale == (False, True, True)
    latents = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float((fused.synthesize(latents) - plain(sphere_normalize(latents))).abs().max()) < 1e-4


def test_pggan_level_of_detail_upsamples_the_coarser_image(tmp_path: Path) -> None:
    net = random_pggan(PGGANArchitecture(16, (24, 16, 8), (False, False, False)), seed=5)
    state = net.state_dict()
    state["lod"] = torch.tensor(1.0)
    path = tmp_path / "pggan_lod1.pth"
    torch.save(state, path)
    generator = build_generator("pggan", path=str(path))
    latents = torch.randn(3, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = net.block(1, net.block(0, sphere_normalize(latents)[:, :, None, None]))
        expected = F.interpolate(net.output1(features), scale_factor=2, mode="nearest")
        assert generator.synthesize(latents).shape == (3, 3, 16, 16)
        assert float((generator.synthesize(latents) - expected).abs().max()) == 0.0


@needs_pggan
def test_pggan_under_reduced_precision_autocast(pggan: PGGANGenerator, pggan_reference: dict) -> None:
    """bf16 autocast (the CPU's; CUDA runs fp16 the same way): finite, close to fp32."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        images = pggan.synthesize(torch.from_numpy(pggan_reference["z_raw"]))
    assert torch.isfinite(images).all()
    assert max_abs(images.float(), pggan_reference["img"]) < 0.25


# ---------------------------------------------------------------------------------------------- StyleGAN v1: reference


@needs_stylegan
def test_stylegan_reads_its_architecture_from_the_file(stylegan: StyleGANGenerator, stylegan_reference: dict) -> None:
    assert isinstance(stylegan, Generator)
    assert stylegan.latent_spaces == ("z", "w", "w+")
    assert (stylegan.z_dim, stylegan.w_dim, stylegan.num_ws, stylegan.resolution) == (32, 32, 8, 32)
    assert stylegan.net.architecture == StyleGANArchitecture(32, 32, 32, 8, (48, 32, 24, 16), (False,) * 4)
    assert (stylegan.truncation_psi, stylegan.truncation_layers) == (
        float(stylegan_reference["truncation_psi"]),
        int(stylegan_reference["truncation_layers"]),
    )
    assert max_abs(stylegan.net.truncation.w_avg, stylegan_reference["w_avg"]) == 0.0
    assert "truncation_layers=8,truncation_psi=0.7" in stylegan.fingerprint


@needs_stylegan
def test_stylegan_reproduces_mapping_truncation_and_images(
    stylegan: StyleGANGenerator, stylegan_reference: dict
) -> None:
    ref = stylegan_reference
    z_raw = torch.from_numpy(ref["z_raw"])
    w_avg = torch.from_numpy(ref["w_avg"])
    with torch.no_grad():
        assert max_abs(stylegan.mapped(z_raw), ref["w"]) < TOLERANCE
        assert max_abs(stylegan.net.mapping(torch.from_numpy(ref["z"])), ref["w"]) < TOLERANCE
        assert max_abs(stylegan.w_plus_from_z(z_raw), ref["wp"]) < TOLERANCE
        mapped = stylegan.map(z_raw)
        assert set(mapped) == {"w"} and mapped["w"].shape == (8, 32)
        assert max_abs(mapped["w"], (w_avg + 0.7 * (torch.from_numpy(ref["w"]) - w_avg)).numpy()) < TOLERANCE
        assert max_abs(mapped["w"], ref["wp"][:, 0]) < TOLERANCE  # every layer is truncated at 32 px
        assert max_abs(stylegan.synthesize(z_raw, "z"), ref["img"]) < TOLERANCE
        assert max_abs(stylegan.synthesize(mapped["w"], "w"), ref["img"]) < TOLERANCE
        assert max_abs(stylegan.synthesize(torch.from_numpy(ref["wp"]), "w+"), ref["img"]) < TOLERANCE
        mixed = stylegan.synthesize(torch.from_numpy(ref["wp_mix"]), "w+")
        assert max_abs(mixed, ref["img_wp_mix"]) < TOLERANCE
        assert max_abs(mixed, ref["img"]) > 0.1  # the per-layer routing shows
    assert np.abs(interfacegan_uint8(stylegan.synthesize(z_raw)).astype(int) - ref["img_uint8"]).max() <= 1


@needs_stylegan
def test_stylegan_partial_truncation_matches_interfacegan_in_z_w_and_w_plus(stylegan_reference: dict) -> None:
    """ψ 0.5 on the first 4 of 8 layers: z, map(z)["w"] and InterFaceGAN's wp all give its image."""
    ref = stylegan_reference
    generator = build_generator(
        "stylegan", path=str(STYLEGAN_DIR / "stylegan_fixture.pth"), truncation_psi=0.5, truncation_layers=4
    )
    z_raw = torch.from_numpy(ref["z_raw"])
    with torch.no_grad():
        assert max_abs(generator.w_plus_from_z(z_raw), ref["wp_psi05_l4"]) < TOLERANCE
        latents_w = generator.map(z_raw)["w"]
        assert max_abs(latents_w, ref["wp_psi05_l4"][:, 0]) < TOLERANCE
        assert max_abs(generator.w_plus(latents_w), ref["wp_psi05_l4"]) < TOLERANCE
        for images in (
            generator.synthesize(z_raw),
            generator.synthesize(latents_w, "w"),
            generator.synthesize(torch.from_numpy(ref["wp_psi05_l4"]), "w+"),
        ):
            assert max_abs(images, ref["img_psi05_l4"]) < TOLERANCE
    assert "truncation_layers=4,truncation_psi=0.5" in generator.fingerprint


@needs_stylegan
def test_stylegan_without_truncation_maps_to_the_raw_w(stylegan_reference: dict) -> None:
    generator = build_generator("stylegan", path=str(STYLEGAN_DIR / "stylegan_fixture.pth"), truncation_layers=0)
    z_raw = torch.from_numpy(stylegan_reference["z_raw"])
    with torch.no_grad():
        latents_w = generator.map(z_raw)["w"]
        assert max_abs(latents_w, stylegan_reference["w"]) < TOLERANCE
        raw_w_plus = torch.from_numpy(stylegan_reference["w"]).unsqueeze(1).repeat(1, 8, 1)
        expected = generator.synthesize(raw_w_plus, "w+")
        assert float((generator.synthesize(z_raw) - expected).abs().max()) < TOLERANCE
        assert float((generator.synthesize(latents_w, "w") - expected).abs().max()) < TOLERANCE


@needs_stylegan
def test_stylegan_checks_latent_shapes_and_spaces(stylegan: StyleGANGenerator) -> None:
    with pytest.raises(ValueError, match=r"'w\+' latents of shape \(N, 8, 32\)"):
        stylegan.synthesize(torch.zeros(2, 32), "w+")
    with pytest.raises(ValueError, match="not 'y'"):
        stylegan.synthesize(torch.zeros(2, 32), "y")
    with pytest.raises(ParamsError, match="truncation_psi 0 with truncation_layers 4"):
        build_generator(
            "stylegan", path=str(STYLEGAN_DIR / "stylegan_fixture.pth"), truncation_psi=0.0, truncation_layers=4
        )


@needs_stylegan
def test_stylegan_under_reduced_precision_autocast(stylegan: StyleGANGenerator, stylegan_reference: dict) -> None:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        images = stylegan.synthesize(torch.from_numpy(stylegan_reference["z_raw"]))
    assert torch.isfinite(images).all()
    assert max_abs(images.float(), stylegan_reference["img"]) < 0.25


# ---------------------------------------------------------------------------------------------- StyleGAN: other files


def random_stylegan(architecture: StyleGANArchitecture, seed: int) -> StyleGANNet:
    torch.manual_seed(seed)
    net = StyleGANNet(architecture)
    blur = torch.tensor([1.0, 2.0, 1.0])
    with torch.no_grad():
        for name, tensor in list(net.named_parameters()) + list(net.named_buffers()):
            if name.endswith("blur.kernel"):
                tensor.copy_((blur[:, None] * blur[None, :] / 16).expand_as(tensor))
            elif name.startswith("mapping") and name.endswith("weight"):
                tensor.copy_(torch.randn_like(tensor) / 0.01)
            elif name.endswith("lod"):
                continue
            elif name.endswith("bias") or name.endswith("apply_noise.weight") or name.endswith("w_avg"):
                tensor.copy_(torch.randn_like(tensor) * 0.1)
            else:
                tensor.copy_(torch.randn_like(tensor))
    return net.eval()


def test_stylegan_loads_another_configuration(tmp_path: Path) -> None:
    """16 px, z 12, hidden 24, w 20, 3 mapping layers, channels 32 / 16 / 8: inferred from the shapes; the file's
    noise maps and w_avg are used; W+ has 6 layers."""
    architecture = StyleGANArchitecture(12, 24, 20, 3, (32, 16, 8), (False, False, False))
    net = random_stylegan(architecture, seed=6)
    path = tmp_path / "stylegan_other.pth"
    torch.save(net.state_dict(), path)
    generator = build_generator("stylegan", path=str(path), truncation_psi=0.6, truncation_layers=2)
    assert (generator.z_dim, generator.w_dim, generator.num_ws, generator.resolution) == (12, 20, 6, 16)
    assert generator.net.architecture == architecture
    latents = torch.randn(4, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        w = net.mapping(sphere_normalize(latents))
        w_avg = net.truncation.w_avg
        coefficients = torch.tensor([0.6, 0.6, 1, 1, 1, 1]).view(1, 6, 1)
        expected = net.synthesis(w_avg + (w.unsqueeze(1).repeat(1, 6, 1) - w_avg) * coefficients)
        assert float((generator.synthesize(latents) - expected).abs().max()) < 1e-5
        assert float((generator.synthesize(generator.map(latents)["w"], "w") - expected).abs().max()) < 1e-4


def test_stylegan_fused_scale_layers_equal_upsample_then_conv(tmp_path: Path) -> None:
    """InterFaceGAN's fused layers (≥ 128 px in released files; ``layer{k}.weight`` in TF layout) equal
    nearest ×2 + 3×3 conv with the same (flipped) kernel."""
    plain = random_stylegan(StyleGANArchitecture(8, 8, 8, 2, (16, 8, 8), (False, False, False)), seed=7)
    state = plain.state_dict()
    conv_weight = state.pop("synthesis.layer4.conv.weight")  # (out, in, 3, 3) → (3, 3, in, out), flipped
    state["synthesis.layer4.weight"] = conv_weight.permute(2, 3, 1, 0).flip(0, 1).contiguous()
    path = tmp_path / "stylegan_fused.pth"
    torch.save(state, path)
    fused = build_generator("stylegan", path=str(path))
    assert fused.net.architecture.fused_scale == (False, False, True)
    w_plus = torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert float((fused.synthesize(w_plus, "w+") - plain.synthesis(w_plus)).abs().max()) < 1e-4


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", ["pggan", "stylegan"])
def test_missing_file_is_one_line(name: str, tmp_path: Path) -> None:
    with pytest.raises(GeneratorFileError) as error:
        build_generator(name, path=str(tmp_path / "nope.pth"))
    one_line_naming(error, "nope.pth", "does not exist", "InterFaceGAN")


@needs_pggan
@needs_stylegan
@pytest.mark.parametrize(
    "name, source", [("pggan", PGGAN_DIR / "pggan_fixture.pth"), ("stylegan", STYLEGAN_DIR / "stylegan_fixture.pth")]
)
def test_truncated_file_is_one_line(name: str, source: Path, tmp_path: Path) -> None:
    truncated = tmp_path / source.name
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(GeneratorFileError) as error:
        build_generator(name, path=str(truncated))
    one_line_naming(error, str(truncated), "not a readable PyTorch state dict")


@needs_pggan
@needs_stylegan
@pytest.mark.parametrize(
    "name, source, expected",
    [
        ("pggan", STYLEGAN_DIR / "stylegan_fixture.pth", "InterFaceGAN PGGAN"),
        ("stylegan", PGGAN_DIR / "pggan_fixture.pth", "InterFaceGAN StyleGAN"),
        ("stylegan", BIGGAN_BIN, "InterFaceGAN StyleGAN"),
        ("pggan", BIGGAN_BIN, "InterFaceGAN PGGAN"),
    ],
)
def test_a_file_of_another_format_is_one_line(name: str, source: Path, expected: str) -> None:
    if not source.is_file():
        pytest.skip(f"fixture absent: {source}")
    with pytest.raises(GeneratorFileError) as error:
        build_generator(name, path=str(source))
    one_line_naming(error, str(source), expected, "no tensor")


def test_not_a_state_dict_and_changed_shapes_are_one_line(tmp_path: Path) -> None:
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_a_dict)
    with pytest.raises(GeneratorFileError) as error:
        build_generator("pggan", path=str(not_a_dict))
    one_line_naming(error, str(not_a_dict), "not a state dict")
    state = random_pggan(PGGANArchitecture(16, (24, 16), (False, False)), seed=8).state_dict()
    state["layer1.conv.weight"] = torch.zeros(24, 24, 5, 5)
    bad_shape = tmp_path / "shape.pth"
    torch.save(state, bad_shape)
    with pytest.raises(GeneratorFileError) as error:
        build_generator("pggan", path=str(bad_shape))
    one_line_naming(error, str(bad_shape), "layer1.conv.weight (24, 24, 5, 5) (expected (24, 24, 3, 3))")


def test_a_code_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    """weights_only: a file pickling a callable (not a tensor) is refused by the safe unpickler."""
    path = tmp_path / "evil.pth"
    torch.save({"layer0.conv.weight": torch.zeros(1), "hook": math.gcd}, path)
    with pytest.raises(GeneratorFileError) as error:
        build_generator("pggan", path=str(path))
    one_line_naming(error, str(path), "not a readable PyTorch state dict")


@needs_pggan
def test_a_class_for_an_unconditional_model_is_refused(pggan: PGGANGenerator) -> None:
    with pytest.raises(ParamsError, match="kwargs.class_index: unknown key; generator 'pggan' takes path") as error:
        build_generator("pggan", path=str(PGGAN_DIR / "pggan_fixture.pth"), class_index=3)
    one_line_naming(error, "class_index")
    with pytest.raises(ValueError, match=r"shape \(N, 32\)"):
        pggan.synthesize(torch.zeros(2, 31))
