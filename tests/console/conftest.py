"""The console in headless Chromium (Debian's chromium and chromium-driver, driven by Selenium).

Nothing is installed from the network here: ``make test`` installs the apt
packages where they are missing. Where no Chromium can be had the tests are
skipped, saying so. Screenshots of every step go to tests/console/screenshots/.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http.conftest import HttpServer

SCREENSHOTS = Path(__file__).parent / "screenshots"
CHROMIUM = os.environ.get("IDLINK_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("IDLINK_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,1700",
)


def _browser_missing() -> str:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).exists() or shutil.which(path)):
            return f"{path} not found: apt-get install chromium chromium-driver (make test does)"
    return ""


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    running = HttpServer(tmp_path_factory.mktemp("console") / "data").start()
    yield running
    assert running.stop() == 0, running.log()[-4000:]
    assert "Traceback" not in running.log(), running.log()[-4000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    missing = _browser_missing()
    if missing:
        pytest.skip(f"no headless Chromium: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    SCREENSHOTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture
def shot(browser):
    """Save a screenshot of the page: shot("01-signed-in")."""

    def save(name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        browser.save_screenshot(str(path))
        return path

    return save
