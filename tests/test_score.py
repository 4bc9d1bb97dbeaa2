"""The scorer on synthetic environments: the text probe recovers the planted shortcut strength, the
cue probe names the planted cue, the schemes move the cue share, and the output contract holds."""

from __future__ import annotations

import json

import polars as pl
import pytest

from audit import metrics
from audit.config import ScoreConfig, SynthConfig
from audit.folds import assign_folds, group_ids
from audit.probes.cues import cue_differences, fit_cue_probe
from audit.score import AUDIT_COLUMNS, score
from audit.synth import generate, synth
from conftest import png_bytes, write_jsonl

N = 2000
PLANTED = {"leadin": {"lead_in"}, "closing": {"closing"}, "verbose": {"length"}, "markdown": {"list_items"}}


@pytest.fixture(scope="module")
def audits(tmp_path_factory):
    root = tmp_path_factory.mktemp("audits")
    out = {}
    for env in ("leadin", "leadin-0.7", "clean"):
        src = synth(SynthConfig(env=env, out=root / "src" / env, n=N, format="rlaif-v"))
        summary = score(ScoreConfig(source=src.parent, out=root / env, cache_dir=root / "cache"))
        out[env] = (summary, pl.read_parquet(root / env / "audited.parquet"))
    return out


@pytest.mark.parametrize("env,p", [("leadin", 0.9), ("leadin-0.7", 0.7), ("clean", 0.5)])
def test_text_probe_accuracy_is_the_planted_strength(audits, env, p):
    summary, df = audits[env]
    # 0.04: seed noise on 2,000 pairs (sd 0.011) plus the clean environment's small answer prior (in the
    # counting task the wrong count is a neighbour of the right one: about 0.53 measured, old and new grouping)
    assert abs(summary["text_acc"] - p) < 0.04, summary["text_acc"]
    assert summary["text_acc"] == pytest.approx(metrics.accuracy(df["text_margin"].to_numpy()))


@pytest.mark.parametrize("env", ["leadin", "leadin-0.7"])
def test_text_prob_separates_cue_aligned_pairs(audits, env):
    _, df = audits[env]
    assert metrics.auroc(df["text_prob"].to_numpy(), df["cue_on_chosen"].to_numpy()) >= 0.9


@pytest.mark.parametrize("env", sorted(PLANTED) + [e + "-0.7" for e in sorted(PLANTED)])
def test_cue_probe_ranks_the_planted_cue_first(env):
    pairs = list(generate(env, 1000, seed=1))
    diff = cue_differences([p.prompt for p in pairs], [p.chosen for p in pairs], [p.rejected for p in pairs])
    groups = group_ids([p.scene_id for p in pairs], [p.sample_id for p in pairs], [p.prompt for p in pairs])
    _, table, _ = fit_cue_probe(diff, assign_folds(groups, 5, 0), groups, 0)
    assert table[0]["name"] in PLANTED[env.split("-")[0]]


def test_cue_values_match_the_case_insensitive_patterns_on_any_text():
    """The cue probe lower-cases a response once and matches case-sensitively where that finds exactly
    what the case-insensitive pattern finds; texts with cased non-ASCII letters (dotted / dotless i,
    long s, the Kelvin sign, Greek sigma) take the case-insensitive pattern itself. Either way the
    counts are those of the plain `re.I` pattern."""
    import random
    import re

    from audit.probes import cues

    caseless = [v for v in vars(cues).values() if isinstance(v, cues._Caseless)]
    assert len(caseless) == 6
    rng = random.Random(0)
    alpha = list("abcdefgiklmnoprstuvyzAGHIKMS  \n.,!'-") + list("\u0130\u0131\u017f\u212a\u03a3\u03c3\u2019\u2014\u4e2d\U0001f600\u01c5")
    words = ["I think", "I'M SORRY", "Great question!", "Certainly", "hope this HELPS", "Let me know", "IMAGE",
             "\u0130mage", "\u017fcene", "I can't", "As an AI", "MAYBE", "my", "I've", "vis\u0131ble", "Pi\u212ature"]
    texts = [" ".join(rng.choice(words) if rng.random() < 0.5 else "".join(rng.choice(alpha) for _ in range(5))
                      for _ in range(rng.randint(0, 8))) for _ in range(3000)]
    fast = 0
    for text in texts:
        fast += cues._lower(text) is not None
        for pat in caseless:
            plain = re.compile(pat.slow.pattern, pat.slow.flags)
            assert len(pat.findall(text)) == len(plain.findall(text)), (pat.slow.pattern, text)
            assert bool(pat.search(text)) == bool(plain.search(text)), (pat.slow.pattern, text)
    assert 0 < fast < len(texts)                       # both paths were taken
    assert cues._lower("\u0130mage") is None and cues._lower("It\u2019s an IMAGE \u2014 \u4e2d") == "it\u2019s an image \u2014 \u4e2d"


def test_summary_names_the_planted_cue_and_the_schemes_move_the_cue_share(audits):
    summary, _ = audits["leadin"]
    assert summary["top_cue"] == "lead_in"
    share = summary["cue_share"]
    assert share["none"] == share["untouched"] and abs(share["untouched"] - 0.9) < 0.02
    # The multimodal probe does not ride the cue, so SFC differs between cue-aligned and cue-against
    # pairs and every reweighting scheme moves the share towards 0.5 (no weighting: 0.9).
    for scheme in ("sfc-residual", "debias", "ipw", "jtt"):
        assert share[scheme] < 0.75, (scheme, share)
    # the offline probe's L_mm is its image-only residual: `sfc-residual`, never the paper's `sfc`
    assert summary["sfc_kind"] == "residual" and "sfc" not in share
    assert abs(share["ipw"] - 0.5) < 0.1


def test_audited_table_contract(audits):
    summary, df = audits["leadin"]
    for col in AUDIT_COLUMNS + ("pair_id", "prompt", "chosen", "rejected", "status", "cue_lead_in"):
        assert col in df.columns
    assert df.height == N and summary["n_rows"] == N
    assert df["weight"].mean() == pytest.approx(1.0)
    assert df["sfc"].to_numpy() == pytest.approx(metrics.sfc(df["text_loss"].to_numpy(), df["mm_loss"].to_numpy()))
    assert (df["is_shortcut"] == (df["text_prob"] >= 0.8)).all()
    assert set(df["fold"].unique().to_list()) == set(range(5))
    for key in ("n_rows", "status_counts", "text_acc", "mm_acc", "cue_acc", "shortcut_rate", "sfd", "cues",
                "scheme", "config", "versions", "per_source", "timings", "seeds"):
        assert key in summary


def test_bad_rows_are_kept_with_status_and_no_scores(tmp_path):
    for i in range(40):
        (tmp_path / f"{i}.png").write_bytes(png_bytes((i * 6, 100, 200 - i)))
    rows = [{"prompt": f"What is {i}?", "chosen": f"It is {i}.", "rejected": f"It is {i + 1}.", "image": f"{i}.png",
             "rm_c": float(i % 3), "rm_r": 1.0} for i in range(40)]
    rows[3]["image"] = "missing.png"
    rows[7]["chosen"] = ""
    write_jsonl(tmp_path / "d.jsonl", rows)
    summary = score(ScoreConfig(source=tmp_path / "d.jsonl", out=tmp_path / "audit", mm_scores="rm_c,rm_r",
                                cache_dir=tmp_path / "cache"))
    df = pl.read_parquet(tmp_path / "audit" / "audited.parquet")
    assert df.height == 40 and summary["n_scored"] == 38
    assert summary["status_counts"] == {"empty_response": 1, "image_missing": 1, "ok": 38}
    bad = df.filter(pl.col("status") != "ok")
    assert bad["text_prob"].null_count() == 2 and bad["weight"].to_list() == [0.0, 0.0] and bad["fold"].to_list() == [-1, -1]
    # External scores become the mm columns: margin = chosen reward - rejected reward.
    ok = df.filter(pl.col("status") == "ok")
    assert ok["mm_margin"].to_list() == pytest.approx((ok["rm_c"] - ok["rm_r"]).to_list())


def test_too_few_groups_is_a_clear_error(tmp_path):
    from audit.errors import FormatError

    (tmp_path / "a.png").write_bytes(png_bytes())
    rows = [{"prompt": f"What is {i}?", "chosen": f"It is {i}.", "rejected": f"It is {i + 1}.", "image": "a.png"}
            for i in range(30)]
    write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(FormatError, match=r"form only 1 group\(s\).*lower `--folds`"):
        score(ScoreConfig(source=tmp_path / "d.jsonl", out=tmp_path / "audit", cache_dir=tmp_path / "cache"))


def test_interrupted_score_resumes_to_identical_bytes(tmp_path, monkeypatch):
    src = synth(SynthConfig(env="closing", out=tmp_path / "src", n=300, format="alignrm"))

    import audit.encoders.text as text_mod

    real = text_mod.TextEncoder.encode
    calls = {"n": 0}

    def dying(self, texts):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(self, texts)

    monkeypatch.setattr(text_mod.TextEncoder, "encode", dying)
    with pytest.raises(KeyboardInterrupt):   # small chunks (--chunk 64): several parts
        score(ScoreConfig(source=src.parent, out=tmp_path / "resumed", cache_dir=tmp_path / "c2", chunk=64))
    assert not (tmp_path / "resumed" / "audited.parquet").exists()      # nothing half-written
    monkeypatch.setattr(text_mod.TextEncoder, "encode", real)
    score(ScoreConfig(source=src.parent, out=tmp_path / "resumed", cache_dir=tmp_path / "c2", chunk=64))
    monkeypatch.undo()
    score(ScoreConfig(source=src.parent, out=tmp_path / "straight2", cache_dir=tmp_path / "c3", chunk=64))
    a = (tmp_path / "resumed" / "audited.parquet").read_bytes()
    b = (tmp_path / "straight2" / "audited.parquet").read_bytes()
    assert a == b


def test_rescoring_reuses_the_cache(tmp_path, monkeypatch):
    src = synth(SynthConfig(env="markdown", out=tmp_path / "src", n=120, format="pairs"))
    score(ScoreConfig(source=src.parent, out=tmp_path / "a"))
    import audit.encoders.text as text_mod

    def boom(self, texts):
        raise AssertionError("re-encoded a cached text")

    monkeypatch.setattr(text_mod.TextEncoder, "encode", boom)
    s = score(ScoreConfig(source=tmp_path / "a" / "pairs", out=tmp_path / "a", scheme="ipw", threshold=0.9))
    assert s["scheme"] == "ipw"
    assert json.loads((tmp_path / "a" / "config.json").read_text())["scheme"] == "ipw"


def test_summary_is_strict_json_even_when_sfd_is_undefined(tmp_path):
    src = synth(SynthConfig(env="clean", out=tmp_path / "src", n=200, format="pairs"))
    s = score(ScoreConfig(source=src.parent, out=tmp_path / "a", cache_dir=tmp_path / "c"))
    text = (tmp_path / "a" / "summary.json").read_text()
    parsed = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))   # no NaN tokens
    assert parsed["n_rows"] == 200
    assert (parsed["sfd"] is None) == (s["sfd"] != s["sfd"])


def test_a_weak_multimodal_side_is_flagged_with_what_to_do(audits):
    """On a shortcut environment the offline bilinear probe is far below text-only: SFC then mostly
    follows the text probe, and the summary (read by the command line, the card and the app) says so."""
    from audit.score import audit_warnings

    s = audits["leadin"][0]
    assert s["mm_acc"] < s["text_acc"] and len(s["warnings"]) == 1
    assert "the multimodal side is weak" in s["warnings"][0] and "`--rm`" in s["warnings"][0]
    strong = {**s, "mm_acc": 0.8, "text_acc": 0.7, "mm_minus_text": 0.1, "mm_minus_text_ci": [0.05, 0.15]}
    assert audit_warnings(strong) == []
    assert "barely uses the image" in audit_warnings({**s, "mm_acc": 0.52, "sfc_kind": "paper"})[0]


def test_the_audited_table_records_how_it_was_made_and_the_same_run_writes_the_same_bytes(tmp_path):
    """audited.parquet carries its own record (Parquet metadata `shortcut_audit`: probes, encoders,
    SFC kind, temperatures, settings) so a copy without summary.json still says what made its SFC;
    the record is deterministic, so the same seed writes the same bytes into another folder."""
    from audit.score import read_table_metadata

    src = synth(SynthConfig(env="leadin", out=tmp_path / "src", n=150, format="rlaif-v"))
    runs = [score(ScoreConfig(source=src.parent, out=tmp_path / name, cache_dir=tmp_path / "cache"))
            for name in ("a", "b")]
    meta = read_table_metadata(tmp_path / "a" / "audited.parquet")
    assert meta["probes"] == runs[0]["probes"] and meta["sfc_kind"] == runs[0]["sfc_kind"] == "residual"
    assert meta["encoders"] == json.loads(json.dumps(runs[0]["encoders"]))
    assert meta["settings"]["scheme"] == "debias" and meta["settings"]["text_encoder"] == "minilm"
    assert "source" not in meta["settings"] and "out" not in meta["settings"]
    assert (tmp_path / "a" / "audited.parquet").read_bytes() == (tmp_path / "b" / "audited.parquet").read_bytes()
    assert read_table_metadata(src) is None              # a table that is not an audit has no record


def _scored_source(tmp_path, n=40):
    """n pairs on distinct pictures whose external rewards always prefer the chosen answer, except that
    the first half carry a NaN, +inf or -inf reward: every finite row is right."""
    for i in range(n):
        (tmp_path / f"{i}.png").write_bytes(png_bytes((i * 6, 100, 200 - i)))
    bad = [float("nan"), float("inf"), float("-inf")]
    rows = [{"prompt": f"What is {i}?", "chosen": f"It is {i}.", "rejected": f"It is {i + 1}.", "image": f"{i}.png",
             "rm_c": bad[i % 3] if i < n // 2 and i % 2 == 0 else 2.0,
             "rm_r": bad[i % 3] if i < n // 2 and i % 2 == 1 else 1.0} for i in range(n)]
    return write_jsonl(tmp_path / "d.jsonl", rows)


def test_non_finite_external_scores_get_a_status_not_a_wrong_answer(tmp_path):
    """NaN / inf rewards in `--mm-scores` columns: the row is `score_not_finite` (no SFC, weight 0, left out
    of the multimodal accuracy), counted in the summary; never counted as wrong, never SFC 0.5."""
    src = _scored_source(tmp_path)
    summary = score(ScoreConfig(source=src, out=tmp_path / "audit", mm_scores="rm_c,rm_r", folds=3,
                                cache_dir=tmp_path / "cache"))
    df = pl.read_parquet(tmp_path / "audit" / "audited.parquet")
    assert df.height == 40 and summary["n_rows"] == 40 and summary["n_scored"] == 20
    assert summary["status_counts"] == {"ok": 20, "score_not_finite": 20}
    assert summary["mm_scores_not_finite"] == 20
    assert summary["mm_acc"] == 1.0
    bad = df.filter(pl.col("status") == "score_not_finite")
    assert bad.height == 20 and bad["sfc"].null_count() == 20 and bad["mm_margin"].null_count() == 20
    assert bad["weight"].to_list() == [0.0] * 20 and bad["status_detail"].str.contains("rm_c").all()
    ok = df.filter(pl.col("status") == "ok")
    assert ok["sfc"].null_count() == 0 and ok["weight"].mean() == pytest.approx(1.0)
    assert summary["sfc_mean"] == pytest.approx(ok["sfc"].mean())


def test_eval_scores_leave_non_finite_rewards_out(tmp_path):
    from audit.config import EvalConfig
    from audit.eval import eval_run

    src = _scored_source(tmp_path)
    r = eval_run(EvalConfig(run=src, data=[], scores="rm_c,rm_r"))["datasets"]["d.jsonl"]
    assert r["accuracy"] == 1.0 and r["n"] == 20      # not 0.5 on 40: the 20 NaN / inf rewards are no answer
    assert r["n_not_finite"] == 20
