"""The Pair and Compare views (AppTest and their library functions): the scores in words never say what
the probabilities deny, the word diff compares words case- and punctuation-insensitively and text
without spaces by character, long answers are collapsed, tagging moves on to the next pair, and
Compare lists its changed pairs in a fixed order with both audits' values and the change coloured by
whether it is good news for the data."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from audit.appdata import Audit, compare
from pair_audits import build

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
