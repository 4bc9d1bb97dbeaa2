"""Screenshots of every app page, taken in headless Chromium from a demo audit.

    shortcut-audit demo -o shortcut-audit-demo
    python docs/screenshots.py shortcut-audit-demo/audit/leadin --compare shortcut-audit-demo/audit/clean

Writes docs/app_<page>.png. Needs Chromium and chromedriver (Debian: chromium chromium-driver) and
selenium (installed with the `test` extra). The server is started on a free loopback port and stopped
by its PID."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import App, rendered  # noqa: E402  (the tests' browser helper)

def full_page(driver, path: Path, width: int) -> None:
    """Resize the window to the page's height (Streamlit scrolls inside its main block) and save it."""
    height = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
        "return Math.max(m.scrollHeight, document.body.scrollHeight);")
    driver.set_window_size(width, min(max(int(height) + 120, 800), 4000))
    time.sleep(1.0)
    rendered(driver, settle=1.0)
    driver.save_screenshot(str(path))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("audit", type=Path)
    ap.add_argument("--compare", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()
    import polars as pl

    df = pl.read_parquet(args.audit / "audited.parquet").filter(pl.col("is_shortcut")).sort(
        ["text_prob", "pair_id"], descending=[True, False])
    pair = df["pair_id"][0] if df.height else None
    pages = [("overview", "/"), ("browse", "/Browse?shortcut=yes"),
             ("pair", f"/Pair?shortcut=yes&pair={pair}" if pair else "/Pair"),
             ("map", "/Map"), ("compare", "/Compare"), ("export", "/Export?shortcut=yes")]
    with App(args.audit, args.compare) as app:
        for name, path in pages:
            app.driver.set_window_size(1400, 900)          # each page measured from a small window
            driver = app.open(path, settle=2.0)
            full_page(driver, args.out / f"app_{name}.png", 1400)
            print(f"{name}: {args.out / f'app_{name}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
