"""`bench`: the shift sets carry their cue where they say, the controls keep the oracle's weights, the
statistics are the ones named, and the same seed + thread count gives the same numbers."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from audit.bench import (bench, bootstrap_ci, ess, ess_matched_weights, oracle_weights, statistics,
                         subsample_weights, shift_sets, worst_group)
from audit.config import BenchConfig
from audit.errors import ConfigError

TINY = dict(n_train=120, n_test=60, epochs=1, scale_n=0, seeds=2, bon_prompts=30)


def test_oracle_weights_make_the_cue_share_exactly_half():
    truth = [True] * 7 + [False] * 3 + [None]
    w = oracle_weights(truth)
    flag = np.array([bool(t) for t in truth])
    known = np.array([t is not None for t in truth])
    assert (w[known] * flag[known]).sum() / w[known].sum() == pytest.approx(0.5)
    assert w.mean() == pytest.approx(1.0)
    assert oracle_weights([None, None]).tolist() == [1.0, 1.0]


def test_controls_keep_the_oracle_weights_multiset_or_its_ess():
    truth = [True] * 90 + [False] * 10
    w = oracle_weights(truth)                        # 0.5/0.9 on 90 pairs, 0.5/0.1 on 10: ESS = 36 exactly
    assert ess(w) == pytest.approx(36.0)
    m = ess_matched_weights(w, seed=3)
    assert sorted(m.tolist()) == pytest.approx(sorted(w.tolist()))      # the same multiset ...
    assert not np.allclose(m, w)                                         # ... on other pairs
    assert ess(m) == pytest.approx(ess(w))
    assert np.array_equal(m, ess_matched_weights(w, seed=3))             # seeded
    s = subsample_weights(w, seed=3)
    assert (s > 0).sum() == 36 and s.mean() == pytest.approx(1.0) and set(np.unique(s)) == {0.0, 100 / 36}


def test_worst_group_is_the_lower_group():
    assert worst_group(0.984, 0.227) == 0.227 and worst_group(0.4, 0.6) == 0.4


def test_bootstrap_interval_of_paired_differences():
    assert bootstrap_ci([0.1]) is None
    lo, hi = bootstrap_ci([0.10, 0.12, 0.11, 0.09, 0.13])
    assert 0.09 <= lo < 0.11 < hi <= 0.13
    lo, hi = bootstrap_ci([0.05, -0.04, 0.03, -0.05, 0.01])
    assert lo < 0 < hi                                                   # inside the noise: no difference


def test_statistics_pair_each_method_with_standard_on_the_same_seed():
    rows = [{"train_env": "leadin", "n_train": 10, "seed": s, "method": m, "iid": base + d, "reversed": 0.2 + d,
             "worst_group": 0.1 + d, "train_seconds": 1.0 + d}
            for s, base in enumerate((0.80, 0.90, 0.70)) for m, d in (("standard", 0.0), ("oracle", 0.1))]
    st = statistics(rows)["leadin (n=10)"]
    assert st["oracle"]["iid"]["diff"] == pytest.approx(0.1)             # seed-to-seed spread cancels in the pairs
    assert st["oracle"]["iid"]["diff_ci"] == pytest.approx((0.1, 0.1))
    assert st["standard"]["iid"]["std"] == pytest.approx(np.std([0.8, 0.9, 0.7]))


def test_shift_sets_carry_the_cue_at_the_stated_side_and_rate(tmp_path):
    from audit.bench import _build_test_set

    roles = shift_sets("closing-0.7")
    assert roles["iid"] == "closing@0.7" and roles["reversed"] == "closing@0.1" and roles["neutral"] == "closing@0.5"
    assert roles["other@0.5:leadin"] == "leadin@0.5" and roles["other@0.9:markdown"] == "markdown@0.9"
    assert "reversed" not in shift_sets("clean")
    for name, p in (("closing@0.1", 0.1), ("closing@0.5", 0.5), ("markdown@0.9", 0.9)):
        t = pl.read_parquet(_build_test_set(tmp_path, name, 2000) / "pairs.parquet")
        assert set(t["cue"].unique()) == {name.split("@")[0]}
        assert abs(t["cue_on_chosen"].mean() - p) < 0.03, name           # binomial sd at n=2000: <= 0.011
        # the phrase really sits on the side the truth says (closing: "I hope this helps" ends the answer)
        if name.startswith("closing"):
            side = np.where(t["cue_on_chosen"].to_numpy(), t["chosen"].to_numpy(), t["rejected"].to_numpy())
            other = np.where(t["cue_on_chosen"].to_numpy(), t["rejected"].to_numpy(), t["chosen"].to_numpy())
            assert np.mean([len(a) > len(b) for a, b in zip(side, other)]) > 0.95


def test_bench_rows_follow_the_contract_and_repeat_exactly(tmp_path):
    cfg = dict(quick=True, train_envs="leadin", methods="standard,oracle,ess-matched,subsample",
               cache_dir=tmp_path / "cache", **TINY)
    res = bench(BenchConfig(out=tmp_path / "a", jobs=1, **cfg))
    rows = json.loads((tmp_path / "a" / "results.json").read_text())["rows"]
    assert [(r["seed"], r["method"]) for r in rows] == [(s, m) for s in (0, 1)
                                                        for m in ("standard", "oracle", "ess-matched", "subsample")]
    for r in rows:
        assert {"train_env", "method", "seed", "iid", "ood", "mean_ood", "sfd", "cue_share", "seconds",
                "worst_group", "reversed", "neutral", "other_neutral", "other_aligned", "clean", "ess"} <= set(r)
        assert r["worst_group"] == min(r["acc_cue_aligned"], r["acc_cue_against"])
        assert "leadin@0.1" in r["ood"] and "leadin@0.9" not in r["ood"] and 0.0 <= r["iid"] <= 1.0
    oracle = next(r for r in rows if r["method"] == "oracle")
    assert oracle["cue_share"] == pytest.approx(0.5, abs=1e-6)
    by = {(r["seed"], r["method"]): r for r in rows}
    for s in (0, 1):   # the controls keep the oracle's effective sample size, not its cue share
        assert by[s, "ess-matched"]["ess"] == pytest.approx(by[s, "oracle"]["ess"], rel=1e-5)
        assert by[s, "subsample"]["ess"] == pytest.approx(by[s, "oracle"]["ess"], abs=0.02)
    assert "| standard |" in res["table"] and "Δ reversed cue" in res["table"]
    # Best-of-N on every row: exact curves per regime, n = 1 is the policy's own rate, the table and the figure
    for r in rows:
        assert set(r["bon"]) == {"clean", "aligned", "neutral", "adverse"} and r["bon_prompts"] == 30
        assert r["bon"]["adverse"]["gold"][0] == pytest.approx(0.5) and r["bon_adverse_gold64"] == r["bon"]["adverse"]["gold"][6]
    assert "Δ adverse gold64" in res["table"] and (tmp_path / "a" / res["bon_figure"]).is_file()
    # same seeds, same thread count, other processes (--jobs 2, through the command line): the same numbers
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "audit", "bench", "-o", str(tmp_path / "b"), "--jobs", "2", "--quick",
           "--train-envs", "leadin", "--methods", cfg["methods"], "--cache-dir", str(tmp_path / "cache"),
           *[x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    again = json.loads((tmp_path / "b" / "results.json").read_text())["rows"]
    keys = ("iid", "reversed", "worst_group", "ood", "sfd", "cue_share", "ess", "bon", "bon_adverse_gold64")
    assert [{k: r[k] for k in keys} for r in again] == [{k: r[k] for k in keys} for r in rows]
    # a resumed bench keeps finished tasks as they are
    (tmp_path / "b" / "results.json").unlink()
    assert bench(BenchConfig(out=tmp_path / "b", jobs=1, **cfg))["rows"] == again
    # a task finished without Best-of-N gains it from its saved models, the same numbers, nothing retrained
    task = tmp_path / "b" / "tasks" / "leadin-n120-s1.json"
    kept = json.loads(task.read_text())["rows"]
    task.write_text(json.dumps({"rows": [{k: v for k, v in r.items() if not k.startswith("bon")} for r in kept]}))
    redone = bench(BenchConfig(out=tmp_path / "b", jobs=1, **cfg))["rows"]
    assert [{k: r[k] for k in keys + ("seconds",)} for r in redone] == [{k: r[k] for k in keys + ("seconds",)} for r in again]


def test_bench_config_is_validated():
    with pytest.raises(ConfigError, match="--methods"):
        BenchConfig(quick=True, methods="oracle")
    with pytest.raises(ConfigError, match="--jobs"):
        BenchConfig(quick=True, jobs=0)
    with pytest.raises(ConfigError, match="--device"):
        BenchConfig(quick=True, device="tpu")


def test_step_cost_benchmark_runs(tmp_path):
    """The step-cost script stays alive (its numbers come from the full run in benchmarks/RESULTS.md)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "step_cost.py"
    res = subprocess.run([sys.executable, str(script), "--n", "96", "--batch-size", "16", "--rounds", "2", "--steps", "1",
                          "--vision-scenes", "100", "--results", str(tmp_path / "s.json")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads((tmp_path / "s.json").read_text())
    for v in ("pretrained", "scratch"):
        assert out["settings"][v]["ratio_of_medians"] > 0
