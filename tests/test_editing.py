"""The editing API: linear, conditional and nonlinear (gradient-path) edits, checked by value and through the toy
edit → synthesize → label loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.latent.directions import DirectionSet
from stages.latent.editing import EditError, conditional_direction, edit
from stages.latent.fields import load_model
from stages.plugins.methods.tunagan import TunaGANParams, fit_tunagan
from tests.toy import cosine, make_context, make_world


@pytest.fixture(scope="module")
def world():
    return make_world()


@pytest.fixture(scope="module")
def latents():
    return np.random.default_rng(3).standard_normal((64, 24)).astype(np.float32)


def _label(world, latents_z) -> dict[str, np.ndarray]:
    scores = world.labeler.score_images(world.generator.synthesize(torch.as_tensor(latents_z)))
    return {name: scores[name].to_numpy() for name in scores.columns}


def _t(world, latents_z, name) -> np.ndarray:
    """The planted coordinate n·z that an attribute is a function of."""
    return np.asarray(latents_z, dtype=np.float64) @ world.directions[name]


# ------------------------------------------------------------------------------------------------------ linear


def test_linear_edit_values_types_and_shapes(latents):
    direction = np.zeros(24)
    direction[3] = 2.0  # normalised by edit
    edited = edit(latents, direction, 1.5)
    assert isinstance(edited, np.ndarray) and edited.shape == (64, 24) and edited.dtype == np.float32
    expected = latents.copy()
    expected[:, 3] += 1.5
    np.testing.assert_allclose(edited, expected, rtol=1e-6)
    alphas = np.array([-2.0, 0.0, 3.0])
    stacked = edit(torch.as_tensor(latents, dtype=torch.float64), torch.as_tensor(direction), alphas)
    assert isinstance(stacked, torch.Tensor) and stacked.shape == (3, 64, 24) and stacked.dtype == torch.float64
    for alpha, block in zip(alphas, stacked):
        np.testing.assert_allclose(block[:, 3].numpy(), latents[:, 3] + alpha, rtol=1e-6)
    np.testing.assert_array_equal(stacked[1].numpy(), latents.astype(np.float64))


def test_edit_by_name_from_a_direction_set(world, latents):
    directions = DirectionSet(
        method="toy",
        space="z",
        names=["pose", "age"],
        vectors=np.stack([world.directions["pose"], world.directions["age"]]),
    )
    edited = edit(latents, "pose", 2.0, directions=directions)
    np.testing.assert_allclose(_t(world, edited, "pose") - _t(world, latents, "pose"), 2.0, atol=1e-5)
    with pytest.raises(KeyError, match="no direction 'smile'"):
        edit(latents, "smile", 1.0, directions=directions)
    with pytest.raises(EditError, match="pass directions="):
        edit(latents, "pose", 1.0)


def test_edit_through_the_generator_and_labeler(world, latents):
    edited = edit(latents, world.directions["pose"], np.array([-2.0, 1.0]))
    before = _label(world, latents)
    for alpha, block in zip((-2.0, 1.0), edited):
        after = _label(world, block)
        np.testing.assert_allclose(after["pose"] - before["pose"], 30 * alpha, atol=0.05)  # pose = 30·n·z
        np.testing.assert_allclose(after["smile"], before["smile"], atol=1e-4)  # orthogonal: untouched


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(latents=np.zeros(24)), "latents must be"),
        (dict(direction=np.ones(23)), r"shape \(24,\)"),
        (dict(direction=np.zeros(24)), "zero vector"),
        (dict(alpha=np.ones((2, 2))), "alpha must be"),
        (dict(alpha=float("nan")), "alpha must be finite"),
        (dict(keep=[np.ones(20)]), r"keep\[0\] must have shape"),
    ],
)
def test_edit_errors(latents, bad, message):
    arguments = dict(latents=latents, direction=np.ones(24), alpha=1.0, keep=None) | bad
    with pytest.raises(EditError, match=message):
        edit(arguments["latents"], arguments["direction"], arguments["alpha"], keep=arguments["keep"])


# ------------------------------------------------------------------------------------------------- conditional


def _unit(vector):
    return vector / np.linalg.norm(vector)


def test_conditional_direction_matches_the_papers_formulas():
    rng = np.random.default_rng(0)
    p, c1, c2 = (_unit(v) for v in rng.standard_normal((3, 10)))
    one = conditional_direction(p, [c1])
    np.testing.assert_allclose(one, _unit(p - (p @ c1) * c1), atol=1e-12)  # n = p − (pᵀc)c
    c12 = c1 @ c2
    a = (p @ c1 - (p @ c2) * c12) / (1 - c12**2)
    b = (p @ c2 - (p @ c1) * c12) / (1 - c12**2)
    two = conditional_direction(p, [c1, c2])
    np.testing.assert_allclose(two, _unit(p - a * c1 - b * c2), atol=1e-12)
    assert abs(two @ c1) < 1e-12 and abs(two @ c2) < 1e-12
    # k conditions: orthogonal to all, and a duplicated (rank-deficient) condition changes nothing
    cs = [_unit(v) for v in rng.standard_normal((4, 10))]
    many = conditional_direction(p, cs + [cs[0] * 3])
    assert np.abs(np.stack(cs) @ many).max() < 1e-12 and np.linalg.norm(many) == pytest.approx(1.0)
    np.testing.assert_allclose(many, conditional_direction(p, cs), atol=1e-12)


def test_conditional_direction_errors():
    e = np.eye(4)
    with pytest.raises(EditError, match="inside the span"):
        conditional_direction(e[0] + e[1], [e[0], e[1]])
    with pytest.raises(EditError, match="shape"):
        conditional_direction(e[0], [np.ones(3)])


def test_conditional_edit_keeps_the_condition_fixed(world, latents):
    """Age is planted with cos 0.5 to gender: editing age moves gender, unless gender is kept."""
    plain = edit(latents, world.directions["age"], 2.0)
    kept = edit(latents, world.directions["age"], 2.0, keep=[world.directions["gender"]])
    before = _label(world, latents)
    after_plain, after_kept = _label(world, plain), _label(world, kept)
    np.testing.assert_allclose(_t(world, kept, "gender"), _t(world, latents, "gender"), atol=1e-5)
    np.testing.assert_allclose(after_kept["gender"], before["gender"], atol=1e-4)
    assert np.abs(after_plain["gender"] - before["gender"]).mean() > 0.1  # without keep it does move
    # age still increases: by 12 · 2 · (n_ageᵀ n) with n the conditional direction, = 12 · 2 · sqrt(1 − 0.5²)
    np.testing.assert_allclose(after_kept["age"] - before["age"], 24 * np.sqrt(0.75), atol=0.05)


def test_conditional_edit_by_names(world, latents):
    directions = DirectionSet(
        method="toy",
        space="z",
        names=["age", "gender", "glasses"],
        vectors=np.stack([world.directions[n] for n in ("age", "gender", "glasses")]),
    )
    edited = edit(latents, "age", 1.0, keep=["gender", "glasses"], directions=directions)
    for name in ("gender", "glasses"):
        np.testing.assert_allclose(_t(world, edited, name), _t(world, latents, name), atol=1e-5)
    assert np.all(_t(world, edited, "age") > _t(world, latents, "age"))


# --------------------------------------------------------------------------------------------------- nonlinear


class Radial:
    """f(z) = ‖z‖² / 2: ∇f = z, so the unit-gradient path is a straight ray, z(α) = z + α z / ‖z‖."""

    def gradient(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clone()


class Saddle:
    """f(z) = z₀ z₁: ∇f = (z₁, z₀, 0, ...), a curved path."""

    def gradient(self, latents: torch.Tensor) -> torch.Tensor:
        gradient = torch.zeros_like(latents)
        gradient[:, 0], gradient[:, 1] = latents[:, 1], latents[:, 0]
        return gradient


def test_nonlinear_edit_follows_the_normalised_gradient():
    latents = torch.tensor([[3.0, 0.0, 4.0], [0.0, -6.0, 8.0]], dtype=torch.float64)
    alphas = np.array([2.0, -1.0, 0.5, 0.0, 3.3])  # unsorted, both signs, zero
    edited = edit(latents, Radial(), alphas, step_size=0.3)
    assert edited.shape == (5, 2, 3)
    unit_rows = latents / latents.norm(dim=1, keepdim=True)
    for alpha, block in zip(alphas, edited):
        torch.testing.assert_close(block, latents + alpha * unit_rows)
    kept = edit(latents, Radial(), 2.0, keep=[np.array([0.0, 0.0, 1.0])])  # only the first two coordinates move
    torch.testing.assert_close(kept[:, 2], latents[:, 2])
    torch.testing.assert_close((kept - latents).norm(dim=1), torch.full((2,), 2.0, dtype=torch.float64))


def test_nonlinear_edit_is_a_curved_path():
    start = torch.tensor([[1.0, 0.1]], dtype=torch.float64)
    path = edit(start, Saddle(), np.linspace(0, 3, 7), step_size=0.01)
    values = (path[:, 0, 0] * path[:, 0, 1]).numpy()
    assert np.all(np.diff(values) > 0)  # f increases along the path
    straight = start + 3.0 * torch.tensor([[0.1, 1.0]], dtype=torch.float64) / np.hypot(0.1, 1.0)
    assert (path[-1] - straight).norm() > 0.5  # not the straight line along the first gradient
    assert float(path[-1, 0, 0] * path[-1, 0, 1]) > float(straight[0, 0] * straight[0, 1])  # and better than it


def test_tunagan_mlp_edits_through_the_loop(world):
    context = make_context(world, n=3000, seed=5, attributes=["smile", "pose"])
    directions = fit_tunagan(context, TunaGANParams(hidden_dim=64, epochs=15))
    model = load_model(directions, "smile")
    latents = np.random.default_rng(9).standard_normal((40, 24)).astype(np.float32)
    edited = edit(latents, model, np.array([-1.5, 1.5]), step_size=0.1)
    assert isinstance(edited, np.ndarray) and edited.shape == (2, 40, 24)
    np.testing.assert_allclose(np.linalg.norm(edited[1] - latents, axis=1), 1.5, rtol=0.02)  # path ≈ straight here
    before, down, up = _label(world, latents), _label(world, edited[0]), _label(world, edited[1])
    assert np.all(up["smile"] > before["smile"]) and np.all(down["smile"] < before["smile"])
    assert np.abs(up["pose"] - before["pose"]).mean() < 0.15 * 30 * 1.5  # pose barely moves (vs 45° if aligned)
    assert cosine((edited[1] - latents).mean(0), world.directions["smile"]) > 0.95


def test_edit_layers_moves_only_the_chosen_w_plus_layers() -> None:
    from stages.latent.editing import edit_layers

    rng = np.random.default_rng(3)
    codes = rng.standard_normal((5, 6, 8)).astype(np.float32)  # N = 5, num_ws = 6, w_dim = 8
    direction = np.zeros(8)
    direction[2] = 2.0  # normalised to e_2
    edited = edit_layers(codes, direction, [-1.0, 0.0, 2.0], layers=(1, 3))
    assert edited.shape == (3, 5, 6, 8)
    np.testing.assert_array_equal(edited[1], codes)
    np.testing.assert_array_equal(edited[:, :, [0, 3, 4, 5]], np.broadcast_to(codes[:, [0, 3, 4, 5]], (3, 5, 4, 8)))
    np.testing.assert_allclose(edited[2, :, 1:3, 2] - codes[:, 1:3, 2], 2.0, atol=1e-6)
    np.testing.assert_allclose(edited[0][:, 1:3][..., [0, 1, 3]], codes[:, 1:3][..., [0, 1, 3]])
    single = edit_layers(torch.from_numpy(codes), direction, 0.5)  # every layer, torch in → torch out
    assert isinstance(single, torch.Tensor) and single.shape == (5, 6, 8)
    np.testing.assert_allclose(single[..., 2].numpy() - codes[..., 2], 0.5, atol=1e-6)
    with pytest.raises(EditError, match=r"0 <= start < stop <= 6 .* got \[4, 9\]"):
        edit_layers(codes, direction, 1.0, layers=(4, 9))
