"""The Streamlit app: a smoke run of every page and one interaction per control (AppTest), on a small
audited fixture; a missing audit ends the page with a message, and crafted paths read nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from audit.appdata import Audit, Filters, word_diff_html
from audit.config import ScoreConfig, SynthConfig
from audit.markup import md_message, md_text
from audit.score import score
from audit.synth import synth

HOME = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")
N = 120


@pytest.fixture(scope="module")
def audits(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    out = {}
    for env in ("leadin", "closing"):
        src = synth(SynthConfig(env=env, out=root / "src" / env, n=N, format="rlaif-v"))
        score(ScoreConfig(source=src.parent, out=root / env, cache_dir=root / "cache"))
        out[env] = root / env
    return out


@pytest.fixture
def app(audits, monkeypatch):
    monkeypatch.setenv("SHORTCUT_AUDIT_DIR", str(audits["leadin"]))
    monkeypatch.delenv("SHORTCUT_AUDIT_COMPARE", raising=False)

    def make(page: str | None = None, params: dict | None = None) -> AppTest:
        at = AppTest.from_file(HOME, default_timeout=60)
        for k, v in (params or {}).items():
            at.query_params[k] = v
        at.run()
        if page:
            at.switch_page(page)
            at.run()
        assert not at.exception, at.exception
        return at

    return make


def _df(audits):
    return pl.read_parquet(audits["leadin"] / "audited.parquet")


def _matching(at) -> int:
    text = next(m.value for m in at.markdown if "pairs match" in m.value)
    return int(text.split("**")[1].replace(",", ""))


def test_overview_smoke(app):
    at = app()
    labels = {m.label: m.value for m in at.metric}
    assert labels["Pairs"] == str(N)
    assert any(m.value.startswith("**Top cue:** `lead_in`") for m in at.markdown)
    assert at.title[0].value == "Shortcut audit"
    summary = json.loads((Path(os.environ["SHORTCUT_AUDIT_DIR"]) / "summary.json").read_text())
    assert summary["warnings"] and [w.value for w in at.warning] == [md_message(w[0].upper() + w[1:] + ".")
                                                                     for w in summary["warnings"]]


def test_missing_or_wrong_audit_is_a_message_not_a_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("SHORTCUT_AUDIT_DIR", str(tmp_path / "nope"))
    at = AppTest.from_file(HOME, default_timeout=30).run()
    assert not at.exception and "is not an audit folder" in at.error[0].value
    monkeypatch.delenv("SHORTCUT_AUDIT_DIR")
    at = AppTest.from_file(HOME, default_timeout=30).run()
    assert not at.exception and "shortcut-audit app AUDIT_DIR" in at.error[0].value


@pytest.mark.parametrize("control,action,expected", [
    ("f_shortcut", lambda w: w.set_value("yes"), lambda df: int(df["is_shortcut"].sum())),
    ("f_sfc", lambda w: w.set_value((0.5, 1.0)), lambda df: int(df["sfc"].is_between(0.5, 1.0).sum())),
    ("f_cue", lambda w: w.set_value("lead_in"), lambda df: int((df["cue_lead_in"] != 0).sum())),
    ("f_source", lambda w: w.set_value("rlaif-v"), lambda df: df.height),
    ("f_status", lambda w: w.set_value("ok"), lambda df: df.height),
    ("f_q", lambda w: w.input("great question"),
     lambda df: int(df.select(pl.any_horizontal([pl.col(c).str.to_lowercase().str.contains("great question", literal=True)
                                                 for c in ("prompt", "chosen", "rejected")])).to_series().sum())),
])
def test_each_filter_changes_what_is_shown(app, audits, control, action, expected):
    at = app("pages/1_Browse.py")
    assert _matching(at) == N
    widget = next(w for kind in ("radio", "slider", "selectbox", "text_input") for w in getattr(at, kind)
                  if w.key == control)
    action(widget).run()
    assert not at.exception
    assert _matching(at) == expected(_df(audits))
    assert at.query_params  # the filter lives in the URL


def _shown(at) -> list[str]:
    """The pair ids Browse shows, in order (each pair has its select box `pick_<pair_id>`)."""
    return [c.key.removeprefix("pick_") for c in at.checkbox if c.key and c.key.startswith("pick_")]


def test_sort_and_page_controls(app, audits):
    df = _df(audits)

    def order(col, desc):
        return df.sort([col, "pair_id"], descending=[desc, False])["pair_id"].to_list()

    at = app("pages/1_Browse.py")
    assert _shown(at) == order("text_prob", True)[:50]
    next(w for w in at.checkbox if w.key == "f_desc").uncheck().run()
    assert _shown(at) == order("text_prob", False)[:50]
    next(w for w in at.selectbox if w.key == "f_sort").set_value("sfc").run()
    assert _shown(at) == order("sfc", False)[:50]
    next(w for w in at.number_input if w.key == "page_input").set_value(2).run()
    assert not at.exception and _shown(at) == order("sfc", False)[50:100]
    assert at.query_params["page"] == ["2"] or at.query_params["page"] == "2"


def test_pair_view_and_next_previous(app, audits):
    df = _df(audits).sort(["text_prob", "pair_id"], descending=[True, False])
    first, second = df["pair_id"][0], df["pair_id"][1]
    at = app("pages/2_Pair.py", params={"pair": first})
    body = " ".join(m.value for m in at.markdown)
    assert "pair-chosen" in body and "pair-rejected" in body
    assert md_text(df["prompt"][0]) in [m.value for m in at.markdown]
    assert any("1 of 120" in m.value for m in at.markdown)
    next(b for b in at.button if b.key == "next").click().run()
    assert not at.exception
    pid = at.query_params["pair"]
    assert (pid[0] if isinstance(pid, list) else pid) == second
    assert any("2 of 120" in m.value for m in at.markdown)
    next(b for b in at.button if b.key == "prev").click().run()
    pid = at.query_params["pair"]
    assert (pid[0] if isinstance(pid, list) else pid) == first


def test_compare_page(app, audits, monkeypatch):
    at = app("pages/3_Compare.py")
    assert "--compare" in at.info[0].value
    monkeypatch.setenv("SHORTCUT_AUDIT_COMPARE", str(audits["closing"]))
    at = app("pages/3_Compare.py")
    assert {m.label for m in at.metric} >= {"text_acc (B)", "mm_acc (B)", "shortcut_rate (B)"}


def test_export_page_uses_the_export_function(app, audits):
    at = app("pages/4_Export.py", params={"shortcut": "yes"})
    next(w for w in at.text_input if w.key == "x_name").input("from-app").run()
    next(b for b in at.button if b.key == "x_go").click().run()
    assert not at.exception and "Wrote" in at.success[0].value
    out = pl.read_parquet(audits["leadin"] / "app_exports" / "from-app" / "pairs.parquet")
    assert out.height == int(_df(audits)["is_shortcut"].sum()) and out["is_shortcut"].all()
    # A filtered subset's weights are rescaled to mean 1 (shortcut pairs carry low weights: the mean was well
    # below 1, and a weighted trainer would have run at that fraction of its learning rate); said on the page.
    rep = json.loads((audits["leadin"] / "app_exports" / "from-app" / "export_report.json").read_text())
    assert out["weight"].mean() == pytest.approx(1.0) and rep["weights"]["renormalised_from_mean"] < 0.9
    assert out["audit_weight"].mean() == pytest.approx(rep["weights"]["renormalised_from_mean"])
    assert "rescaled to mean 1" in at.info[0].value
    assert at.get("download_button"), "the written files are offered as a download"
    next(b for b in at.button if b.key == "x_go").click().run()         # the same name again: refused ...
    assert not at.exception and "already holds an earlier `export` output" in at.error[0].value
    next(w for w in at.checkbox if w.key == "x_overwrite").check().run()
    next(b for b in at.button if b.key == "x_go").click().run()         # ... until replacing is ticked
    assert not at.exception and "Wrote" in at.success[0].value


def test_crafted_paths_and_params_read_nothing(audits):
    a = Audit(audits["leadin"])
    assert a.image_bytes("../../../../etc/passwd") is None and a.image_bytes("/etc/passwd") is None
    f = Filters.from_params({"sfc_min": "-5", "sort": "__import__('os')", "shortcut": "maybe", "desc": "0"})
    assert (f.sfc_min, f.sort, f.shortcut, f.desc) == (0.0, "text_prob", "any", False)


def test_word_diff_marks_the_correction():
    rej, cho = word_diff_html("She slices tomatoes while a cat watches.", "She slices tomatoes.")
    assert "<del" in rej and "cat" in rej and "<ins" not in cho       # "tomatoes." is "tomatoes" as a word
    assert "<script>" not in word_diff_html("<script>x</script>", "y")[0]


def test_export_page_mode_format_and_scheme_controls(app, audits):
    at = app("pages/4_Export.py")
    next(w for w in at.selectbox if w.key == "x_mode").set_value("prune")
    next(w for w in at.selectbox if w.key == "x_format").set_value("alignrm")
    next(w for w in at.selectbox if w.key == "x_scheme").set_value("ipw")
    next(w for w in at.text_input if w.key == "x_name").input("pruned")
    at.run()
    next(b for b in at.button if b.key == "x_go").click().run()
    assert not at.exception
    rep = json.loads((audits["leadin"] / "app_exports" / "pruned" / "export_report.json").read_text())
    assert (rep["mode"], rep["format"], rep["scheme"]) == ("prune", "alignrm", "ipw")
    assert rep["rows_out"] == N - int(_df(audits)["is_shortcut"].sum()) and rep["likely_swaps"] is None


def test_export_page_flags_likely_label_swaps_as_the_command_line_does(app, audits):
    from audit.swaps import likely_swap

    at = app("pages/4_Export.py")
    box = next(w for w in at.checkbox if w.key == "x_swaps")
    assert not box.disabled
    box.check()
    next(w for w in at.text_input if w.key == "x_name").input("flagged")
    at.run()
    next(b for b in at.button if b.key == "x_go").click().run()
    assert not at.exception
    out = audits["leadin"] / "app_exports" / "flagged"
    rep = json.loads((out / "export_report.json").read_text())
    df = pl.read_parquet(out / "pairs.parquet")
    want = _df(audits).filter(pl.col("status") == "ok").select("pair_id", likely_swap())
    got = df.select("pair_id", "likely_swap").join(want, on="pair_id", suffix="_want")
    assert got.height == df.height and (got["likely_swap"] == got["likely_swap_want"]).all()
    assert rep["likely_swaps"]["pairs_flagged"] == int(df["likely_swap"].sum()) and rep["config"]["flag_swaps"]
    assert any("`likely_swap` marks" in i.value for i in at.info)


def test_export_page_folder_name_never_leaves_app_exports_and_offers_the_audits_schemes(app, audits):
    at = app("pages/4_Export.py")
    options = next(w for w in at.selectbox if w.key == "x_scheme").options
    assert "sfc-residual" in options and "sfc" not in options       # the offline probe's audit
    next(w for w in at.text_input if w.key == "x_name").input("..").run()
    next(b for b in at.button if b.key == "x_go").click().run()
    assert not at.exception and "Wrote" in at.success[0].value
    made = [p for p in (audits["leadin"] / "app_exports").iterdir() if p.name.startswith("file-")]
    assert made and not (audits["leadin"] / "pairs.parquet").exists() and not (audits["leadin"] / "export_report.json").exists()


def test_a_crafted_report_naming_root_as_image_root_shows_no_file(audits, tmp_path):
    """`image_roots: ["/"]` in a crafted ingest report used to let the Pair page read /etc/passwd (and
    show a traceback)."""
    import shutil

    a_dir = tmp_path / "a"
    shutil.copytree(audits["leadin"], a_dir, ignore=shutil.ignore_patterns("cache", "app_exports"))
    summary = json.loads((a_dir / "summary.json").read_text())
    summary["pairs_dir"] = str(a_dir / "pairs")
    (a_dir / "summary.json").write_text(json.dumps(summary))
    rep = json.loads((a_dir / "pairs" / "ingest_report.json").read_text())
    rep["image_roots"] = ["/"]
    (a_dir / "pairs" / "ingest_report.json").write_text(json.dumps(rep))
    a = Audit(a_dir)
    assert a.image_bytes("/etc/passwd") is None and a.image_bytes("/etc/hostname") is None


def test_home_lists_discovered_phrases_and_browse_filters_by_one(app, audits):
    """The overview shows the phrase table and the prompt-blind reading; the phrase filter in the URL
    keeps the pairs with that phrase on one side only, and survives a page change."""
    s = json.loads((audits["leadin"] / "summary.json").read_text())
    at = app()
    assert any("Discovered phrases" in h.value for h in at.subheader)
    assert any("prompt-blind" in m.value for m in at.markdown)
    phrase = s["phrases"][0]["phrase"]
    at = app("pages/1_Browse.py", {"phrase": phrase})
    assert at.query_params["phrase"] == [phrase] or at.query_params["phrase"] == phrase
    p = s["phrases"][0]
    assert _matching(at) == p["n_chosen"] + p["n_rejected"]
    at.switch_page("pages/2_Pair.py")
    at.run()
    assert not at.exception and "phrase" in at.query_params


def test_map_page_projects_the_cached_embeddings(app, audits):
    at = app("pages/5_Map.py")
    assert not at.exception and not at.info, [i.value for i in at.info]
    assert any("text embeddings (chosen - rejected" in c.value for c in at.caption)
    next(w for w in at.selectbox if w.key == "m_kind").set_value("image").run()
    next(w for w in at.selectbox if w.key == "m_method").set_value("tsne").run()
    assert not at.exception and any("t-SNE" in c.value for c in at.caption)


def test_map_without_a_cache_says_why(app, audits, tmp_path, monkeypatch):
    import shutil

    a_dir = tmp_path / "a"
    shutil.copytree(audits["leadin"], a_dir, ignore=shutil.ignore_patterns("cache", "app_exports"))
    summary = json.loads((a_dir / "summary.json").read_text())
    summary["config"]["cache_dir"] = str(tmp_path / "gone")
    (a_dir / "summary.json").write_text(json.dumps(summary))
    monkeypatch.setenv("SHORTCUT_AUDIT_DIR", str(a_dir))
    at = app("pages/5_Map.py")
    assert "no cached text embeddings" in at.info[0].value


@pytest.mark.parametrize("params,expected", [
    ({"cue": "lead_in", "cue_side": "rejected"}, lambda df: int((df["cue_lead_in"] < 0).sum())),
    ({"cue": "lead_in", "cue_side": "chosen"}, lambda df: int((df["cue_lead_in"] > 0).sum())),
    ({"tp_min": "0.1", "tp_max": "0.9"}, lambda df: int(df["text_prob"].is_between(0.1, 0.9).sum())),
    ({"w_min": "1.5"}, lambda df: int((df["weight"] >= 1.5).sum())),
    ({"meta_col": "task", "meta_val": "count"}, lambda df: int((df["task"] == "count").sum())),
])
def test_url_filters_beyond_the_sidebar_basics(app, audits, params, expected):
    at = app("pages/1_Browse.py", params)
    want = expected(_df(audits))
    assert 0 < want < N and _matching(at) == want
    assert all(k in at.query_params for k in params)


def test_browse_tags_the_selected_rows_and_filters_by_tag(app, audits):
    from audit.tags import read_tags, set_tags

    at = app("pages/1_Browse.py", {"shortcut": "yes"})
    assert all(b.disabled for b in at.button if b.key.startswith("tag_sel_"))
    ids = _df(audits).filter(pl.col("is_shortcut")).sort(["text_prob", "pair_id"], descending=[True, False])["pair_id"]
    next(b for b in at.button if b.key == "tag_all_go").click().run()      # the default: exclude every shortcut pair
    assert not at.exception and set(read_tags(audits["leadin"])) == set(ids.to_list())
    at = app("pages/1_Browse.py", {"tag": "exclude"})
    assert _matching(at) == len(ids)
    at = app("pages/1_Browse.py", {"tag": "untagged"})
    assert _matching(at) == N - len(ids)
    set_tags(audits["leadin"], ids.to_list(), None)


def test_pair_view_tags_with_buttons_and_shows_the_scores_in_words(app, audits):
    from audit.tags import read_tags, set_tags

    pid = _df(audits)["pair_id"][0]
    at = app("pages/2_Pair.py", {"pair": pid})
    assert any(m.value.startswith("**In words:** a text-only model prefers the") for m in at.markdown)
    next(b for b in at.button if b.key == "tag_swap").click().run()
    assert not at.exception and read_tags(audits["leadin"]) == {pid: "swap"}
    assert at.query_params["pair"] not in (pid, [pid]) and "tagged `swap`" in at.info[0].value   # moved on
    next(b for b in at.button if b.key == "prev").click().run()
    assert any(m.value == "**Tag:** `swap`" for m in at.markdown)
    next(b for b in at.button if b.key == "tag_None").click().run()
    assert read_tags(audits["leadin"]) == {}
    set_tags(audits["leadin"], [pid], None)


def test_compare_with_no_shared_pairs_says_so(app, audits, monkeypatch):
    monkeypatch.setenv("SHORTCUT_AUDIT_COMPARE", str(audits["closing"]))
    at = app("pages/3_Compare.py")
    assert "share no scored pair" in at.warning[-1].value
    assert any("source" in str(d.value) for d in at.dataframe)          # the settings that differ


def test_overview_headline_reads_the_interval_and_the_verdict(app, audits):
    s = json.loads((audits["leadin"] / "summary.json").read_text())
    at = app()
    lo, hi = s["text_acc_ci"]
    assert f"95% CI {100 * lo:.1f}-{100 * hi:.1f}%" in at.error[0].value      # a strong shortcut: red box
    labels = {m.label: m for m in at.metric}
    assert labels[f"text_prob >= {s['threshold']:.2f}"].value == f"{100 * s['shortcut_rate']:.1f}%"
    assert "SFD (shortcut-failure degradation)" in labels["SFD"].help



@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    from conftest import hostile_audit

    return hostile_audit(tmp_path_factory.mktemp("hostile"))


def _rendered(at) -> list[str]:
    """Every piece of Markdown the page rendered: texts, captions, alerts, titles and widget labels."""
    texts = [e.value for kind in ("markdown", "caption", "warning", "error", "info", "success", "title", "subheader")
             for e in at.get(kind)]
    return texts + [w.label for kind in ("checkbox", "button", "selectbox", "text_input") for w in at.get(kind)]


PAIR_PARAM = "`` ![p](http://evil.example/p.png) `` # h [x](http://evil.example/)"
FILTER_PARAM = "` ![q](http://evil.example/q.png) [y](http://evil.example/) `"


@pytest.mark.parametrize("page,which,params", [
    ("pages/2_Pair.py", 0, {}),                          # the prompt, the word diff (blank lines), the columns
    ("pages/2_Pair.py", 39, {}),                         # a status detail that quotes the missing file's name
    ("pages/2_Pair.py", None, {"pair": PAIR_PARAM}),     # an unknown pair named by the URL
    ("pages/2_Pair.py", 0, {"q": FILTER_PARAM}),         # the filters line and "Active filters"
    ("pages/1_Browse.py", None, {"q": FILTER_PARAM, "phrase": FILTER_PARAM}),
    (None, None, {}),                                    # Overview: a warning quoting a group's prompt
])
def test_the_app_shows_the_datas_markup_as_text(hostile, monkeypatch, page, which, params):
    """Prompts, answers, status details, warnings and URL parameters hold links, remote images, headings,
    `<script>`, `<iframe>` and backticks: the rendered Markdown makes none of them live (no image is
    fetched by opening a pair), and the data is still shown."""
    from conftest import live_markup

    monkeypatch.setenv("SHORTCUT_AUDIT_DIR", str(hostile))
    monkeypatch.delenv("SHORTCUT_AUDIT_COMPARE", raising=False)
    df = pl.read_parquet(hostile / "audited.parquet")
    at = AppTest.from_file(HOME, default_timeout=60)
    for k, v in {**params, **({"pair": df["pair_id"][which]} if which is not None else {})}.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    shown = _rendered(at)
    assert [x for md in shown for x in live_markup(md)] == []
    text = " ".join(shown).replace("\\", "").replace("\u2060", "")
    expected = {0: "<script>alert(1)</script>", 39: "![m](http:evil.example)", None: "evil.example"}[which]
    assert expected in text or (page is None and "Injected heading" in text)
