"""The formulas of the audit (DESIGN.md, "The signal, exactly"), numerically stable, on numpy arrays."""

from __future__ import annotations

import numpy as np


def bt_loss(margin: np.ndarray) -> np.ndarray:
    """Bradley-Terry loss -log sigmoid(margin), computed as softplus(-margin) without overflow."""
    m = np.asarray(margin, dtype=np.float64)
    with np.errstate(invalid="ignore"):      # NaN margins (no multimodal side) stay NaN
        return np.logaddexp(0.0, -m)


def sigmoid(margin: np.ndarray) -> np.ndarray:
    m = np.asarray(margin, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.exp(-np.logaddexp(0.0, -m))


def sfc(text_loss: np.ndarray, mm_loss: np.ndarray) -> np.ndarray:
    """Shortcut-Failure Coefficient L_t / (L_mm + L_t); 0.5 where both losses are 0."""
    t = np.asarray(text_loss, dtype=np.float64)
    m = np.asarray(mm_loss, dtype=np.float64)
    den = t + m
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, t / np.where(den > 0, den, 1.0), 0.5)


def accuracy(margin: np.ndarray) -> float:
    """Pairwise accuracy: chosen scored above rejected; a tie counts one half."""
    m = np.asarray(margin, dtype=np.float64)
    if m.size == 0:
        return float("nan")
    return float(((m > 0) + 0.5 * (m == 0)).mean())


def _right(margin: np.ndarray) -> np.ndarray:
    """Per pair: 1 when chosen is scored above rejected, 1/2 for a tie, else 0 (what `accuracy` averages)."""
    m = np.asarray(margin, dtype=np.float64)
    return (m > 0) + 0.5 * (m == 0)


def _group_bootstrap(per_pair: np.ndarray, groups: np.ndarray, rounds: int, seed: int) -> np.ndarray | None:
    """Means of the rows of `per_pair` (k, n) over `rounds` resamples of the groups with replacement:
    (rounds, k). Every row is resampled with the same draws (a paired bootstrap). None with fewer than
    two groups."""
    g = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    n_groups = int(g.max()) + 1 if g.size else 0
    if n_groups < 2:
        return None
    sums = np.stack([np.bincount(g, weights=row, minlength=n_groups) for row in per_pair])   # (k, groups)
    size = np.bincount(g, minlength=n_groups).astype(np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty((rounds, len(per_pair)))
    for r in range(rounds):
        k = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        out[r] = (sums @ k) / max(k @ size, 1.0)
    return out


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))


def grouped_accuracy_ci(margin: np.ndarray, groups: np.ndarray, rounds: int = 200, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of the pairwise accuracy, resampling the cross-fitting groups (pairs that
    share a picture or a text stay together, as they did in the folds) with replacement. None with
    fewer than two groups."""
    accs = _group_bootstrap(_right(margin)[None], groups, rounds, seed)
    return None if accs is None else _percentiles(accs[:, 0], level)


def grouped_accuracy_diff_ci(margin_a: np.ndarray, margin_b: np.ndarray, groups: np.ndarray, rounds: int = 200,
                             seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of accuracy(a) - accuracy(b) on the same pairs, both resampled with the same
    draws of the cross-fitting groups (a paired bootstrap: what the two models share, the pairs, does
    not widen the interval). The same rounds and seed as `grouped_accuracy_ci`. None with fewer than
    two groups."""
    accs = _group_bootstrap(np.stack([_right(margin_a), _right(margin_b)]), groups, rounds, seed)
    return None if accs is None else _percentiles(accs[:, 0] - accs[:, 1], level)


def text_signal_share(acc: float) -> float:
    """The share of pairs a text-only model decides beyond chance: if a share s of the pairs were
    decided by their text and the rest were coin flips, the accuracy would be 0.5 + s / 2."""
    return float(min(max(2.0 * acc - 1.0, 0.0), 1.0))


def sfd(text_margin: np.ndarray, mm_margin: np.ndarray) -> float:
    """Shortcut-Failure Degradation (our definition): 100 x (multimodal accuracy on pairs the text
    model gets right - its accuracy on pairs the text model gets wrong). NaN if a side is empty."""
    t = np.asarray(text_margin, dtype=np.float64)
    m = np.asarray(mm_margin, dtype=np.float64)
    right, wrong = t > 0, t < 0
    if not right.any() or not wrong.any():
        return float("nan")
    return 100.0 * (accuracy(m[right]) - accuracy(m[wrong]))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties averaged)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = y.sum(), (~y).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    i = 0
    while i < s.size:
        j = i
        while j + 1 < s.size and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))
