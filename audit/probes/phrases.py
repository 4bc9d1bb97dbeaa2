"""Phrase discovery: the n-grams of the responses that sit on the preferred (or the rejected) side far
more often than chance, ranked the way a practitioner reads them.

For an n-gram, only the pairs where it occurs on exactly one side say anything: `n_chosen` pairs with
it on the chosen side only, `n_rejected` on the rejected side only, support n = n_chosen + n_rejected.
If the side followed the two answers' lengths alone, a word found on one side only would be on the
chosen side with probability q = chosen words / (chosen + rejected words) of that pair; summed over
the phrase's pairs that is its `expected` chosen count E, with variance V. The ranking statistic is
z = (n_chosen - E) / sqrt(V): a sign test adjusted for length, which balances support (a phrase
seen in 3 pairs cannot reach a large z) and precision (a frequent phrase split 55/45 does not either),
unlike the size of a penalised coefficient. The test is exact: a two-sided binomial test of n_chosen
against p0 = E / n (conservative for the per-pair null), Bonferroni-corrected over the buckets that
could reach significance at all (Tarone's rule: a bucket seen in too few pairs cannot, and does not
count).

Steps: every hashed bucket of the response block is scored from the counts of the lexical pass
(`LexicalCounts`); the top buckets are named by the n-grams that fill them in a sample of responses;
overlapping n-grams of the same sign are merged into the longest phrase that keeps most of their pairs
("adding to the" rather than "adding", "adding to"); then every phrase is counted exactly over every
pair (a word-boundary regex, case-insensitive), with its examples and the slice where it concentrates.
Single function words ("and", "while", "by": in scikit-learn's English stop-word list) are length and
style proxies: they are listed apart (`function_words`), never at the top of `phrases`.
Where slices differ (`audit.probes.slices`), the carrier slices get their own phrase lists.
"""

from __future__ import annotations

import re

import numpy as np

from audit.probes.base import AUX, Probe, ProbeResult, register
from audit.probes.lexical import N_FEATURES, LexicalCounts, length_share, pair_features, vectorizer

TOP_BUCKETS = 200             # buckets named and merged
MAX_PHRASES = 20
MAX_FUNCTION_WORDS = 8
SLICE_PHRASES = 5             # phrases listed per carrier slice
PHRASE_ALPHA = 0.01           # family-wise level of the phrase tests
NAME_SAMPLE = 20_000          # pairs whose responses name the top buckets
EXAMPLES = 3


def length_z(n_chosen, n_rejected, expected, variance) -> np.ndarray:
    """(n_chosen - E) / sqrt(V) per bucket or phrase; 0 where nothing is one-sided."""
    nc = np.asarray(n_chosen, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (nc - np.asarray(expected, dtype=np.float64)) / np.sqrt(v)
    return np.where(v > 0, z, 0.0)


def tarone_tests(supports: np.ndarray, alpha: float = PHRASE_ALPHA) -> int:
    """Tarone's number of tests: the smallest K such that at most K hypotheses can reach p <= alpha / K
    at all (a sign test on n pairs cannot go below 2 * 0.5^n); Bonferroni with K controls the
    family-wise error over every bucket, the untestable ones included."""
    s = np.sort(np.asarray(supports, dtype=np.int64)[np.asarray(supports) > 0])[::-1]
    if s.size == 0:
        return 1
    # the minimal attainable two-sided p-value of a bucket seen in n pairs: 2 * 0.5^n (capped at 1)
    log_min_p = np.minimum(0.0, np.log(2.0) - s * np.log(2.0))
    lo, hi = 1, int(s.size)
    while lo < hi:                  # testable(K) = #{log_min_p <= log(alpha / K)} falls as K grows
        mid = (lo + hi) // 2
        if int((log_min_p <= np.log(alpha / mid)).sum()) <= mid:
            hi = mid
        else:
            lo = mid + 1
    return lo


def rank_buckets(n_chosen: np.ndarray, n_rejected: np.ndarray, expected: np.ndarray, variance: np.ndarray,
                 top: int = TOP_BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """The `top` buckets by |z| among those that can reach significance (support >= 5), and every
    bucket's z."""
    z = length_z(n_chosen, n_rejected, expected, variance)
    support = n_chosen + n_rejected
    cand = np.flatnonzero(support >= 5)
    order = cand[np.argsort(-np.abs(z[cand]), kind="stable")][:top]
    return order, z


def bucket_of(ngrams: list[str]) -> np.ndarray:
    """The hash bucket of each n-gram, as `HashingVectorizer` computes it."""
    from sklearn.utils import murmurhash3_32

    return np.array([abs(murmurhash3_32(g, seed=0)) % N_FEATURES for g in ngrams], dtype=np.int64)


def name_buckets(texts: list, buckets: np.ndarray) -> dict[int, str]:
    """Each bucket's most frequent n-gram in `texts` (ties: the longer one), for buckets that any fills."""
    analyzer = vectorizer().build_analyzer()
    look = {int(b) for b in buckets}
    seen: dict[int, dict[str, int]] = {b: {} for b in look}
    for text in texts:
        grams = sorted(set(analyzer(text if isinstance(text, str) else "")))
        for g, b in zip(grams, bucket_of(grams)):
            if int(b) in look:
                seen[int(b)][g] = seen[int(b)].get(g, 0) + 1
    return {b: max(g.items(), key=lambda kv: (kv[1], len(kv[0])))[0] for b, g in seen.items() if g}


def merge_phrases(cands: list[dict]) -> list[dict]:
    """Overlapping n-grams of the same sign become one phrase: the longest one that holds at least
    half the pairs of the strongest n-gram it overlaps. `cands`: dicts with `phrase`, `z` and `pairs`
    (how many pairs contain it on exactly one side), strongest first."""
    kept: list[dict] = []
    for c in cands:
        words = c["phrase"].split()
        for k in kept:
            kw = k["phrase"].split()
            if (c["z"] > 0) != (k["z"] > 0):
                continue
            if _contains(kw, words) or _contains(words, kw) or _overlap(words, kw):
                if len(words) > len(kw) and c["pairs"] >= 0.5 * k["pairs"] and _contains(words, kw):
                    k.update(phrase=c["phrase"], pairs=c["pairs"])
                break
        else:
            kept.append(dict(c))
    # A phrase inside a longer kept phrase of the same sign that holds at least half its pairs goes.
    return [k for k in kept if not any(o is not k and (o["z"] > 0) == (k["z"] > 0)
                                       and len(o["phrase"].split()) > len(k["phrase"].split())
                                       and _contains(o["phrase"].split(), k["phrase"].split())
                                       and o["pairs"] >= 0.5 * k["pairs"] for o in kept)]


def _contains(big: list[str], small: list[str]) -> bool:
    return any(big[i:i + len(small)] == small for i in range(len(big) - len(small) + 1))


def _overlap(a: list[str], b: list[str]) -> bool:
    """a's end is b's start or the other way round (by at least one word)."""
    return any(a[-k:] == b[:k] or b[-k:] == a[:k] for k in range(1, min(len(a), len(b))))


def phrase_regex(phrase: str) -> str:
    """A case-insensitive regex for a phrase's words in order, any punctuation or spacing between them
    (valid for Python's `re` and for polars)."""
    return r"(?i)\b" + r"\W+".join(re.escape(w) for w in phrase.split()) + r"\b"


def is_function_word(phrase: str) -> bool:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = phrase.split()
    return len(words) == 1 and words[0] in ENGLISH_STOP_WORDS


def candidates(ctx, counts: LexicalCounts | None, rows: np.ndarray | None, seed: int) -> tuple[list[dict], int]:
    """Named, merged candidate phrases (strongest first) and Tarone's number of tests, from the whole
    audit's counts or (with `rows`, positions of a slice) from a pass over those rows alone."""
    from audit.bt import fit_sample

    if rows is None:
        nc, nr = counts.side_counts()
        ex, var = counts.expected, counts.variance
    else:
        nc, nr, ex, var = _slice_counts(ctx, rows)
    order, z = rank_buckets(nc, nr, ex, var)
    if order.size == 0:
        return [], 1
    pool = np.arange(ctx.m) if rows is None else rows
    scan = np.sort(fit_sample(pool, NAME_SAMPLE, seed + 7))
    got = ctx.rows.take(scan, ["chosen", "rejected"])   # a sample is enough to name a bucket
    names = name_buckets(got["chosen"] + got["rejected"], order)
    cands = [{"phrase": names[int(b)], "z": float(z[b]), "pairs": int(nc[b] + nr[b])} for b in order if int(b) in names]
    return merge_phrases(cands), tarone_tests(nc + nr)


def _slice_counts(ctx, rows: np.ndarray):
    """Side counts and length-null moments of every response-block bucket over the rows of one slice."""
    nc, nr = np.zeros(N_FEATURES), np.zeros(N_FEATURES)
    ex, var = np.zeros(N_FEATURES), np.zeros(N_FEATURES)
    select = np.zeros(ctx.m, dtype=bool)
    select[rows] = True
    for _, cols in ctx.rows.windows(["chosen", "rejected"], select=select):
        if not cols["chosen"]:
            continue
        x = pair_features([], cols["chosen"], cols["rejected"], with_prompt=False)
        nc += np.bincount(x.indices[x.data > 0], minlength=N_FEATURES)
        nr += np.bincount(x.indices[x.data < 0], minlength=N_FEATURES)
        q = length_share(cols["chosen"], cols["rejected"])
        one_sided = abs(x).T.tocsr()
        ex += one_sided @ q
        var += one_sided @ (q * (1.0 - q))
    return nc, nr, ex, var


class PhraseCounts:
    """Exact counts of each phrase over every scored pair, in one regex pass: per phrase [pairs with it
    on the chosen side only, on the rejected side only, their length-null mean and variance], examples
    on its side, and the same four numbers per value of each slice column."""

    def __init__(self, ctx, phrases: list[str], signs: dict[str, bool], slice_codes: dict[str, np.ndarray]) -> None:
        import polars as pl

        self.c = {p: np.zeros(4) for p in phrases}
        self.examples: dict[str, list] = {p: [] for p in phrases}
        self.by_slice = {p: {col: np.zeros((int(codes.max()) + 1 if codes.size else 1, 4))
                             for col, codes in slice_codes.items()} for p in phrases}
        for pos, cols in ctx.rows.windows(["chosen", "rejected", "pair_id"]):
            chosen = pl.Series(cols["chosen"], dtype=pl.String)
            rejected = pl.Series(cols["rejected"], dtype=pl.String)
            q = length_share(cols["chosen"], cols["rejected"])
            ids = np.asarray(cols["pair_id"], dtype=object)
            for p in phrases:
                rx = phrase_regex(p)
                c = chosen.str.contains(rx).fill_null(False).to_numpy()
                r = rejected.str.contains(rx).fill_null(False).to_numpy()
                one = c ^ r
                stats = np.stack([c & ~r, r & ~c, np.where(one, q, 0.0), np.where(one, q * (1.0 - q), 0.0)], axis=1)
                self.c[p] += stats.sum(0)
                side = (c & ~r) if signs[p] else (r & ~c)
                self.examples[p].extend(ids[side][: EXAMPLES - len(self.examples[p])].tolist())
                for col, codes in slice_codes.items():
                    acc = self.by_slice[p][col]
                    for j in range(4):
                        acc[:, j] += np.bincount(codes[pos], weights=stats[:, j], minlength=len(acc))


def test_counts(stats: np.ndarray, tests: int) -> dict:
    """Support, precision, length-adjusted z and the exact test (Bonferroni over `tests`) of one
    phrase's [n_chosen, n_rejected, expected, variance]."""
    from scipy.stats import binomtest

    nc, nr = int(round(stats[0])), int(round(stats[1]))
    support = nc + nr
    p0 = min(max(stats[2] / support, 1e-9), 1 - 1e-9) if support else 0.5
    p_adj = min(1.0, (binomtest(nc, support, p0).pvalue if support else 1.0) * max(tests, 1))
    return {"z": round(float(length_z(nc, nr, stats[2], stats[3])), 2), "n_chosen": nc, "n_rejected": nr,
            "support": support, "precision": round(max(nc, nr) / support, 4) if support else None,
            "expected_chosen": round(float(stats[2]), 1), "chosen_rate": round(nc / support, 4) if support else None,
            "p_value": float(f"{p_adj:.3g}"), "significant": bool(p_adj < PHRASE_ALPHA)}


def finish(phrases: list[dict], pc: PhraseCounts, tests: int, n: int, slices: list | None) -> list[dict]:
    """The phrase table: exact counts and test (`test_counts`), examples and where it concentrates;
    significant first, then by |z|."""
    out = []
    for p in phrases:
        row = {"phrase": p["phrase"], **test_counts(pc.c[p["phrase"]], tests)}
        row.update(share_decided=round(row["support"] / max(n, 1), 4), function_word=is_function_word(p["phrase"]),
                   examples=pc.examples[p["phrase"]],
                   concentrates=_concentration(pc.by_slice[p["phrase"]], row["support"], slices))
        out.append(row)
    out.sort(key=lambda d: (not d["significant"], -abs(d["z"])))
    return out


def _concentration(by_slice: dict[str, np.ndarray], support: int, slices: list | None) -> dict | None:
    """The slice value holding most of a phrase's one-sided pairs, when it holds at least half of them
    and at least 1.5 times its share of all pairs (the highest such lift; the first column on a tie)."""
    best, best_lift = None, 0.0
    for sc in slices or []:
        acc = by_slice.get(sc.name)
        if acc is None or not support:
            continue
        counts = acc[:, 0] + acc[:, 1]
        v = int(np.argmax(counts))
        share, base = counts[v] / support, sc.shares[v]
        if share >= 0.5 and base > 0 and share >= 1.5 * base and share / base > best_lift + 1e-9:
            best_lift = share / base
            best = {"column": sc.name, "value": sc.labels[v], "pairs": int(counts[v]), "share": round(float(share), 3),
                    "base_share": round(float(base), 3), "lift": round(float(best_lift), 2)}
    return best


@register
class PhrasesProbe(Probe):
    """Phrase discovery (module docstring): `summary.phrases`, `summary.function_words` and, for the
    slices that carry the shortcut, `summary.slice_phrases`. Reads the lexical counts (a pass of its own
    when the text probe has no lexical component)."""

    name, role = "phrases", AUX

    @classmethod
    def selected(cls, cfg) -> bool:
        return cfg.phrases

    def fit(self, ctx, fitted) -> ProbeResult:
        seed = self.cfg.seed
        found, tests = candidates(ctx, LexicalCounts.of(ctx), None, seed)
        extra = fitted["slices"].extra if "slices" in fitted else {}
        slices, carriers = extra.get("columns"), extra.get("carriers", [])
        per_slice = [(sl, *candidates(ctx, None, sl["rows"], seed)) for sl in carriers]
        content = [p for p in found if not is_function_word(p["phrase"])][:MAX_PHRASES]
        func = [p for p in found if is_function_word(p["phrase"])][:MAX_FUNCTION_WORDS]
        local = [[p for p in got if not is_function_word(p["phrase"])][:SLICE_PHRASES] for _, got, _ in per_slice]
        wanted = {p["phrase"]: p["z"] > 0 for p in content + func + [q for got in local for q in got]}
        pc = PhraseCounts(ctx, list(wanted), wanted, {sc.name: sc.codes for sc in slices or []})
        slice_phrases = [{"column": sl["column"], "value": sl["value"], "n": int(len(sl["rows"])),
                          "phrases": sorted(({"phrase": p["phrase"], **test_counts(
                              pc.by_slice[p["phrase"]][sl["column"]][sl["code"]], t)} for p in got),
                              key=lambda d: (not d["significant"], -abs(d["z"])))}
                         for (sl, _, t), got in zip(per_slice, local)]
        return ProbeResult(np.zeros(ctx.m), summary={
            "phrases": finish(content, pc, tests, ctx.m, slices), "function_words": finish(func, pc, tests, ctx.m, slices),
            "slice_phrases": slice_phrases, "phrase_tests": tests})
