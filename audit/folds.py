"""Grouped K-fold assignment for cross-fitting: pairs that share an image, a source row or a
specific prompt land in the same fold, so no pair is scored by a head that saw it or its siblings.

A prompt shared by many rows is a template ("Describe this image in detail.", our synthetic
questions): the answer depends on the image, so sharing it is not leakage, and linking by it would
chain the whole dataset into one group. Prompts above `template_share` of the rows do not link.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Sequence

import numpy as np


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_ids(image_id: Sequence, sample_id: Sequence, prompt_id: Sequence, template_share: float = 0.1) -> np.ndarray:
    """Connected components of rows linked by equal image, equal source row, or equal specific prompt."""
    n = len(image_id)
    uf = _UnionFind(n)
    prompt_counts = Counter(prompt_id)
    cap = max(2, int(template_share * n))
    for keys, skip in ((image_id, None), (sample_id, None), (prompt_id, cap)):
        first: dict = {}
        for i, k in enumerate(keys):
            if k is None or (skip is not None and prompt_counts[k] > skip):
                continue
            j = first.setdefault(k, i)
            if j != i:
                uf.union(i, j)
    roots = np.fromiter((uf.find(i) for i in range(n)), dtype=np.int64, count=n)
    _, groups = np.unique(roots, return_inverse=True)
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
