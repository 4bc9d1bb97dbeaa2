"""The slices that carry the shortcut: per-value text-only accuracy with intervals, Holm's correction,
minimum size, slices that select the same pairs, slices explained by a stronger one, and the audit's
verdict naming the carrier."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audit.probes.slices import MIN_SLICE, SliceColumn, _coded, _folders, holm, slice_table


def _column(name, values):
    col = _coded(name, list(values))
    assert col is not None
    return col


def test_holm_adjusts_step_down():
    # sorted p = 0.01, 0.02, 0.04 with 3 tests: 0.03, max(0.03, 0.04), max(0.04, 0.04)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_a_slice_that_carries_the_shortcut_is_named_with_its_numbers():
    # 100 pairs of subset A, all right; 200 of B, half right (alternating): acc A 1.0, rest 0.5
    subset = ["A"] * 100 + ["B"] * 200
    margin = np.array([1.0] * 100 + [1.0, -1.0] * 100)
    t = slice_table([_column("subset", subset)], margin, np.arange(300))
    (a,) = t["carriers"]
    assert (a["column"], a["value"], a["n"], a["text_acc"], a["rest_acc"]) == ("subset", "A", 100, 1.0, 0.5)
    assert a["differs"] and a["p_adjusted"] < 1e-10 and a["text_acc_ci"] == [1.0, 1.0]
    assert t["rest_of_carriers"] == {"n": 200, "text_acc": 0.5}
    assert [(b["value"], b["text_acc"]) for b in t["below"]] == [("B", 0.5)]
    assert t["examined"] == 1     # B is the rest of A: one test, counted once in the correction


def test_small_slices_are_not_examined_and_noise_is_not_a_carrier():
    rng = np.random.default_rng(0)
    n = 600
    margin = np.where(rng.random(n) < 0.6, 1.0, -1.0)            # 60% everywhere
    tiny = ["x"] * (MIN_SLICE - 1) + ["y"] * (n - MIN_SLICE + 1)  # x too small to examine (and its complement too)
    many = [f"v{i % 12}" for i in range(n)]                       # 12 slices of 50 pairs, nothing planted
    t = slice_table([_column("tiny", tiny), _column("many", many)], margin, np.arange(n))
    assert {r["column"] for r in t["slices"]} == {"many"} and t["examined"] == 12
    assert t["carriers"] == [] and t["below"] == []


def test_slices_selecting_the_same_pairs_are_examined_once_and_named_together():
    subset = ["A"] * 100 + ["B"] * 200
    margin = np.array([1.0] * 100 + [1.0, -1.0] * 100)
    t = slice_table([_column("source_name", subset), _column("folder", ["povid" if s == "A" else "other" for s in subset])],
                    margin, np.arange(300))
    (a,) = t["carriers"]
    assert a["column"] == "source_name" and a["same_as"] == [{"column": "folder", "value": "povid"}]


def test_a_slice_mostly_inside_a_stronger_one_is_explained_away():
    # A (100, all right) carries it; `judge = human` holds A and 40 more pairs that are at chance
    subset = ["A"] * 100 + ["B"] * 200
    judge = ["human"] * 140 + ["model"] * 160
    margin = np.array([1.0] * 100 + [1.0, -1.0] * 100)
    t = slice_table([_column("subset", subset), _column("judge", judge)], margin, np.arange(300))
    assert [c["value"] for c in t["carriers"]] == ["A"]
    assert t["carriers"][0]["explains"][0]["column"] == "judge"


def test_image_folders_are_named_below_their_common_part():
    assert _folders(["images/povid/1.jpg", "images/rlaif-v/2.jpg", None]) == ["povid", "rlaif-v", None]
    assert _folders(["/data/x/a.png", "/data/x/b.png"]) == ["x", "x"]


def test_the_audit_names_the_carrier_slice_in_its_summary_cli_and_app(tmp_path, monkeypatch):
    """Half the pairs (subset `templated`) carry a lead-in cue, the other half none: the text-only
    accuracy per subset, the carrier in the headline's `where` line, and the Browse filter for it."""
    from audit.appdata import Audit, Filters
    from audit.cli import main
    from audit.synth import generate

    rows = []
    for sub, env in (("templated", "leadin"), ("plain", "clean")):
        for i, p in enumerate(generate(env, 150, seed=2)):
            rows.append({"sample_id": f"{sub}{i}", "prompt": f"{p.prompt} [{sub} {i}]", "chosen": p.chosen,
                         "rejected": p.rejected, "image": f"none/{i}.png", "subset": sub})
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["score", str(tmp_path / "d.jsonl"), "-o", str(tmp_path / "a"), "--text-only", "--folds", "3",
                 "--stack", "tokens,lexical,cue"]) == 0
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    (c,) = s["slices"]["carriers"]
    assert (c["column"], c["value"], c["n"]) == ("subset", "templated", 150)
    assert c["text_acc"] > 0.8 and c["rest_acc"] < 0.62 and c["differs"]
    from audit.reading import verdict, where_line

    assert where_line(s).startswith("Where it lives: subset = templated: ") and "subset = templated" in verdict(s)
    audit = Audit(tmp_path / "a")
    assert audit.count(Filters(meta_col="subset", meta_val="templated")) == 150
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SHORTCUT_AUDIT_DIR", str(tmp_path / "a"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "Home.py"), default_timeout=60).run()
    assert not at.exception
    assert any(h.value == "Where the shortcut lives" for h in at.subheader)
    links = [pl.proto for pl in at.get("page_link")]
    link = next(x for x in links if "meta_val=templated" in x.query_string)
    assert "meta_col=subset" in link.query_string and "templated" in link.label
