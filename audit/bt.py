"""Bradley-Terry heads and grouped cross-fitting.

A head scores one response, r(x, y); the pair margin is r(chosen) - r(rejected) and the loss
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

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class PairFeatures:
    """Per-pair inputs of a head. `linear`: chosen-minus-rejected features, (n, d). For the bilinear
    multimodal head: `image` (n, di) and `chosen` / `rejected` text features (n, dt)."""

    linear: np.ndarray | None = None
    image: np.ndarray | None = None
    chosen: np.ndarray | None = None
    rejected: np.ndarray | None = None

    def take(self, idx: np.ndarray) -> "PairFeatures":
        return PairFeatures(*(None if a is None else a[idx] for a in (self.linear, self.image, self.chosen, self.rejected)))

    def __len__(self) -> int:
        return len(self.linear if self.linear is not None else self.image)


class LinearBT:
    """margin = w . (phi(chosen) - phi(rejected)); no intercept (a BT model has none)."""

    def __init__(self, l2: float) -> None:
        self.l2 = l2
        self.w: np.ndarray | None = None

    def fit(self, x: PairFeatures, offset: np.ndarray | None = None, seed: int = 0) -> "LinearBT":
        import torch

        torch.manual_seed(seed)
        X = torch.as_tensor(np.array(x.linear, dtype=np.float64))
        off = torch.zeros(len(X), dtype=torch.float64) if offset is None else torch.as_tensor(np.array(offset, dtype=np.float64))
        w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], lr=1.0, max_iter=200, tolerance_grad=1e-9, tolerance_change=1e-12,
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


class BilinearBT:
    """r(image, y) = (A t_y) . (B v): the response text must agree with the image. Pure text or pure
    image terms cannot enter, so a text-only cue (independent of the image) cannot be learnt."""

    def __init__(self, l2: float, rank: int = 16) -> None:
        self.l2, self.rank = l2, rank
        self.A = self.B = None

    def fit(self, x: PairFeatures, offset: np.ndarray | None = None, seed: int = 0) -> "BilinearBT":
        import torch

        g = torch.Generator().manual_seed(seed)
        V = torch.as_tensor(np.array(x.image, dtype=np.float64))
        C = torch.as_tensor(np.array(x.chosen, dtype=np.float64))
        R = torch.as_tensor(np.array(x.rejected, dtype=np.float64))
        off = torch.zeros(len(V), dtype=torch.float64) if offset is None else torch.as_tensor(np.array(offset, dtype=np.float64))
        A = (torch.randn(C.shape[1], self.rank, generator=g, dtype=torch.float64) * 0.1).requires_grad_()
        B = (torch.randn(V.shape[1], self.rank, generator=g, dtype=torch.float64) * 0.1).requires_grad_()
        opt = torch.optim.LBFGS([A, B], lr=1.0, max_iter=100, tolerance_grad=1e-9, tolerance_change=1e-12,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            vb = V @ B                                        # (n, rank)
            m = (((C - R) @ A) * vb).sum(1)                   # bilinear in (text diff, image)
            loss = torch.nn.functional.softplus(-(m + off)).mean() + self.l2 * ((A * A).sum() + (B * B).sum())
            loss.backward()
            return loss

        opt.step(closure)
        self.A, self.B = A.detach().numpy(), B.detach().numpy()
        return self

    def margin(self, x: PairFeatures) -> np.ndarray:
        return (((x.chosen - x.rejected) @ self.A) * (x.image @ self.B)).sum(1)


def _mean_loss(m: np.ndarray) -> float:
    return float(np.logaddexp(0.0, -m).mean())


def fit_with_l2(make: Callable[[float], object], x: PairFeatures, groups: np.ndarray, offset: np.ndarray | None,
                seed: int, grid: tuple[float, ...] = L2_GRID):
    """Choose L2 on an inner 80/20 split of the groups (by held-out BT loss), then refit on all."""
    rng = np.random.default_rng(seed)
    ug = np.unique(groups)
    held = rng.permutation(ug)[: max(1, len(ug) // 5)]
    val = np.isin(groups, held)
    tr = ~val
    best, best_loss = grid[0], np.inf
    if tr.sum() >= 10 and val.sum() >= 5:
        for l2 in grid:
            head = make(l2).fit(x.take(np.where(tr)[0]), None if offset is None else offset[tr], seed)
            m = head.margin(x.take(np.where(val)[0])) + (0 if offset is None else offset[val])
            loss = _mean_loss(m)
            if loss < best_loss - 1e-9:
                best, best_loss = l2, loss
    return make(best).fit(x, offset, seed), best


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
    _, l2 = fit_with_l2(make, x.take(first_train), groups[first_train],
                        None if offset is None else offset[first_train], seed)
    for f in fold_ids:
        test = folds == f
        train = np.where(~test)[0]
        head = make(l2).fit(x.take(train), None if offset is None else offset[train], seed + int(f))
        out[test] = head.margin(x.take(np.where(test)[0]))
    return out, l2
