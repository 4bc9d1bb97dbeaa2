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
