"""A 2-D map of the data for the app: the cached embeddings the probes used (text: chosen - rejected,
what the text probe sees; image: the image features), projected with scikit-learn (PCA, or t-SNE on
the first 50 principal components), for a seeded sample of the scored pairs. Nothing is encoded here:
a pair whose embedding is not in the cache (a moved or cleared cache) is left off the map, and the map
says how many."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audit import schema

KINDS = ("text", "image")
METHODS = ("pca", "tsne")
MAX_POINTS = 20_000          # t-SNE is O(n log n) but slow on two cores beyond a few thousand points
TSNE_POINTS = 5_000


class NoMap(Exception):
    """Why there is no map (no cache, an encoder that leaves nothing to project, too few pairs)."""


def cache_root(audit_dir: Path, summary: dict) -> Path:
    stored = (summary.get("config") or {}).get("cache_dir")
    return Path(stored) if stored else Path(audit_dir) / "cache"


def _fingerprint(summary: dict, kind: str) -> str | None:
    enc = summary.get("encoders") or {}
    text = enc.get("text") or {}
    # the text encoder's embeddings, else the static token embeddings (a large CPU audit runs no encoder)
    fp = (text.get("fingerprint") or text.get("tokens_fingerprint")) if kind == "text" else enc.get("fingerprint")
    return fp if isinstance(fp, str) and fp.replace("-", "").replace("_", "").isalnum() else None


def data_map(audit_dir: Path, summary: dict, frame, kind: str = "text", method: str = "pca", sample: int = 5000,
             seed: int = 0):
    """(points, note): a polars frame of the sampled pairs with `x`, `y` and the columns of `frame`
    (the scored rows: `pair_id`, `chosen`, `rejected`, `image_id` and whatever should colour the map),
    and a sentence on what was drawn. Raises NoMap with the reason when there is nothing to draw."""
    import polars as pl

    from audit.encoders.cache import EmbeddingCache, as_keys, content_key

    if kind not in KINDS or method not in METHODS:
        raise NoMap(f"unknown map {kind}/{method}")
    fp = _fingerprint(summary, kind)
    root = cache_root(audit_dir, summary)
    if fp is None or not (root / fp).is_dir():
        raise NoMap(f"no cached {kind} embeddings for this audit (looked in `{root}`); the {kind} encoder's cache "
                    "was moved or cleared, or this audit used an encoder that keeps none (e.g. `--text-probe "
                    "lexical`, `--mm-scores`)")
    ok = frame.filter(pl.col("status") == schema.OK)
    cap = min(sample, TSNE_POINTS if method == "tsne" else MAX_POINTS)
    if ok.height > cap:
        ok = ok.sample(cap, seed=seed).sort("pair_id")
    cache = EmbeddingCache(root, fp)
    if kind == "text":
        kc = as_keys([content_key(t) for t in ok["chosen"].to_list()])
        kr = as_keys([content_key(t) for t in ok["rejected"].to_list()])
        have = cache.has(kc) & cache.has(kr)
    else:
        ids = ok["image_id"].to_list()
        kc = as_keys([bytes.fromhex(i) if i else b"\0" * 16 for i in ids])
        have = cache.has(kc)
    pts = ok.filter(pl.Series(have))
    if pts.height < 3:
        raise NoMap(f"only {pts.height} of the sampled pairs have cached {kind} embeddings: too few to map")
    emb = cache.get(kc[have]).astype(np.float64)
    if kind == "text":
        emb = emb - cache.get(kr[have]).astype(np.float64)
    xy, how = project(emb, method, seed)
    note = (f"{pts.height:,} pairs" + (f" (a seeded sample of the {frame.filter(pl.col('status') == schema.OK).height:,} "
                                      "scored)" if ok.height < frame.filter(pl.col("status") == schema.OK).height else "")
            + f"; {kind} embeddings" + (" (chosen - rejected, what the text probe sees)" if kind == "text" else "")
            + f", {how}" + (f"; {int((~have).sum()):,} sampled pairs are not in the cache" if (~have).any() else ""))
    return pts.with_columns(pl.Series("x", xy[:, 0]), pl.Series("y", xy[:, 1])), note


def project(emb: np.ndarray, method: str, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of the rows of `emb` and how they were made (scikit-learn)."""
    from sklearn.decomposition import PCA

    emb = emb - emb.mean(axis=0)
    if method == "pca" or len(emb) < 10:
        pca = PCA(n_components=2, random_state=seed)
        xy = pca.fit_transform(emb)
        return xy, f"PCA ({100 * pca.explained_variance_ratio_.sum():.0f}% of the variance in 2 components)"
    from sklearn.manifold import TSNE

    dims = min(50, emb.shape[1], len(emb) - 1)
    reduced = PCA(n_components=dims, random_state=seed).fit_transform(emb)
    perplexity = float(min(30, max(5, (len(emb) - 1) // 4)))
    xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(reduced)
    return xy, f"t-SNE (perplexity {perplexity:g}) on the first {dims} principal components"
