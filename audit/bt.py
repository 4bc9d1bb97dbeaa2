"""Bradley-Terry heads and grouped cross-fitting.

A head scores one response, r(x, y) = w . phi(x, y); the pair margin is w . (phi(x, chosen) -
phi(x, rejected)) and the loss
-log sigmoid(margin) (optionally plus a fixed `offset`, the product-of-experts trick: the head then
only learns what the offset does not already explain). Heads are fitted full-batch with L-BFGS and
an L2 penalty chosen on an inner split of the training groups; `cross_fit` returns out-of-fold
margins: every pair is scored by a head that never saw its group.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class PairFeatures:
    """Per-pair inputs of a head: `linear`, the chosen-minus-rejected features, (n, d)."""

    linear: np.ndarray

    def __post_init__(self) -> None:
        # float32 once, here: every fit then wraps the array without copying it
        self.linear = np.ascontiguousarray(self.linear, dtype=np.float32)

    def take(self, idx: np.ndarray) -> "PairFeatures":
        return PairFeatures(self.linear[idx])

    def __len__(self) -> int:
        return len(self.linear)


class LinearBT:
    """margin = w . (phi(chosen) - phi(rejected)); no intercept (a BT model has none)."""

    def __init__(self, l2: float) -> None:
        self.l2 = l2
        self.w: np.ndarray | None = None

    def fit(self, x: PairFeatures, offset: np.ndarray | None = None, seed: int = 0,
            init: np.ndarray | None = None) -> "LinearBT":
        """Full-batch L-BFGS from `init` (a warm start) or zeros; the problem is convex, so the start
        only changes how many iterations it takes."""
        import torch

        X = torch.from_numpy(x.linear)
        off = torch.zeros(len(X), dtype=torch.float32) if offset is None else torch.as_tensor(np.asarray(offset, dtype=np.float32))
        start = np.zeros(X.shape[1], dtype=np.float32) if init is None else np.array(init, dtype=np.float32)
        w = torch.as_tensor(start).requires_grad_()
        opt = torch.optim.LBFGS([w], lr=1.0, max_iter=200, tolerance_grad=1e-6, tolerance_change=1e-9,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.softplus(-(X @ w + off)).mean() + self.l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.w = w.detach().numpy()
        return self

    def margin(self, x: PairFeatures) -> np.ndarray:
        return x.linear @ self.w


def _mean_loss(m: np.ndarray) -> float:
    return float(np.logaddexp(0.0, -m).mean())


def fit_with_l2(make: Callable[[float], object], x: PairFeatures, groups: np.ndarray, offset: np.ndarray | None,
                seed: int, grid: tuple[float, ...] = L2_GRID):
    """Choose L2 on an inner 80/20 split of the groups (by held-out BT loss), then refit on all.
    The grid runs from strong to weak penalty, each fit warm-started from the previous one."""
    rng = np.random.default_rng(seed)
    ug = np.unique(groups)
    held = rng.permutation(ug)[: max(1, len(ug) // 5)]
    val = np.isin(groups, held)
    tr = ~val
    best, best_loss, best_w, w = grid[0], np.inf, None, None
    if tr.sum() >= 10 and val.sum() >= 5:
        xtr, xval = x.take(np.where(tr)[0]), x.take(np.where(val)[0])
        for l2 in sorted(grid, reverse=True):
            head = make(l2).fit(xtr, None if offset is None else offset[tr], seed, init=w)
            w = head.w
            loss = _mean_loss(head.margin(xval) + (0 if offset is None else offset[val]))
            if loss < best_loss - 1e-9:
                best, best_loss, best_w = l2, loss, w
    return make(best).fit(x, offset, seed, init=best_w), best


def cross_fit(make: Callable[[float], object], x: PairFeatures, folds: np.ndarray, groups: np.ndarray,
              offset: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, float]:
    """Out-of-fold margins (the head's own margin, without the offset) and the L2 used.

    L2 is chosen once, on an inner split of the first fold's training groups (that split never
    contains fold 0's pairs), then every fold's head is fitted with it on its own training folds.
    One scalar chosen among four keeps the fits cheap; no pair's margin comes from a head that saw it.
    """
    out = np.zeros(len(x), dtype=np.float64)
    fold_ids = np.unique(folds)
    first_train = np.where(folds != fold_ids[0])[0]
    first, l2 = fit_with_l2(make, x.take(first_train), groups[first_train],
                            None if offset is None else offset[first_train], seed)
    for f in fold_ids:
        test = folds == f
        train = np.where(~test)[0]
        head = make(l2).fit(x.take(train), None if offset is None else offset[train], seed + int(f), init=first.w)
        out[test] = head.margin(x.take(np.where(test)[0]))
    return out, l2


def calibrate(margin: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Temperature-scale out-of-fold margins, cross-fitted: fold f's margins are multiplied by the
    scalar a_f >= 0 that minimises the BT loss of a * margin on the other folds.

    L2-penalised heads are under-confident (margins shrink towards 0); a scheme such as `ipw` or
    `debias` needs text_prob to mean what it says, e.g. 0.9 on pairs the text gets right 90% of the time.
    """
    out = np.zeros_like(margin, dtype=np.float64)
    temps = []
    for f in np.unique(folds):
        test = folds == f
        head = LinearBT(0.0).fit(PairFeatures(margin[~test, None]))
        a = max(float(head.w[0]), 0.0)
        out[test] = a * margin[test]
        temps.append(round(a, 4))
    return out, temps
