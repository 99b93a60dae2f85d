"""The pytorch-pretrained-biggan loader reproduces the package's eval-mode images, reads any architecture from
``config.json`` + the tensor shapes, maps z ~ N(0, I) to BigGAN's truncated noise exactly in distribution, and
refuses wrong files in one line.

Fixture: a tiny random-weight BigGAN-deep folder with ``reference.npz`` from ``pytorch-pretrained-biggan==0.1.1``
(``shared/fixtures/generators/biggan/HOW.md``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from latentatlas.params import ParamsError
from stages.plugins.generators import FactorizableGenerator, Generator, build_generator
from stages.plugins.generators.base import GeneratorFileError
from stages.plugins.generators.biggan import (
    BigGANConfig,
    BigGANGenerator,
    BigGANNet,
    noise_from_standard_normal,
    standard_normal_from_noise,
    standing_statistics,
)

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "generators" / "biggan"
STYLEGAN_PTH = FIXTURE.parent / "interfacegan-stylegan" / "stylegan_fixture.pth"
TOLERANCE = 1e-4

needs_fixture = pytest.mark.skipif(
    not (FIXTURE / "pytorch_model.bin").is_file(),  # only tests that read it skip
    reason=f"BigGAN fixture absent: {FIXTURE}",
)


def max_abs(got: torch.Tensor, want: np.ndarray) -> float:
    return float(np.abs(got.detach().double().cpu().numpy() - want.astype(np.float64)).max())


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURE / "reference.npz"))


@pytest.fixture(scope="module")
def generator() -> BigGANGenerator:
    return build_generator("biggan", path=str(FIXTURE), class_index=3, truncation=0.4)


def one_line_naming(error: pytest.ExceptionInfo, *names: str) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, (name, message)
    return message


# ------------------------------------------------------------------------------------------------ reference


@needs_fixture
def test_reads_its_architecture_from_config_and_weights(generator: BigGANGenerator) -> None:
    assert isinstance(generator, Generator) and isinstance(generator, FactorizableGenerator)
    assert (generator.z_dim, generator.resolution, generator.latent_spaces) == (32, 32, ("z",))
    config = generator.net.config
    assert (config.num_classes, config.channel_width, config.attention_layer_position, config.n_stats) == (10, 8, 4, 51)
    assert generator.map(torch.zeros(2, 32)) == {}
    assert generator.fingerprint.startswith(
        "biggan:eaaf69d4737f97008fe413bb98fe4327a25d487555f124b1ee4607e7b6f39869:"
        "62b993a3c64869b6b6573bab7910a1844282e905ef1636c07cf327359805c19f:"
    )
    assert "class=3" in generator.fingerprint and "truncation=0.4" in generator.fingerprint


@needs_fixture
@pytest.mark.parametrize("key", ["", "_t10", "_t0626"])
def test_network_reproduces_the_package_in_eval_mode(generator: BigGANGenerator, reference: dict, key: str) -> None:
    """Truncation 0.4 (one BN-statistics row), 1.0 (the last row), 0.626 (the package's reversed interpolation)."""
    truncation = float(reference["truncation" + key])
    with torch.no_grad():
        images = generator.net(
            torch.from_numpy(reference["noise" + key]), torch.from_numpy(reference["class_vector"]), truncation
        )
    assert images.shape == (8, 3, 32, 32)
    assert max_abs(images, reference["img" + key]) < TOLERANCE
    if key == "":  # the package's first train-mode call differs from eval by one power iteration (7.7e-6)
        assert max_abs(images, reference["img_trainmode_first_call"]) < 1e-4


@needs_fixture
def test_standing_statistics_use_the_package_weights(generator: BigGANGenerator) -> None:
    running = generator.net.generator.bn.running_means
    assert torch.equal(standing_statistics(running, 0.4), running[20])
    mixed = standing_statistics(running, 0.626)  # modf(31.3) = (0.3000000000000007, 31.0)
    assert torch.allclose(mixed, running[31] * 0.3 + running[32] * 0.7, atol=1e-6)
    assert not torch.allclose(mixed, running[31] * 0.7 + running[32] * 0.3, atol=1e-3)


@needs_fixture
@pytest.mark.parametrize("key", ["", "_t0626"])
def test_generator_per_class_reproduces_the_package(reference: dict, key: str) -> None:
    """Built for one class: BigGAN's noise directly, and the pipeline's z that maps to it, give the package's image."""
    truncation = float(reference["truncation" + key])
    for class_index in np.unique(reference["class_idx"]):
        rows = reference["class_idx"] == class_index
        generator = build_generator("biggan", path=str(FIXTURE), class_index=int(class_index), truncation=truncation)
        noise = torch.from_numpy(reference["noise" + key][rows])
        with torch.no_grad():
            assert max_abs(generator.synthesize_noise(noise), reference["img" + key][rows]) < TOLERANCE
            latents_z = standard_normal_from_noise(noise, truncation)
            assert max_abs(generator.noise(latents_z), reference["noise" + key][rows]) < 1e-5
            assert max_abs(generator.synthesize(latents_z), reference["img" + key][rows]) < TOLERANCE


@needs_fixture
def test_class_onehot_equals_class_index(reference: dict) -> None:
    by_index = build_generator("biggan", path=str(FIXTURE), class_index=7)
    onehot = [0.0] * 10
    onehot[7] = 1.0
    by_vector = build_generator("biggan", path=str(FIXTURE / "pytorch_model.bin"), class_onehot=onehot)
    latents = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(by_index.synthesize(latents), by_vector.synthesize(latents))
    mixed = build_generator("biggan", path=str(FIXTURE), class_onehot=[0.5, 0.5] + [0.0] * 8)
    with torch.no_grad():
        assert float((mixed.synthesize(latents) - by_index.synthesize(latents)).abs().max()) > 1e-3


# ------------------------------------------------------------------------------------------------ z → truncated noise


def test_standard_normal_maps_to_the_truncated_normal_distribution() -> None:
    """z ~ N(0, 1) → t · TruncNormal(-2, 2), checked against scipy's distribution (KS, moments, bounds)."""
    truncation = 0.5
    latents_z = torch.randn(200_000, generator=torch.Generator().manual_seed(1))
    noise = noise_from_standard_normal(latents_z.view(-1, 1), truncation).flatten().double().numpy()
    expected = stats.truncnorm(-2, 2, scale=truncation)
    assert stats.kstest(noise, expected.cdf).statistic < 0.005
    assert abs(noise.std() - expected.std()) < 0.003 and abs(noise.mean()) < 0.003
    assert noise.min() >= -2 * truncation and noise.max() <= 2 * truncation
    extremes = noise_from_standard_normal(torch.tensor([[-40.0, -8.0, 0.0, 8.0, 40.0]]), 1.0)
    assert torch.allclose(extremes, torch.tensor([[-2.0, -2.0, 0.0, 2.0, 2.0]]), atol=1e-4)
    grid = torch.linspace(-3, 3, 61).view(1, -1)
    mapped = noise_from_standard_normal(grid, 0.7)
    assert torch.all(mapped[0, 1:] > mapped[0, :-1])  # monotone
    assert torch.allclose(standard_normal_from_noise(mapped, 0.7), grid, atol=1e-4)


# ------------------------------------------------------------------------------------------------ SeFa


@needs_fixture
def test_projection_matrix_is_the_noise_part_of_gen_z(generator: BigGANGenerator, reference: dict) -> None:
    matrix = generator.projection_matrix()
    assert matrix.shape == (4 * 4 * 16 * 8, 32)
    noise = torch.from_numpy(reference["noise"])
    gen_z = generator.net.generator.gen_z
    with torch.no_grad():
        class_part = gen_z.weight[:, 32:] @ generator.net.embeddings(generator.class_vector)[0] + gen_z.bias
        condition = generator.net.condition(noise, generator.class_vector)
        assert float((noise @ matrix.T + class_part - gen_z(condition)).abs().max()) < 1e-5
        latents_z = standard_normal_from_noise(noise, 0.4)
        first = generator.early_features(latents_z, 1)
        assert first.shape == (8, 128 * 4 * 4)
        assert float((first - generator.net.stem(condition).flatten(1)).abs().max()) < 1e-5
        assert generator.early_features(latents_z, 8).shape == (8, 8 * 32 * 32)  # after the last of 7 entries
    with pytest.raises(ValueError, match=r"layer must be in 1\.\.8"):
        generator.early_features(latents_z, 9)


@needs_fixture
def test_reduced_precision_autocast(generator: BigGANGenerator, reference: dict) -> None:
    latents_z = standard_normal_from_noise(torch.from_numpy(reference["noise"]), 0.4)
    with torch.no_grad():
        full = generator.synthesize(latents_z)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reduced = generator.synthesize(latents_z)
    assert torch.isfinite(reduced).all() and float((reduced.float() - full).abs().max()) < 0.25


# ------------------------------------------------------------------------------------------------ other configurations


OTHER_CONFIG = {
    "output_dim": 16,
    "z_dim": 12,
    "class_embed_dim": 12,
    "channel_width": 4,
    "num_classes": 5,
    "layers": [[True, 16, 8], [False, 8, 4], [True, 4, 2], [False, 2, 1]],
    "attention_layer_position": 1,
    "eps": 1e-4,
    "n_stats": 11,
}


def write_random_biggan(
    folder: Path, raw_config: dict, seed: int, weights_name: str = "pytorch_model.bin", config_name: str = "config.json"
) -> BigGANNet:
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / config_name
    config_path.write_text(json.dumps(raw_config, indent=2, sort_keys=True) + "\n")
    net = BigGANNet(BigGANConfig.from_json(config_path))
    with torch.no_grad():
        for name, tensor in list(net.named_parameters()) + list(net.state_dict(keep_vars=True).items()):
            if name.endswith("weight_u") or name.endswith("weight_v"):
                tensor.copy_(torch.nn.functional.normalize(torch.randn_like(tensor), dim=0))
            elif name.endswith("running_vars"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif name.endswith("gamma"):
                tensor.fill_(0.3)
            elif tensor.dtype.is_floating_point:
                tensor.copy_(torch.randn_like(tensor) * 0.3)
    net.refresh()
    torch.save(net.state_dict(), folder / weights_name)
    return net.eval()


def test_loads_another_configuration(tmp_path: Path) -> None:
    """16 px, z 12, 5 classes, width 4, attention at entry 1, 11 BN rows; also the package's cache naming."""
    net = write_random_biggan(tmp_path / "other", OTHER_CONFIG, seed=2)
    generator = build_generator("biggan", path=str(tmp_path / "other"), class_index=4, truncation=0.55)
    assert (generator.z_dim, generator.resolution) == (12, 16)
    latents = torch.randn(3, 12, generator=torch.Generator().manual_seed(3))
    class_vector = torch.zeros(1, 5)
    class_vector[0, 4] = 1
    with torch.no_grad():
        expected = net(noise_from_standard_normal(latents, 0.55), class_vector, 0.55)
        assert float((generator.synthesize(latents) - expected).abs().max()) < 1e-5
    cached = write_random_biggan(
        tmp_path / "cache", OTHER_CONFIG, seed=2, weights_name="m-pytorch_model.bin", config_name="m-config.json"
    )
    from_cache = build_generator(
        "biggan", path=str(tmp_path / "cache" / "m-pytorch_model.bin"), class_index=4, truncation=0.55
    )
    with torch.no_grad():
        assert (
            float(
                (from_cache.synthesize(latents) - cached(noise_from_standard_normal(latents, 0.55), class_vector, 0.55))
                .abs()
                .max()
            )
            < 1e-5
        )


# ------------------------------------------------------------------------------------------------ bad input


@needs_fixture
def test_missing_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(GeneratorFileError) as error:
        build_generator("biggan", path=str(tmp_path / "absent"), class_index=0)
    one_line_naming(error, "absent", "does not exist", "pytorch_model.bin + config.json")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(FIXTURE / "pytorch_model.bin", lonely / "pytorch_model.bin")
    for path in (lonely, lonely / "pytorch_model.bin"):
        with pytest.raises(GeneratorFileError) as error:
            build_generator("biggan", path=str(path), class_index=0)
        one_line_naming(error, "config.json")


@needs_fixture
def test_truncated_weights_are_one_line(tmp_path: Path) -> None:
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    data = (FIXTURE / "pytorch_model.bin").read_bytes()
    (tmp_path / "pytorch_model.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(GeneratorFileError) as error:
        build_generator("biggan", path=str(tmp_path), class_index=0)
    one_line_naming(error, str(tmp_path / "pytorch_model.bin"), "not a readable PyTorch state dict")


@needs_fixture
def test_config_that_disagrees_with_the_weights_is_one_line(tmp_path: Path) -> None:
    raw = json.loads((FIXTURE / "config.json").read_text())
    raw["z_dim"] = 48
    (tmp_path / "config.json").write_text(json.dumps(raw))
    shutil.copy(FIXTURE / "pytorch_model.bin", tmp_path / "pytorch_model.bin")
    with pytest.raises(GeneratorFileError) as error:
        build_generator("biggan", path=str(tmp_path), class_index=0)
    one_line_naming(error, str(tmp_path / "pytorch_model.bin"), str(tmp_path / "config.json"), "embeddings.weight")
    raw = json.loads((FIXTURE / "config.json").read_text())
    raw["output_dim"] = 64
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(GeneratorFileError) as error:
        build_generator("biggan", path=str(tmp_path), class_index=0)
    one_line_naming(error, str(tmp_path / "config.json"), "output_dim")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(GeneratorFileError) as error:
        build_generator("biggan", path=str(tmp_path), class_index=0)
    one_line_naming(error, str(tmp_path / "config.json"), "not readable JSON")


@needs_fixture
def test_a_stylegan_file_given_as_biggan_is_one_line(tmp_path: Path) -> None:
    if not STYLEGAN_PTH.is_file():
        pytest.skip(f"fixture absent: {STYLEGAN_PTH}")
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    shutil.copy(STYLEGAN_PTH, tmp_path / "pytorch_model.bin")
    with pytest.raises(GeneratorFileError) as error:
        build_generator("biggan", path=str(tmp_path), class_index=0)
    one_line_naming(error, str(tmp_path / "pytorch_model.bin"), "missing embeddings.weight", "unexpected mapping.")


@needs_fixture
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of class_index"),
        ({"class_index": 10}, r"class_index 10 is not a class of this model: expected an integer in 0\.\.9"),
        ({"class_index": -1}, r"kwargs\.class_index: Input should be greater than or equal to 0 \(got -1\)"),
        ({"class_index": 1, "class_onehot": [1.0] + [0.0] * 9}, "exactly one of class_index"),
        ({"class_onehot": [1.0, 0.0]}, "class_onehot must be a list of 10 finite numbers"),
        ({"class_index": 2, "truncation": 0.0}, r"kwargs\.truncation: Input should be greater than 0"),
        ({"class_index": 2, "truncation": 1.5}, r"kwargs\.truncation: Input should be less than or equal to 1"),
    ],
)
def test_bad_class_or_truncation_is_one_line(kwargs: dict, match: str) -> None:
    with pytest.raises(ParamsError, match=match) as error:
        build_generator("biggan", path=str(FIXTURE), **kwargs)
    one_line_naming(error)
