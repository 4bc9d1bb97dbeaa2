"""How fast the app's overview and browse pages open on a large audited table (not a timed test).

    python benchmarks/app_bench.py --rows 1000000
    python benchmarks/app_bench.py --rows 5000 --text-chars 600 --images 50 --browser   # real-length rows

Builds an audited table of N rows with the real column contract (random scores, templated texts of
about `--text-chars` characters when given, `--images` distinct pictures when given; no scoring), then
runs the overview page and the browse page through Streamlit's AppTest twice each: the first run loads
and aggregates (cold), the second is what a user sees after the first load (cached aggregates, lazy
scans, one page of rows). `--browser` also times Browse in headless Chromium, until the script run has
finished, every picture has loaded and the page has stopped changing. Results: results/app.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
HOME = str(HERE.parent / "app" / "Home.py")


def _long(texts: list[str], chars: int, seed: int) -> list[str]:
    """Each text followed by varied filler words up to about `chars` characters (real answers run to a
    few hundred characters: VL-RewardBench's median is 577)."""
    if not chars:
        return texts
    words = ("the image shows a small red object near the left edge while a person stands behind it and "
             "several items rest on a wooden table under a bright window").split()
    rng = np.random.default_rng(seed)
    return [(t + " " + " ".join(rng.choice(words, chars // 4)))[:chars] for t in texts]


def _images(audit: Path, n: int, k: int) -> list[str | None]:
    """`k` distinct 640x480 JPEG pictures in AUDIT/pairs/img (the pairs folder the app falls back to),
    shared round-robin by the rows."""
    if not k:
        return [None] * n
    from PIL import Image

    (audit / "pairs" / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for j in range(k):
        pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(audit / "pairs" / "img" / f"{j}.jpg")
    return [f"img/{i % k}.jpg" for i in range(n)]


def build(audit: Path, n: int, seed: int = 0, text_chars: int = 0, images: int = 0) -> None:
    import polars as pl

    audit.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    text_prob = rng.beta(4, 1.5, n)
    mm_prob = rng.beta(2, 2, n)
    tl, ml = -np.log(text_prob), -np.log(mm_prob)
    sfc = tl / (tl + ml)
    w = (1 - text_prob) / (1 - text_prob).mean()
    ids = [f"{i:016x}" for i in range(n)]
    cues = ["length", "lead_in", "closing", "list_items"]
    df = pl.DataFrame({
        "pair_id": ids, "sample_id": ids, "source": "rlaif-v",
        "prompt": _long([f"What color is object {i % 997}?" for i in range(n)], text_chars // 3, 1),
        "chosen": _long([f"Great question! It is colour {i % 13}." for i in range(n)], text_chars, 2),
        "rejected": _long([f"It is colour {(i + 5) % 13}." for i in range(n)], text_chars, 3),
        "image_path": _images(audit, n, images), "image_id": None, "prompt_id": None, "margin": None, "status": "ok",
        "status_detail": None,
        "text_margin": np.log(text_prob / (1 - text_prob)), "text_prob": text_prob, "text_loss": tl,
        "mm_margin": np.log(mm_prob / (1 - mm_prob)), "mm_prob": mm_prob, "mm_loss": ml, "sfc": sfc, "weight": w,
        "cue_margin": rng.normal(size=n), "is_shortcut": text_prob >= 0.8, "fold": rng.integers(0, 5, n),
        **{f"cue_{c}": rng.integers(-1, 2, n).astype(float) for c in cues},
    })
    df.write_parquet(audit / "audited.parquet")
    summary = {"n_rows": n, "n_scored": n, "status_counts": {"ok": n}, "text_acc": float((text_prob > .5).mean()),
               "mm_acc": float((mm_prob > .5).mean()), "cue_acc": 0.5, "shortcut_rate": float((text_prob >= .8).mean()),
               "sfd": 0.0, "sfc_mean": float(sfc.mean()), "scheme": "debias", "top_cue": "lead_in",
               "cues": [{"name": c, "coefficient": 0.1, "association": 0.1, "share_differs": 0.6, "help": c} for c in cues],
               "per_source": [{"source": "rlaif-v", "n": n, "text_acc": 0.8, "mm_acc": 0.5, "cue_acc": 0.5,
                               "shortcut_rate": 0.5}],
               "config": {"folds": 5, "text_encoder": "minilm", "image_encoder": "pixels"}, "pairs_dir": str(audit)}
    (audit / "summary.json").write_text(json.dumps(summary))


def run_page(page: str | None) -> float:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(HOME, default_timeout=600)
    t0 = time.perf_counter()
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return time.perf_counter() - t0


# The state of the page: has the script run finished, how long is its HTML, has every picture loaded.
STATE = ("return [document.querySelector('[data-testid=\"stApp\"][data-test-script-state=\"notRunning\"]') "
         "!== null, document.body.innerHTML.length, Array.from(document.images).every(i => i.complete)]")


def settled(driver, t0: float, quiet: float = 1.0) -> float:
    """Seconds from `t0` until the page stopped changing: the run finished, every picture loaded, and
    the HTML unchanged for `quiet` seconds (the frontend keeps drawing after a run ends) - any layout."""
    size, changed = -1, time.perf_counter()
    while True:
        done, n, pictures = driver.execute_script(STATE)
        now = time.perf_counter()
        if n != size:
            size, changed = n, now
        if done and pictures and now - changed > quiet:
            return round(changed - t0, 2)
        time.sleep(0.03)


def browser_page(audit: Path, path: str, runs: int = 5) -> dict:
    """Seconds from asking headless Chromium for `path` until it is drawn (a fresh session each time:
    `tests/browser.py`'s App); and from a click on the first pair's select box until the rerun it
    starts is drawn (None where Browse has no such box)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from browser import App
    from selenium.webdriver.common.by import By

    loads, select = [], []
    with App(audit, size=(1400, 1000)) as app:
        app.open(path)                                   # warm the server's caches
        for _ in range(runs):
            t0 = time.perf_counter()
            app.driver.get(app.url + path)
            loads.append(settled(app.driver, t0))
            boxes = app.driver.find_elements(By.CSS_SELECTOR, '[class*="st-key-pick_"] label')
            if boxes:
                app.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", boxes[0])
                t0 = time.perf_counter()
                boxes[0].click()
                select.append(settled(app.driver, t0))
    return {"load_s": loads, "select_s": select or None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the audited table")
    ap.add_argument("--text-chars", type=int, default=0, help="characters of each answer (0: a short sentence)")
    ap.add_argument("--images", type=int, default=0, help="distinct pictures shared by the rows (0: none)")
    ap.add_argument("--browser", action="store_true", help="also time Browse in headless Chromium")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "app", help="scratch folder (deleted)")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "app.json", help="JSON results")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent / "app"))
    t0 = time.perf_counter()
    build(args.work, args.rows, text_chars=args.text_chars, images=args.images)
    built = time.perf_counter() - t0
    os.environ["SHORTCUT_AUDIT_DIR"] = str(args.work)
    res = {"rows": args.rows, "text_chars": args.text_chars, "images": args.images, "build_s": round(built, 2)}
    # AppTest runs pages in this process, so st.cache_data persists between the two runs of a page.
    res["overview_first_s"] = round(run_page(None), 2)
    res["overview_cached_s"] = round(run_page(None), 2)
    res["browse_first_s"] = round(run_page("pages/1_Browse.py"), 2)
    res["browse_cached_s"] = round(run_page("pages/1_Browse.py"), 2)
    if args.browser:
        res["browse_chromium"] = browser_page(args.work, "/Browse")
    shutil.rmtree(args.work, ignore_errors=True)
    from audit.io import versions

    command = (f"python benchmarks/app_bench.py --rows {args.rows} --text-chars {args.text_chars} "
               f"--images {args.images}" + (" --browser" if args.browser else ""))
    out = {"command": command, "versions": versions(), "row": res}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
