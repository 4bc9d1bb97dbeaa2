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
    assert isinstance(c._part(1), np.memmap)
    part, row = c.locate(keys[::-1])
    assert np.array_equal(c.gather(part, row), emb[::-1])
    assert np.array_equal(c.get(keys), emb)


def test_key_index_matches_a_dict_and_first_position_wins():
    """The cache's index (sorted numpy runs, not a dict): same answers as dict.setdefault, including
    keys that end in zero bytes and keys added again in a later part."""
    from audit.encoders.cache import KeyIndex, as_keys

    rng = np.random.default_rng(0)
    index, ref = KeyIndex(), {}
    for p in range(200):
        ks = [content_key(str(v)) for v in rng.integers(0, 20000, size=int(rng.integers(1, 400)))]
        if p % 7 == 0:
            ks += [bytes(16), bytes(15) + b"\x01", b"\x01" + bytes(15)]
        index.add(as_keys(ks), p)
        for r, k in enumerate(ks):
            ref.setdefault(k, (p, r))
    assert len(index.runs) <= 12                                    # merged: O(log n) runs
    known = list(ref)
    found, part, row = index.lookup(known + [content_key(f"absent{i}") for i in range(50)])
    assert found[:len(known)].all() and not found[len(known):].any()
    assert [(int(a), int(b)) for a, b in zip(part[:len(known)], row[:len(known)])] == [ref[k] for k in known]


def test_cache_holds_a_bounded_number_of_open_parts(tmp_path, monkeypatch):
    import audit.encoders.cache as cache_mod

    monkeypatch.setattr(cache_mod, "OPEN_PARTS", 3)
    keys = [content_key(f"t{i}") for i in range(20)]
    emb = np.arange(40, dtype=np.float32).reshape(20, 2)
    c = EmbeddingCache(tmp_path, "fp")
    c.fill(list(range(20)), keys, lambda items: emb[items], chunk=2, size=lambda i: 0)
    assert len(c._sources) == 10
    assert np.array_equal(EmbeddingCache(tmp_path, "fp").get(keys), emb)
    assert len(c._open) <= 3 and np.array_equal(c.get(keys[::-1]), emb[::-1])


def test_score_with_a_small_fit_cap_scores_every_row(tmp_path):
    src = synth(SynthConfig(env="leadin", out=tmp_path / "src", n=300, format="pairs", image_size=32))
    s = score(ScoreConfig(source=src, out=tmp_path / "a", cache_dir=tmp_path / "cache", fit_pairs=100))
    t = pl.read_parquet(tmp_path / "a" / "audited.parquet")
    assert t.height == 300 and t["text_margin"].null_count() == 0 and t["mm_margin"].null_count() == 0
    assert s["text_acc"] > 0.8                                         # the lead-in cue is found from 100 pairs
    assert s["config"]["fit_pairs"] == 100


def _pairs_with_bad_rows(tmp_path, n=300):
    """An ingested pairs folder whose every 7th row is not scorable (status kept, no scores)."""
    from audit import schema
    from audit.config import IngestConfig
    from audit.ingest import ingest

    synth(SynthConfig(env="leadin", n=n, seed=3, out=tmp_path / "src"))
    ingest(IngestConfig(source=tmp_path / "src", out=tmp_path / "pairs"))
    f = tmp_path / "pairs" / schema.PAIRS_FILE
    t = pl.read_parquet(f)
    bad = np.arange(t.height) % 7 == 3
    t.with_columns(pl.when(pl.Series(bad)).then(pl.lit("bad_image")).otherwise(pl.col("status")).alias("status")
                   ).write_parquet(f, row_group_size=50)
    return tmp_path / "pairs", bad


def test_pair_rows_reads_fixed_windows_of_scorable_rows(tmp_path, monkeypatch):
    import audit.stream as stream
    from audit import schema

    pairs, bad = _pairs_with_bad_rows(tmp_path, n=200)
    table = pl.read_parquet(pairs / schema.PAIRS_FILE)
    idx = np.flatnonzero(~bad)
    monkeypatch.setattr(stream, "READ_ROWS", 23)                    # read batches cut across windows
    rows = stream.PairRows(pairs / schema.PAIRS_FILE, idx, window=40)
    got = list(rows.windows(["prompt", "chosen"]))
    assert [len(p) for p, _ in got] == [40, 40, 40, 40, len(idx) - 160]
    assert np.array_equal(np.concatenate([p for p, _ in got]), np.arange(len(idx)))
    assert sum((c["chosen"] for _, c in got), []) == [table["chosen"][int(i)] for i in idx]
    select = np.arange(len(idx)) % 5 == 0
    sel = list(rows.windows(["prompt"], select))
    assert len(sel) == 5 and np.array_equal(np.concatenate([p for p, _ in sel]), np.flatnonzero(select))
    want = np.array([17, 3, 150, 3, 99])
    assert rows.take(want, ["prompt"])["prompt"] == [table["prompt"][int(i)] for i in idx[want]]


def test_score_gives_the_same_table_whatever_the_window(tmp_path, monkeypatch):
    """The texts are read window by window (here 37 rows, read in batches of 16 that straddle them)
    and each distinct text is encoded in the window that first holds it: the audited table is the one
    a single window gives, rows in = rows out, and the bad rows keep their status and no scores."""
    import audit.stream as stream

    pairs, bad = _pairs_with_bad_rows(tmp_path)
    cfg = dict(source=pairs, device="cpu", folds=3, image_encoder="pixels")
    score(ScoreConfig(**cfg, out=tmp_path / "one"))
    monkeypatch.setattr(stream, "WINDOW", 37)
    monkeypatch.setattr(stream, "READ_ROWS", 16)
    score(ScoreConfig(**cfg, out=tmp_path / "many"))
    a, b = (pl.read_parquet(tmp_path / d / "audited.parquet") for d in ("one", "many"))
    assert a.height == b.height == len(bad) and a.columns == b.columns
    assert b.filter(pl.col("status") != "ok")["sfc"].null_count() == int(bad.sum())
    exact = {"tokens_margin", "lexical_margin", "cue_margin"}       # no transformer in them: to the last bits
    for c in a.columns:
        if a[c].dtype == pl.Float64:
            # the text encoder's batches follow the windows (float noise of 1e-7 in an embedding, which the
            # stack of the embedding margin with the others carries into text_margin at about 1e-4)
            tol = dict(rtol=1e-9, atol=1e-12) if c in exact or c.startswith("cue_") else dict(rtol=1e-3, atol=1e-5)
            assert np.allclose(a[c].to_numpy(), b[c].to_numpy(), equal_nan=True, **tol), c
        else:
            assert a[c].equals(b[c]), c


def test_finetuned_probe_trains_on_at_most_fit_pairs(tmp_path, monkeypatch):
    from audit.probes import finetune
    from audit.tiny import tiny_text_rm

    model = tiny_text_rm(tmp_path / "textrm")
    synth(SynthConfig(env="leadin", n=240, seed=1, out=tmp_path / "pairs"))
    seen, real = [], finetune._train

    def spy(cfg, prompts, chosen, rejected, fold, device):
        seen.append(len(prompts))
        return real(cfg, prompts, chosen, rejected, fold, device)

    monkeypatch.setattr(finetune, "_train", spy)
    s = score(ScoreConfig(source=tmp_path / "pairs", out=tmp_path / "aud", device="cpu", folds=2, text_probe="finetune",
                          finetune_model=str(model), finetune_epochs=1, finetune_batch=16, fit_pairs=100))
    assert seen == [100, 100] and s["n_scored"] == 240                # capped training, every pair scored
    t = pl.read_parquet(tmp_path / "aud" / "audited.parquet")
    assert np.isfinite(t["text_margin"].to_numpy()).all()
