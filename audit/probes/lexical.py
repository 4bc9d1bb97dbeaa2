"""The lexical component: which words and phrases sit on the preferred side.

Features of a pair: hashed word 1-3-grams (scikit-learn's `HashingVectorizer`, 2^20 buckets,
presence only) of the chosen response minus those of the rejected one: +1 for an n-gram only the
chosen has, -1 for one only the rejected has; a second block holds the same difference restricted to
n-grams that also occur in the prompt (does the answer echo the question?).

The model is naive-Bayes log-odds: a bucket's weight is log((a + 1) / (b + 1)), with a and b the
training pairs where it sits on the chosen / rejected side only, and a pair's margin is the sum of
its one-sided buckets' weights. Fitting is counting, so every head of the nested cross-fitting (the
head without fold f, and without folds {f, j}) comes from per-fold counts gathered in one pass, and
scoring is a second pass: two hashing passes in all, whatever the number of heads, with memory
bounded by the counts (K x 2^21 integers) and one window of features. The prompt-blind margin is the
same head on the response block alone (naive Bayes weighs each bucket on its own).

The same pass gathers, per bucket of the response block, how often it sits on each side and how
often it would sit on the chosen side if the side followed the two answers' lengths alone: the
phrase statistics that `audit.phrases` ranks.
"""

from __future__ import annotations

import numpy as np

from audit.bt import CrossFit, fold_index

N_FEATURES = 2 ** 20
NGRAMS = (1, 3)
MIN_PAIRS = 2           # a bucket gets a weight when it is one-sided in at least this many training pairs
PRIOR = 1.0             # pseudo-count on each side
_TOKEN = r"(?u)\b\w+\b"


def vectorizer():
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(analyzer="word", ngram_range=NGRAMS, n_features=N_FEATURES, alternate_sign=False,
                             norm=None, binary=True, lowercase=True, token_pattern=_TOKEN, dtype=np.float32)


def _clean(texts: list) -> list[str]:
    from audit.encoders.tokens import MAX_CHARS

    return [t[:MAX_CHARS] if isinstance(t, str) else "" for t in texts]


def pair_features(prompts: list, chosen: list, rejected: list, with_prompt: bool):
    """Sparse (n, F) or (n, 2F) differences chosen - rejected (see the module docstring). Texts are
    read up to `audit.encoders.tokens.MAX_CHARS` characters."""
    import scipy.sparse as sp

    vec = vectorizer()
    xc, xr = vec.transform(_clean(chosen)), vec.transform(_clean(rejected))
    d = (xc - xr).tocsr()
    if with_prompt:
        xp = vec.transform(_clean(prompts))
        d = sp.hstack([d, (xc.multiply(xp) - xr.multiply(xp)).tocsr()], format="csr")
    d.eliminate_zeros()
    return d


def word_counts(texts: list) -> np.ndarray:
    """Words per text (the tokens the n-grams are made of)."""
    import polars as pl

    return pl.Series(_clean(texts), dtype=pl.String).str.count_matches(_TOKEN).fill_null(0).to_numpy().astype(np.float64)


def length_share(chosen: list, rejected: list) -> np.ndarray:
    """Per pair: the share of the two answers' words that the chosen one has, the chance that a word
    found on one side only is on the chosen side if only the lengths decided it (0.5 for two empties)."""
    wc, wr = word_counts(chosen), word_counts(rejected)
    total = wc + wr
    return np.where(total > 0, wc / np.where(total > 0, total, 1.0), 0.5)


class LexicalCounts:
    """Pass 1 over every scored row: per fold, the pairs where each bucket sits on the chosen side only
    (`pos`) and on the rejected side only (`neg`), both blocks; and per bucket of the response block the
    expected chosen-side count under the length-only null, with its variance (`expected`, `variance`)."""

    def __init__(self, ctx) -> None:
        f, k = fold_index(ctx.folds)
        self.k = k
        self.pos = np.zeros((k, 2 * N_FEATURES), dtype=np.int32)
        self.neg = np.zeros((k, 2 * N_FEATURES), dtype=np.int32)
        self.expected = np.zeros(N_FEATURES)
        self.variance = np.zeros(N_FEATURES)
        for pos, cols in ctx.rows.windows(["prompt", "chosen", "rejected"]):
            x = pair_features(cols["prompt"], cols["chosen"], cols["rejected"], with_prompt=True)
            fw = f[pos]
            for j in np.unique(fw):
                xj = x[np.flatnonzero(fw == j)]
                self.pos[j] += np.bincount(xj.indices[xj.data > 0], minlength=2 * N_FEATURES).astype(np.int32)
                self.neg[j] += np.bincount(xj.indices[xj.data < 0], minlength=2 * N_FEATURES).astype(np.int32)
            q = length_share(cols["chosen"], cols["rejected"])
            one_sided = abs(x[:, :N_FEATURES]).T.tocsr()
            self.expected += one_sided @ q
            self.variance += one_sided @ (q * (1.0 - q))

    @classmethod
    def of(cls, ctx) -> "LexicalCounts":
        """One per audit: the lexical component and phrase discovery share it."""
        if "lexical_counts" not in ctx.inputs:
            ctx.inputs["lexical_counts"] = cls(ctx)
        return ctx.inputs["lexical_counts"]

    def side_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Pairs with each response-block bucket on the chosen side only and on the rejected side only."""
        return self.pos[:, :N_FEATURES].sum(0), self.neg[:, :N_FEATURES].sum(0)

    def head(self, excluded: tuple[int, ...]) -> np.ndarray:
        """The naive-Bayes weights (float32, 2F) counted on every fold but `excluded`."""
        keep = np.ones(self.k, dtype=bool)
        keep[list(excluded)] = False
        a = self.pos[keep].sum(0, dtype=np.float64)
        b = self.neg[keep].sum(0, dtype=np.float64)
        w = np.log((a + PRIOR) / (b + PRIOR))
        w[a + b < MIN_PAIRS] = 0.0
        return w.astype(np.float32)


def lexical_cross_fit(ctx) -> CrossFit:
    """Pass 2: out-of-fold, nested and prompt-blind margins of the naive-Bayes heads (module
    docstring). The head without {f, j} is the same head whichever of f, j is the outer fold, so K +
    K(K-1)/2 weight vectors are held (float32, 8 MiB each)."""
    counts = LexicalCounts.of(ctx)
    f, k = fold_index(ctx.folds)
    heads = {(j,): counts.head((j,)) for j in range(k)}
    heads.update({(a, b): counts.head((a, b)) for a in range(k) for b in range(a + 1, k)})
    m = ctx.m
    aware = (np.zeros(m), np.full((k, m), np.nan))
    blind = (np.zeros(m), np.full((k, m), np.nan))
    for pos, cols in ctx.rows.windows(["prompt", "chosen", "rejected"]):
        x = pair_features(cols["prompt"], cols["chosen"], cols["rejected"], with_prompt=True)
        fw = f[pos]
        for j in np.unique(fw):
            sel = np.flatnonzero(fw == j)
            for (margin, nested), xj, cut in ((aware, x[sel], None), (blind, x[sel][:, :N_FEATURES], N_FEATURES)):
                margin[pos[sel]] = xj @ heads[(j,)][:cut]
                for o in range(k):
                    if o != j:
                        nested[o, pos[sel]] = xj @ heads[(min(o, j), max(o, j))][:cut]
    return CrossFit(*aware, blind=CrossFit(*blind))


LEXICAL_INFO = (f"naive-Bayes log-odds of hashed word {NGRAMS[0]}-{NGRAMS[1]}-grams ({N_FEATURES} buckets) on one "
                "side only, + a prompt-echo block")
