"""The Pair and Compare views (AppTest and their library functions): the scores in words never say what
the probabilities deny, the word diff compares words case- and punctuation-insensitively and text
without spaces by character, long answers are collapsed, tagging moves on to the next pair, and
Compare lists its changed pairs in a fixed order with both audits' values and the change coloured by
whether it is good news for the data."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from audit.appdata import Audit, compare, in_words, word_diff_html
from pair_audits import CJK_CHOSEN, LONG_CHARS, build

HOME = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")


@pytest.fixture(scope="module")
def audits(tmp_path_factory):
    return build(tmp_path_factory.mktemp("pair"))


@pytest.fixture
def app(audits, monkeypatch):
    monkeypatch.setenv("SHORTCUT_AUDIT_DIR", str(audits[0]))
    monkeypatch.delenv("SHORTCUT_AUDIT_COMPARE", raising=False)

    def make(page: str, params: dict | None = None, compare_to: Path | None = None) -> AppTest:
        if compare_to:
            monkeypatch.setenv("SHORTCUT_AUDIT_COMPARE", str(compare_to))
        at = AppTest.from_file(HOME, default_timeout=60)
        for k, v in (params or {}).items():
            at.query_params[k] = v
        at.run()
        at.switch_page(page).run()
        assert not at.exception, at.exception
        return at

    return make


def _df(audit: Path) -> pl.DataFrame:
    return pl.read_parquet(audit / "audited.parquet")


def _param(at, name: str):
    v = at.query_params.get(name)
    return v[0] if isinstance(v, list) else v


def _words(at) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**In words:**"))


# ---- the scores in words --------------------------------------------------------------------------
GRID = (None, float("nan"), 0.0, 0.01, 0.2, 0.49, 0.494, 0.5, 0.503, 0.51, 0.65, 0.79, 0.8, 0.95, 1.0)


def _shown(p):
    """The side a probability prefers as the page shows it (two decimals), None when undecided or absent."""
    if p is None or p != p:
        return None
    r = round(p, 2)
    return "chosen" if r > 0.5 else "rejected" if r < 0.5 else None


def _sfc(t, m):
    if t is None or m is None or t != t or m != m:
        return None
    lt, lm = -math.log(max(t, 1e-12)), -math.log(max(m, 1e-12))
    return 0.5 if lt + lm == 0 else lt / (lt + lm)


# A claim the words may make, and what the numbers must then say (t = text_prob, m = mm_prob).
CLAIMS = {
    "a shortcut pair": lambda t, m: t is not None and t >= 0.8,
    "the text alone gets this pair right": lambda t, m: _shown(t) == "chosen",
    "the text alone gets this pair wrong": lambda t, m: _shown(t) == "rejected",
    "the image gets it right": lambda t, m: _shown(m) == "chosen",
    "the multimodal side gets it wrong": lambda t, m: _shown(m) == "rejected",
    "both sides get this pair right": lambda t, m: _shown(t) == _shown(m) == "chosen",
    "both sides prefer the rejected answer": lambda t, m: _shown(t) == _shown(m) == "rejected",
    "the multimodal side does better on this pair than the text alone": lambda t, m: m > t,
    "the text alone does better on this pair than the multimodal side": lambda t, m: t > m,
    "neither side can tell": lambda t, m: _shown(t) is None and _shown(m) is None,
}


@pytest.mark.parametrize("t", GRID)
@pytest.mark.parametrize("m", GRID)
def test_in_words_never_contradicts_the_scores(t, m):
    words = in_words(t, m, _sfc(t, m), 1.0 if _sfc(t, m) is not None else None)
    for side, name, p in (("text-only", "text_prob", t), ("multimodal", "mm_prob", m)):
        if p is None or p != p:
            want = f"no {side} score"
        else:
            verb = {"chosen": "prefers the chosen answer", "rejected": "prefers the rejected answer"}.get(
                _shown(p), "cannot tell the answers apart")
            want = f"a {side} model {verb} ({name} = {p:.2f})"
        assert want in words, (t, m, words)
    for claim, holds in CLAIMS.items():
        if claim in words.lower():
            assert holds(t, m), (claim, t, m, words)
    if _sfc(t, m) is not None:
        assert f"SFC {_sfc(t, m):.2f}" in words and "weight 1.00" in words


def test_in_words_of_the_two_contradictions_seen():
    # SFC high while the text model prefers the chosen answer: once read "the text alone gets this pair wrong"
    words = in_words(0.65, 0.98, _sfc(0.65, 0.98), 1.7).lower()
    assert "text alone gets this pair wrong" not in words and "both sides get this pair right" in words
    # SFC low while the text model prefers the rejected answer: once read "a shortcut pair"
    words = in_words(0.3, 0.02, _sfc(0.3, 0.02), 0.4).lower()
    assert "shortcut pair" not in words and "both sides prefer the rejected answer" in words
    assert "text alone does better on this pair" in words and "sfc 0.24 (low" in words
    # a text-only audit: no multimodal side, no SFC
    words = in_words(0.9, None, None, 0.1, threshold=0.8)
    assert words == ("a text-only model prefers the chosen answer (text_prob = 0.90); no multimodal score. A shortcut "
                     "pair (text_prob >= 0.80): the text alone gets this pair right.")


def test_pair_page_words_agree_with_the_scores(app, audits):
    df = _df(audits[0])
    df = df.sort("pair_id")
    high = df.filter((pl.col("sfc") > 0.6) & pl.col("text_prob").is_between(0.55, 0.75)).row(0, named=True)
    low = df.filter((pl.col("sfc") < 0.4) & (pl.col("text_prob") < 0.45)).row(0, named=True)
    words = _words(app("pages/2_Pair.py", {"pair": high["pair_id"]})).lower()
    assert "gets this pair wrong" not in words and "both sides get this pair right" in words
    assert f"prefers the chosen answer (text_prob = {high['text_prob']:.2f})" in words
    words = _words(app("pages/2_Pair.py", {"pair": low["pair_id"]})).lower()
    assert "shortcut pair" not in words and "both sides prefer the rejected answer" in words


# ---- the word diff ---------------------------------------------------------------------------------
def test_word_diff_ignores_case_and_punctuation_and_shows_the_words_as_written():
    rej, cho = word_diff_html("she slices Tomatoes, slowly.", "She slices tomatoes slowly!")
    assert "<del" not in rej and "<ins" not in cho
    assert rej == "she slices Tomatoes, slowly." and cho == "She slices tomatoes slowly!"
    rej, cho = word_diff_html("The cat is RED.", "The cat is blue.")
    assert rej.endswith('<del style="background:#fdd;text-decoration:line-through">RED.</del>')
    assert cho.endswith('<ins style="background:#dfd;text-decoration:none">blue.</ins>')
    assert word_diff_html("a <b>", "a <i>")[1] == 'a &lt;<ins style="background:#dfd;text-decoration:none">i</ins>&gt;'


def test_word_diff_compares_text_without_spaces_by_character():
    rej, cho = word_diff_html("图中有两个红色的圆。", CJK_CHOSEN)
    assert cho == '图中有<ins style="background:#dfd;text-decoration:none">三</ins>个红色的圆。'
    assert rej == '图中有<del style="background:#fdd;text-decoration:line-through">两</del>个红色的圆。'
    _, cho = word_diff_html("猫がいます。", "犬がいます。")
    assert cho.startswith('<ins style="background:#dfd;text-decoration:none">犬</ins>が')
    _, cho = word_diff_html("हिन्दी भाषा", "हिन्दी बोली")      # a script with spaces: whole words
    assert cho == 'हिन्दी <ins style="background:#dfd;text-decoration:none">बोली</ins>'


def test_word_diff_limit_shows_the_first_part():
    long = "word " * 2000
    rej, cho = word_diff_html("short answer", long.strip(), limit=300)
    assert 300 <= len(cho) < 700 and cho.endswith("…") and rej.startswith("<del")
    assert word_diff_html("a b", "a c", limit=300) == word_diff_html("a b", "a c")


def test_a_long_answer_is_collapsed_with_its_diff_kept(app, audits):
    pid = _df(audits[0])["pair_id"][0]
    at = app("pages/2_Pair.py", {"pair": pid})
    shown = [m.value for m in at.markdown if 'class="pair-chosen"' in m.value]
    assert len(shown) == 2 and len(shown[0]) < 4_000 and len(shown[1]) > LONG_CHARS     # the head, then all
    assert any(f"{LONG_CHARS:,} characters" in e.label for e in at.expander)


# ---- tagging moves on --------------------------------------------------------------------------------
def test_tagging_moves_on_to_the_next_pair_and_stays_at_the_last(app, audits):
    from audit.tags import read_tags, set_tags

    df = _df(audits[0]).filter(pl.col("is_shortcut")).sort(["text_prob", "pair_id"], descending=[True, False])
    first, second = df["pair_id"][0], df["pair_id"][1]
    at = app("pages/2_Pair.py", {"pair": first, "shortcut": "yes"})
    button = next(b for b in at.button if b.key == "tag_review")
    button.click().run()
    assert not at.exception and read_tags(audits[0]) == {first: "review"}
    assert _param(at, "pair") == second and _param(at, "shortcut") == "yes"
    assert "moves on to the next pair" in button.help
    assert any("tagged `review`" in m.value and first in m.value for m in [*at.markdown, *at.info])
    last = df["pair_id"][-1]
    at = app("pages/2_Pair.py", {"pair": last, "shortcut": "yes"})
    next(b for b in at.button if b.key == "tag_exclude").click().run()
    assert _param(at, "pair") == last and read_tags(audits[0])[last] == "exclude"
    assert any("last pair of the current filter" in m.value for m in [*at.markdown, *at.info])
    set_tags(audits[0], [first, last], None)


# ---- Compare ---------------------------------------------------------------------------------------------
def test_compare_lists_the_changed_pairs_in_a_fixed_order(audits):
    a, b = Audit(audits[0]), Audit(audits[1])
    tables = [compare(a, b)[1] for _ in range(4)]
    assert all(t.equals(tables[0]) for t in tables) and tables[0].height > 5
    size = (tables[0]["text_prob_b"] - tables[0]["text_prob"]).abs().to_list()
    assert size == sorted(size, reverse=True)
    assert tables[0]["text_prob_change"].to_list() == pytest.approx(
        (tables[0]["text_prob_b"] - tables[0]["text_prob"]).to_list())


def test_compare_rows_read_both_values_and_colour_the_change_by_good_news(audits):
    from audit.appdata import compare_row

    up = compare_row("text_acc", 0.70, 0.75)             # a text shortcut got stronger: bad news
    assert (up["a_text"], up["b_text"], up["delta_text"], up["better"]) == ("70.0%", "75.0%", "+5.0 pts", False)
    assert compare_row("mm_acc", 0.70, 0.75)["better"] is True
    assert compare_row("sfd", 3.0, 1.0)["better"] is True and compare_row("sfd", 3.0, 1.0)["delta_text"] == "-2.0"
    flat = compare_row("shortcut_rate", 0.5, 0.50004)    # rounds to +0.0: no colour, no arrow
    assert (flat["delta_text"], flat["better"]) == ("0.0 pts", None)
    assert compare_row("sfc_mean", 0.548, 0.5447)["delta_text"] == "-0.003"
    gone = compare_row("mm_acc", 0.5, None)
    assert (gone["b_text"], gone["delta_text"], gone["better"]) == ("n/a", None, None)


def test_compare_page_shows_a_and_b_and_colours_only_real_changes(app, audits):
    from streamlit.proto.Metric_pb2 import Metric

    at = app("pages/3_Compare.py", compare_to=audits[1])
    metrics = {m.label: m for m in at.metric}
    a, b = Audit(audits[0]).summary, Audit(audits[1]).summary
    mm = metrics["mm_acc (B)"]                           # the same in both audits
    assert a["mm_acc"] == b["mm_acc"] and mm.proto.delta == "0.0 pts"
    assert mm.proto.color == Metric.MetricColor.GRAY and mm.proto.direction == Metric.MetricDirection.NONE
    assert mm.proto.delta_description == f"A: {100 * a['mm_acc']:.1f}%"
    cue = metrics["cue_acc (B)"]                         # lower: fewer text cues, good news
    assert b["cue_acc"] < a["cue_acc"] and cue.proto.color == Metric.MetricColor.GREEN
    assert cue.proto.direction == Metric.MetricDirection.DOWN
    table = at.dataframe[-1].value
    assert list(table["pair_id"]) == compare(Audit(audits[0]), Audit(audits[1]))[1]["pair_id"].to_list()
