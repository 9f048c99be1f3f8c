"""Debian's headless Chromium driven by Selenium (``make browser`` installs both).

No browser or driver is downloaded: Selenium is given Debian's ``chromedriver`` and
``chromium`` binaries, so Selenium Manager never runs. The browser runs in UTC (the page
shows UTC; so do the tests' dates) with a profile of its own, and keeps its console log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM_NAMES = ("chromium", "chromium-browser")
DRIVER_NAME = "chromedriver"
WINDOW = (1440, 1800)
PAGE_LOAD_TIMEOUT_S = 60


def binaries() -> tuple[str, str] | None:
    """(chromium, chromedriver) on PATH, or None."""
    browser = next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)
    driver = shutil.which(DRIVER_NAME)
    return (browser, driver) if browser and driver else None


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with its own profile directory; quit on exit."""
    found = binaries()
    if found is None:
        raise AssertionError("chromium and chromedriver are not installed: run `make browser`")
    browser, driver_path = found
    options = Options()
    options.binary_location = browser
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--user-data-dir={profile}",
        "--no-first-run", "--no-default-browser-check", "--disable-extensions",
        "--disable-background-networking", "--disable-component-update", "--lang=en-US",
    ):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_path, env={**os.environ, "TZ": "UTC"})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def console(driver: Any) -> list[dict[str, Any]]:
    """The browser console's entries since the last call (Chromium's log, not WebDriver's)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")
    return entries
