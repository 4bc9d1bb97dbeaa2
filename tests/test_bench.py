"""`bench` end to end at a tiny size (CI keeps it alive), and the oracle weights' exact cue share."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audit.bench import METHODS, TEST_ENVS, bench, oracle_weights
from audit.config import BenchConfig


def test_oracle_weights_make_the_cue_share_exactly_half():
    truth = [True] * 7 + [False] * 3 + [None]
    w = oracle_weights(truth)
    flag = np.array([bool(t) for t in truth])
    known = np.array([t is not None for t in truth])
    assert (w[known] * flag[known]).sum() / w[known].sum() == pytest.approx(0.5)
    assert w.mean() == pytest.approx(1.0)
    assert oracle_weights([None, None]).tolist() == [1.0, 1.0]


def test_bench_rows_follow_the_contract(tmp_path):
    res = bench(BenchConfig(out=tmp_path, quick=True, n_train=80, n_test=40, epochs=1, train_envs="leadin"))
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == list(METHODS)
    for r in rows:
        assert {"train_env", "method", "seed", "iid", "ood", "mean_ood", "sfd", "cue_share", "seconds"} <= set(r)
        assert set(r["ood"]) == set(TEST_ENVS) - {"leadin"} and 0.0 <= r["iid"] <= 1.0
    oracle = next(r for r in rows if r["method"] == "oracle")
    assert oracle["cue_share"] == pytest.approx(0.5, abs=1e-6)
    assert "| standard |" in res["table"] and (tmp_path / "results.md").is_file()


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
