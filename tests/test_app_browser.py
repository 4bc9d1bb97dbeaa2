"""The app in a real browser (headless Chromium): it serves when started in the background on a machine
where Streamlit never ran; filters follow the user through the sidebar to every page; a box drawn on
the shortcut map becomes a Browse filter; a tag set with a key press moves on to the next pair,
survives a reload and `export --tags` honours it; J / K walk the pairs of the filter. Skipped locally
only without Chromium; in CI (CI=true) a missing browser fails the test."""

from __future__ import annotations

import time
import urllib.parse

import polars as pl
import pytest

from audit.config import ExportConfig
from audit.export import export
from audit.tags import read_tags
from browser import App, need_browser, rendered
from conftest import scored_synth_audit



@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory):
    return scored_synth_audit(tmp_path_factory.mktemp("browser"))


def _df(audit_dir) -> pl.DataFrame:
    return pl.read_parquet(audit_dir / "audited.parquet")


def _params(driver) -> dict:
    return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlparse(driver.current_url).query).items()}


def _no_exception(driver) -> None:
    from selenium.webdriver.common.by import By

    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')


def _text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, '[data-testid="stApp"]').text


def _until(driver, check, timeout: float = 30) -> None:
    end = time.time() + timeout
    while time.time() < end:
        rendered(driver, settle=0.3)
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"not reached in {timeout}s; page: {_text(driver)[:600]}")


def test_serves_in_the_background_and_shows_overview_and_pair(audit_dir, tmp_path):
    need_browser()
    pair = _df(audit_dir).sort("text_prob")["pair_id"][0]
    # As a user starts it in the background where Streamlit never ran: a fresh HOME (no Streamlit
    # credentials), no stdin. It used to stop at Streamlit's first-run "Email:" prompt.
    with App(audit_dir, home=tmp_path / "home") as app:
        d = app.open("/")
        assert "Shortcut audit" in d.page_source and "Shortcut map" in d.page_source
        _no_exception(d)
        d = app.open(f"/Pair?pair={pair}")
        html = d.page_source
        assert "Pair view" in html and "pair-chosen" in html and "pair-rejected" in html and pair in html
        _no_exception(d)
        d.save_screenshot(str(tmp_path / "pair.png"))
        assert (tmp_path / "pair.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_filters_follow_the_sidebar_to_every_page(audit_dir):
    need_browser()
    from selenium.webdriver.common.by import By

    df = _df(audit_dir)
    n = int(df.filter(pl.col("is_shortcut") & pl.any_horizontal(
        pl.col(c).str.to_lowercase().str.contains("circle", literal=True) for c in ("prompt", "chosen", "rejected"))).height)
    assert 0 < n < df.height
    checks = {"Overview": "Shortcut audit", "Pair view": f"of {n} in the current filter", "Compare": "Compare audits",
              "Export": f"holds {n} pairs", "Browse": f"{n} pairs match"}
    with App(audit_dir) as app:
        d = app.open("/Browse?shortcut=yes&q=circle")
        assert checks["Browse"] in _text(d)
        for label, expected in checks.items():
            link = next(a for a in d.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebar"] a')
                        if a.text.strip() == label)
            link.click()
            _until(d, lambda: expected in _text(d))
            _no_exception(d)
            p = _params(d)
            assert (p.get("shortcut"), p.get("q")) == ("yes", "circle"), (label, d.current_url)


def _drag_box(driver, chart_text: str, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Drag a selection box on the plotly chart whose text holds `chart_text`, between two points given as
    fractions of its plot area (0, 0 = top left)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    def chart():   # plotly draws after Streamlit reports the script done: on a busy machine, seconds later
        return next((c for c in driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
                     if chart_text in c.get_attribute("textContent") and c.find_elements(By.CSS_SELECTOR, ".nsewdrag")),
                    None)

    _until(driver, lambda: chart() is not None, timeout=60)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", chart())
    time.sleep(1.0)
    area = chart().find_element(By.CSS_SELECTOR, ".nsewdrag")
    w, h = area.size["width"], area.size["height"]
    x0, y0 = int(w * (start[0] - 0.5)) + 2, int(h * (start[1] - 0.5)) + 2       # offsets from the centre
    dx, dy = int(w * (end[0] - start[0])) - 4, int(h * (end[1] - start[1])) - 4
    (ActionChains(driver).move_to_element_with_offset(area, x0, y0).click_and_hold()
     .move_by_offset(dx // 2, dy // 2).move_by_offset(dx - dx // 2, dy - dy // 2).release().perform())


def test_a_box_on_the_shortcut_map_opens_as_a_browse_filter(audit_dir):
    need_browser()
    from selenium.webdriver.common.by import By

    df = _df(audit_dir)
    with App(audit_dir) as app:
        d = app.open("/", settle=2.0)
        # from the middle of the plot to its bottom-right corner: text_prob above ~0.5, mm_prob below ~0.5
        _drag_box(d, "text_prob <", (0.5, 0.5), (0.99, 0.99))
        _until(d, lambda: "Browse the box" in _text(d))
        next(a for a in d.find_elements(By.CSS_SELECTOR, "a") if "Browse the box" in a.text).click()
        _until(d, lambda: "pairs match" in _text(d) or "pair matches" in _text(d))
        p = _params(d)
        lo, hi = float(p["tp_min"]), float(p.get("tp_max", 1))
        mlo, mhi = float(p.get("mm_min", 0)), float(p["mm_max"])
        assert 0.35 < lo < 0.65 and hi == 1.0 and mlo == 0.0 and 0.35 < mhi < 0.65
        n = df.filter(pl.col("text_prob").is_between(lo, hi) & pl.col("mm_prob").is_between(mlo, mhi)).height
        assert f"{n:,} pair" in _text(d)

        d = app.open("/", settle=2.0)                    # bars of the SFC histogram: their range
        _drag_box(d, "L_mm + L_text", (0.0, 0.0), (0.5, 0.99))          # the left half, full height
        _until(d, lambda: "Browse the pairs with sfc" in _text(d))
        next(a for a in d.find_elements(By.CSS_SELECTOR, "a") if "Browse the pairs with sfc" in a.text).click()
        _until(d, lambda: "sfc_max" in _params(d))
        p = _params(d)
        lo, hi = float(p.get("sfc_min", 0)), float(p["sfc_max"])
        assert lo <= float(df["sfc"].min()) and 0.3 < hi < 0.7          # from the leftmost bar
        n = df.filter(pl.col("sfc").is_between(lo, hi)).height
        assert f"{n:,} pair" in _text(d)


def test_a_tag_set_with_a_key_survives_a_reload_and_export_honours_it(audit_dir, tmp_path):
    need_browser()
    from selenium.webdriver.common.action_chains import ActionChains

    df = _df(audit_dir).sort(["text_prob", "pair_id"], descending=[True, False])
    pid, after = df["pair_id"][3], df["pair_id"][4]
    with App(audit_dir) as app:
        d = app.open(f"/Pair?pair={pid}")
        assert "Tag: none" in _text(d)
        ActionChains(d).send_keys("x").perform()          # tags the pair and moves on to the next one
        _until(d, lambda: _params(d).get("pair") == after and f"Pair {pid} tagged exclude" in _text(d))
        d.refresh()
        _until(d, lambda: "Tag: none" in _text(d) and _params(d)["pair"] == after)
        ActionChains(d).send_keys("k").perform()
        _until(d, lambda: "Tag: exclude" in _text(d))
        assert _params(d)["pair"] == pid
    assert read_tags(audit_dir) == {pid: "exclude"}
    rep = export(ExportConfig(audit=audit_dir, out=tmp_path / "out", tags=True))
    out = pl.read_parquet(tmp_path / "out" / "pairs.parquet")
    assert pid not in out["pair_id"].to_list() and rep["tags"]["excluded"] == 1
    (audit_dir / "tags.parquet").unlink()


def test_j_and_k_walk_the_pairs_of_the_filter(audit_dir):
    need_browser()
    from selenium.webdriver.common.action_chains import ActionChains

    df = _df(audit_dir).filter(pl.col("is_shortcut")).sort(["text_prob", "pair_id"], descending=[True, False])
    first, second, third = df["pair_id"][:3].to_list()
    with App(audit_dir) as app:
        d = app.open(f"/Pair?shortcut=yes&pair={first}")
        assert f"1 of {df.height} in the current filter" in _text(d)
        for key, want in (("j", second), ("j", third), ("k", second)):
            ActionChains(d).send_keys(key).perform()
            _until(d, lambda: _params(d).get("pair") == want)
        assert f"2 of {df.height} in the current filter" in _text(d) and _params(d)["shortcut"] == "yes"
