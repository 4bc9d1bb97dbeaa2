"""Token-budget batching, out-of-memory splitting, the fine-tuned text probe, and the batching
benchmark kept alive on CPU (tiny config)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from audit.batching import padding_share, plain_batches, run_batches, token_budget_batches

ROOT = Path(__file__).resolve().parents[1]


def test_token_budget_batches_cover_everything_within_budget_and_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(64, 1025, size=2000)
    batches = token_budget_batches(lengths, 16384, max_padding=0.05)
    got = np.sort(np.concatenate(batches))
    assert np.array_equal(got, np.arange(2000))                       # every sequence once
    for b in batches:
        assert len(b) * lengths[b].max() <= 16384 or len(b) == 1
        if len(b) > 1:
            assert 1 - lengths[b].sum() / (len(b) * lengths[b].max()) <= 0.05 + 1e-12
    assert [int(lengths[b].max()) for b in batches] == sorted((int(lengths[b].max()) for b in batches), reverse=True)
    assert padding_share(lengths, batches) < 0.05 < padding_share(lengths, plain_batches(2000, 32))
    assert token_budget_batches([5000, 10], 1000)[0].tolist() == [0]   # too long: a batch of its own
    assert token_budget_batches([], 100) == []


def test_out_of_memory_batches_are_split_and_retried():
    out = np.zeros(40)
    seen = []

    def fn(b):
        if len(b) > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.append(len(b))
        out[b] = b * 2.0

    splits = run_batches([np.arange(40)], fn)
    assert np.array_equal(out, np.arange(40) * 2.0) and max(seen) <= 8 and splits == 7

    def never(b):
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(MemoryError, match="row 7 does not fit"):
        run_batches([np.array([7])], never, describe=lambda i: f"row {i}")

    def other(b):
        raise ValueError("not memory")

    with pytest.raises(ValueError):                                   # anything else is not swallowed
        run_batches([np.arange(3)], other)


def test_finetuned_text_probe_is_out_of_fold_and_resumes(tmp_path):
    from audit.config import ScoreConfig, SynthConfig
    from audit.score import score
    from audit.synth import synth
    from audit.tiny import tiny_text_rm

    model = tiny_text_rm(tmp_path / "textrm")
    pairs = synth(SynthConfig(env="leadin", n=60, seed=1, out=tmp_path / "pairs"))
    cfg = dict(source=tmp_path / "pairs", out=tmp_path / "aud", device="cpu", folds=3, text_probe="finetune",
               finetune_model=str(model), finetune_epochs=2, finetune_lr=2e-3, finetune_batch=8, mm_scores=None)
    s = score(ScoreConfig(**cfg))
    assert pairs and s["encoders"]["text"]["probe"] == "text-finetune"
    folds = sorted((tmp_path / "aud" / "cache").glob("finetune-*/fold-*.npy"))
    assert len(folds) == 3
    t = pl.read_parquet(tmp_path / "aud" / "audited.parquet")
    assert t["text_margin"].null_count() == 0 and np.isfinite(t["text_margin"].to_numpy()).all()
    assert s["text_acc"] > 0.7                       # the planted lead-in cue is easy for a fine-tuned text RM
    # resume: a finished fold is never trained again; same bytes out
    folds[0].unlink()
    before = {f: f.stat().st_mtime_ns for f in folds[1:]}
    score(ScoreConfig(**{**cfg, "out": tmp_path / "aud2", "cache_dir": tmp_path / "aud" / "cache"}))
    assert all(f.stat().st_mtime_ns == m for f, m in before.items())
    a = pl.read_parquet(tmp_path / "aud2" / "audited.parquet")
    assert np.allclose(a["text_margin"].to_numpy(), t["text_margin"].to_numpy(), atol=1e-6)


def test_batching_benchmark_runs_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rm_batching_bench.py"), "--n", "64",
                        "--budgets", "2048", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {x["method"]: x for x in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"plain", "sorted32", "ours@2048", "ceiling"}
    assert rows["ours@2048"]["padding_share"] < rows["plain"]["padding_share"]
    assert rows["ours@2048"]["max_abs_diff_vs_plain"] < 1e-4            # same rewards, fewer padded tokens
