"""Browse in a real browser (headless Chromium): the sidebar's page links and its "Active filters" line
carry the filters the widgets show after the last change (they used to lag one change behind), and
Browse leads with the texts of each pair: prompt, chosen and rejected readable in full at 1,400 px, the
filter's phrase marked, a row selected for a tag, a pair opened. Skipped locally only without Chromium;
in CI (CI=true) a missing browser fails the test."""

from __future__ import annotations

import json
import urllib.parse

import polars as pl

from audit.appdata import Audit, Filters
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


# Why an element is not fully readable where it stands: empty, outside the window, cut by its own box or by
# an ancestor that hides overflow ('' when it is readable in full).
UNREADABLE = """
const el = arguments[0], r = el.getBoundingClientRect();
if (r.width === 0 || r.height === 0) return 'empty';
if (r.left < 0 || r.top < 0 || r.right > window.innerWidth || r.bottom > window.innerHeight)
  return 'outside the window: ' + JSON.stringify(r) + ' in ' + window.innerWidth + 'x' + window.innerHeight;
if (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1) return 'cut by its own box';
for (let a = el.parentElement; a; a = a.parentElement) {
  const s = getComputedStyle(a), q = a.getBoundingClientRect();
  if ((s.overflowX !== 'visible' || s.overflowY !== 'visible')
      && (r.left < q.left - 1 || r.right > q.right + 1 || r.top < q.top - 1 || r.bottom > q.bottom + 1))
    return 'cut by ' + a.tagName + '.' + a.className;
}
return '';
"""


def _words(text: str) -> str:
    return " ".join(str(text).split())


def _rows(driver):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, '[class*="st-key-row_"]')


def _phrase(audit_dir) -> str:
    s = json.loads((audit_dir / "summary.json").read_text())
    return next(p["phrase"] for p in s["phrases"] if p["n_chosen"] + p["n_rejected"])


def test_browse_shows_the_full_texts_of_the_first_pair_with_the_phrase_marked(audit_dir):
    """At 1,400 x 1,000 the first pair's prompt, chosen and rejected answers are on screen in full (the
    old table cut the chosen answer after a few characters and left the rejected one off screen)."""
    need_browser()
    from selenium.webdriver.common.by import By

    phrase = _phrase(audit_dir)
    first = Audit(audit_dir).page(Filters(phrase=phrase), 0, 1).row(0, named=True)
    with App(audit_dir, size=(1400, 1000)) as app:
        d = app.open("/Browse?" + urllib.parse.urlencode({"phrase": phrase}))
        _no_exception(d)
        row = _rows(d)[0]
        assert first["pair_id"] in row.get_attribute("class")
        for col in ("prompt", "chosen", "rejected"):
            el = row.find_element(By.CSS_SELECTOR, f".browse-{col}")
            assert el.is_displayed() and _words(el.text) == _words(first[col]), col
            assert d.execute_script(UNREADABLE, el) == "", col
        marks = [_words(m.text).lower() for m in row.find_elements(By.CSS_SELECTOR, ".browse-chosen mark, "
                                                                                     ".browse-rejected mark")]
        assert marks and all(m.split() == phrase.split() for m in marks), marks
        assert f"text_prob {first['text_prob']:.3f}" in row.text            # the scores after the texts

        toggle = next(t for t in d.find_elements(By.CSS_SELECTOR, '[data-testid="stCheckbox"]')
                      if t.text.strip() == "Gallery")
        toggle.find_element(By.CSS_SELECTOR, "label").click()
        _until(d, lambda: not _rows(d) and d.find_elements(By.CSS_SELECTOR, '[class*="st-key-cell_"] img'))
        pic = d.find_elements(By.CSS_SELECTOR, '[class*="st-key-cell_"] img')[0]
        assert pic.size["width"] >= 180                                      # big pictures, four to a line


def test_a_tag_applied_to_a_selected_pair_and_a_pair_opened_from_browse(audit_dir):
    need_browser()
    from selenium.webdriver.common.by import By

    ids = Audit(audit_dir).page(Filters(shortcut="yes"), 0, 2)["pair_id"].to_list()
    try:
        with App(audit_dir) as app:
            d = app.open("/Browse?shortcut=yes")
            box = _rows(d)[0].find_element(By.CSS_SELECTOR, '[data-testid="stCheckbox"] label')
            d.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
            box.click()
            _until(d, lambda: "the 1 selected pair" in _text(d))
            d.find_element(By.CSS_SELECTOR, ".st-key-tag_sel_exclude button").click()
            _until(d, lambda: "tag exclude" in _rows(d)[0].text)
            assert read_tags(audit_dir) == {ids[0]: "exclude"}

            link = next(a for a in _rows(d)[1].find_elements(By.CSS_SELECTOR, "a") if "Open pair" in a.text)
            d.execute_script("arguments[0].scrollIntoView({block: 'center'})", link)
            link.click()
            _until(d, lambda: "/Pair" in d.current_url and "Pair view" in _text(d))
            _no_exception(d)
            assert (_params(d).get("pair"), _params(d).get("shortcut")) == (ids[1], "yes")
            assert ids[1] in _text(d) and "2 of" in _text(d)
    finally:
        set_tags(audit_dir, ids, None)
