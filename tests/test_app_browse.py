"""Browse leads with the texts: each pair's prompt, chosen and rejected answers as escaped HTML with the
filter's phrase and search marked (long answers folded, a late mark still shown), then its picture and
scores; a select box per pair for tags; a gallery of big pictures. AppTest on a small audited fixture,
plus the marking function by hand."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from audit.appdata import MARK, Audit, Filters, marked_html, match_spans
from audit.markup import html_text
from audit.tags import read_tags, set_tags
from conftest import scored_synth_audit

HOME = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")
END = "</mark>"


def test_match_spans_finds_phrases_as_the_filter_does_and_searches_in_any_case():
    text = "Great question! The CIRCLE is red, great  Question."
    # the phrase's words in order across punctuation and spacing; the needle literal, any case; overlaps merged
    assert match_spans(text, ["great question"]) == [(0, 14), (35, 50)]
    assert match_spans(text, needles=["circle"]) == [(20, 26)]
    assert match_spans(text, ["great question"], ["question! the"]) == [(0, 19), (35, 50)]
    assert match_spans(text, [""], [""]) == []


def test_marked_html_escapes_the_data_and_marks_the_matches():
    text = "Great question! <b>circle</b>\n[x](http://evil.example/)"
    assert marked_html(text, ["great question"], ["CIRCLE"]) == (
        f"{MARK}Great question{END}! &lt;b&gt;{MARK}circle{END}&lt;/b&gt;<br>[x](http://evil.example/)")
    assert marked_html(None) == "" and "<script>" not in marked_html("<script>alert(1)</script>", needles=["script"])


def test_marked_html_folds_a_long_text_and_still_shows_a_late_mark():
    text = "word " * 30 + "I hope this helps! " + "tail " * 30           # 150 + 19 + 150 characters
    out = marked_html(text, ["hope this helps"], limit=60, context=20)
    head, fold = out.split("<details>")
    # the first 60 characters cut between words, the mark with 20 characters of context either side, then the rest
    assert head == ("word " * 11 + "word … " + " word word word word I " + f"{MARK}hope this helps{END}"
                    + "! tail tail tail tail …")
    assert fold == (f"<summary>{len(text) - 59:,} more characters</summary>" + " word" * 18 + " I "
                    + f"{MARK}hope this helps{END}! " + "tail " * 30 + "</details>")
    assert marked_html(text, limit=len(text)) == html_text(text)          # short enough: no fold
    cjk = "中文没有空格" * 20                                               # no space to cut at: cut at the limit
    assert marked_html(cjk, limit=10).startswith("中文没有空格中文没有<details><summary>110 more characters")


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory):
    return scored_synth_audit(tmp_path_factory.mktemp("browse"))


@pytest.fixture
def browse(audit_dir, monkeypatch):
    monkeypatch.setenv("SHORTCUT_AUDIT_DIR", str(audit_dir))
    monkeypatch.delenv("SHORTCUT_AUDIT_COMPARE", raising=False)

    def make(params: dict | None = None) -> AppTest:
        at = AppTest.from_file(HOME, default_timeout=60)
        for k, v in (params or {}).items():
            at.query_params[k] = v
        at.run()
        at.switch_page("pages/1_Browse.py").run()
        assert not at.exception, at.exception
        return at

    return make


def _shown(at) -> list[str]:
    """The pair ids on screen, in their order (each pair has its select box `pick_<pair_id>`)."""
    return [c.key.removeprefix("pick_") for c in at.checkbox if c.key and c.key.startswith("pick_")]


def _cards(at) -> list[str]:
    """The HTML of each pair's card (picture, texts, scores), in order."""
    return [h.value for h in at.get("html") if 'class="browse-' in h.value]


def _texts(at) -> list[str]:
    return [c for c in _cards(at) if 'class="browse-texts"' in c]


def test_each_pair_leads_with_its_full_texts_then_its_scores(browse, audit_dir):
    at = browse()
    want = Audit(audit_dir).page(Filters(), 0, 50)
    assert _shown(at) == want["pair_id"].to_list()
    cards, first = _texts(at), want.row(0, named=True)
    assert len(cards) == 50
    for col in ("prompt", "chosen", "rejected"):
        assert f'<div class="browse-{col}">{html_text(first[col], breaks=True)}</div>' in cards[0]
    assert cards[0].index("browse-texts") < cards[0].index("browse-scores")
    assert f"text_prob <b>{first['text_prob']:.3f}</b>" in cards[0]
    assert all(c.count('<img src="data:image/jpeg;base64,') == 1 for c in cards)     # a picture per pair


def test_the_phrase_and_the_search_are_marked(browse, audit_dir):
    phrase = "great question"
    at = browse({"phrase": phrase, "q": "circle"})
    texts = _texts(at)
    assert texts and all(f"{MARK}Great question{END}" in t for t in texts if "Great question" in t)
    assert any(f"{MARK}circle{END}" in t for t in texts)
    assert not any("Great question" in t.replace(f"{MARK}Great question{END}", "") for t in texts)


def test_select_boxes_tag_the_selected_pairs(browse, audit_dir):
    at = browse({"shortcut": "yes"})
    ids = _shown(at)
    assert all(b.disabled for b in at.button if b.key.startswith("tag_sel_"))
    at.checkbox(key=f"pick_{ids[1]}").check().run()
    assert any("the 1 selected pair" in m.value for m in at.markdown)
    at.button(key="tag_sel_review").click().run()
    assert not at.exception and read_tags(audit_dir) == {ids[1]: "review"}
    assert "tag <code>review</code>" in _cards(at)[1] and "tag <code>" not in _cards(at)[0]   # on its card
    at.button(key="sel_all").click().run()
    assert all(at.checkbox(key=f"pick_{p}").value for p in ids)
    at.button(key="tag_sel_None").click().run()
    assert read_tags(audit_dir) == {}
    at.button(key="sel_none").click().run()
    assert not any(at.checkbox(key=f"pick_{p}").value for p in ids)
    set_tags(audit_dir, ids, None)


def test_gallery_shows_big_pictures_with_a_short_caption(browse, audit_dir):
    at = browse({"shortcut": "yes"})
    n = len(_shown(at))
    at.toggle(key="b_gallery").set_value(True).run()
    cards = _cards(at)
    assert not at.exception and len(_shown(at)) == n and not _texts(at) and len(cards) == n
    assert all(c.count('<img src="data:image/jpeg;base64,') == 1 and "text_prob" in c for c in cards)
    caption = cards[0].split('class="browse-caption"')[1]
    assert len(caption) < 300                       # a short caption, not the texts


def _own_pictures(found: list[str]) -> list[str]:
    """Leave out the cards' own pictures: data URIs of the JPEG the app made from the decoded image."""
    return [x for x in found if not x.startswith("<img [('src', 'data:image/jpeg;base64,")]


def test_browse_shows_hostile_data_as_text(tmp_path_factory, monkeypatch):
    """Prompts and answers holding links, remote images, headings, `<script>` and backticks, with the
    search marking them: neither the cards' HTML nor any rendered Markdown makes any of it live, and the
    data is shown."""
    from conftest import hostile_audit, live_markup

    hostile = hostile_audit(tmp_path_factory.mktemp("hostile-browse"))
    monkeypatch.setenv("SHORTCUT_AUDIT_DIR", str(hostile))
    at = AppTest.from_file(HOME, default_timeout=60)
    at.query_params["q"] = "evil.example"
    at.run()
    at.switch_page("pages/1_Browse.py").run()
    assert not at.exception, at.exception
    cards = _texts(at)
    assert len(cards) == 40
    shown = [m.value for m in at.markdown] + [c.value for c in at.caption] + [c.label for c in at.checkbox] + cards
    assert _own_pictures([x for md in shown for x in live_markup(md)]) == []
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in c for c in cards)
    assert any(f"{MARK}evil.example{END}" in c for c in cards)
    assert sum("no picture (status <code>image_missing</code>)" in c for c in cards) == 1   # its file is missing
    at.toggle(key="b_gallery").set_value(True).run()
    assert _own_pictures([x for c in _cards(at) for x in live_markup(c)]) == []
