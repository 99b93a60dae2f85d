"""Compiled synthesis (``synthesize.compile``): every generator family traces into one graph (no graph break, so
the compiler sees the whole network), compiled outputs match the eager path within float tolerance, a short last
batch is padded to the compiled shape, and the default (eager) path and its fingerprints are unchanged.

The per-family checks trace with TorchDynamo's ``eager`` backend (the graph capture inductor starts from, seconds
per network); one test runs the real inductor backend on a fixture (a C++ compile: ~10 s on a quiet machine)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from stages.plugins.generators import build_generator
from stages.plugins.generators.synthesis import (
    CompileUnavailableError,
    ImageSynthesizer,
    check_compile_backend,
    images_to_uint8,
)
from tests.conftest import REPO_ROOT, make_params

FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "generators"
#: (generator name, kwargs; a "path" inside the shared fixtures), one per generator family.
FAMILIES = {
    "dcgan": ("dcgan-digiface", {}),
    "stylegan2-ada": ("stylegan2", {"path": "stylegan2-ada/network-snapshot-000000.pkl"}),
    "stylegan2-ada-cond": ("stylegan2", {"path": "stylegan2-ada-cond/network-snapshot-000000.pkl", "class_index": 1}),
    "stylegan3": ("stylegan3", {"path": "stylegan3/network-snapshot-000000.pkl"}),
    "pggan": ("pggan", {"path": "interfacegan-pggan/pggan_fixture.pth"}),
    "stylegan": ("stylegan", {"path": "interfacegan-stylegan/stylegan_fixture.pth"}),
    "biggan": ("biggan", {"path": "biggan", "class_index": 3}),
}


def _generator(family: str):
    name, kwargs = FAMILIES[family]
    if "path" in kwargs:
        path = FIXTURES / kwargs["path"]
        if not path.exists():
            pytest.skip(f"shared fixture {path} not present")
        kwargs = {**kwargs, "path": str(path)}
    return build_generator(name, **kwargs)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.slow  # a dynamo trace per family: 5–50 s each on 2 shared cores
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_traces_into_one_graph_with_the_eager_outputs(family: str) -> None:
    generator = _generator(family)
    latents_z = torch.randn(3, generator.z_dim, generator=torch.Generator().manual_seed(0))
    traced = torch.compile(generator.synthesize, backend="eager", fullgraph=True, dynamic=False)  # breaks raise
    with torch.inference_mode():
        expected = generator.synthesize(latents_z)
        images = traced(latents_z)
    assert images.shape == expected.shape == (3, 3, generator.resolution, generator.resolution)
    torch.testing.assert_close(images, expected, rtol=1e-5, atol=1e-5)
    assert expected.std() > 0.01  # a real image, not a constant


@pytest.mark.parametrize("fixture", ["stylegan2-ada", "stylegan2-ada-cond", "stylegan3"])
def test_the_compilers_form_equals_the_reference_ops(fixture: str) -> None:
    """``for_compiler()``: shared-weight modulated convolutions, polyphase / strided resampling — the same images
    up to float rounding, from every latent space; the original generator keeps NVIDIA's reference ops."""
    generator = _generator(fixture)
    variant = generator.for_compiler()
    assert variant.net is generator.net and generator.reference_ops and not variant.reference_ops
    latents_z = torch.randn(4, generator.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        torch.testing.assert_close(variant.synthesize(latents_z), generator.synthesize(latents_z), rtol=1e-5, atol=2e-5)
        w_plus = generator.w_plus(generator.map(latents_z)["w"])
        torch.testing.assert_close(
            variant.synthesize(w_plus, "w+"), generator.synthesize(w_plus, "w+"), rtol=1e-5, atol=2e-5
        )


@pytest.mark.parametrize(
    ("size", "taps", "up", "padding"),
    [(20, 12, 2, [5, 6, 5, 6]), (36, 12, 2, [-3, 4, -3, 4]), (16, 24, 4, [10, 13, 10, 13]), (12, 6, 2, [0, 0, 1, -2])],
)
def test_polyphase_upsampling_equals_zero_insertion(size: int, taps: int, up: int, padding: list[int]) -> None:
    from stages.plugins.generators.nvlabs_common import upfirdn2d, upsample_polyphase

    features = torch.randn(2, 3, size, size + 1, generator=torch.Generator().manual_seed(size))
    fir = torch.rand(taps, generator=torch.Generator().manual_seed(taps))
    expected = upfirdn2d(features, fir, up=up, padding=padding, gain=up**2)
    torch.testing.assert_close(upsample_polyphase(features, fir, up, padding, up**2), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        upsample_polyphase(features, None, 1, padding, 1.0), upfirdn2d(features, None, padding=padding)
    )


@pytest.mark.parametrize("radial", [False, True])
def test_strided_downsampling_equals_filtering_then_dropping(radial: bool) -> None:
    from stages.plugins.generators.nvlabs_common import downsample_strided, upfirdn2d

    features = torch.randn(2, 3, 40, 41, generator=torch.Generator().manual_seed(0))
    fir = torch.rand(12, 12) if radial else torch.rand(12)
    torch.testing.assert_close(
        downsample_strided(features, fir, 2), upfirdn2d(features, fir, down=2), rtol=1e-5, atol=1e-5
    )


def test_compiled_synthesizer_pads_the_last_batch_and_says_so_in_its_fingerprint(tiny_params) -> None:
    generator = build_generator("dcgan-digiface")
    settings = tiny_params.synthesize.model_copy(update={"batch_size": 8})
    eager = ImageSynthesizer(generator, settings)
    compiled = ImageSynthesizer(generator, settings.model_copy(update={"compile": True}), compile_backend="eager")
    latents_z = torch.randn(13, 100, generator=torch.Generator().manual_seed(1))  # batches of 8 and 5 (padded)
    calls: list[int] = []
    original = compiled._synthesize
    compiled._synthesize = lambda batch, space: calls.append(batch.shape[0]) or original(batch, space)
    np.testing.assert_array_equal(compiled.uint8(latents_z), eager.uint8(latents_z))
    assert calls == [8, 8]  # one compiled shape for the whole run
    assert "compiled" not in eager.fingerprint_inputs()  # default stores keep their fingerprint and bytes
    assert compiled.fingerprint_inputs() == {
        **eager.fingerprint_inputs(),
        "compiled": f"torch.compile/eager/torch-{torch.__version__}",
    }


def test_compile_is_off_by_default_and_the_param_turns_it_on() -> None:
    assert make_params().synthesize.compile is False
    assert make_params(synthesize={"compile": True}).synthesize.compile is True


def test_a_missing_cpp_compiler_is_one_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(CompileUnavailableError, match=r"C\+\+ compiler .* synthesize.compile: false"):
        check_compile_backend(torch.device("cpu"), "inductor")
    check_compile_backend(torch.device("cpu"), "eager")  # tracing alone needs no compiler


@pytest.mark.slow
def test_inductor_compiled_stylegan2_matches_eager_within_float_tolerance(tiny_params) -> None:
    """The real backend: generated C++ kernels on the CPU (one thread, as the pipeline runs)."""
    if not any(shutil.which(name) for name in ("g++", "c++", "clang++")):
        pytest.fail("no C++ compiler: inductor cannot run here (the feature says so: CompileUnavailableError)")
    generator = _generator("stylegan2-ada")
    settings = tiny_params.synthesize.model_copy(update={"batch_size": 4, "compile": True})
    compiled = ImageSynthesizer(generator, settings)
    latents_z = torch.randn(6, generator.z_dim, generator=torch.Generator().manual_seed(2))
    images = compiled(latents_z)
    with torch.inference_mode():
        expected = generator.synthesize(latents_z)
    torch.testing.assert_close(images, expected, rtol=1e-4, atol=1e-4)
    pixels, reference = compiled.uint8(latents_z).astype(int), images_to_uint8(expected).astype(int)
    assert np.abs(pixels - reference).max() <= 1
