"""The report page, made for looking: it opens with the same held-out faces edited by every method side by side (z
and w methods alike), embeds faces as JPEG, keeps legends off the data, prints integers as integers and folds the
long fit tables. On the planted toy world (tests/toy.py, 8×8 images) with a mapping network, so one direction set
edits in w; the JPEG budget is checked on the embedded face DCGAN's real 64 px faces.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from latentatlas.layout import OutputLayout
from stages.evaluate import EvaluateStage
from stages.latent.directions import DirectionSet
from stages.latent.perceptual import build_lpips
from stages.report import build_report, correlation_half_width
from stages.reporting import figures
from stages.reporting.comparison import CAPTION, GAP, THUMBNAIL, jpeg_data_uri, strip
from stages.reporting.contact_sheet import GridLayoutError, render_traversal_grid, traversal_grid_tiles
from stages.reporting.page import format_cell, table_html
from stages.runtime.chunked import run_stage
from tests.conftest import make_params, run_toy_spine
from tests.toy import make_world

ATTRIBUTES = ["smile", "glasses", "gender"]
ALPHAS = [-2.0, -1.0, 0.0, 1.0, 2.0]
GRID_SAMPLES = 3  # two faces shown, one folded
#: Bytes of base64 JPEG per embedded 64 px face: the default run (4 attributes, 9 entries, 4 faces, 7 α) then
#: embeds at most 4 · 9 · 4 · 7 · 2.5 KB = 2.5 MB of faces, well under its 5 MB bound with the plots.
FACE_BUDGET = 2500
#: Fit statistics planted in the direction sets (counts must print as integers, a count missing for one attribute
#: must not turn the others into floats).
TRUTH_STATS = {name: {"n_samples": 400, "steps": 300, "accuracy": 0.91234, "converged": True} for name in ATTRIBUTES}
RANDOM_STATS = {"smile": {"n_samples": 400}, "glasses": {"accuracy": 0.5}, "gender": {"n_samples": 12}}


def build_toy_report(root: Path):
    """A finished toy run with three entries, ``truth`` (z), ``truth-w`` (the same directions in w) and ``random``
    (z), evaluated on 24 held-out samples and reported; returns the params."""
    world = make_world(z_dim=24, with_mapping=True)
    params = make_params(
        sample={"n_samples": 400, "chunk_size": 200},
        fit={"methods": ["interfacegan"], "attributes": ATTRIBUTES, "params": {"interfacegan": {}}},
        eval={
            "n_samples": 24,
            "chunk_size": 12,
            "alphas": ALPHAS,
            "attributes": ATTRIBUTES,
            "condition_on": ["gender"],
            "ppl_samples": 4,
            "grid_samples": GRID_SAMPLES,
            "batch_size": 64,
            "device": "cpu",
            "bootstrap_resamples": 1000,
        },
    )
    run_toy_spine(params, root / "data", world)
    truth = np.stack([world.direction_in(name, "z") for name in ATTRIBUTES])
    DirectionSet("truth", "z", ATTRIBUTES, truth, stats=TRUTH_STATS).save(root / "directions/truth")
    truth_w = np.stack([world.direction_in(name, "w") for name in ATTRIBUTES])
    DirectionSet("truth-w", "w", ATTRIBUTES, truth_w).save(root / "directions/truth-w")
    noise = np.random.default_rng(5).standard_normal((3, world.z_dim))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    DirectionSet("random", "z", ATTRIBUTES, noise, stats=RANDOM_STATS).save(root / "directions/random")
    lpips = build_lpips("alex")
    methods = ["truth", "random", "truth-w"]
    for method in methods:
        stage = EvaluateStage(
            params,
            root / "data",
            method,
            layout=OutputLayout(root),
            generator=world.generator,
            labeler=world.labeler,
            lpips=lpips,
        )
        run_stage(stage)
    build_report(params, root / "data", methods, layout=OutputLayout(root))
    return params


@pytest.fixture(scope="module")
def toy_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-report")
    params = build_toy_report(root)
    return root, params


class Page(HTMLParser):
    """The page as a flat list of (tag, attributes) start tags, in document order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))


def decode(uri: str) -> Image.Image:
    header, payload = uri.split(",", 1)
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    image.load()
    return image


def comparison_tables(page: Page) -> dict[str, list[list[tuple[str, str]]]]:
    """Per attribute of the comparison section, its tables, each as (method, strip data URI) rows in page order."""
    start = next(k for k, (tag, a) in enumerate(page.tags) if tag == "h2" and a.get("id") == "comparison")
    end = next(k for k, (tag, _) in enumerate(page.tags) if tag == "h2" and k > start)
    tables: dict[str, list[list[tuple[str, str]]]] = {}
    attribute, method = None, None
    for tag, attributes in page.tags[start:end]:
        if tag == "section":
            attribute = attributes["data-attribute"]
            tables[attribute] = []
        elif tag == "table":
            tables[attribute].append([])
        elif tag == "tr" and "data-method" in attributes:
            method = attributes["data-method"]
        elif tag == "img":
            tables[attribute][-1].append((method, attributes["src"]))
    return tables


def tile(image: Image.Image, face: int, column: int, strengths: int) -> np.ndarray:
    """One face at one α out of a comparison strip."""
    left = face * (strengths * THUMBNAIL + GAP) + column * THUMBNAIL
    return np.asarray(image.convert("RGB"))[:THUMBNAIL, left : left + THUMBNAIL].astype(np.float64)


def test_the_page_opens_with_every_method_editing_the_same_faces(toy_report) -> None:
    root, _ = toy_report
    text = (root / "reports/report.html").read_text()
    page = Page(text)
    ordered = [(tag, a.get("id")) for tag, a in page.tags if tag in ("h1", "h2", "table", "img", "section")]
    assert ordered[0] == ("h1", None) and ordered[1] == ("h2", "comparison")  # nothing between the header and it
    headings = [a.get("id") for tag, a in page.tags if tag == "h2"]
    assert headings[:2] == ["comparison", "ranking"]
    details = json.loads((root / "reports/ranking.details.json").read_text())["attributes"]
    tables = comparison_tables(page)
    assert list(tables) == list(details)  # one block per ranked attribute
    zero = ALPHAS.index(0.0)
    for attribute, (shown, *folded) in tables.items():
        methods = [method for method, _ in shown]
        assert methods == details[attribute]["methods"], attribute  # every method, best rank first
        assert methods[0] in ("truth", "truth-w") and methods[-1] == "random"
        assert len(folded) == 1 and len(folded[0]) == 3  # the third face, folded
        strips = {method: decode(uri) for method, uri in shown}
        for image in strips.values():
            assert image.size == (2 * len(ALPHAS) * THUMBNAIL + GAP, THUMBNAIL + CAPTION)
        for face in range(2):
            originals = {m: tile(image, face, zero, len(ALPHAS)) for m, image in strips.items()}
            for method in ("random", "truth-w"):  # the same unedited face, z and w methods alike
                assert np.abs(originals[method] - originals["truth"]).mean() < 1.0, (attribute, face, method)
            edited = tile(strips["truth"], face, len(ALPHAS) - 1, len(ALPHAS))
            assert np.abs(edited - originals["truth"]).mean() > 3.0  # the edit shows
        assert np.abs(tile(strips["truth"], 0, zero, 5) - tile(strips["truth"], 1, zero, 5)).mean() > 10.0
    assert "differ from" not in text  # no method's grid came from another evaluation


def test_a_grid_of_other_faces_is_flagged(toy_report, tmp_path) -> None:
    """A method whose grid shows other held-out faces (here: its rows swapped) is named in a warning."""
    root, params = toy_report
    copy = tmp_path / "run"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("evaluations"))
    grid = copy / "reports/grids/random/smile.png"
    with Image.open(grid) as sheet:
        tiles = traversal_grid_tiles(sheet, len(ALPHAS))
    swapped = tiles[[1, 0, *range(2, len(tiles))]]
    render_traversal_grid(swapped, ALPHAS, np.zeros(swapped.shape[:2]), "random: smile").save(grid)
    build_report(params, copy / "data", ["truth", "random", "truth-w"], layout=OutputLayout(copy))
    text = (copy / "reports/report.html").read_text()
    assert "The unedited faces (α = 0) of random differ from" in text
    assert text.count("differ from") == 1  # smile only


def test_traversal_grid_tiles_invert_the_grid_layout() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (3, 5, 8, 8, 3), dtype=np.uint8)
    sheet = render_traversal_grid(pixels, ALPHAS, np.zeros((3, 5)), "m: a")
    tiles = traversal_grid_tiles(sheet, 5)
    assert tiles.shape == (3, 5, 128, 128, 3)
    np.testing.assert_array_equal(tiles[:, :, ::16, ::16], pixels)  # nearest upscale by 16, cut back out exactly
    with pytest.raises(GridLayoutError, match="not a traversal grid of 7 α columns"):
        traversal_grid_tiles(sheet, 7)


def test_faces_are_jpeg_within_their_byte_budget(toy_report) -> None:
    root, _ = toy_report
    text = (root / "reports/report.html").read_text()
    faces = 0
    for shown, *folded in comparison_tables(Page(text)).values():
        for method, uri in [*shown, *(row for table in folded for row in table)]:
            assert uri.startswith("data:image/jpeg;base64,"), method
            assert decode(uri).format == "JPEG"
            columns = (decode(uri).width + GAP) // (len(ALPHAS) * THUMBNAIL + GAP) * len(ALPHAS)
            assert len(uri) <= columns * FACE_BUDGET
            faces += columns
    assert faces == len(ATTRIBUTES) * 3 * GRID_SAMPLES * len(ALPHAS)
    sources = re.findall(r"src=['\"]([^'\"]*)['\"]", text)
    assert all(src.startswith(("data:image/jpeg;base64,", "data:image/png;base64,")) for src in sources)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", text) and "<script" not in text  # opens offline
    # the 8×8 toy faces compress to nothing: the budget on the face DCGAN's real 64 px faces
    import torch

    from stages.plugins.generators import generator_for
    from stages.plugins.generators.synthesis import images_to_uint8

    generator = generator_for(make_params().generator)
    latents = torch.from_numpy(np.random.default_rng(0).standard_normal((14, generator.z_dim)).astype(np.float32))
    with torch.no_grad():
        pixels = images_to_uint8(generator.synthesize(latents, "z")).reshape(2, 7, THUMBNAIL, THUMBNAIL, 3)
    uri = jpeg_data_uri(strip(pixels, np.full((2, 7), 0.5)))
    assert len(uri) <= 14 * FACE_BUDGET


def test_integers_print_as_integers_and_fit_tables_are_folded(toy_report) -> None:
    root, _ = toy_report
    text = (root / "reports/report.html").read_text()
    fit = text.split("id='fit-statistics'", 1)[1]
    blocks = re.findall(r"<details><summary>(.*?)</summary>(.*?)</details>", fit, re.S)
    assert [summary.split(" (")[0] for summary, _ in blocks] == ["truth", "random"]  # truth-w reported no fit
    truth, random = (body for _, body in blocks)
    assert "<td>400</td>" in truth and "<td>300</td>" in truth and "<td>0.912</td>" in truth
    assert "<td>yes</td>" in truth and ".000" not in truth
    assert "<td>400</td>" in random and "<td>12</td>" in random and "<td>0.500</td>" in random
    assert "400.0" not in random and "<td>–</td>" in random  # a missing count stays missing, the others integers
    frame = pd.DataFrame({"K": [16, 32], "steps": [300.0, np.nan], "RCA": [0.25, 0.5]})
    cells = table_html(frame)
    assert "<td>16</td>" in cells and "<td>0.250</td>" in cells and "<td>–</td>" in cells
    assert [format_cell(v) for v in (np.int64(20000), 20000, 0.5, -0.0004, np.nan, True, None)] == [
        "20000",
        "20000",
        "0.500",
        "0.000",
        "–",
        "yes",
        "–",
    ]


def test_the_curves_legend_never_covers_the_data() -> None:
    """18 entries (9 methods, plain and conditional): the legend sits beside the panels, outside every axes."""
    methods = [f"method-{k}" for k in range(9)]
    points = {
        method: [
            {
                "direction": "smile",
                "mode": mode,
                "alpha": alpha,
                "target_mean": 0.1 * k * alpha,
                "target_low": 0.1 * k * alpha - 0.2,
                "target_high": 0.1 * k * alpha + 0.2,
            }
            for mode in ("plain", "conditional")
            for alpha in ALPHAS
        ]
        for k, method in enumerate(methods)
    }
    figure = figures.curves_figure(points, "smile")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    legends = figure.legends + [axes.get_legend() for axes in figure.axes if axes.get_legend() is not None]
    assert len(legends) == 1
    legend = legends[0].get_window_extent(renderer)
    assert [text.get_text() for text in legends[0].get_texts()] == methods  # one entry per method
    for axes in figure.axes:
        assert not legend.overlaps(axes.get_window_extent(renderer)), axes.get_title()
    assert len(figure.axes) == 2  # plain and conditional side by side


def test_numbers_without_an_interval_say_why(toy_report) -> None:
    """Cosines of fitted directions and the methods' own fit statistics carry no interval, and the page says why; the
    labels' correlations state their widest 95 % half-width (Fisher z)."""
    root, _ = toy_report
    text = (root / "reports/report.html").read_text()
    geometry = text.split("id='geometry'", 1)[1].split("<div", 1)[0]
    n_labeled = int(re.search(r"N = (\d+)\)", geometry).group(1))
    assert f"±{correlation_half_width(n_labeled):.3f} of its true value" in geometry
    assert "carry no interval" in geometry
    assert "no interval" in text.split("id='fit-statistics'", 1)[1].split("<details>", 1)[0]
    assert correlation_half_width(20000) == pytest.approx(0.01386, abs=2e-5)  # tanh(1.96 / √19997)
    assert correlation_half_width(103) == pytest.approx(np.tanh(1.959964 / 10), abs=1e-6)
    # the half-width holds its level: over many samples of size 103 from independent pairs, |r| exceeds it ~5 %
    rng = np.random.default_rng(0)
    pairs = rng.standard_normal((4000, 2, 103))
    r = np.array([np.corrcoef(x, y)[0, 1] for x, y in pairs])
    assert np.mean(np.abs(r) > correlation_half_width(103)) == pytest.approx(0.05, abs=0.015)
