"""Bounded-memory scoring: lazily built features give the same heads as materialised ones, a capped
fitting sample still scores every pair, and the memory-mapped cache reads old `.npz` parts too."""

from __future__ import annotations

import io

import numpy as np
import polars as pl

from audit.bt import LazyFeatures, LinearBT, PairFeatures, cross_fit
from audit.config import ScoreConfig, SynthConfig
from audit.encoders.cache import EmbeddingCache, content_key
from audit.folds import assign_folds
from audit.score import score
from audit.synth import synth


def _toy(n=600, d=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d)
    y_flip = rng.random(n) < 1 / (1 + np.exp(-(x @ w)))            # BT: chosen is the first side w.p. sigmoid
    x[~y_flip] *= -1
    groups = np.arange(n)
    return x, groups, assign_folds(groups, 5, seed)


def test_lazy_features_give_the_materialised_result():
    x, groups, folds = _toy()
    a, l2a = cross_fit(LinearBT, PairFeatures(x), folds, groups, seed=0)
    b, l2b = cross_fit(LinearBT, LazyFeatures(len(x), lambda idx: x[idx]), folds, groups, seed=0)
    assert l2a == l2b and np.array_equal(a, b)


def test_a_capped_fit_still_scores_every_pair_out_of_fold():
    x, groups, folds = _toy(n=2000)
    full, _ = cross_fit(LinearBT, PairFeatures(x), folds, groups, seed=0)
    seen = []

    def rows(idx):
        seen.append(len(idx))
        return x[idx]

    capped, _ = cross_fit(LinearBT, LazyFeatures(len(x), rows), folds, groups, seed=0, max_fit=300)
    # calls: the L2 search's sample, then per fold its fitting sample and its own (scored) pairs
    assert seen[0] == 300 and all(k == 300 for k in seen[1::2]) and sum(seen[2::2]) == len(x)
    assert np.isfinite(capped).all() and len(capped) == len(x)
    assert ((capped > 0) == (full > 0)).mean() > 0.9                # a sample of 300 finds nearly the same head
    again, _ = cross_fit(LinearBT, LazyFeatures(len(x), lambda idx: x[idx]), folds, groups, seed=0, max_fit=300)
    assert np.array_equal(capped, again)                            # seeded


def test_cache_reads_old_npz_parts_and_memory_maps_new_ones(tmp_path):
    keys = [content_key(f"t{i}") for i in range(6)]
    emb = np.arange(36, dtype=np.float32).reshape(6, 6)
    d = tmp_path / "fp"
    d.mkdir()
    buf = io.BytesIO()
    np.savez(buf, keys=np.frombuffer(b"".join(keys[:3]), np.uint8).reshape(3, 16), emb=emb[:3])
    (d / "part-000000-1.npz").write_bytes(buf.getvalue())          # written by an earlier version
    EmbeddingCache(tmp_path, "fp").add(keys[3:], emb[3:])
    c = EmbeddingCache(tmp_path, "fp")
    assert isinstance(c._parts[1], np.memmap)
    part, row = c.locate(keys[::-1])
    assert np.array_equal(c.gather(part, row), emb[::-1])
    assert np.array_equal(c.get(keys), emb)


def test_score_with_a_small_fit_cap_scores_every_row(tmp_path):
    src = synth(SynthConfig(env="leadin", out=tmp_path / "src", n=300, format="pairs", image_size=32))
    s = score(ScoreConfig(source=src, out=tmp_path / "a", cache_dir=tmp_path / "cache", fit_pairs=100))
    t = pl.read_parquet(tmp_path / "a" / "audited.parquet")
    assert t.height == 300 and t["text_margin"].null_count() == 0 and t["mm_margin"].null_count() == 0
    assert s["text_acc"] > 0.8                                         # the lead-in cue is found from 100 pairs
    assert s["config"]["fit_pairs"] == 100
