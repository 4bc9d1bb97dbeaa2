"""Likely label swaps (cleanlab's likely label issues, for preference pairs): the pairs whose multimodal
side confidently prefers the rejected answer, ranked by that confidence; the app page that lists them and
tags them; `export --flag-swaps`, which marks them in every mode and format. The audits here take their
multimodal side from a reward column (`--mm-scores`), so which pairs are likely swaps is known by hand."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from audit.config import ExportConfig, ScoreConfig, SynthConfig
from audit.errors import AuditError
from audit.export import export
from audit.score import score
from audit.synth import synth

HOME = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")
PAGE = "pages/6_Swaps.py"
N = 120
FLIPPED = -3.0      # every tenth pair: the multimodal side prefers the rejected answer, p = 0.953
DOUBT = -1.0        # the next: p(rejected) = 0.731, below the default 0.8
STAKE = 1.0 / (1.0 + math.exp(FLIPPED))


def _margin(i: int) -> float:
    return FLIPPED if i % 10 == 0 else DOUBT if i % 10 == 1 else 2.0


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("swaps")
    src = synth(SynthConfig(env="leadin", out=root / "src", n=N, format="pairs"))
    df = pl.read_parquet(src)
    df.with_columns(pl.Series("rm_margin", [_margin(i) for i in range(df.height)])).write_parquet(src)
    score(ScoreConfig(source=src.parent, out=root / "audit", cache_dir=root / "cache", mm_scores="rm_margin",
                      stack="tokens,lexical,cue", scheme="sfc"))
    return root / "audit"


# ---- the rule and the ranking ------------------------------------------------------------------

def test_the_threshold_and_the_ranking_by_hand():
    from audit.swaps import SWAP_THRESHOLD, likely_swap, ranked

    assert SWAP_THRESHOLD == 0.8
    frame = pl.DataFrame({
        "pair_id": ["b", "a", "c", "d", "e", "f", "g", "h"],
        "status": ["ok", "ok", "ok", "ok", "ok", "ok", "image_missing", "ok"],
        "mm_prob": [0.05, 0.05, 0.2, 0.21, 0.5, None, 0.01, 0.1],
        "text_prob": [0.6, 0.3, 0.9, 0.1, 0.1, 0.1, 0.1, 0.2],
    })
    # p(rejected) = 1 - mm_prob >= 0.8: exactly 0.8 is in (as `is_shortcut` is text_prob >= 0.8); no mm_prob, out
    assert frame.select(likely_swap())["likely_swap"].to_list() == [True, True, True, False, False, False, True, True]
    # scored pairs only, most confident first; a tie in mm_prob: the text side agreeing (lower text_prob) first
    assert ranked(frame)["pair_id"].to_list() == ["a", "b", "h", "c"]
    assert ranked(frame.lazy(), 0.9).collect()["pair_id"].to_list() == ["a", "b", "h"]
    assert ranked(frame, 0.99)["pair_id"].to_list() == []


def test_the_export_options_are_validated(tmp_path):
    base = dict(audit=tmp_path, out=tmp_path / "o")
    for bad in (0.4, 1.0, float("nan")):
        with pytest.raises(AuditError, match="`--swap-threshold` must be"):
            ExportConfig(**base, flag_swaps=True, swap_threshold=bad)
    with pytest.raises(AuditError, match="`--swap-threshold` only applies with `--flag-swaps`"):
        ExportConfig(**base, swap_threshold=0.9)
    assert ExportConfig(**base, flag_swaps=True, swap_threshold=0.5).swap_threshold == 0.5


# ---- `export --flag-swaps` ---------------------------------------------------------------------

@pytest.mark.parametrize("mode,fmt", [("weight", "parquet"), ("prune", "parquet"), ("resample", "parquet"),
                                      ("weight", "hf"), ("weight", "alignrm"), ("weight", "trl"),
                                      ("weight", "source"), ("resample", "source")])
def test_export_flags_likely_swaps_in_every_mode_and_format(audit_dir, tmp_path, mode, fmt):
    rep = export(ExportConfig(audit=audit_dir, out=tmp_path / "x", mode=mode, format=fmt, flag_swaps=True))
    rows = _read(rep)
    assert rows.height == rep["rows_out"]                       # rows in = rows out: a column, never a filter
    assert rows["likely_swap"].dtype == pl.Boolean
    expected = rows["rm_margin"] <= FLIPPED                     # the source's own column travels in every format
    assert rows["likely_swap"].to_list() == expected.to_list() and expected.any()
    sw = rep["likely_swaps"]
    assert sw == {"column": "likely_swap", "threshold": 0.8, "rule": "1 - mm_prob >= 0.8",
                  "rows_flagged": int(expected.sum()), "pairs_flagged": sw["pairs_flagged"]}
    saved = json.loads((tmp_path / "x" / "export_report.json").read_text())
    assert saved["likely_swaps"] == sw and saved["config"]["flag_swaps"] is True


def _read(rep: dict) -> pl.DataFrame:
    path = Path(rep["path"])
    if path.is_dir():              # an HF save_to_disk folder
        import datasets

        ds = datasets.load_from_disk(str(path))
        return pl.DataFrame({c: ds[c] for c in ("likely_swap", "rm_margin")})
    if path.suffix == ".jsonl":
        return pl.read_ndjson(path).select("likely_swap", "rm_margin")
    return pl.read_parquet(path, columns=["likely_swap", "rm_margin"])


def test_the_threshold_is_the_users_and_is_recorded(audit_dir, tmp_path):
    rep = export(ExportConfig(audit=audit_dir, out=tmp_path / "x", flag_swaps=True, swap_threshold=0.7))
    rows = _read(rep)
    assert rows["likely_swap"].to_list() == (rows["rm_margin"] <= DOUBT).to_list()
    assert rep["likely_swaps"]["threshold"] == 0.7 and rep["likely_swaps"]["rows_flagged"] == 2 * N // 10
    plain = export(ExportConfig(audit=audit_dir, out=tmp_path / "y"))
    assert plain["likely_swaps"] is None and "likely_swap" not in pl.read_parquet(plain["path"]).columns


def test_the_card_of_a_flagged_export_says_what_was_flagged(audit_dir, tmp_path):
    from audit.card import card
    from audit.config import CardConfig

    rep = export(ExportConfig(audit=audit_dir, out=tmp_path / "x", flag_swaps=True))
    text = card(CardConfig(audit=audit_dir, out=tmp_path / "cards", name="c", export=tmp_path / "x",
                           figures="html")).read_text()
    assert (f"Likely label swaps flagged in `likely_swap`: {rep['likely_swaps']['rows_flagged']} of the exported "
            "rows, where the multimodal side prefers the rejected answer (1 - mm_prob >= 0.8)") in text
    assert "| `likely_swap` | bool | a likely label swap" in text


def test_a_pair_tagged_swap_is_flagged_as_it_is_written(audit_dir, tmp_path):
    """Written reversed, its multimodal side now prefers the answer written as chosen: no longer flagged."""
    from audit.tags import set_tags

    df = pl.read_parquet(audit_dir / "audited.parquet")
    flipped = df.filter(pl.col("rm_margin") <= FLIPPED)["pair_id"].to_list()
    copy = tmp_path / "audit"
    shutil.copytree(audit_dir, copy, ignore=shutil.ignore_patterns("cache"))
    set_tags(copy, flipped[:3], "swap")
    rep = export(ExportConfig(audit=copy, out=tmp_path / "x", flag_swaps=True, tags=True))
    rows = pl.read_parquet(rep["path"], columns=["pair_id", "likely_swap", "tag"])
    assert rows.filter(pl.col("tag") == "swap")["likely_swap"].to_list() == [False] * 3
    assert rep["likely_swaps"]["rows_flagged"] == len(flipped) - 3


def test_a_vlfeedback_copy_flags_each_pair_in_its_pair_weights(tmp_path):
    src = synth(SynthConfig(env="leadin", out=tmp_path / "src", n=60, format="vlfeedback"))
    recs = [json.loads(line) for line in src.read_text().splitlines()]
    src.write_text("".join(json.dumps({**r, "rm_margin": _margin(i)}) + "\n" for i, r in enumerate(recs)))
    score(ScoreConfig(source=src, out=tmp_path / "audit", cache_dir=tmp_path / "cache", mm_scores="rm_margin",
                      stack="tokens,lexical,cue", scheme="sfc"))
    rep = export(ExportConfig(audit=tmp_path / "audit", out=tmp_path / "x", format="source", flag_swaps=True))
    out = [json.loads(line) for line in Path(rep["path"]).read_text().splitlines()]
    flags = {r["id"]: [e["likely_swap"] for e in r["pair_weights"]] for r in out}
    assert {i: f for i, f in flags.items()} == {r["id"]: [r["rm_margin"] <= FLIPPED] for r in out}
    assert sum(f[0] for f in flags.values()) == rep["likely_swaps"]["rows_flagged"] == 6


def test_a_text_only_audit_cannot_flag_swaps(audit_dir, tmp_path):
    copy = tmp_path / "audit"
    shutil.copytree(audit_dir, copy, ignore=shutil.ignore_patterns("cache"))
    s = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps({**s, "text_only": True, "mm_acc": None}))
    with pytest.raises(AuditError, match="likely label swaps need a multimodal side.*without `--text-only`"):
        export(ExportConfig(audit=copy, out=tmp_path / "x", flag_swaps=True))
    assert not (tmp_path / "x").exists()


# ---- the app page ------------------------------------------------------------------------------

def _page(audit: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("SHORTCUT_AUDIT_DIR", str(audit))
    monkeypatch.delenv("SHORTCUT_AUDIT_COMPARE", raising=False)
    at = AppTest.from_file(HOME, default_timeout=60)
    at.run()
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_page_lists_the_swaps_ranked_and_tags_them(audit_dir, tmp_path, monkeypatch):
    from audit.tags import read_tags

    copy = tmp_path / "audit"
    shutil.copytree(audit_dir, copy, ignore=shutil.ignore_patterns("cache"))
    df = pl.read_parquet(copy / "audited.parquet")
    expected = (df.filter(pl.col("rm_margin") <= FLIPPED).sort(["mm_prob", "text_prob", "pair_id"])["pair_id"]
                .to_list())
    at = _page(copy, monkeypatch)
    assert at.title[0].value == "Likely label swaps"
    assert any(m.value.startswith(f"**{N // 10} likely swaps** in the current filter") for m in at.markdown)
    listed = [pid for m in at.markdown for pid in expected if f"`{pid}`" in m.value and "p(rejected)" in m.value]
    assert listed == expected
    first = next(m.value for m in at.markdown if f"`{expected[0]}`" in m.value)
    assert f"multimodal p(rejected) **{STAKE:.2f}**" in first
    # the texts, escaped, beside the scores
    row = df.filter(pl.col("pair_id") == expected[0]).row(0, named=True)
    from audit.markup import md_text

    assert any(m.value == "**Chosen** (as labelled)  \n" + md_text(row["chosen"]) for m in at.markdown)
    # tag from the page: the tag lands in tags.parquet and the list says so
    next(b for b in at.button if b.key == f"swap_swap_{expected[0]}").click().run()
    next(b for b in at.button if b.key == f"swap_exclude_{expected[1]}").click().run()
    assert not at.exception
    assert read_tags(copy) == {expected[0]: "swap", expected[1]: "exclude"}
    assert any(f"`{expected[0]}`" in m.value and "tag `swap`" in m.value for m in at.markdown)
    # the threshold: 0.7 takes the doubtful ones in too
    next(s for s in at.slider if s.key == "swap_threshold").set_value(0.7).run()
    assert any(m.value.startswith(f"**{2 * N // 10} likely swaps**") for m in at.markdown)
    # the second page, then a threshold that leaves one page: back on the first, no error
    next(w for w in at.number_input if w.key == "swap_page").set_value(2).run()
    assert not at.exception
    assert not any(f"`{expected[0]}`" in m.value for m in at.markdown)      # 21st to 24th only
    next(s for s in at.slider if s.key == "swap_threshold").set_value(0.8).run()
    assert not at.exception and any(f"`{expected[0]}`" in m.value for m in at.markdown)
    next(s for s in at.slider if s.key == "swap_threshold").set_value(0.7).run()
    # a link opens each pair in the Pair view
    pair_page = next(p.proto.page_script_hash for p in at.sidebar.get("page_link") if p.proto.label == "Pair view")
    opens = [p.proto for p in at.main.get("page_link") if p.proto.label == "Open in Pair view"]
    assert len(opens) == min(20, 2 * N // 10) and {p.page_script_hash for p in opens} == {pair_page}
    assert [p.query_string for p in opens[:len(expected)]] == [f"pair={pid}" for pid in expected]


def test_the_page_says_when_its_evidence_is_weak_or_absent(audit_dir, tmp_path, monkeypatch):
    from audit.reading import mm_weakness

    s = json.loads((audit_dir / "summary.json").read_text())
    assert mm_weakness(s)                         # a reward column right on 80% against a strong text shortcut

    def variant(name: str, **changes) -> Path:    # a folder each: the app caches an audit by its folder
        copy = tmp_path / name
        shutil.copytree(audit_dir, copy, ignore=shutil.ignore_patterns("cache"))
        (copy / "summary.json").write_text(json.dumps({**s, **changes}))
        return copy

    at = _page(variant("weak"), monkeypatch)
    assert any("Read this list with care" in w.value and "multimodal side is weak" in w.value for w in at.warning)
    at = _page(variant("strong", mm_acc=0.99, mm_minus_text=0.09, mm_minus_text_ci=[0.05, 0.12]), monkeypatch)
    assert not any("Read this list with care" in w.value for w in at.warning)
    assert any(m.value.startswith(f"**{N // 10} likely swaps**") for m in at.markdown)
    at = _page(variant("text-only", text_only=True, mm_acc=None), monkeypatch)
    assert "text-only audit" in at.info[0].value and "`--rm`" in at.info[0].value
    assert not any("likely swap" in m.value for m in at.markdown)


def test_the_sidebar_links_to_the_page(audit_dir, monkeypatch):
    at = _page(audit_dir, monkeypatch)
    assert "Likely label swaps" in [p.proto.label for p in at.sidebar.get("page_link")]
