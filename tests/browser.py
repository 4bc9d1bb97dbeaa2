"""A real browser on the app, for the tests and the screenshots: `shortcut-audit app` on a free
loopback port (stopped by its PID), headless Chromium through chromedriver, and a wait until Streamlit
has finished the script run (a screenshot or a check mid-run sees half a page)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


def rendered(driver, timeout: float = 60, settle: float = 1.0) -> None:
    """Wait until Streamlit says the script has finished (not mid-run), then let the charts paint."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    time.sleep(0.5)
    WebDriverWait(driver, timeout).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, '[data-testid="stApp"][data-test-script-state="notRunning"]'))
    time.sleep(settle)


class App:
    """`shortcut-audit app` on a free port with a Chromium driving it; a context manager that stops both."""

    def __init__(self, audit: Path, compare: Path | None = None, size=(1400, 1000), home: Path | None = None):
        self.audit, self.compare, self.size, self.home = Path(audit), compare, size, home

    def __enter__(self) -> "App":
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.tmp = Path(tempfile.mkdtemp(prefix="sa-browser-"))
        self.port = free_port()
        cmd = [sys.executable, "-m", "audit", "app", str(self.audit), "--port", str(self.port)]
        if self.compare:
            cmd += ["--compare", str(self.compare)]
        home = self.home or self.tmp / "home"
        home.mkdir(parents=True, exist_ok=True)
        self.server = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, env={**os.environ, "HOME": str(home)})
        self.driver = None
        try:
            wait_http(f"{self.url}/_stcore/health")
            opts = webdriver.ChromeOptions()
            opts.binary_location = CHROMIUM
            for flag in FLAGS + [f"--window-size={self.size[0]},{self.size[1]}", f"--user-data-dir={self.tmp / 'chrome'}"]:
                opts.add_argument(flag)
            self.driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self, path: str = "/", settle: float = 1.0):
        self.driver.get(self.url + path)
        rendered(self.driver, settle=settle)
        return self.driver

    def __exit__(self, *exc) -> None:
        if self.driver is not None:
            self.driver.quit()
        self.server.terminate()          # the server is this PID (the CLI execs Streamlit)
        try:
            self.server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)




def need_browser() -> None:
    """Skip without Chromium locally; in CI (CI=true) a missing browser fails the test."""
    import pytest

    if CHROMIUM and DRIVER:
        return
    msg = "Chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"{msg}: in CI this test must run")
    pytest.skip(msg)
