"""The stacked text probe: nested cross-fitting that never lets a pair's label reach its own score,
chance on random labels, at least its best component, and the component options."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from audit.config import ScoreConfig
from audit.errors import ConfigError
from audit.score import score
from audit.synth import generate

N = 300
STACK = "tokens,lexical,cue,embedding"


def _write(path, pairs, swap=None):
    """Pairs as a text-only JSONL; `swap[i]` exchanges chosen and rejected of row i (its label flips)."""
    rows = []
    for i, p in enumerate(pairs):
        c, r = (p.rejected, p.chosen) if swap is not None and swap[i] else (p.chosen, p.rejected)
        rows.append({"sample_id": f"s{i}", "prompt": f"{p.prompt} (question {i})", "chosen": c, "rejected": r,
                     "image": f"none/{i}.png"})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _audit(tmp_path, name, pairs, swap=None, **kw):
    src = _write(tmp_path / f"{name}.jsonl", pairs, swap)
    s = score(ScoreConfig(source=src, out=tmp_path / name, text_only=True, cache_dir=tmp_path / "cache",
                          **{"stack": STACK, **kw}))
    return s, pl.read_parquet(tmp_path / name / "audited.parquet")


@pytest.fixture(scope="module")
def leadin(tmp_path_factory):
    d = tmp_path_factory.mktemp("stack")
    pairs = list(generate("leadin", N, seed=5))
    s, df = _audit(d, "base", pairs)
    return d, pairs, s, df


def test_flipping_one_folds_labels_negates_exactly_that_folds_scores(leadin):
    """A fold's stacked margins are a function of its own texts and the other folds' labels only: swap
    chosen and rejected in fold 0 and its margins (and calibrated text_prob) are exactly mirrored. Any
    layer that saw fold 0's labels (a stacker fitted on ordinary out-of-fold margins, a calibration on
    them, an L2 chosen with them) would move them."""
    d, pairs, s, df = leadin
    fold0 = (df["fold"] == 0).to_numpy()
    s2, df2 = _audit(d, "swapped", pairs, swap=fold0)
    assert df2["fold"].to_list() == df["fold"].to_list()
    for col in ("text_margin", "lexical_margin", "tokens_margin", "embedding_margin", "prompt_blind_margin"):
        a, b = df[col].to_numpy(), df2[col].to_numpy()
        np.testing.assert_allclose(b[fold0], -a[fold0], rtol=1e-6, atol=1e-9, err_msg=col)
        assert not np.allclose(b[~fold0], a[~fold0], atol=1e-6)     # the other folds did learn from fold 0
    np.testing.assert_allclose(df2["text_prob"].to_numpy()[fold0], 1 - df["text_prob"].to_numpy()[fold0], atol=1e-9)


def test_a_leaky_stack_fails_the_exact_flip_check(leadin, monkeypatch):
    """The check above has teeth: a stacker fitted on the other folds' ordinary out-of-fold margins
    (whose models saw fold 0) no longer mirrors fold 0."""
    from audit.bt import CrossFit
    from audit.probes import stack as stack_mod

    real = stack_mod.stack

    def leaky(parts, folds, l2=stack_mod.STACK_L2):
        k = int(np.max(folds)) + 1
        oof = {n: CrossFit(cf.margin, np.tile(cf.margin, (k, 1)), None) for n, cf in parts.items()}
        return real(oof, folds, l2)

    monkeypatch.setattr(stack_mod, "stack", leaky)
    d, pairs, s, df = leadin
    fold0 = (df["fold"] == 0).to_numpy()
    _, a = _audit(d, "leaky", pairs)
    _, b = _audit(d, "leaky-swapped", pairs, swap=fold0)
    assert not np.allclose(b["text_margin"].to_numpy()[fold0], -a["text_margin"].to_numpy()[fold0], atol=1e-6)


def test_random_labels_leave_the_stack_at_chance(tmp_path):
    """Labels randomised against a strong lead-in cue: nothing in the text predicts them, so a stack that
    never sees a pair's label through any layer scores at chance."""
    pairs = list(generate("leadin", 400, seed=8))
    swap = np.random.default_rng(1).random(len(pairs)) < 0.5
    s, _ = _audit(tmp_path, "random", pairs, swap=swap)
    assert abs(s["text_acc"] - 0.5) < 0.07 and s["text_acc_ci"][0] <= 0.5 <= s["text_acc_ci"][1]
    assert all(abs(c["acc"] - 0.5) < 0.08 for c in s["text_components"])


def test_the_stack_is_at_least_its_best_component_and_reports_each(leadin):
    _, _, s, _ = leadin
    comps = {c["name"]: c for c in s["text_components"]}
    assert set(comps) == set(STACK.split(",")) and s["probes"]["text"] == "stack"
    assert s["text_acc"] >= max(c["acc"] for c in comps.values()) - 0.02
    assert s["text_acc"] > 0.8                      # the planted lead-in (p = 0.9)
    assert all("weight" in c and c["acc_ci"][0] <= c["acc"] <= c["acc_ci"][1] for c in comps.values())
    assert s["lexical_acc"] == comps["lexical"]["acc"] and s["tokens_acc"] == comps["tokens"]["acc"]
    assert s["encoders"]["text"]["components"] == STACK.split(",")


def test_auto_leaves_the_text_encoder_out_on_large_cpu_runs():
    from types import SimpleNamespace

    from audit.probes.stack import AUTO_EMBEDDING_PAIRS, resolve_components

    cfg = ScoreConfig(source="x", out="y")
    small = SimpleNamespace(m=100, device="cpu")
    big = SimpleNamespace(m=AUTO_EMBEDDING_PAIRS + 1, device="cpu")
    assert resolve_components(cfg, small) == ["tokens", "lexical", "cue", "embedding"]
    assert resolve_components(cfg, big) == ["tokens", "lexical", "cue"]
    assert resolve_components(cfg, SimpleNamespace(m=10**6, device="cuda:0"))[-1] == "embedding"
    assert resolve_components(ScoreConfig(source="x", out="y", text_encoder="/my/encoder"), big)[-1] == "embedding"
    assert resolve_components(ScoreConfig(source="x", out="y", text_probe="lexical"), big) == ["lexical"]


@pytest.mark.parametrize("bad", ["tokens,words", "", "lexical,lexical", "auto,cue"])
def test_stack_option_is_checked_where_the_config_is_built(bad):
    with pytest.raises(ConfigError, match="`--stack` must be `auto` or distinct components"):
        ScoreConfig(source="x", out="y", stack=bad)
