"""Best-of-n, exactly: which candidate a reward model picks among n, in expectation, without sampling.

Two settings share one idea: sort the candidates by the reward model's score, merge equal scores
into blocks (lowest first), and give each block the probability that it holds the maximum; a tie
inside the top block is broken uniformly.

- **Known policy** (the synthetic world): n i.i.d. draws from a distribution p over the support.
  Block k (mass P_k, cumulative F_k) holds the maximum with probability F_k^n - F_{k-1}^n, shared
  among its members in proportion to p. The exact KL of that pick distribution to p is at most
  log n - (n-1)/n (`kl_bon`).
- **A finite pool** of M candidates (real data): a uniformly random n-subset. Block k, with L_k
  candidates below it and m_k in it, holds the maximum with probability (C(L_k + m_k, n) - C(L_k, n)) /
  C(M, n), shared equally (Coste et al.'s `unbiased_sampler`, with ties). At n = M this is
  RewardBench 2's best-of-4 rule: 1/#ties when a gold answer holds the top score, else 0.

Every curve is a dot product of these pick probabilities with a per-candidate value: the gold, a
cue feature (style drift), an indicator (the lure: wrong and cued).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

DEFAULT_NS = (1, 2, 4, 8, 16, 32, 64)


def kl_bon(n: int | np.ndarray) -> np.ndarray:
    """log n - (n-1)/n: the KL of best-of-n to the base policy as Gao et al. use it; an upper bound
    on the true value (Beirami et al.), reached only without ties."""
    n = np.asarray(n, dtype=np.float64)
    return np.log(n) - (n - 1) / n


def _blocks(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(block of each candidate, number of blocks): blocks of equal score numbered from the lowest."""
    _, inv = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    inv = inv.reshape(-1)
    return inv, int(inv.max()) + 1 if inv.size else 0


def support_pick(scores: np.ndarray, p: np.ndarray, ns) -> np.ndarray:
    """(len(ns), K): the probability that best-of-n over n i.i.d. draws from `p` picks each candidate
    (ties among the top draws broken uniformly: a tied candidate gets its share of p)."""
    p = np.asarray(p, dtype=np.float64)
    inv, k = _blocks(scores)
    mass = np.bincount(inv, weights=p, minlength=k)                 # P_k
    cdf = np.minimum(np.cumsum(mass), 1.0)                          # F_k
    n = np.asarray(ns, dtype=np.float64)[:, None]
    block = cdf[None, :] ** n - np.concatenate([[0.0], cdf[:-1]])[None, :] ** n   # F_k^n - F_{k-1}^n
    share = np.divide(p, mass[inv], out=np.zeros_like(p), where=mass[inv] > 0)
    return block[:, inv] * share[None, :]


def support_kl(pick: np.ndarray, p: np.ndarray) -> np.ndarray:
    """KL(pick || p) per row of `pick` (len(ns), K), in nats; 0 log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pick > 0, pick * np.log(pick / np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=1)


def _log_choose(a, b) -> np.ndarray:
    """log C(a, b), -inf where b < 0 or b > a."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ok = (b >= 0) & (b <= a)
    safe_b = np.where(ok, b, 0.0)
    out = gammaln(a + 1) - gammaln(safe_b + 1) - gammaln(np.where(ok, a - safe_b, 0.0) + 1)
    return np.where(ok, out, -np.inf)


def _choose_ratio(a, n: int, m: int) -> np.ndarray:
    """C(a, n) / C(m, n): the probability that a random n-subset of m lies inside a given a of them."""
    return np.exp(_log_choose(a, n) - _log_choose(m, n))


def subset_pick(scores: np.ndarray, n: int) -> np.ndarray:
    """(M,): the probability that the reward model's pick among a uniformly random n-subset of the M
    candidates is each one (n >= M: the whole pool; ties broken uniformly)."""
    s = np.asarray(scores, dtype=np.float64)
    m = s.size
    n = min(int(n), m)
    inv, k = _blocks(s)
    size = np.bincount(inv, minlength=k)
    below = np.concatenate([[0], np.cumsum(size)[:-1]])              # L_k
    block = _choose_ratio(below + size, n, m) - _choose_ratio(below, n, m)
    return (block / size)[inv]


def _ranks_below(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: how many others are strictly below it, and how many tie with it."""
    v = np.asarray(values, dtype=np.float64)
    srt = np.sort(v)
    lower = np.searchsorted(srt, v, side="left")
    ties = np.searchsorted(srt, v, side="right") - lower - 1
    return lower, ties


def _cells(s: np.ndarray, b: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """(4, M): per candidate y, how many others z have (s_z < s_y, b_z < b_y), (s_z = s_y, b_z < b_y),
    (s_z < s_y, b_z = b_y), (s_z = s_y, b_z = b_y); computed in chunks of y (memory M x chunk)."""
    m = s.size
    out = np.zeros((4, m), dtype=np.int64)
    for lo in range(0, m, chunk):
        y = slice(lo, min(lo + chunk, m))
        s_lt, s_eq = s[None, :] < s[y, None], s[None, :] == s[y, None]
        b_lt, b_eq = b[None, :] < b[y, None], b[None, :] == b[y, None]
        out[:, y] = [(s_lt & b_lt).sum(1), (s_eq & b_lt).sum(1), (s_lt & b_eq).sum(1), (s_eq & b_eq).sum(1)]
    out[3] -= 1                                                     # y itself
    return out


def win_best(scores: np.ndarray, gold: np.ndarray, n: int) -> float:
    """P(the pick among a random n-subset is a gold-best candidate of that subset), ties in score
    broken uniformly, ties in gold counting as best: sum over y and over j tied rivals in the subset of
    C(t_y, j) C(l_y, n-1-j) / C(M, n) / (j+1), with l_y (t_y) the candidates scored below (level
    with) y whose gold is at most y's."""
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(gold, dtype=np.float64)
    m = s.size
    n = min(int(n), m)
    a, c1, c2, d = _cells(s, g)
    lower, tied = a + c2, c1 + d                                    # others with gold at most y's: below y, level with y
    j = np.arange(min(n, int(tied.max()) + 1))[None, :]              # j tied rivals in the subset: at most `tied`
    log_terms = (_log_choose(tied[:, None], j) + _log_choose(lower[:, None], n - 1 - j) - _log_choose(m, n)
                 - np.log1p(j))
    return float(np.exp(log_terms).sum())


def win_random(pick: np.ndarray, gold: np.ndarray) -> float:
    """P(the pick's gold beats that of a candidate drawn at random from the pool) + half P(equal)."""
    g = np.asarray(gold, dtype=np.float64)
    lower, ties = _ranks_below(g)
    beats = (lower + 0.5 * (ties + 1)) / g.size                     # ties include the candidate itself
    return float(np.dot(pick, beats))


def agreement(scores: np.ndarray, other: np.ndarray, n: int) -> float:
    """P(two scorers pick the same candidate from one random n-subset), each breaking its own ties
    uniformly and independently (e.g. the reward model with the picture and with a blank one)."""
    s = np.asarray(scores, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    m = s.size
    n = min(int(n), m)
    a, c1, c2, d = _cells(s, b)       # the others of the subset must sit below or level with y for both scorers
    plain = (c1 + c2 + d) == 0                                      # no tie with y for either scorer
    total = float(np.exp(_log_choose(a[plain], n - 1) - _log_choose(m, n)).sum())
    for y in np.flatnonzero(~plain):                               # ties: each tie-break uniform, independent
        i2 = np.arange(min(c2[y], n - 1) + 1)
        for i3 in range(min(d[y], n - 1) + 1):
            for i1 in range(min(c1[y], n - 1 - i3) + 1):
                log_t = (_log_choose(a[y], n - 1 - i1 - i2 - i3) + _log_choose(c1[y], i1) + _log_choose(c2[y], i2)
                         + _log_choose(d[y], i3) - _log_choose(m, n))
                total += float((np.exp(log_t) / ((1 + i1 + i3) * (1 + i2 + i3))).sum())
    return total


def pool_curve(scores: np.ndarray, gold: np.ndarray | None, ns) -> dict[str, np.ndarray]:
    """One group's curves over `ns` for a finite pool: `selected` (expected gold of the pick),
    `random` (the pool's mean gold), `oracle` (expected best gold of an n-subset), `win_best`,
    `win_random`; without gold only the pick probabilities (`pick`, (len(ns), M))."""
    pick = np.stack([subset_pick(scores, n) for n in ns])
    out: dict[str, np.ndarray] = {"pick": pick}
    if gold is None:
        return out
    g = np.asarray(gold, dtype=np.float64)
    out["selected"] = pick @ g
    out["random"] = np.full(len(ns), g.mean())
    out["oracle"] = np.array([subset_pick(g, n) @ g for n in ns])
    out["win_best"] = np.array([win_best(scores, g, n) for n in ns])
    out["win_random"] = np.array([win_random(row, g) for row in pick])
    return out


def gap_closed(selected: np.ndarray, random: np.ndarray, oracle: np.ndarray) -> np.ndarray:
    """(selected - random) / (oracle - random): 0 = a random pick, 1 = a perfect one (NaN where the
    oracle is no better than random: every candidate equally good)."""
    den = np.asarray(oracle, dtype=np.float64) - np.asarray(random, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, (np.asarray(selected) - random) / np.where(den > 1e-12, den, 1.0), np.nan)


def grouped_mean_ci(values: np.ndarray, groups: np.ndarray, rounds: int = 1000, seed: int = 0,
                    level: float = 0.95) -> tuple[np.ndarray, np.ndarray] | None:
    """Percentile interval of the column means of `values` (rows, K), resampling whole groups (rows
    that share a picture or a prompt) with replacement, as `metrics.grouped_accuracy_ci` does for
    accuracy; NaN entries are left out of their column. None with fewer than two groups."""
    v = np.asarray(values, dtype=np.float64)
    v = v.reshape(len(v), -1)
    g = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
    n_groups = int(g.max()) + 1 if g.size else 0
    if n_groups < 2:
        return None
    known = np.isfinite(v)
    sums, sizes = np.zeros((n_groups, v.shape[1])), np.zeros((n_groups, v.shape[1]))
    np.add.at(sums, g, np.where(known, v, 0.0))
    np.add.at(sizes, g, known.astype(np.float64))
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups) for _ in range(rounds)])
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (counts @ sums) / (counts @ sizes)
    tail = (1.0 - level) / 2
    return np.nanquantile(means, tail, axis=0), np.nanquantile(means, 1.0 - tail, axis=0)
