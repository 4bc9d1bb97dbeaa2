"""The Overview's headline numbers in a real browser (headless Chromium) at a 1,024 x 900 window: every
label, value and delta is shown whole (six metrics in one row were cut to "Text-on..." / "90...."). Skipped
locally only without Chromium; in CI (CI=true) a missing browser fails the test."""

from __future__ import annotations

import json

import pytest

from audit.config import ScoreConfig, SynthConfig
from audit.reading import mm_versus_text, pct, threshold_label
from audit.score import score
from audit.synth import synth
from browser import App, need_browser


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("home")
    src = synth(SynthConfig(env="leadin", out=root / "src", n=120, format="rlaif-v"))
    score(ScoreConfig(source=src.parent, out=root / "audit", cache_dir=root / "cache"))
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
