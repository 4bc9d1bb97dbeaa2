"""The app in a real browser: start `shortcut-audit app` on a free loopback port, wait until the
script has finished rendering, screenshot the overview and a pair view, check the key elements and
that no exception is shown, and stop the server by its PID. Skipped locally only without Chromium;
in CI (CI=true) a missing browser fails the test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from audit.config import ScoreConfig, SynthConfig
from audit.score import score
from audit.synth import synth

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000"]


def _need_browser():
    if CHROMIUM and DRIVER:
        return
    msg = "Chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"{msg}: in CI this test must run")
    pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


def _rendered(driver, timeout: float = 60) -> None:
    """Wait until Streamlit says the script has finished (not mid-run)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    time.sleep(0.5)
    WebDriverWait(driver, timeout).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, '[data-testid="stApp"][data-test-script-state="notRunning"]'))
    time.sleep(1.0)   # let the charts paint


def test_app_in_a_real_browser(tmp_path):
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    src = synth(SynthConfig(env="leadin", out=tmp_path / "src", n=120, format="rlaif-v"))
    score(ScoreConfig(source=src.parent, out=tmp_path / "audit", cache_dir=tmp_path / "cache"))
    pair = pl.read_parquet(tmp_path / "audit" / "audited.parquet").sort("text_prob")["pair_id"][0]
    port = _free_port()
    # As a user starts it in the background on a machine where Streamlit never ran: no flags, a fresh HOME
    # (no Streamlit credentials), no stdin. It used to stop at Streamlit's first-run "Email:" prompt.
    import os

    (tmp_path / "home").mkdir()
    server = subprocess.Popen([sys.executable, "-m", "audit", "app", str(tmp_path / "audit"), "--port", str(port)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "HOME": str(tmp_path / "home")})
    driver = None
    try:
        _wait_http(f"http://127.0.0.1:{port}/_stcore/health")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in FLAGS + [f"--user-data-dir={tmp_path / 'chrome'}"]:
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
        driver.get(f"http://127.0.0.1:{port}/")
        _rendered(driver)
        assert "Shortcut audit" in driver.page_source and "Shortcut map" in driver.page_source
        assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        driver.save_screenshot(str(tmp_path / "overview.png"))

        driver.get(f"http://127.0.0.1:{port}/Pair?pair={pair}")
        _rendered(driver)
        html = driver.page_source
        assert "Pair view" in html and "pair-chosen" in html and "pair-rejected" in html and pair in html
        assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        assert driver.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img')
        driver.save_screenshot(str(tmp_path / "pair.png"))
        for shot in ("overview.png", "pair.png"):
            assert (tmp_path / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("UPDATE_SCREENSHOTS"):
            for shot in ("overview.png", "pair.png"):
                shutil.copy(tmp_path / shot, ROOT / "docs" / f"app_{shot}")
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()          # the server is this PID (the CLI execs Streamlit)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
