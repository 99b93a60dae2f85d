"""The explorer in a real browser (headless Chromium driven by Selenium), used as a person would: move the happy
slider and watch the happy score rise and the face change, switch to compare mode, upload a photo, export, reload
the permalink.

One finished run (the embedded face DCGAN and the real ``faces`` labelers, 200 samples, InterFaceGAN, ortho-linear
and SeFa fitted on them), one server and one browser serve every test here. Without Debian's ``chromium`` and
``chromium-driver`` the tests skip with one line saying so; in CI (``CI`` set) a missing browser is a failure.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentatlas.layout import OutputLayout
from tests.browser import browser_paths, chromium_options
from tests.conftest import make_params

WAIT_S = 90.0


CHROMIUM, CHROMEDRIVER = browser_paths()


def build_face_run(root: Path):
    """A finished run of the embedded DCGAN with the ``faces`` labelers (200 samples) and three fitted methods;
    returns (params, labeler)."""
    import yaml

    from stages.fit import run_fit
    from stages.label import LabelStage
    from stages.plugins.labelers import labeler_for
    from stages.runtime.chunked import run_stage
    from stages.sample import SampleStage
    from stages.synthesize import SynthesizeStage

    params = make_params(
        sample={"n_samples": 200, "chunk_size": 100},
        label={"labeler": "faces"},
        fit={
            "methods": ["interfacegan", "ortho-linear", "sefa"],
            "attributes": ["happy", "male"],
            "device": "cpu",
            "params": {
                "interfacegan": {"ratio": 0.25},
                "ortho-linear": {"epochs": 30},
                "sefa": {"n_components": 2, "naming": {"n_samples": 8}},
            },
        },
    )
    labeler = labeler_for(params.label)
    data_dir = root / "data"
    run_stage(SampleStage(params, data_dir))
    run_stage(SynthesizeStage(params, data_dir))
    run_stage(LabelStage(params, data_dir, labeler=labeler))
    for method in params.fit.methods:
        run_fit(params, data_dir, method, layout=OutputLayout(root), labeler=labeler)
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    return params, labeler


class Site:
    """The server, the browser and what the tests read from the page."""

    def __init__(self, url: str, driver, engine, downloads: Path, seed: int) -> None:
        self.url, self.driver, self.engine, self.downloads, self.seed = url, driver, engine, downloads, seed

    def run(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, condition, what: str, seconds: float = WAIT_S):
        deadline = time.time() + seconds
        while time.time() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        errors = self.run(
            "return document.getElementById('error').hidden ? '' : document.getElementById('error-text').textContent"
        )
        raise AssertionError(f"timed out waiting for {what}" + (f"; the page says: {errors}" if errors else ""))

    def open(self, query: str = "") -> None:
        self.driver.get(f"{self.url}?{query}" if query else self.url)
        self.wait(lambda: self.run("return document.body.dataset.ready") == "yes", "the page to load")
        self.settled()

    def settled(self) -> str:
        """Wait until the shown image and its scores are those of the page's current state; return its query."""

        def done():
            return self.run("""
                const query = queryOf(state);
                const canvas = document.getElementById(state.mode === 'compare' ? 'compare-canvas' : 'view');
                const scored = state.mode === 'compare' ? document.getElementById('compare-tiles').dataset.scoresKey
                                                        : document.getElementById('scores').dataset.key;
                return canvas.dataset.key === query && scored === query ? query : null;""")

        return self.wait(done, "the image and scores of the current state")

    def score(self, name: str) -> float:
        return float(
            self.driver.find_element("css selector", f'#scores tr[data-score="{name}"]').get_attribute("data-value")
        )

    def pixels(self, canvas: str = "view") -> np.ndarray:
        data_url = self.run(f"return document.getElementById('{canvas}').toDataURL('image/png')")
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))

    @staticmethod
    def engine_state(query: str):
        from urllib.parse import parse_qsl

        from stages.explore.state import parse_query

        return parse_query(parse_qsl(query))

    def slider(self, slider_id: str):
        return self.driver.find_element("css selector", f'input[data-slider="{slider_id}"]')

    def press(self, element, key: str, times: int) -> None:
        for _ in range(times):
            element.send_keys(key)

    def downloaded(self, suffix: str) -> Path:
        def found():
            files = [path for path in self.downloads.iterdir() if path.name.endswith(suffix)]
            return files[0] if files else None

        return self.wait(found, f"a downloaded *{suffix}")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from pipeline.explore.app import running
    from stages.explore.engine import ExploreEngine
    from stages.explore.state import ExploreState, Start

    root = tmp_path_factory.mktemp("explore-browser")
    params, labeler = build_face_run(root)
    engine = ExploreEngine(params, root / "data", root, labeler=labeler, device="cpu", invert_steps=4)
    # a start that does not smile yet (the face the happy slider has room to change)
    seed = min(range(8), key=lambda s: engine.scores(ExploreState(Start("seed", s)))["happy"])
    downloads = tmp_path_factory.mktemp("downloads")
    options = chromium_options(CHROMIUM, (1400, 1000))
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        with running(engine) as url:
            yield Site(url, driver, engine, downloads, seed)
    finally:
        driver.quit()


def test_moving_the_happy_slider_raises_the_shown_happy_score_and_changes_the_face(site) -> None:
    from selenium.webdriver.common.keys import Keys

    site.open(f"start=seed:{site.seed}")
    happy_before, face_before = site.score("happy"), site.pixels()
    slider = site.slider("interfacegan/happy")
    site.press(slider, Keys.ARROW_RIGHT, 30)  # α 0 → 3, as fast as keys repeat
    query = site.settled()
    assert "e=interfacegan%2Fhappy%3A3" in query and slider.get_attribute("value") == "3"
    happy_after = site.score("happy")
    assert happy_after > happy_before + 0.1, (happy_before, happy_after)
    assert np.abs(site.pixels().astype(int) - face_before.astype(int)).mean() > 2.0
    stats = site.run("return window.exploreStats")
    assert stats["inputs"] >= 30 and 1 <= stats["renders"] <= stats["inputs"]
    assert all(0 < latency < 30_000 for latency in stats["latencies"])
    # the score shown is the labelers' score of exactly this image
    assert happy_after == pytest.approx(site.engine.scores(site.engine_state(query))["happy"], abs=1e-6)


def test_compare_mode_shows_every_method_under_one_slider(site) -> None:
    from selenium.webdriver.common.keys import Keys

    site.open(f"start=seed:{site.seed}")
    site.driver.find_element("id", "mode-compare").click()
    site.settled()
    tiles = site.driver.find_elements("css selector", "#compare-tiles .tile")
    assert [tile.get_attribute("data-slider") for tile in tiles] == [
        "start",
        "interfacegan/happy",
        "ortho-linear/happy",
        *([s.id for s in site.engine.compare_sliders("happy") if s.set_name == "sefa"]),
    ]
    strip = site.pixels("compare-canvas")
    assert strip.shape == (160, 160 * len(tiles), 3)
    before = [float(tile.get_attribute("data-value")) for tile in tiles]
    assert len(set(before)) == 1  # α = 0: every tile is the start
    site.press(site.driver.find_element("id", "compare-alpha"), Keys.ARROW_RIGHT, 30)
    query = site.settled()
    assert "mode=compare" in query and "cmp=happy" in query and "calpha=3" in query
    after = [
        float(tile.get_attribute("data-value"))
        for tile in site.driver.find_elements("css selector", "#compare-tiles .tile")
    ]
    assert after[0] == before[0] and after[1] > before[1] + 0.1  # InterFaceGAN's edit made the face happier
    moved = site.pixels("compare-canvas").astype(int)
    assert np.abs(moved[:, :160] - strip[:, :160]).max() == 0  # the start tile stays
    assert np.abs(moved[:, 160:320] - strip[:, 160:320]).mean() > 2  # InterFaceGAN's tile changed
    site.driver.find_element("id", "mode-sliders").click()
    assert "mode=compare" not in site.settled()


def test_a_dropped_photo_is_aligned_inverted_and_becomes_the_start(site) -> None:
    import matplotlib

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    site.open(f"start=seed:{site.seed}")
    face_before = site.pixels()
    note = site.driver.find_element("id", "photo-note").text
    assert "no usable encoder" in note and "4 steps" in note  # this tiny run trained none
    site.driver.find_element("id", "photo-file").send_keys(str(photo))
    state = site.wait(
        lambda: site.run(
            "const s = document.getElementById('drop').dataset.jobState; "
            "return ['done', 'failed', 'cancelled'].includes(s) ? s : null"
        ),
        "the photo's inversion",
    )
    assert state == "done", site.run("return document.getElementById('error-text').textContent")
    query = site.settled()
    assert "start=photo%3A" in query
    assert np.abs(site.pixels().astype(int) - face_before.astype(int)).mean() > 2.0
    assert (
        site.wait(lambda: site.run("return document.getElementById('photo-aligned').naturalWidth"), "the aligned crop")
        == 64
    )
    assert "PSNR" in site.driver.find_element("id", "photo-summary").text
    site.slider("interfacegan/happy").send_keys("\ue014")  # one step right: the photo edits like any start
    assert "e=interfacegan%2Fhappy%3A0.1" in site.settled()
    # dropped onto the page instead of chosen: the same photo, so its inversion is reused
    site.run(
        """
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'grace_hopper.jpg', { type: 'image/jpeg' }));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: transfer,
                                                                              bubbles: true, cancelable: true }));
        """,
        base64.b64encode(photo.read_bytes()).decode(),
    )
    site.wait(lambda: "reused" in site.driver.find_element("id", "photo-summary").text, "the dropped photo")


def test_exports_download_the_image_strip_animation_and_latent(site) -> None:
    from selenium.webdriver.common.keys import Keys

    site.open(f"start=seed:{site.seed}")
    site.press(site.slider("interfacegan/happy"), Keys.ARROW_RIGHT, 10)
    site.settled()
    for button in ("export-image", "export-latent", "export-strip", "export-anim"):
        site.driver.find_element("id", button).click()
        site.wait(lambda: site.run("return document.getElementById('export-panel').dataset.last"), button)
    image = Image.open(site.downloaded(f"seed-{site.seed}.png"))
    assert image.size == (256, 256)  # 64 px × 4
    np.testing.assert_array_equal(np.asarray(image.resize((320, 320), Image.NEAREST)), site.pixels())
    latent = np.load(site.downloaded(".npy"))
    assert latent.shape == (1, 100) and latent.dtype == np.float32
    assert Image.open(site.downloaded("strip-interfacegan-happy.png")).width == 7 * 128
    animation = Image.open(site.downloaded("interfacegan-happy.gif"))
    assert animation.n_frames == 24


def test_the_permalink_restores_the_whole_view(site) -> None:
    from selenium.webdriver.common.keys import Keys

    site.open(f"start=seed:{site.seed}")
    site.press(site.slider("interfacegan/happy"), Keys.ARROW_RIGHT, 20)
    site.press(site.slider("ortho-linear/male"), Keys.ARROW_LEFT, 15)
    site.driver.find_element("css selector", 'input[data-hold="male"]').click()
    query = site.settled()
    face, link = site.pixels(), site.driver.find_element("id", "permalink").get_attribute("value")
    assert link.endswith(query) and "keep=male" in link
    site.driver.get("about:blank")
    site.driver.get(link)
    site.wait(lambda: site.run("return document.body.dataset.ready") == "yes", "the permalink to load")
    assert site.settled() == query
    np.testing.assert_array_equal(site.pixels(), face)
    assert site.slider("interfacegan/happy").get_attribute("value") == "2"
    assert site.slider("ortho-linear/male").get_attribute("value") == "-1.5"
    assert site.driver.find_element("css selector", 'input[data-hold="male"]').is_selected()
