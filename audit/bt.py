"""Bradley-Terry heads and grouped cross-fitting.

A head scores one response, r(x, y) = w . phi(x, y); the pair margin is w . (phi(x, chosen) -
phi(x, rejected)) and the loss
-log sigmoid(margin) (optionally plus a fixed `offset`, the product-of-experts trick: the head then
only learns what the offset does not already explain). Heads are fitted full-batch with L-BFGS (numpy) and
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


class LazyFeatures:
    """Pair features built on demand, `rows(idx) -> (len(idx), d)`: a head is fitted on a bounded
    sample and margins are computed chunk by chunk, so the full (n, d) matrix never exists."""

    def __init__(self, n: int, rows: Callable[[np.ndarray], np.ndarray]) -> None:
        self.n, self.rows = n, rows

    def take(self, idx: np.ndarray) -> PairFeatures:
        return PairFeatures(self.rows(np.asarray(idx)))

    def __len__(self) -> int:
        return self.n


SCORE_CHUNK = 8_192   # rows per margin computation: bounds the scoring memory (8192 x d floats)


def margins_in_chunks(head, x, idx: np.ndarray) -> np.ndarray:
    return np.concatenate([head.margin(x.take(idx[s:s + SCORE_CHUNK])) for s in range(0, len(idx), SCORE_CHUNK)]
                          or [np.zeros(0)])


def fit_sample(idx: np.ndarray, max_fit: int | None, seed: int) -> np.ndarray:
    """`idx` itself, or a seeded sorted subsample of `max_fit` of its rows (bounds the fitting memory)."""
    if max_fit is None or len(idx) <= max_fit:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, max_fit, replace=False))


def _loss_grad(w: np.ndarray, X: np.ndarray, off: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """Mean BT loss softplus(-(Xw + off)) + l2 |w|^2 and its gradient (float64 accumulation)."""
    m = (X @ w.astype(X.dtype)).astype(np.float64) + off   # float32 BLAS; no upcast copy of X
    loss = float(np.logaddexp(0.0, -m).mean()) + l2 * float(w @ w)
    s = np.exp(-np.logaddexp(0.0, m))                    # sigmoid(-m): d loss / d m = -s / n
    grad = -(X.T @ s.astype(X.dtype)).astype(np.float64) / len(m) + 2.0 * l2 * w
    return loss, grad


def lbfgs(w0: np.ndarray, X: np.ndarray, off: np.ndarray, l2: float, max_iter: int = 200, history: int = 10,
          tol: float = 1e-6) -> np.ndarray:
    """Minimise the (convex) L2-penalised BT loss with L-BFGS and a backtracking Armijo line search.
    Plain numpy: deterministic, and no deep-learning framework to start for a logistic fit."""
    w = np.array(w0, dtype=np.float64)
    loss, g = _loss_grad(w, X, off, l2)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for it in range(max_iter):
        if np.max(np.abs(g)) < tol:
            break
        # two-loop recursion: d = -H g
        q = g.copy()
        alphas = []
        for s_k, y_k in zip(reversed(s_hist), reversed(y_hist)):
            a = (s_k @ q) / (y_k @ s_k)
            alphas.append(a)
            q -= a * y_k
        gamma = (s_hist[-1] @ y_hist[-1]) / (y_hist[-1] @ y_hist[-1]) if s_hist else 1.0 / max(np.abs(g).sum(), 1.0)
        r = gamma * q
        for (s_k, y_k), a in zip(zip(s_hist, y_hist), reversed(alphas)):
            r += s_k * (a - (y_k @ r) / (y_k @ s_k))
        d = -r
        slope = g @ d
        if slope >= 0:                                 # not a descent direction: restart from the gradient
            s_hist.clear(), y_hist.clear()
            d, slope = -g, -(g @ g)
        step = 1.0
        for _ in range(40):
            new_w = w + step * d
            new_loss, new_g = _loss_grad(new_w, X, off, l2)
            if new_loss <= loss + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            break
        s_k, y_k = new_w - w, new_g - g
        if y_k @ s_k > 1e-12:
            s_hist.append(s_k)
            y_hist.append(y_k)
            if len(s_hist) > history:
                s_hist.pop(0), y_hist.pop(0)
        change = loss - new_loss
        w, loss, g = new_w, new_loss, new_g
        if change < 1e-10 * max(1.0, abs(loss)):
            break
    return w


class LinearBT:
    """margin = w . (phi(chosen) - phi(rejected)); no intercept (a BT model has none)."""

    def __init__(self, l2: float) -> None:
        self.l2 = l2
        self.w: np.ndarray | None = None

    def fit(self, x: PairFeatures, offset: np.ndarray | None = None, seed: int = 0,
            init: np.ndarray | None = None) -> "LinearBT":
        """L-BFGS from `init` (a warm start) or zeros; the problem is convex, so the start only changes
        how many iterations it takes. `seed` is unused (kept for heads that need one)."""
        X = x.linear
        off = np.zeros(len(X)) if offset is None else np.asarray(offset, dtype=np.float64)
        start = np.zeros(X.shape[1]) if init is None else init
        self.w = lbfgs(start, X, off, self.l2)
        return self

    def margin(self, x: PairFeatures) -> np.ndarray:
        return (x.linear @ self.w.astype(x.linear.dtype)).astype(np.float64)


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


def cross_fit(make: Callable[[float], object], x, folds: np.ndarray, groups: np.ndarray,
              offset=None, seed: int = 0, max_fit: int | None = None) -> tuple[np.ndarray, float]:
    """Out-of-fold margins (the head's own margin, without the offset) and the L2 used.

    L2 is chosen once, on an inner split of the first fold's training groups (that split never
    contains fold 0's pairs), then every fold's head is fitted with it on its own training folds.
    One scalar chosen among four keeps the fits cheap; no pair's margin comes from a head that saw it.
    `x` is a PairFeatures or a LazyFeatures; `max_fit` caps the pairs each head is fitted on (a seeded
    sample of its training folds), and margins are computed in chunks, so memory is bounded by
    max_fit x d rather than n x d. `offset`: None, one array over all rows, or a function of the held-out
    fold giving one (`nested_margins`: an offset that never saw that fold).
    """
    out = np.zeros(len(x), dtype=np.float64)
    fold_ids = np.unique(folds)
    offset_for = offset if callable(offset) else (lambda f: offset)
    first_train = fit_sample(np.where(folds != fold_ids[0])[0], max_fit, seed)
    off0 = offset_for(fold_ids[0])
    first, l2 = fit_with_l2(make, x.take(first_train), groups[first_train],
                            None if off0 is None else off0[first_train], seed)
    for f in fold_ids:
        test = np.flatnonzero(folds == f)
        train = fit_sample(np.flatnonzero(folds != f), max_fit, seed + 1 + int(f))
        off = offset_for(f)
        head = make(l2).fit(x.take(train), None if off is None else off[train], seed + int(f), init=first.w)
        out[test] = margins_in_chunks(head, x, test)
    return out, l2


def nested_margins(make: Callable[[float], object], x, folds: np.ndarray, l2: float, seed: int = 0,
                   max_fit: int | None = None) -> Callable[[int], np.ndarray] | None:
    """For each outer fold f, out-of-fold margins of the rows outside f from heads that never saw f
    either (inner folds: every other fold j, fitted on the folds other than f and j). A second model
    trained with these as its offset (the multimodal probe) and tested on f then has no information
    from f in its offsets. K (K - 1) fits, cached per f. None with fewer than 3 folds (no fold is left
    to fit an inner head on)."""
    import functools

    fold_ids = np.unique(folds)
    if len(fold_ids) < 3:
        return None

    @functools.lru_cache(maxsize=None)
    def for_outer(f: int) -> np.ndarray:
        out = np.zeros(len(x), dtype=np.float64)
        for j in fold_ids:
            if j == f:
                continue
            test = np.flatnonzero(folds == j)
            train = fit_sample(np.flatnonzero((folds != f) & (folds != j)), max_fit, seed + 1000 + 10 * int(f) + int(j))
            head = make(l2).fit(x.take(train), None, seed + int(j))
            out[test] = margins_in_chunks(head, x, test)
        return out

    return lambda f: for_outer(int(f))


def calibrate(margin: np.ndarray, folds: np.ndarray, nested: Callable[[int], np.ndarray] | None = None
              ) -> tuple[np.ndarray, list[float]]:
    """Temperature-scale out-of-fold margins, cross-fitted: fold f's margins are multiplied by the
    scalar a_f >= 0.001 that minimises the BT loss of a * margin on the other folds.

    With `nested` (fold f -> margins of the other folds from models that never saw f), a_f is fitted
    on those: fold f's calibrated margins then depend on no label of fold f at all. Without it, on the
    out-of-fold margins of the other folds (whose heads saw f: a one-scalar leak, kept for probes that
    have no nested margins).

    L2-penalised heads are under-confident (margins shrink towards 0); a scheme such as `ipw` or
    `debias` needs text_prob to mean what it says, e.g. 0.9 on pairs the text gets right 90% of the time.
    """
    out = np.zeros_like(margin, dtype=np.float64)
    temps = []
    for f in np.unique(folds):
        test = folds == f
        ref = margin[~test] if nested is None else np.asarray(nested(f))[~test]
        head = LinearBT(0.0).fit(PairFeatures(ref[:, None]))
        a = max(float(head.w[0]), 1e-3)   # floor > 0: an uninformative probe keeps its ranking, not ties
        out[test] = a * margin[test]
        temps.append(round(a, 4))
    return out, temps


# ---------------------------------------------------------------------------------------------------
# Closed-form ridge heads with exact nested cross-fitting (the text probe's embedding components).

RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)   # ridge strength, relative to the mean feature variance


@dataclass
class CrossFit:
    """Out-of-fold margins of one model family, with what stacking and calibration need.

    `margin[i]`: from a model that never saw fold(i). `nested[f, i]` (rows outside fold f): from a
    model that saw neither fold f nor fold(i), so a second-level model fitted on `nested[f]` and
    applied to fold f has never seen fold f's labels through any layer (NaN on fold f's own rows).
    `blind`: the same for the prompt-blind model (on the responses' part of the features), or None."""

    margin: np.ndarray
    nested: np.ndarray | None
    blind: "CrossFit | None" = None
    l2: list | None = None
    info: dict | None = None          # what made it (the fine-tuned component's settings)


def fold_index(folds: np.ndarray) -> tuple[np.ndarray, int]:
    """Folds as 0..K-1 codes and K."""
    ids, codes = np.unique(folds, return_inverse=True)
    return codes.ravel(), len(ids)


HOLD_ROWS = 2 ** 24          # feature values kept in memory so that small data solves in the dual


class _Gram:
    """Per-fold sums X'X and X'1 of the chosen-minus-rejected feature rows: every ridge head on any
    union of folds comes from one factorisation of that union's sums (all strengths at once), so the
    K + K(K-1)/2 fold sets cost one pass over the rows. Small data (fewer rows than features) keeps
    the rows and factorises XX' instead (n x n rather than d x d)."""

    def __init__(self, rows: Callable[[np.ndarray], np.ndarray], m: int, f: np.ndarray, k: int) -> None:
        self.g = self.b = self.x = None
        self.f = f
        self.n = np.bincount(f, minlength=k).astype(np.float64)
        parts = []
        for s in range(0, m, SCORE_CHUNK):
            idx = np.arange(s, min(m, s + SCORE_CHUNK))
            x = np.asarray(rows(idx), dtype=np.float32)
            if self.g is None:
                self.g = np.zeros((k, x.shape[1], x.shape[1]))
                self.b = np.zeros((k, x.shape[1]))
            for j in np.unique(f[idx]):
                xj = x[f[idx] == j]
                self.g[j] += (xj.T @ xj).astype(np.float64)
                self.b[j] += xj.sum(0, dtype=np.float64)
            if m < x.shape[1] and m * x.shape[1] <= HOLD_ROWS:
                parts.append(x)
        if parts:
            self.x = np.concatenate(parts).astype(np.float64)

    def restrict(self, dims: int) -> "_Gram":
        out = object.__new__(_Gram)
        out.g, out.b, out.n, out.f = self.g[:, :dims, :dims], self.b[:, :dims], self.n, self.f
        out.x = None if self.x is None else self.x[:, :dims]
        return out

    def solver(self, excluded: tuple[int, ...]):
        """lam -> the ridge head fitted on every fold but `excluded`: argmin mean (x.w - 1)^2 + lam s |w|^2,
        the least-squares form of a BT head on difference rows (s: the mean feature variance, so `lam`
        is unit-free)."""
        keep = np.ones(len(self.n), dtype=bool)
        keep[list(excluded)] = False
        n = max(self.n[keep].sum(), 1.0)
        g = self.g[keep].sum(0) / n
        scale = max(float(np.trace(g)) / len(g), 1e-12)
        if self.x is not None:                  # the dual: w = X'(XX' + lam s n I)^-1 1, XX' = U diag(vals) U'
            x = self.x[keep[self.f]]
            vals, u = np.linalg.eigh(x @ x.T)
            rhs = u.T @ np.ones(len(x))
            return lambda lam: x.T @ (u @ (rhs / (vals.clip(min=0) + lam * scale * n)))
        vals, vecs = np.linalg.eigh(g)
        rhs = vecs.T @ (self.b[keep].sum(0) / n)
        return lambda lam: vecs @ (rhs / (vals.clip(min=0) + lam * scale))

def _held_out_error(gram: _Gram, w: np.ndarray, j: int) -> float:
    """Sum over fold j of (x.w - 1)^2, from its sums alone."""
    return float(w @ gram.g[j] @ w - 2.0 * w @ gram.b[j] + gram.n[j])


def _ridge_heads(gram: _Gram, k: int, grid: tuple[float, ...]) -> tuple[dict, list]:
    """Per outer fold f: the strength chosen on the other folds only (inner cross-validation with the
    heads that exclude {f, j}), the head without f and the heads without {f, j}."""
    solvers: dict = {}

    def head(excluded: tuple[int, ...], lam: float) -> np.ndarray:
        key = tuple(sorted(set(excluded)))
        if key not in solvers:
            solvers[key] = gram.solver(key)
        return solvers[key](lam)

    heads, chosen = {}, []
    for f in range(k):
        inner = [j for j in range(k) if j != f]
        errors = [sum(_held_out_error(gram, head((f, j), lam), j) for j in inner) for lam in grid]
        lam = grid[int(np.argmin(errors))] if inner else grid[len(grid) // 2]
        chosen.append(lam)
        heads[(f,)] = head((f,), lam)
        for j in inner:
            heads[(f, j)] = head((f, j), lam)
    return heads, chosen


def ridge_cross_fit(rows: Callable[[np.ndarray], np.ndarray], m: int, folds: np.ndarray,
                    blind_dims: int | None = None, grid: tuple[float, ...] = RIDGE_GRID) -> CrossFit:
    """Out-of-fold, nested and (with `blind_dims`: the first columns are the responses' part)
    prompt-blind margins of closed-form ridge BT heads on the feature rows `rows(idx)` (float32, d).

    Every head sees all of its training folds (no sample cap: the cost is one pass computing per-fold
    X'X, then d x d solves) and its strength is chosen per outer fold on the other folds only, so
    `margin`, `nested` and `blind` never depend on the labels of the fold they score. Deterministic."""
    f, k = fold_index(folds)
    gram = _Gram(rows, m, f, k)
    heads, lams = _ridge_heads(gram, k, grid)
    aware = _score_heads(rows, m, f, k, heads, None)
    if not blind_dims:
        return CrossFit(*aware, l2=[float(x) for x in lams])
    blind = _score_heads(rows, m, f, k, _ridge_heads(gram.restrict(blind_dims), k, grid)[0], blind_dims)
    return CrossFit(*aware, blind=CrossFit(*blind), l2=[float(x) for x in lams])


def _score_heads(rows, m: int, f: np.ndarray, k: int, heads: dict, dims: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold margins (head without fold(i)) and nested margins (head without {o, fold(i)}) of
    every row, chunk by chunk, on the first `dims` feature columns (all with None)."""
    margin, nested = np.zeros(m), np.full((k, m), np.nan)
    for s in range(0, m, SCORE_CHUNK):
        idx = np.arange(s, min(m, s + SCORE_CHUNK))
        x = np.asarray(rows(idx), dtype=np.float32)[:, :dims]
        for j in np.unique(f[idx]):
            sel = f[idx] == j
            outer = [o for o in range(k) if o != j]
            w = np.stack([heads[(j,)]] + [heads[(o, j)] for o in outer], axis=1).astype(np.float32)
            out = (x[sel] @ w).astype(np.float64)
            margin[idx[sel]] = out[:, 0]
            for c, o in enumerate(outer, start=1):
                nested[o, idx[sel]] = out[:, c]
    return margin, nested
