"""Direction-fitting methods on the planted toy world (tests/toy.py): every method must find the planted truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pydantic
import pytest
import torch

from stages.latent.directions import DirectionsError, DirectionSet
from stages.latent.fields import load_model
from stages.plugins.methods.base import METHODS, FitContext, MethodInputError
from stages.plugins.methods.ganspace import GANSpaceParams, fit_ganspace, principal_directions
from stages.plugins.methods.interfacegan import InterFaceGANParams, fit_interfacegan
from stages.plugins.methods.interfacegan import fit_attribute as interfacegan_attribute
from stages.plugins.methods.naming import NamingParams, name_components, orient_and_name
from stages.plugins.methods.ortho_linear import OrthoLinearParams, compare_regularisation, fit_ortho_linear
from stages.plugins.methods.sefa import SeFaParams, factorize, fit_sefa
from stages.plugins.methods.tunagan import (
    TunaGANParams,
    fit_tunagan,
    separability_score,
)
from stages.plugins.methods.tunagan import (
    fit_attribute as tunagan_attribute,
)
from tests.toy import ATTRIBUTES, BINARY, CONTINUOUS, cosine, make_context, make_world


@pytest.fixture(scope="module")
def world():
    return make_world(with_mapping=True)


@pytest.fixture(scope="module")
def context(world):
    return make_context(world, n=4000, seed=1, attributes=list(ATTRIBUTES) + ["noise"])


def _only(context: FitContext, attributes: list[str]) -> FitContext:
    return FitContext(
        latents=context.latents,
        labels=context.labels,
        attributes=attributes,
        generator=context.generator,
        score_images=context.score_images,
        input_fingerprint=context.input_fingerprint,
    )


# ---------------------------------------------------------------------------------------------------- registry


def test_registry_has_the_five_methods_with_strict_params():
    for name, supervised in [
        ("interfacegan", True),
        ("ortho-linear", True),
        ("tunagan", True),
        ("sefa", False),
        ("ganspace", False),
    ]:
        spec = METHODS.build(name)
        assert spec.supervised is supervised
        spec.params_model()  # defaults validate
        with pytest.raises(pydantic.ValidationError):
            spec.params_model(not_a_field=1)


# ------------------------------------------------------------------------------------------------ interfacegan


def test_interfacegan_recovers_every_planted_direction(world, context):
    directions = fit_interfacegan(_only(context, list(ATTRIBUTES)), InterFaceGANParams(ratio=0.05))
    assert directions.names == list(ATTRIBUTES) and directions.vectors.dtype == np.float32
    for name in ATTRIBUTES:
        assert cosine(directions[name], world.directions[name]) >= 0.95, name  # sign too: towards high scores
        stats = directions.stats[name]
        assert stats["val_accuracy"] >= 0.95 and stats["remaining_accuracy"] >= 0.7
        assert stats["n_per_side"] == 200 and stats["n_train"] == 280 and stats["n_val"] == 120
        assert stats["n_remaining"] == 3600
    assert directions.meta["input_fingerprint"] == "toy:4000:1"
    assert directions.meta["params"]["ratio"] == 0.05


def test_interfacegan_cannot_separate_noise(context):
    _, stats = interfacegan_attribute(
        context.latents["z"], context.labels["noise"].to_numpy(), InterFaceGANParams(ratio=0.05), "noise"
    )
    assert stats["val_accuracy"] < 0.75  # chance is 0.5; a planted attribute gets ≥ 0.95
    assert stats["remaining_accuracy"] < 0.6


def test_interfacegan_linear_solver_matches_svc(context):
    latents, scores = context.latents["z"], context.labels["smile"].to_numpy()
    ours, _ = interfacegan_attribute(latents, scores, InterFaceGANParams(ratio=0.05))
    hinge, _ = interfacegan_attribute(latents, scores, InterFaceGANParams(ratio=0.05, loss="hinge"))
    reference, _ = interfacegan_attribute(latents, scores, InterFaceGANParams(ratio=0.05, solver="svc"))
    assert cosine(ours, reference) >= 0.99
    assert cosine(hinge, reference) >= 0.999


def test_interfacegan_drops_nonfinite_scores_and_is_seeded(context):
    latents, scores = context.latents["z"], context.labels["smile"].to_numpy().copy()
    scores[:100] = np.nan
    first, stats = interfacegan_attribute(latents, scores, InterFaceGANParams(ratio=0.05))
    again, _ = interfacegan_attribute(latents, scores, InterFaceGANParams(ratio=0.05))
    assert stats["n_invalid"] == 100 and stats["n_samples"] == 3900
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(attributes=["smile", "nope"]), "not in the labels"),
        (dict(labels="constant"), "constant"),
        (dict(labels="tiny"), "fewer than min_per_side"),
        (dict(labels="ties"), "overlap"),
        (dict(attributes=[]), "no attributes"),
    ],
)
def test_interfacegan_bad_inputs(context, change, message):
    labels, attributes = context.labels.copy(), change.get("attributes", ["smile"])
    latents = context.latents
    if change.get("labels") == "constant":
        labels["smile"] = 0.5
    elif change.get("labels") == "tiny":
        labels, latents = labels.iloc[:100], {"z": latents["z"][:100]}
    elif change.get("labels") == "ties":
        labels["smile"] = (np.arange(len(labels)) < 20).astype(float)  # 20 positives, 2% = 80 per side
    bad = FitContext(latents=latents, labels=labels, attributes=attributes)
    with pytest.raises(MethodInputError, match=message):
        fit_interfacegan(bad, InterFaceGANParams())


def test_interfacegan_unknown_space(context):
    with pytest.raises(MethodInputError, match="no latents for space 'x'"):
        fit_interfacegan(_only(context, ["smile"]), InterFaceGANParams(space="x"))


# ------------------------------------------------------------------------------------------------ ortho-linear

FAST_ORTHO = dict(epochs=30, batch_size=512)


@pytest.fixture(scope="module")
def ortho_fits(context):
    small = _only(context, list(ATTRIBUTES))
    return (
        fit_ortho_linear(small, OrthoLinearParams(lam=2.0, **FAST_ORTHO)),
        fit_ortho_linear(small, OrthoLinearParams(lam=0.0, **FAST_ORTHO)),
    )


def test_ortho_linear_without_penalty_recovers_all_directions(world, ortho_fits):
    _, plain = ortho_fits
    for name in ATTRIBUTES:
        assert cosine(plain[name], world.directions[name]) >= 0.98, name
    assert plain.stats["pose"]["r2_val"] >= 0.95 and plain.stats["age"]["r2_val"] >= 0.95
    assert plain.stats["smile"]["r2_val"] >= 0.8


def test_ortho_penalty_decorrelates_correlated_directions(world, ortho_fits):
    regularised, plain = ortho_fits
    for name in ("pose", "smile"):  # orthogonal to everything planted: the penalty must not disturb them
        assert cosine(regularised[name], world.directions[name]) >= 0.98, name
    off = ~np.eye(len(ATTRIBUTES), dtype=bool)
    mean_reg = np.abs(regularised.cosine_similarity()[off]).mean()
    mean_plain = np.abs(plain.cosine_similarity()[off]).mean()
    assert mean_plain > 0.1  # planted: cos(gender, glasses) = 0.6, cos(gender, age) = 0.5
    assert mean_reg < 0.3 * mean_plain
    assert abs(plain.meta["cosine_similarity"]["gender"]["glasses"] - 0.6) < 0.05
    assert abs(regularised.meta["cosine_similarity"]["gender"]["glasses"]) < 0.1
    assert regularised.meta["mean_abs_offdiag_cosine"] == pytest.approx(mean_reg, abs=1e-5)


def test_ortho_linear_is_deterministic_and_compares_tables(context):
    small = _only(context, ["gender", "glasses", "smile"])
    params = OrthoLinearParams(epochs=15, batch_size=512)
    np.testing.assert_array_equal(fit_ortho_linear(small, params).vectors, fit_ortho_linear(small, params).vectors)
    table = compare_regularisation(small, params, reference="gender")
    assert list(table.columns) == ["lambda=0", "lambda=2"] and table.index[0] == "gender"
    assert table.loc["glasses", "lambda=0"] > 0.5 and abs(table.loc["glasses", "lambda=2"]) < 0.15
    pairs = compare_regularisation(small, params)
    assert pairs.loc[("mean |cos|", ""), "lambda=2"] < pairs.loc[("mean |cos|", ""), "lambda=0"]


def test_ortho_linear_bad_inputs(context):
    with pytest.raises(MethodInputError, match="not in the labels"):
        fit_ortho_linear(_only(context, ["smile", "missing"]), OrthoLinearParams(epochs=1))
    tiny = FitContext(
        latents={"z": context.latents["z"][:3]}, labels=context.labels.iloc[:3], attributes=["smile", "age", "pose"]
    )
    with pytest.raises(MethodInputError, match="too few"):
        fit_ortho_linear(tiny, OrthoLinearParams(epochs=1))


# ----------------------------------------------------------------------------------------------------- tunagan

FAST_MLP = dict(hidden_dim=64, epochs=15)


def test_separability_score_values():
    assert separability_score(np.array([0, 1, 0, 1]), np.array([0, 1, 0, 1])) == pytest.approx(1.0)
    assert separability_score(np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1])) == pytest.approx(2.0)
    # Ŷ=0 → Y = (0, 0, 1): H = log 3 − (2/3) log 2 nats for that 3/4 of the data; Ŷ=1 → Y = 1: H = 0
    expected = np.exp(0.75 * (np.log(3) - 2 / 3 * np.log(2)))
    assert separability_score(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])) == pytest.approx(expected)


def test_tunagan_linear_recovers_directions_and_separability(world, context):
    directions = fit_tunagan(context, TunaGANParams(model="linear"))
    for name in ATTRIBUTES:
        assert cosine(directions[name], world.directions[name]) >= 0.95, name
    for name in BINARY:
        assert directions.stats[name]["kind"] == "binary" and directions.stats[name]["val_accuracy"] >= 0.9
    for name in CONTINUOUS:
        assert directions.stats[name]["kind"] == "continuous" and directions.stats[name]["val_r2"] >= 0.95
    scores = {name: directions.stats[name]["separability"] for name in directions.names}
    assert scores["noise"] > 1.9  # chance for a binary attribute is exp(log 2) = 2
    assert max(scores[name] for name in ATTRIBUTES) < 1.4
    assert directions.meta["separability_overall"] == pytest.approx(np.prod(list(scores.values())), rel=1e-9)
    assert "models" not in directions.meta and not directions.extras


def test_tunagan_w_space_direction(world, context):
    directions = fit_tunagan(_only(context, ["smile", "pose"]), TunaGANParams(model="linear", space="w"))
    assert directions.space == "w"
    for name in ("smile", "pose"):
        assert cosine(directions[name], world.direction_in(name, "w")) >= 0.95
        assert abs(cosine(directions[name], world.direction_in(name, "z"))) < 0.9  # w really is a different basis


def test_tunagan_nonlinear_saves_model_and_mean_gradient(world, context, tmp_path):
    directions = fit_tunagan(_only(context, ["smile", "age", "noise"]), TunaGANParams(**FAST_MLP))
    for name in ("smile", "age"):
        assert cosine(directions[name], world.directions[name]) >= 0.95, name
        assert directions.stats[name]["gradient_coherence"] > 0.9
    assert directions.stats["noise"]["separability"] > directions.stats["smile"]["separability"] + 0.5
    directions.save(tmp_path / "tunagan")
    loaded = DirectionSet.load(tmp_path / "tunagan")
    assert sorted(loaded.meta["extra_files"]) == sorted(m["file"] for m in loaded.meta["models"].values())
    latents = torch.as_tensor(context.latents["z"][:50])
    for name in ("smile", "age"):
        model = load_model(loaded, name)
        torch.testing.assert_close(model.predict(latents), load_model(directions, name).predict(latents))
        truth = context.labels[name].to_numpy()[:50]
        assert np.corrcoef(model.predict(latents).numpy(), truth)[0, 1] > 0.9


def test_tunagan_binary_rules_and_errors(context):
    latents = context.latents["z"]
    params = TunaGANParams(model="linear")
    _, stats, _ = tunagan_attribute(latents, context.labels["smile"].to_numpy(), params, "smile")
    assert stats["kind"] == "binary"
    declared = params.model_copy(update={"binary_attributes": ["pose"], "binary_threshold": 0.0})
    _, stats, _ = tunagan_attribute(latents, context.labels["pose"].to_numpy(), declared, "pose")
    assert stats["kind"] == "binary" and stats["val_accuracy"] > 0.9
    with pytest.raises(MethodInputError, match="both classes"):
        tunagan_attribute(
            latents, np.full(len(latents), 0.2) + 1e-3 * np.arange(len(latents)) / len(latents), params, "all-negative"
        )
    with pytest.raises(MethodInputError, match="binary_attributes"):
        fit_tunagan(_only(context, ["smile"]), params.model_copy(update={"binary_attributes": ["nope"]}))
    no_w = FitContext(latents={"z": latents}, labels=context.labels, attributes=["smile"])
    with pytest.raises(MethodInputError, match="no latents for space 'w'"):
        fit_tunagan(no_w, params.model_copy(update={"space": "w"}))


# -------------------------------------------------------------------------------------------------------- SeFa


def test_sefa_components_sorted_orthonormal_and_top_is_dominant(world, context):
    directions = fit_sefa(context, SeFaParams(n_components=6, space="z"))
    vectors = directions.vectors.astype(np.float64)
    np.testing.assert_allclose(vectors @ vectors.T, np.eye(6), atol=1e-5)
    eigenvalues = [directions.stats[name]["eigenvalue"] for name in directions.names]
    assert eigenvalues == sorted(eigenvalues, reverse=True)
    np.testing.assert_allclose(eigenvalues, world.generator.singular_values[:6] ** 2, rtol=1e-6)
    assert cosine(directions["c000"], world.generator.dominant_direction) > 0.9999  # oriented: +pose
    top = directions.stats["c000"]
    assert top["attribute"] == "pose" and top["naming_source"] == "edit" and top["correlation"] > 0.9


def test_sefa_factorize_matches_numpy_and_row_normalisation(world):
    vectors, eigenvalues, trace = factorize(world.generator.projection_matrix(), 4)
    reference = np.linalg.svd(world.generator.A.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(eigenvalues, reference.S[:4] ** 2, rtol=1e-5)
    np.testing.assert_allclose(np.abs(np.sum(vectors * reference.Vh[:4], axis=1)), 1.0, atol=1e-5)
    assert trace == pytest.approx(float(np.sum(reference.S**2)), rel=1e-5)
    normalised, _, _ = factorize(world.generator.projection_matrix(), 4, normalize_rows=True)
    np.testing.assert_allclose(normalised @ normalised.T, np.eye(4), atol=1e-8)


def test_sefa_bad_inputs(context):
    with pytest.raises(MethodInputError, match="n_components"):
        fit_sefa(context, SeFaParams(n_components=25, space="z"))
    no_generator = FitContext(latents=context.latents, labels=context.labels, attributes=[])
    with pytest.raises(MethodInputError, match="FactorizableGenerator"):
        fit_sefa(no_generator, SeFaParams())


# ---------------------------------------------------------------------------------------------------- GANSpace


def test_ganspace_variance_sorted_top_dominant_and_bounded_batches(world, context):
    world.generator.calls.clear()
    params = GANSpaceParams(n_components=5, n_samples=3000, batch_size=500, estimator="ipca", space="z")
    directions = fit_ganspace(context, params)
    ratios = [directions.stats[name]["explained_variance_ratio"] for name in directions.names]
    assert ratios == sorted(ratios, reverse=True) and 0 < sum(ratios) <= 1
    # population variance along the dominant axis: 4² of Σ s² (the bias adds none)
    assert ratios[0] == pytest.approx(16 / np.sum(world.generator.singular_values**2), rel=0.1)
    assert cosine(directions["c000"], world.generator.dominant_direction) > 0.99
    assert directions.stats["c000"]["attribute"] == "pose"
    # features are linear in z here, x_k = sqrt(λ_k)·(unit-variance z projection), so z ≈ u_k x_k needs ‖u_k‖ = λ_k^-½
    for name in directions.names:
        stats = directions.stats[name]
        assert stats["regression_norm"] == pytest.approx(stats["explained_variance"] ** -0.5, rel=0.05)
    feature_calls = [size for function, size in world.generator.calls if function == "early_features"]
    assert len(feature_calls) == 12 and max(feature_calls) <= 500  # two passes of 6 batches: never all 3000
    assert directions.meta["estimator"] == "ipca"


def test_ganspace_estimators_agree(world):
    params = GANSpaceParams(n_components=4, n_samples=2000, batch_size=400, layer=2, space="z")
    ipca, info_ipca = principal_directions(world.generator, params.model_copy(update={"estimator": "ipca"}))
    cov, info_cov = principal_directions(world.generator, params.model_copy(update={"estimator": "covariance"}))
    # the streaming covariance is exact: compare with a full in-memory PCA of the same seeded samples
    generator = torch.Generator().manual_seed(params.seed)
    latents_z = torch.cat([torch.randn(400, world.z_dim, generator=generator) for _ in range(5)])
    features = world.generator.early_features(latents_z, 2).double().numpy()
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(features, rowvar=False))
    np.testing.assert_allclose(info_cov["explained_variance"], eigenvalues[::-1][:4], rtol=1e-8)
    np.testing.assert_allclose(
        info_cov["explained_variance_ratio"], eigenvalues[::-1][:4] / eigenvalues.sum(), rtol=1e-8
    )
    coordinates = (features - features.mean(0)) @ eigenvectors[:, ::-1][:, :4]
    basis = np.linalg.lstsq(coordinates, latents_z.double().numpy(), rcond=None)[0]
    np.testing.assert_allclose(
        np.abs(np.sum(cov * basis / np.linalg.norm(basis, axis=1, keepdims=True), axis=1)), 1.0, atol=1e-8
    )
    # incremental PCA approximates it (it truncates to k components after every batch)
    np.testing.assert_allclose(info_ipca["explained_variance_ratio"], info_cov["explained_variance_ratio"], rtol=0.03)
    assert abs(float(ipca[0] @ cov[0])) > 0.999


def test_ganspace_params_validate():
    with pytest.raises(pydantic.ValidationError, match="batch_size"):
        GANSpaceParams(n_components=50, batch_size=20)


# ------------------------------------------------------------------------------------------------------ naming


def test_naming_falls_back_to_labels_and_orients(world, context):
    without_labeler = FitContext(
        latents=context.latents, labels=context.labels, attributes=list(ATTRIBUTES), generator=world.generator
    )
    vectors = np.stack([-world.directions["smile"], world.directions["age"]])
    oriented, namings = orient_and_name(vectors, without_labeler, NamingParams())
    assert [n["attribute"] for n in namings] == ["smile", "age"]
    assert all(n["naming_source"] == "labels" and "no labeler" in n["naming_note"] for n in namings)
    assert namings[0]["flipped"] and not namings[1]["flipped"]
    np.testing.assert_allclose(oriented[0], world.directions["smile"])
    nothing = FitContext(latents={"z": context.latents["z"]}, labels=pd.DataFrame(), attributes=[])
    assert name_components(vectors, nothing)[0]["attribute"] is None


def test_naming_by_editing_ranks_by_effect(world, context):
    # a·smile + b·pose (orthonormal): both move; the one moved more relative to its spread wins
    mostly_smile = 0.8 * world.directions["smile"] + 0.6 * world.directions["pose"]
    mostly_pose = -(0.3 * world.directions["smile"] + np.sqrt(1 - 0.3**2) * world.directions["pose"])
    namings = name_components(np.stack([mostly_smile, mostly_pose]), _only(context, list(ATTRIBUTES)))
    assert [n["attribute"] for n in namings] == ["smile", "pose"]
    assert all(n["naming_source"] == "edit" for n in namings)
    assert namings[0]["correlations"]["smile"] > namings[0]["correlations"]["pose"] > 0.8
    assert namings[1]["correlation"] < -0.9 and namings[1]["correlations"]["smile"] < 0  # signed
    assert namings[0]["mean_change"]["pose"] == pytest.approx(30 * 0.6 * 3.0, rel=0.01)  # pose = 30·t, α = 3
    assert abs(namings[0]["correlations"]["glasses"]) < 0.05


# ------------------------------------------------------------------------------------------------ DirectionSet


def test_direction_set_round_trip_with_extras(tmp_path):
    vectors = np.linalg.qr(np.random.default_rng(0).standard_normal((8, 3)))[0].T
    original = DirectionSet(
        method="m",
        space="z",
        names=["a", "b", "c"],
        vectors=vectors,
        stats={"a": {"x": 1.5}},
        meta={"params": {"k": [1, 2]}},
        extras={"model.pt": b"\x00\x01binary"},
    )
    original.save(tmp_path)
    loaded = DirectionSet.load(tmp_path)
    np.testing.assert_array_equal(loaded.vectors, original.vectors.astype(np.float32))
    assert loaded.names == original.names and loaded.stats == original.stats
    assert loaded.extras == original.extras and loaded.meta["extra_files"] == ["model.pt"]
    assert json.loads((tmp_path / "directions.json").read_text())["meta"]["params"] == {"k": [1, 2]}
    (tmp_path / "model.pt").unlink()
    with pytest.raises(DirectionsError, match="model.pt"):
        DirectionSet.load(tmp_path)
    with pytest.raises(DirectionsError, match="plain file name"):
        DirectionSet(method="m", space="z", names=["a"], vectors=vectors[:1], extras={"../x": b""})


def test_method_outputs_round_trip(context, tmp_path):
    directions = fit_interfacegan(_only(context, ["smile", "age"]), InterFaceGANParams(ratio=0.05))
    directions.save(tmp_path)
    loaded = DirectionSet.load(tmp_path)
    np.testing.assert_array_equal(loaded.vectors, directions.vectors)
    assert loaded.stats["smile"]["val_accuracy"] == directions.stats["smile"]["val_accuracy"]
    assert loaded.meta == directions.meta


def test_ganspace_on_a_style_generator_is_pca_of_w(world, context):
    """With a W space (the default "auto"), the components are the principal axes of w = mapping(z) themselves."""
    from sklearn.decomposition import PCA

    from stages.plugins.methods.ganspace import _batches

    params = GANSpaceParams(n_components=4, n_samples=2000, batch_size=500, estimator="covariance")
    directions = fit_ganspace(context, params)
    assert directions.space == "w" and directions.dim == world.generator.w_dim
    np.testing.assert_allclose(directions.vectors @ directions.vectors.T, np.eye(4), atol=1e-5)
    mapped = np.concatenate([world.generator.map(z)["w"].numpy() for z in _batches(params, world.z_dim)])
    reference = PCA(n_components=4).fit(mapped.astype(np.float64))
    ratios = [directions.stats[name]["explained_variance_ratio"] for name in directions.names]
    np.testing.assert_allclose(ratios, reference.explained_variance_ratio_, rtol=1e-6)
    for vector, axis in zip(directions.vectors, reference.components_):
        assert abs(cosine(vector, axis)) > 0.9999


def test_sefa_on_a_style_generator_factorises_the_style_weights(world, context):
    """With style weights (space w by default), SeFa's top direction is the dominant direction as seen from W."""
    directions = fit_sefa(context, SeFaParams(n_components=3))
    assert directions.space == "w"
    expected = world.generator.dominant_direction @ world.generator.mapping  # n·z = (n M)·w
    assert abs(cosine(directions.vectors[0], expected)) > 0.999
    one_layer = fit_sefa(context, SeFaParams(n_components=3, layers=[1], orient=False))
    assert abs(cosine(one_layer.vectors[0], expected)) > 0.999
    with pytest.raises(MethodInputError, match=r"layers \[5\] out of range: the generator has 2 styled layers"):
        fit_sefa(context, SeFaParams(layers=[5]))
    z_only = fit_sefa(context, SeFaParams(n_components=3, space="z"))
    assert z_only.space == "z" and abs(cosine(z_only.vectors[0], world.generator.dominant_direction)) > 0.999
