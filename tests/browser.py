"""Headless Chromium for the page tests (selenium + chromedriver); not a test module.

`chrome(download_dir)` starts Debian's chromium (`--headless=new --no-sandbox`) with downloads
going to `download_dir`; `check_page(driver, path)` opens a static page from disk and asserts
that every image loaded (naturalWidth > 0), no console error was logged and a screenshot is not
blank. Without chromium/chromedriver the tests skip — except on CI (env CI=true), where that is
a failure: `.ci/run` installs them.
"""

import io
import os
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def _binary(names):
  return next((shutil.which(n) for n in names if shutil.which(n)), None)


def require_chrome():
  """(chromium, chromedriver) paths; skips without them off CI, fails on CI."""
  browser, driver = _binary(CHROMIUM), _binary(("chromedriver",))
  missing = [n for n, p in (("chromium", browser), ("chromedriver", driver)) if p is None]
  try:
    import selenium  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    missing.append("selenium (pip install -e '.[test]')")
  if missing:
    message = f"headless browser tests need {', '.join(missing)} (apt-get install chromium " \
              "chromium-driver)"
    if os.environ.get("CI", "").lower() == "true":
      pytest.fail(message + ": CI must install them (.ci/run)")
    pytest.skip(message)
  return browser, driver


def chrome(download_dir: pathlib.Path):
  """A headless Chromium driver that saves downloads to `download_dir` without asking."""
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
  browser, driver_path = require_chrome()
  options = webdriver.ChromeOptions()
  options.binary_location = browser
  for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1200,900", "--allow-file-access-from-files"):
    options.add_argument(arg)
  options.add_experimental_option("prefs", {
      "download.default_directory": str(download_dir), "download.prompt_for_download": False,
      "download.directory_upgrade": True, "safebrowsing.enabled": True})
  options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  driver = webdriver.Chrome(service=Service(driver_path), options=options)
  driver.execute_cdp_cmd("Page.setDownloadBehavior",
                         {"behavior": "allow", "downloadPath": str(download_dir)})
  return driver


def console_errors(driver) -> list[dict]:
  return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def check_page(driver, path: pathlib.Path, min_images: int = 1) -> int:
  """Opens `path` (file://) and asserts: every <img> with a src loaded, no console error, a
  screenshot that is not blank. Returns the number of images."""
  driver.get(pathlib.Path(path).resolve().as_uri())
  return check_current(driver, min_images)


def check_current(driver, min_images: int = 1) -> int:
  """`check_page`'s checks on the page the driver shows now."""
  path = driver.current_url
  # Every image finished (complete) before its size is read.
  driver.execute_async_script("""
    var done = arguments[arguments.length - 1];
    var imgs = Array.from(document.images).filter(function(i){ return i.getAttribute('src'); });
    Promise.all(imgs.map(function(i){ return i.complete ? 0 : new Promise(function(r){
      i.onload = r; i.onerror = r; }); })).then(function(){ done(0); });""")
  sizes = driver.execute_script(
      "return Array.from(document.images).filter(function(i){return i.getAttribute('src');})"
      ".map(function(i){return [i.src, i.naturalWidth];});")
  assert len(sizes) >= min_images, (path, sizes)
  broken = [src for src, width in sizes if not width]
  assert not broken, f"{path}: images that did not load: {broken}"
  errors = console_errors(driver)
  assert not errors, f"{path}: console errors: {errors}"
  shot = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))
  assert shot.std() > 5 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 10, \
      f"{path}: the screenshot is blank"
  return len(sizes)
