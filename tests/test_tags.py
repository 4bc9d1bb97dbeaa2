"""Tags set on pairs (exclude / keep / review / swap): stored beside the audit, kept by a re-score,
honoured by `export --tags`, counted by the card; and the headline that reads an audit (interval,
distance from chance, verdict)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from audit import metrics
from audit.config import CardConfig, ExportConfig, ScoreConfig, SynthConfig
from audit.errors import ConfigError
from audit.export import export
from audit.reading import headline, level, verdict
from audit.score import score
from audit.synth import synth
from audit.tags import TAGS_FILE, read_tags, set_tags
from conftest import scored_synth_audit


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("tags")
    scored_synth_audit(root)
    return root


def _ids(audited) -> list[str]:
    return pl.read_parquet(audited / "audit" / "audited.parquet").sort("pair_id")["pair_id"].to_list()


def test_tags_round_trip_and_refuse_unknown_values(audited, tmp_path):
    audit = tmp_path / "a"
    audit.mkdir()
    assert read_tags(audit) == {}
    set_tags(audit, ["p1", "p2"], "exclude")
    set_tags(audit, ["p2"], "swap")
    assert read_tags(audit) == {"p1": "exclude", "p2": "swap"}
    set_tags(audit, ["p1"], None)
    assert read_tags(audit) == {"p2": "swap"}
    with pytest.raises(ConfigError, match="unknown tag"):
        set_tags(audit, ["p3"], "delete")
    assert pl.read_parquet(audit / TAGS_FILE).columns == ["pair_id", "tag", "updated"]


def test_export_honours_tags_only_when_asked(audited, tmp_path):
    ids = _ids(audited)
    a = audited / "audit"
    set_tags(a, ids[:3], "exclude")
    set_tags(a, ids[3:5], "swap")
    set_tags(a, ids[5:6], "review")
    df = pl.read_parquet(a / "audited.parquet")
    plain = export(ExportConfig(audit=a, out=tmp_path / "plain"))
    assert plain["rows_out"] == df.height and plain["tags"] is None
    rep = export(ExportConfig(audit=a, out=tmp_path / "tagged", tags=True))
    out = pl.read_parquet(tmp_path / "tagged" / "pairs.parquet")
    assert rep["rows_out"] == df.height - 3 and out.height == df.height - 3
    assert rep["tags"]["excluded"] == 3 and rep["tags"]["swapped"] == 2 and rep["tags"]["review"] == 1
    by_id = {r["pair_id"]: r for r in df.iter_rows(named=True)}
    got = {r["pair_id"]: r for r in out.iter_rows(named=True)}
    assert not set(ids[:3]) & set(got)                                   # excluded
    for pid in ids[3:5]:                                                 # swapped, tagged, neutral weight
        assert (got[pid]["chosen"], got[pid]["rejected"]) == (by_id[pid]["rejected"], by_id[pid]["chosen"])
        assert got[pid]["tag"] == "swap"
    assert got[ids[5]]["tag"] == "review" and got[ids[6]]["tag"] is None
    assert out["weight"].mean() == pytest.approx(1.0)
    set_tags(a, ids[:6], None)


def test_a_swapped_pair_flips_every_column_that_depends_on_the_side(audited, tmp_path):
    a = audited / "audit"
    ids = _ids(audited)
    set_tags(a, ids[:5], "swap")
    export(ExportConfig(audit=a, out=tmp_path / "x", tags=True))
    set_tags(a, ids[:5], None)
    df = pl.read_parquet(a / "audited.parquet").filter(pl.col("pair_id").is_in(ids[:7])).sort("pair_id")
    out = pl.read_parquet(tmp_path / "x" / "pairs.parquet").filter(pl.col("pair_id").is_in(ids[:7])).sort("pair_id")
    cues = [f"cue_{c['name']}" for c in json.loads((a / "summary.json").read_text())["cues"]]
    margins = [c for c in df.columns if c.endswith("_margin")]
    assert {"text_margin", "mm_margin", "cue_margin"} <= set(margins) and len(cues) >= 5
    was, now = df[:5], out[:5]
    for c in margins + cues:
        assert now[c].to_list() == pytest.approx((-was[c]).to_list()), c
    for c in ("text_prob", "mm_prob"):
        assert now[c].to_list() == pytest.approx((1 - was[c]).to_list()), c
    for c in ("text", "mm"):
        assert now[f"{c}_loss"].to_numpy() == pytest.approx(metrics.bt_loss(-was[f"{c}_margin"].to_numpy()))
    assert now["sfc"].to_numpy() == pytest.approx(metrics.sfc(now["text_loss"].to_numpy(), now["mm_loss"].to_numpy()))
    assert now["is_shortcut"].to_list() == (now["text_prob"] >= 0.8).to_list()
    assert now["cue_on_chosen"].to_list() == (~was["cue_on_chosen"]).to_list()   # the planted cue changed sides
    assert now["cue_p"].to_list() == was["cue_p"].to_list() and now["fold"].to_list() == was["fold"].to_list()
    keep = [c for c in df.columns if c in out.columns and c not in ("weight", "tag")]
    assert out[5:].select(keep).equals(df[5:].select(keep))                   # the others as they were


def test_a_swapped_row_is_the_audit_of_the_swapped_pair(tmp_path):
    """Swap pairs of one fold, write the source copy (the swap in the records), audit it again: the
    swapped rows of a flat export agree with that audit of the swapped pairs wherever a column is a
    function of the pair (cues, models, the side-free fold); the probes, refitted on data that
    changed a little, agree up to their calibration. Ratings follow their texts (the copy states the
    preference through them), and the source's own margin, overruled, is dropped."""
    src = synth(SynthConfig(env="leadin", out=tmp_path / "src", n=60, format="vlfeedback"))
    score(ScoreConfig(source=src.parent, out=tmp_path / "a1", cache_dir=tmp_path / "cache"))
    one = pl.read_parquet(tmp_path / "a1" / "audited.parquet")
    ids = one.filter(pl.col("fold") == 0)["pair_id"][:5].to_list()
    set_tags(tmp_path / "a1", ids, "swap")
    export(ExportConfig(audit=tmp_path / "a1", out=tmp_path / "flat", tags=True))
    export(ExportConfig(audit=tmp_path / "a1", out=tmp_path / "copy", tags=True, format="source"))
    score(ScoreConfig(source=tmp_path / "copy", out=tmp_path / "a2", cache_dir=tmp_path / "cache"))
    flat = pl.read_parquet(tmp_path / "flat" / "pairs.parquet").filter(pl.col("pair_id").is_in(ids))
    j = flat.join(pl.read_parquet(tmp_path / "a2" / "audited.parquet"), on=["prompt", "chosen", "rejected"], suffix="_2")
    was = one.filter(pl.col("pair_id").is_in(ids)).sort("pair_id")
    assert j.height == 5
    cues = [c for c in j.columns if c.startswith("cue_") and c + "_2" in j.columns and c not in ("cue_margin", "cue_p")]
    for c in [*cues, "chosen_model", "rejected_model", "is_shortcut", "fold"]:
        assert j[c].to_list() == j[c + "_2"].to_list(), c
    assert (np.sign(j["text_margin"]) == np.sign(j["text_margin_2"])).all()
    assert j["text_prob"].to_list() == pytest.approx(j["text_prob_2"].to_list(), abs=0.1)   # refitted: close
    flat = flat.sort("pair_id")
    assert flat["chosen_rating"].to_list() == was["rejected_rating"].to_list() and flat["margin"].is_null().all()


def test_tags_with_integer_pair_ids_apply_and_tags_that_name_no_pair_are_an_error(audited, tmp_path):
    import shutil

    from audit.errors import FormatError

    audit = tmp_path / "audit"
    shutil.copytree(audited / "audit", audit)
    # a tags file another tool wrote: ids of decimal digits only were read as numbers, leading zeros lost
    pl.DataFrame({"pair_id": [123, 4560000000000001], "tag": ["exclude", "swap"], "updated": ["t", "t"]}
                 ).write_parquet(audit / TAGS_FILE)
    assert read_tags(audit) == {"0000000000000123": "exclude", "4560000000000001": "swap"}
    with pytest.raises(FormatError, match="none of the 2 tags in .* names a scored pair of this audit"):
        export(ExportConfig(audit=audit, out=tmp_path / "x", tags=True))
    ids = _ids(audited)
    pl.DataFrame({"pair_id": [ids[0], "ffffffffffffffff"], "tag": ["exclude", "swap"], "updated": ["t", "t"]}
                 ).write_parquet(audit / TAGS_FILE)
    rep = export(ExportConfig(audit=audit, out=tmp_path / "y", tags=True))
    assert rep["tags"]["excluded"] == 1 and rep["tags"]["not_applied"] == 1


def test_keep_is_never_pruned(audited, tmp_path):
    a = audited / "audit"
    df = pl.read_parquet(a / "audited.parquet")
    shortcut = df.filter(pl.col("is_shortcut"))["pair_id"].to_list()[:4]
    set_tags(a, shortcut, "keep")
    rep = export(ExportConfig(audit=a, out=tmp_path / "pruned", mode="prune", tags=True))
    kept = set(pl.read_parquet(tmp_path / "pruned" / "pairs.parquet")["pair_id"].to_list())
    assert set(shortcut) <= kept and rep["tags"]["kept"] == 4
    assert rep["rows_out"] == int((~df["is_shortcut"]).sum()) + 4
    set_tags(a, shortcut, None)


def test_tags_survive_a_rescore_and_the_card_counts_them(audited, tmp_path):
    from audit.card import card

    a = audited / "audit"
    ids = _ids(audited)
    set_tags(a, ids[:2], "review")
    score(ScoreConfig(source=audited / "src", out=a, cache_dir=audited / "cache", overwrite=True))
    assert read_tags(a) == {ids[0]: "review", ids[1]: "review"}
    body = card(CardConfig(audit=a, out=tmp_path, name="c", figures="html")).read_text()
    assert "## Pairs tagged by hand" in body and "| `review` | 2 |" in body
    set_tags(a, ids[:2], None)


def test_headline_interval_signal_and_verdict(audited):
    s = json.loads((audited / "audit" / "summary.json").read_text())
    lo, hi = s["text_acc_ci"]
    assert lo < s["text_acc"] < hi and 0.5 < lo
    assert s["text_signal_share"] == pytest.approx(2 * s["text_acc"] - 1)
    assert level(s) == "strong" and "strong text-only shortcut" in verdict(s)
    assert f"{100 * s['text_acc']:.1f}%" in headline(s) and "points from chance" in headline(s)
    near = {**s, "text_acc": 0.52, "text_acc_ci": [0.47, 0.57]}
    assert level(near) == "none" and verdict(near).startswith("No text-only shortcut")
    assert level({**s, "text_acc": 0.57, "text_acc_ci": [0.53, 0.61]}) == "weak"


def test_grouped_accuracy_interval_resamples_groups():
    rng = np.random.default_rng(0)
    margin = rng.normal(0.5, 1.0, 2000)
    ci = metrics.grouped_accuracy_ci(margin, np.arange(2000), seed=1)
    acc = metrics.accuracy(margin)
    assert ci[0] < acc < ci[1] and ci[1] - ci[0] < 0.06
    # whole groups of 100 identical pairs: far fewer independent units, a wider interval
    wide = metrics.grouped_accuracy_ci(np.repeat(margin[:20], 100), np.repeat(np.arange(20), 100), seed=1)
    assert wide[1] - wide[0] > 2 * (ci[1] - ci[0])
    assert metrics.grouped_accuracy_ci(margin, np.zeros(2000)) is None
    assert metrics.grouped_accuracy_ci(margin, np.arange(2000), seed=1) == ci      # seeded
