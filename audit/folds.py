"""Grouped K-fold assignment for cross-fitting: pairs that share a picture, a source row, a
specific prompt or their two answers land in the same fold, so no pair is scored by a head that saw it or its siblings.

Pictures are the same when their bytes are (`image_id`) or when their perceptual hashes are close
(`audit.links`: a re-encoded or resized copy). Texts link too: the same specific prompt, or the same
two answers, under other pictures. A text used with many pictures is a template and links nothing.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

# A text key (a prompt, or a pair's two answers) links the rows that share it only when they show at
# most this many different pictures. A prompt asked of many pictures ("Describe this image.", "How many
# objects are there?") or stock answers ("Yes." / "No.") are templates: the answer depends on the
# picture, so sharing them is not leakage, and linking by them chains the whole dataset into one group.
# Measured (benchmarks/RESULTS.md, "Grouping"): a row-share rule (10% of the rows) collapsed 3,000
# templated synthetic pairs into a single group; this rule leaves the largest group at 1.5%.
TEMPLATE_PICTURES = 3


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


def pictures(image_id, phash_cluster=None) -> np.ndarray:
    """Per row: its picture, the same for the same bytes or a near-identical copy (`phash_cluster`,
    -1 = none); a row without an image is a picture of its own."""
    keys = [image_id] if phash_cluster is None else [image_id, phash_cluster]
    return link_groups(keys)


def linking(key, picture: np.ndarray, max_pictures: int = TEMPLATE_PICTURES) -> np.ndarray:
    """The codes of a text key, with its templates (keys seen with more than `max_pictures` different
    pictures) set to -1: they link nothing."""
    col = codes(key)
    valid = col >= 0
    if not valid.any():
        return col
    pair = np.unique(np.stack([col[valid], picture[valid]]), axis=1)     # distinct (key, picture)
    per_key = np.bincount(pair[0], minlength=int(col.max()) + 1)
    return np.where(valid & (per_key[np.where(valid, col, 0)] <= max_pictures), col, -1)


def group_ids(image_id: Sequence, sample_id: Sequence, prompt_id: Sequence, phash_cluster=None, answers=None,
              max_pictures: int = TEMPLATE_PICTURES) -> np.ndarray:
    """Connected components of rows linked by the same image (bytes, or a near-identical copy), the same
    source row, the same specific prompt, or the same two answers (not templates: see `linking`)."""
    return link_groups(group_keys(image_id, sample_id, prompt_id, phash_cluster, answers, max_pictures))


def group_keys(image_id, sample_id, prompt_id, phash_cluster=None, answers=None,
               max_pictures: int = TEMPLATE_PICTURES) -> dict[str, np.ndarray]:
    """The linking keys as codes, by name (templates already set to -1)."""
    pic = pictures(image_id, phash_cluster)
    keys = {"image": codes(image_id), "picture": pic if phash_cluster is not None else None,
            "sample": codes(sample_id), "prompt": linking(prompt_id, pic, max_pictures),
            "answers": None if answers is None else linking(answers, pic, max_pictures)}
    return {k: v for k, v in keys.items() if v is not None}


def link_groups(keys) -> np.ndarray:
    """Connected components of rows linked by any equal key.

    Each key: values (a list or polars Series; None = no link) or integer codes from `codes` (-1 =
    no link). Vectorised (no Python object per row, so 10^7 rows take seconds and a few hundred MB): every row
    starts with its own index as label; each round gives every row the smallest label among the rows
    that share a key with it, then follows labels to their label (pointer jumping), until nothing
    changes. A component ends labelled by its smallest row index; groups are numbered in that order."""
    keys = list(keys.values()) if isinstance(keys, dict) else list(keys)
    n = len(keys[0])
    cols = []
    for values in keys:
        col = codes(values)
        valid = col >= 0
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


def _spanning(key: np.ndarray, picture: np.ndarray) -> np.ndarray:
    """Rows whose key (>= 0) is shared with a row of another picture."""
    valid = key >= 0
    if not valid.any():
        return np.zeros(len(key), dtype=bool)
    pair = np.unique(np.stack([key[valid], picture[valid]]), axis=1)
    per_key = np.bincount(pair[0], minlength=int(key.max()) + 1)
    return valid & (per_key[np.where(valid, key, 0)] > 1)


def link_summary(keys: dict[str, np.ndarray], groups: np.ndarray) -> dict:
    """What the links did: rows whose picture has a near-identical copy with other bytes (re-encoded,
    resized or simply alike), rows linked to another picture by
    their prompt or their answers, and the largest group with the key that holds most of it (the value
    shared by the most of its rows; `example_row` is one of them, a position among the grouped rows)."""
    n = len(groups)
    image = keys["image"]
    picture = keys.get("picture", pictures(image))
    per_picture = np.unique(np.stack([picture, image]), axis=1)
    images_per_picture = np.bincount(per_picture[0], minlength=int(picture.max()) + 1)
    sizes = np.bincount(groups)
    big = int(np.argmax(sizes))
    rows = np.flatnonzero(groups == big)
    best = ("image", 0, int(rows[0]))
    for kind in ("image", "picture", "sample", "prompt", "answers"):
        if kind not in keys:
            continue
        k = keys[kind][rows]
        k = k[k >= 0]
        if k.size:
            vals, counts = np.unique(k, return_counts=True)
            top = int(np.argmax(counts))
            if counts[top] > best[1]:
                best = (kind, int(counts[top]), int(rows[np.flatnonzero(keys[kind][rows] == vals[top])[0]]))
    return {
        "near_copy_rows": int((images_per_picture[picture] > 1).sum()) if "picture" in keys else None,
        "prompt_linked_rows": int(_spanning(keys["prompt"], picture).sum()),
        "answers_linked_rows": int(_spanning(keys["answers"], picture).sum()) if "answers" in keys else None,
        "largest_group": {"rows": int(sizes[big]), "share": round(float(sizes[big]) / max(n, 1), 4),
                          "key": best[0], "key_rows": best[1], "example_row": best[2]},
    }
