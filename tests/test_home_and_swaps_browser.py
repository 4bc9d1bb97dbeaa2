"""In a real browser (headless Chromium): the Overview's headline numbers at a 1,024 x 900 window, every
label, value and delta shown whole (six metrics in one row were cut to "Text-on..." / "90...."); the
"Likely label swaps" page lists the pairs whose multimodal side prefers the rejected answer and tags
one with a click. Skipped locally only without Chromium; in CI (CI=true) a missing browser fails the test."""

from __future__ import annotations

import json
import time

import polars as pl
import pytest

from audit.config import ScoreConfig, SynthConfig
from audit.reading import mm_versus_text, pct, threshold_label
from audit.score import score
from audit.synth import synth
from browser import App, need_browser, rendered

N = 120


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory):
    """A shortcut environment whose multimodal side is a reward column: every tenth pair's prefers the
    rejected answer (margin -3, p = 0.95)."""
    root = tmp_path_factory.mktemp("home")
    src = synth(SynthConfig(env="leadin", out=root / "src", n=N, format="pairs"))
    df = pl.read_parquet(src)
    df.with_columns(pl.Series("rm_margin", [-3.0 if i % 10 == 0 else 2.0 for i in range(df.height)])).write_parquet(src)
    score(ScoreConfig(source=src.parent, out=root / "audit", cache_dir=root / "cache", mm_scores="rm_margin",
                      scheme="sfc"))
    return root / "audit"


def _shown(driver, metric, testid: str) -> tuple[str, int, int]:
    """(text, scrollWidth, clientWidth) of the text box of one part of an `st.metric`: wider content
    than box is text cut off by an ellipsis."""
    from selenium.webdriver.common.by import By

    box = metric.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"] [data-testid="stMarkdownContainer"]')
    return driver.execute_script("const e = arguments[0]; return [e.innerText, e.scrollWidth, e.clientWidth]", box)


def test_the_headline_numbers_are_whole_at_1024_px(audit_dir):
    need_browser()
    from selenium.webdriver.common.by import By

    s = json.loads((audit_dir / "summary.json").read_text())
    expected = {"Pairs": (f"{s['n_rows']:,}", None),
                "Text-only acc.": (pct(s["text_acc"]), f"{100 * (s['text_acc'] - 0.5):+.1f} pts vs chance"),
                "Text signal": (pct(s["text_signal_share"], 0), None),
                "Multimodal acc.": (pct(s["mm_acc"]), mm_versus_text(s)),
                threshold_label(s).replace(">=", "≥"): (pct(s["shortcut_rate"]), None),
                "SFD": (f"{s['sfd']:.1f}", None)}
    with App(audit_dir, size=(1024, 900)) as app:
        d = app.open("/", settle=2)
        metrics = d.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')
        seen = {}
        for m in metrics:
            label, lw, lc = _shown(d, m, "stMetricLabel")
            value, vw, vc = _shown(d, m, "stMetricValue")
            assert lw <= lc, f"label {label!r} cut off ({lw} > {lc} px)"
            assert vw <= vc, f"value {value!r} of {label!r} cut off ({vw} > {vc} px)"
            delta = None
            if m.find_elements(By.CSS_SELECTOR, '[data-testid="stMetricDelta"]'):
                delta, dw, dc = _shown(d, m, "stMetricDelta")
                assert dw <= dc, f"delta {delta!r} of {label!r} cut off ({dw} > {dc} px)"
            seen[label] = (value, delta)
        assert seen == expected


def test_the_swaps_page_lists_them_and_tags_one_with_a_click(audit_dir):
    need_browser()
    from selenium.webdriver.common.by import By

    from audit.swaps import ranked
    from audit.tags import read_tags

    first = ranked(pl.read_parquet(audit_dir / "audited.parquet"))["pair_id"][0]
    with App(audit_dir) as app:
        d = app.open("/")
        next(a for a in d.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebar"] a')
             if a.text.strip() == "Likely label swaps").click()
        rendered(d)
        text = d.find_element(By.CSS_SELECTOR, '[data-testid="stApp"]').text
        assert "Likely label swaps" in text and f"{N // 10} likely swaps in the current filter" in text
        assert not d.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        d.find_element(By.CSS_SELECTOR, f'.st-key-swap_swap_{first} button').click()
        end = time.time() + 30
        while read_tags(audit_dir).get(first) != "swap" and time.time() < end:
            time.sleep(0.5)
        assert read_tags(audit_dir) == {first: "swap"}
