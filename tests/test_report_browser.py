"""The written report.html in a real browser (headless Chromium driven by Selenium), opened from a file URL as a
person would open the mailed page: no console error, every embedded image decodes, the methods' edits side by side
fill the first screen, the folded fit tables open; a screenshot of the first screen is saved beside the run.

Without Debian's ``chromium`` and ``chromium-driver`` the tests skip with one line saying so; in CI (``CI`` set) a
missing browser is a failure.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from tests.browser import browser_paths, chromium_options
from tests.test_report import build_toy_report

#: A laptop's window: the first screen the comparison must fill.
WINDOW = (1280, 800)


CHROMIUM, CHROMEDRIVER = browser_paths()


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    """The toy run's report opened in headless Chromium: (driver, run root)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    root = tmp_path_factory.mktemp("report-browser")
    build_toy_report(root)
    options = chromium_options(CHROMIUM, WINDOW)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get((root / "reports/report.html").resolve().as_uri())
        deadline = time.time() + 30
        while driver.execute_script("return document.readyState") != "complete" and time.time() < deadline:
            time.sleep(0.05)
        yield driver, root
    finally:
        driver.quit()


def test_the_report_opens_without_errors_and_shows_the_edits_first(opened) -> None:
    driver, root = opened
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe
    broken = driver.execute_script(
        "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)"
    )
    assert not broken
    fetched = driver.execute_script(
        "return [...document.querySelectorAll('[src]')].map(e => e.getAttribute('src'))"
        ".concat([...document.querySelectorAll('[href]')].map(e => e.getAttribute('href')))"
        ".filter(u => !u.startsWith('data:') && !u.startsWith('#'))"
    )
    assert not fetched  # one self-contained file: nothing to fetch
    height = driver.execute_script("return innerHeight")
    first = driver.execute_script("""
        const table = document.querySelector('section.attribute table.compare');
        return {heading: document.querySelector('h2').id,
                rows: [...table.querySelectorAll('tr[data-method]')].map(row => {
                    const box = row.querySelector('img').getBoundingClientRect();
                    return {method: row.dataset.method, top: box.top, bottom: box.bottom, left: box.left,
                            right: box.right};
                })};""")
    assert first["heading"] == "comparison"
    methods = [row["method"] for row in first["rows"]]
    assert sorted(methods) == ["random", "truth", "truth-w"]
    screenshot = root / "reports/report-first-screen.png"
    driver.save_screenshot(str(screenshot))
    shot = np.asarray(Image.open(io.BytesIO(screenshot.read_bytes())).convert("RGB")).astype(np.float64)
    scale = shot.shape[1] / driver.execute_script("return innerWidth")
    for row in first["rows"]:
        method, top, bottom = row["method"], row["top"], row["bottom"]
        assert 0 <= top and bottom <= height, f"{method}'s edits are not on the first screen ({top}–{bottom} px)"
        painted = shot[int(top * scale) : int(bottom * scale), int(row["left"] * scale) : int(row["right"] * scale)]
        assert painted.std() > 5.0, f"{method}'s faces are not painted"  # faces, not a blank box


def test_the_folded_fit_tables_open(opened) -> None:
    driver, _ = opened
    summary = driver.find_element("css selector", "#fit-statistics ~ details summary")
    table = driver.find_element("css selector", "#fit-statistics ~ details table")
    assert not table.is_displayed()
    driver.execute_script("arguments[0].scrollIntoView()", summary)
    summary.click()
    assert table.is_displayed() and "400" in table.text
