"""Grouped K-fold assignment for cross-fitting: pairs that share an image, a source row or a
specific prompt land in the same fold, so no pair is scored by a head that saw it or its siblings.

A prompt shared by many rows is a template ("Describe this image in detail.", our synthetic
questions): the answer depends on the image, so sharing it is not leakage, and linking by it would
chain the whole dataset into one group. Prompts above `template_share` of the rows do not link.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np


def codes(values) -> np.ndarray:
    """Dense integer codes of a column (a list, numpy array or polars Series); -1 for missing values.
    An integer numpy array is taken as codes already."""
    import polars as pl

    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    s = values if isinstance(values, pl.Series) else pl.Series(list(values) if not isinstance(values, np.ndarray)
                                                                   else values)
    if s.dtype == pl.Null:
        return np.full(len(s), -1, dtype=np.int64)
    return (s.rank("dense").cast(pl.Int64) - 1).fill_null(-1).to_numpy()


def group_ids(image_id: Sequence, sample_id: Sequence, prompt_id: Sequence, template_share: float = 0.1) -> np.ndarray:
    """Connected components of rows linked by equal image, equal source row, or equal specific prompt.

    Each column: values (a list or polars Series; None = no link) or integer codes from `codes` (-1 =
    no link). Vectorised (no Python object per row, so 10^7 rows take seconds and a few hundred MB): every row
    starts with its own index as label; each round gives every row the smallest label among the rows
    that share a key with it, then follows labels to their label (pointer jumping), until nothing
    changes. A component ends labelled by its smallest row index; groups are numbered in that order."""
    n = len(image_id)
    cols = []
    for values, is_prompt in ((image_id, False), (sample_id, False), (prompt_id, True)):
        col = codes(values)
        valid = col >= 0
        if is_prompt and valid.any():
            counts = np.bincount(col[valid])
            valid &= counts[np.where(valid, col, 0)] <= max(2, int(template_share * n))
        if valid.any():
            cols.append((col[valid], np.flatnonzero(valid), int(col[valid].max()) + 1))
    label = np.arange(n, dtype=np.int64)
    while True:
        before = label.copy()
        for col, rows, k in cols:
            low = np.full(k, n, dtype=np.int64)
            np.minimum.at(low, col, label[rows])
            label[rows] = np.minimum(label[rows], low[col])
        while True:                                    # pointer jumping: label[i] <= i always
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
        if np.array_equal(label, before):
            break
    _, groups = np.unique(label, return_inverse=True)
    return groups.astype(np.int64)


def assign_folds(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Whole groups to folds, largest first, each to the currently smallest fold (seeded tie order)."""
    if k < 2:
        raise ValueError("cross-fitting needs at least 2 folds")
    sizes = np.bincount(groups)
    # Seeded, content-independent order among equal sizes: hash of (seed, group).
    tiebreak = np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{g}".encode(), digest_size=8).digest(), "big")
                         for g in range(sizes.size)], dtype=np.uint64)
    order = np.lexsort((tiebreak, -sizes))
    load = np.zeros(k, dtype=np.int64)
    fold_of_group = np.empty(sizes.size, dtype=np.int64)
    for g in order:
        f = int(np.argmin(load))
        fold_of_group[g] = f
        load[f] += sizes[g]
    return fold_of_group[groups]
