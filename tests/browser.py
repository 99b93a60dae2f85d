"""Headless Chromium for the browser tests (the explorer's and the report's): where it is, and its options."""

from __future__ import annotations

import os
import shutil

import pytest

BROWSER_PACKAGES = "apt-get install -y chromium chromium-driver"


def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver), or a skip of the calling module (a failure in CI) saying in one line what to
    install."""
    missing = []
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        missing.append(f"Debian's chromium and chromium-driver ({BROWSER_PACKAGES})")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        message = f"browser tests need {' and '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must install them (.ci/run)", pytrace=False)
        pytest.skip(message, allow_module_level=True)
    return chromium, driver


def chromium_options(chromium: str, window: tuple[int, int]):
    """Selenium options for a headless Chromium window of ``window`` (width, height) pixels."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={window[0]},{window[1]}",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(argument)
    return options
