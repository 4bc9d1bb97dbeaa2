"""Lexical probes and phrase discovery: which words and phrases predict the preferred response.

Features of a pair: hashed word 1-3-grams (scikit-learn's `HashingVectorizer`, 2^20 buckets,
presence only) of the chosen response minus those of the rejected one: +1 for an n-gram only the
chosen has, -1 for one only the rejected has. The prompt-aware variant adds a second block, the same
difference restricted to n-grams that also occur in the prompt (does the answer echo the question?).
A Bradley-Terry logistic head (mean softplus(-x w) + l2 |w|^2, no intercept) is
cross-fitted on the grouped folds, its L2 strength chosen inside the first fold's training groups.
(The head is our own L-BFGS on the sparse differences, over the buckets that occur: scikit-learn's
liblinear on the mirrored rows [x; -x] took 16 s a fit at 10^5 pairs, this 3-7 s.)

Two probes use it:
- `lexical` (text role with `--text-probe lexical`; otherwise an auxiliary probe beside the
  embedding probe): prompt-aware; `lexical_margin`, `lexical_acc`, and the phrases.
- `prompt-blind` (auxiliary, always): the text probe's heads on the responses alone, never the prompt
  (embedding: e_c - e_r; lexical: the response block). Its accuracy beside the text probe's says
  whether the shortcut lives in the answers alone (style, templates) or in answer-given-question.

Memory: the heads are fitted on a seeded sample of the scored rows (all of them up to `--fit-pairs`
per fold), whose sparse features are held; every row is then scored window by window.

Phrases (`summary.phrases`): a head fitted on the response block of that sample
ranks the buckets; the top buckets are mapped back to the n-grams that fill them (hashing the n-grams
of the responses again), overlapping n-grams are merged into the longest phrase that still carries
most of their pairs ("as it happens" rather than "as it", "it happens"), and each phrase is counted
over all pairs: on the chosen side only (`n_chosen`), on the rejected side only (`n_rejected`), the
share of pairs it decides, a two-sided sign test (Bonferroni over the phrases examined) and example
pair ids.
"""

from __future__ import annotations

import re

import numpy as np

from audit.probes.base import Probe, ProbeResult, register

N_FEATURES = 2 ** 20
NGRAMS = (1, 3)
MIN_PAIRS = 2                             # a bucket enters the fit when it differs in at least this many pairs
TOP_BUCKETS = 60                          # buckets examined for phrases
MAX_PHRASES = 20
PHRASE_ALPHA = 0.01                       # sign-test level after Bonferroni
_TOKEN = r"(?u)\b\w+\b"


def vectorizer():
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(analyzer="word", ngram_range=NGRAMS, n_features=N_FEATURES, alternate_sign=False,
                             norm=None, binary=True, lowercase=True, token_pattern=_TOKEN, dtype=np.float32)


def pair_features(prompts: list, chosen: list, rejected: list, with_prompt: bool):
    """Sparse (n, F) or (n, 2F) differences chosen - rejected (see the module docstring)."""
    import scipy.sparse as sp

    vec = vectorizer()
    clean = lambda xs: [x if isinstance(x, str) else "" for x in xs]   # noqa: E731
    xc, xr = vec.transform(clean(chosen)), vec.transform(clean(rejected))
    d = (xc - xr).tocsr()
    if with_prompt:
        xp = vec.transform(clean(prompts))
        d = sp.hstack([d, (xc.multiply(xp) - xr.multiply(xp)).tocsr()], format="csr")
    d.eliminate_zeros()
    return d


class LexicalRows:
    """The lexical features of a bounded sample of the scored rows (what the heads are fitted on: at
    most `--fit-pairs` per fold), with its columns compressed to the buckets that occur, and a
    window-by-window pass that scores every row: memory is the sample's sparse matrix plus one window,
    whatever the dataset size. Always built prompt-aware; the prompt-blind probe uses its first block."""

    def __init__(self, ctx, max_fit: int | None, seed: int) -> None:
        from audit.bt import fit_sample

        k = len(np.unique(ctx.folds))
        cap = None if max_fit is None else -(-max_fit * k // (k - 1))
        self.ctx = ctx
        self.sample = np.sort(fit_sample(np.arange(ctx.m), cap, seed))
        got = ctx.rows.take(self.sample, ["prompt", "chosen", "rejected"])
        x = pair_features(got["prompt"], got["chosen"], got["rejected"], with_prompt=True)
        # The buckets that differ in at least MIN_PAIRS pairs of the sample: one seen once can only be
        # memorised, and dropping them shrinks the fit tenfold on free text.
        counts = np.bincount(x.indices, minlength=x.shape[1])
        self.used = np.flatnonzero(counts >= min(MIN_PAIRS, max(1, len(self.sample) // 1000)))
        self.x = x[:, self.used].tocsr()
        self.n_blind = int(np.searchsorted(self.used, N_FEATURES))   # compressed columns of the response block

    @classmethod
    def of(cls, ctx, max_fit: int | None, seed: int) -> "LexicalRows":
        """One per audit: the lexical text probe, the auxiliary one and the prompt-blind probe share it."""
        key = ("lexical_rows", max_fit, seed)
        if key not in ctx.inputs:
            ctx.inputs[key] = cls(ctx, max_fit, seed)
        return ctx.inputs[key]

    def full(self, coef: np.ndarray) -> np.ndarray:
        """A compressed coefficient vector as one over all 2 x 2^20 buckets."""
        out = np.zeros(2 * N_FEATURES, dtype=np.float64)
        out[self.used[: len(coef)]] = coef
        return out

    def one_pass(self, heads: dict[str, tuple[dict[int, np.ndarray], bool]], phrases: list[dict] | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, list]]:
        """One window-by-window pass over every scored row: each head's out-of-fold margins (`heads`:
        name -> (compressed coefficients per fold, prompt-aware)) and, per phrase, [pairs with it on the
        chosen side only, on the rejected side only, example pair ids on its side]."""
        import polars as pl

        with_prompt = any(aware for _, aware in heads.values())
        full = {name: ({f: self.full(c)[: 2 * N_FEATURES if aware else N_FEATURES] for f, c in coefs.items()}, aware)
                for name, (coefs, aware) in heads.items()}
        out = {name: np.zeros(self.ctx.m, dtype=np.float64) for name in heads}
        counts = {p["phrase"]: [0, 0, []] for p in phrases or []}
        for pos, cols in self.ctx.rows.windows(["prompt", "chosen", "rejected", "pair_id"]):
            x = pair_features(cols["prompt"], cols["chosen"], cols["rejected"], with_prompt)
            folds = self.ctx.folds[pos]
            for name, (coefs, aware) in full.items():
                xs = x if aware or not with_prompt else x[:, :N_FEATURES]
                for f, coef in coefs.items():
                    sel = np.flatnonzero(folds == f)
                    if sel.size:
                        out[name][pos[sel]] = xs[sel] @ coef
            if phrases:
                chosen = pl.Series(cols["chosen"], dtype=pl.String)
                rejected = pl.Series(cols["rejected"], dtype=pl.String)
                for p in phrases:
                    rx = phrase_regex(p["phrase"])
                    c = chosen.str.contains(rx).fill_null(False).to_numpy()
                    r = rejected.str.contains(rx).fill_null(False).to_numpy()
                    entry = counts[p["phrase"]]
                    entry[0] += int((c & ~r).sum())
                    entry[1] += int((r & ~c).sum())
                    side = (c & ~r) if p["coefficient"] > 0 else (r & ~c)
                    entry[2].extend(np.asarray(cols["pair_id"], dtype=object)[side][: 3 - len(entry[2])].tolist())
        return out, counts


L2_GRID = (1e-2, 1e-3, 1e-4)          # strongest first: each fit warm-starts the next


def _fit(x, l2: float, init: np.ndarray | None = None, max_iter: int = 300) -> np.ndarray:
    """A BT head on difference rows: minimise mean softplus(-x w) + l2 |w|^2 (L-BFGS, sparse x)."""
    from scipy.optimize import minimize

    n = x.shape[0]
    xt = x.T.tocsr()

    def loss_grad(w):
        m = x @ w
        s = np.exp(-np.logaddexp(0.0, m))        # sigmoid(-m)
        return float(np.logaddexp(0.0, -m).mean() + l2 * (w @ w)), -(xt @ s) / n + 2.0 * l2 * w

    w0 = np.zeros(x.shape[1]) if init is None else init
    # ftol 1e-7: the loss is a mean of O(1) terms; finer steps change no margin that matters
    return minimize(loss_grad, w0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "ftol": 1e-7}).x


def _loss(margin: np.ndarray) -> float:
    return float(np.logaddexp(0.0, -margin).mean())


def choose_l2(x, groups: np.ndarray, seed: int) -> tuple[float, np.ndarray | None]:
    """The L2 of `L2_GRID` with the lowest held-out BT loss on a grouped 80/20 split, and its head."""
    rng = np.random.default_rng(seed)
    ug = np.unique(groups)
    held = np.isin(groups, rng.permutation(ug)[: max(1, len(ug) // 5)])
    if held.sum() < 5 or (~held).sum() < 10:
        return L2_GRID[1], None
    tr, va = np.flatnonzero(~held), np.flatnonzero(held)
    best, w = (np.inf, None, None), None
    for l2 in L2_GRID:
        w = _fit(x[tr], l2, w)
        loss = _loss(x[va] @ w)
        if loss < best[0]:
            best = (loss, l2, w)
    return best[1], best[2]


def fit_heads(rows: LexicalRows, folds: np.ndarray, groups: np.ndarray, seed: int,
              with_prompt: bool = True) -> tuple[float, dict[int, np.ndarray]]:
    """The L2 (chosen on the first fold's training groups only) and each fold's head (compressed),
    fitted on the sample's rows outside its fold, warm-started from the L2 search. Scoring (every row
    by the head of its own fold) is `LexicalRows.one_pass`."""
    x = rows.x if with_prompt else rows.x[:, : rows.n_blind]
    f_s, g_s = folds[rows.sample], groups[rows.sample]
    fold_ids = np.unique(folds)
    first = np.flatnonzero(f_s != fold_ids[0])
    l2, w0 = choose_l2(x[first], g_s[first], seed)
    return l2, {int(f): _fit(x[np.flatnonzero(f_s != f)], l2, w0) for f in fold_ids}


def bucket_of(ngrams: list[str]) -> np.ndarray:
    """The hash bucket of each n-gram, as `HashingVectorizer` computes it."""
    from sklearn.utils import murmurhash3_32

    return np.array([abs(murmurhash3_32(g, seed=0)) % N_FEATURES for g in ngrams], dtype=np.int64)


def merge_phrases(cands: list[dict]) -> list[dict]:
    """Overlapping n-grams of the same sign become one phrase: the longest one that holds at least
    half the pairs of the strongest n-gram it overlaps. `cands`: dicts with `phrase`, `coefficient`
    and `pairs` (how many pairs contain it on exactly one side), strongest first."""
    kept: list[dict] = []
    for c in cands:
        words = c["phrase"].split()
        merged = False
        for k in kept:
            kw = k["phrase"].split()
            if (c["coefficient"] > 0) != (k["coefficient"] > 0):
                continue
            inside = _contains(kw, words) or _contains(words, kw)
            if inside or _overlap(words, kw):
                merged = True
                longer = c if len(words) > len(kw) else None
                if longer is not None and c["pairs"] >= 0.5 * k["pairs"] and _contains(words, kw):
                    k.update(phrase=c["phrase"], pairs=c["pairs"])
                break
        if not merged:
            kept.append(dict(c))
    # A phrase inside a longer kept phrase of the same sign that holds at least half its pairs goes.
    return [k for k in kept if not any(o is not k and (o["coefficient"] > 0) == (k["coefficient"] > 0)
                                       and len(o["phrase"].split()) > len(k["phrase"].split())
                                       and _contains(o["phrase"].split(), k["phrase"].split())
                                       and o["pairs"] >= 0.5 * k["pairs"] for o in kept)]


def _contains(big: list[str], small: list[str]) -> bool:
    return any(big[i:i + len(small)] == small for i in range(len(big) - len(small) + 1))


def _overlap(a: list[str], b: list[str]) -> bool:
    """a's end is b's start or the other way round (by at least one word)."""
    for k in range(1, min(len(a), len(b))):
        if a[-k:] == b[:k] or b[-k:] == a[:k]:
            return True
    return False


def phrase_regex(phrase: str) -> str:
    """A case-insensitive regex for a phrase's words in order, any punctuation or spacing between them
    (valid for Python's `re` and for polars)."""
    return r"(?i)\b" + r"\W+".join(re.escape(w) for w in phrase.split()) + r"\b"


def candidate_phrases(ctx, rows: LexicalRows, coefs: dict[int, np.ndarray], seed: int) -> tuple[list[dict], int]:
    """The strongest buckets of the fold heads' mean response-block coefficient, named by the n-grams
    that fill them (found by hashing the n-grams of a sample of responses again), merged; and how many
    candidates were examined (for the Bonferroni correction)."""
    from audit.bt import fit_sample

    mean = np.mean([c[: rows.n_blind] for c in coefs.values()], axis=0)
    coef = rows.full(mean)[:N_FEATURES]
    present = np.bincount(rows.used[rows.x[:, : rows.n_blind].indices], minlength=2 * N_FEATURES)[:N_FEATURES]
    top = np.argsort(-np.abs(coef))[:TOP_BUCKETS]
    top = top[np.abs(coef[top]) > 1e-6]
    if top.size == 0:
        return [], 0
    analyzer = vectorizer().build_analyzer()
    seen: dict[int, dict[str, int]] = {int(b): {} for b in top}
    look = set(seen)
    scan = np.sort(fit_sample(np.arange(ctx.m), 20000, seed + 7))
    got = ctx.rows.take(scan, ["chosen", "rejected"])     # a sample is enough to name a bucket
    for text in got["chosen"] + got["rejected"]:
        grams = sorted(set(analyzer(text if isinstance(text, str) else "")))
        for g, b in zip(grams, bucket_of(grams)):
            if int(b) in look:
                seen[int(b)][g] = seen[int(b)].get(g, 0) + 1
    cands = []
    for b in top:
        grams = seen[int(b)]
        if grams:
            phrase = max(grams.items(), key=lambda kv: (kv[1], len(kv[0])))[0]
            cands.append({"phrase": phrase, "coefficient": float(coef[b]), "pairs": int(present[b])})
    return merge_phrases(cands)[:MAX_PHRASES], len(cands)


def finish_phrases(phrases: list[dict], counts: dict[str, list], examined: int, n: int) -> list[dict]:
    """The phrase table: side counts over every pair, the share decided, the sign test (Bonferroni
    over the `examined` candidates) and examples; significant ones first, then by |coefficient|."""
    from scipy.stats import binomtest

    out = []
    for p in phrases:
        nc, nr, ex = counts[p["phrase"]]
        decided = nc + nr
        pval = binomtest(nc, decided, 0.5).pvalue if decided else 1.0
        p_adj = min(1.0, pval * max(examined, 1))
        out.append({"phrase": p["phrase"], "coefficient": round(p["coefficient"], 4), "n_chosen": nc, "n_rejected": nr,
                    "share_decided": round(decided / max(n, 1), 4),
                    "chosen_rate": round(nc / decided, 4) if decided else None,
                    "p_value": float(f"{p_adj:.3g}"), "significant": bool(p_adj < PHRASE_ALPHA), "examples": ex})
    out.sort(key=lambda d: (not d["significant"], -abs(d["coefficient"])))
    return out


def _calibrated_acc(margin: np.ndarray) -> float:
    from audit import metrics

    return metrics.accuracy(margin)


@register
class LexicalProbe(Probe):
    """Hashed n-gram differences, prompt-aware; the text probe with `--text-probe lexical`, else an
    auxiliary probe (its own column and accuracy) that also discovers the phrases."""

    name, role, needs = "lexical", "text", frozenset()

    @classmethod
    def selected(cls, cfg) -> bool:
        return cfg.text_probe == "lexical"

    def fit(self, ctx, fitted) -> ProbeResult:
        cfg = self.cfg
        rows = LexicalRows.of(ctx, cfg.fit_pairs, cfg.seed)
        l2, coefs = fit_heads(rows, ctx.folds, ctx.groups, cfg.seed)
        heads = {"lexical": (coefs, True)}
        if self.role == "text":      # the prompt-blind heads ride the same pass (PromptBlindProbe picks them up)
            l2_blind, blind = fit_heads(rows, ctx.folds, ctx.groups, cfg.seed, with_prompt=False)
            heads["blind"] = (blind, False)
        phrases, examined = candidate_phrases(ctx, rows, coefs, cfg.seed) if cfg.phrases else ([], 0)
        margins, counts = rows.one_pass(heads, phrases)
        if "blind" in margins:
            ctx.inputs[("prompt_blind", cfg.seed)] = (margins["blind"], l2_blind)
        margin = margins["lexical"]
        summary = {"phrases": finish_phrases(phrases, counts, examined, ctx.m)}
        if self.role == "aux":
            summary["lexical_acc"] = _calibrated_acc(margin)
        return ProbeResult(margin, l2=l2, calibrate=True, summary=summary,
                           columns=[("lexical_margin", margin, None)] if self.role == "aux" else [],
                           encoder={"probe": "lexical", "features": f"hashed word {NGRAMS[0]}-{NGRAMS[1]}-grams, "
                                    f"{N_FEATURES} buckets, chosen - rejected, + prompt-echo block", "l2": l2})


@register
class LexicalAuxProbe(LexicalProbe):
    """The lexical probe beside another text probe: `lexical_margin`, `lexical_acc` and the phrases."""

    name, role = "lexical-aux", "aux"

    @classmethod
    def selected(cls, cfg) -> bool:
        return cfg.text_probe != "lexical" and cfg.phrases


@register
class PromptBlindProbe(Probe):
    """The text probe's head on the responses alone (no prompt, no image): `prompt_blind_margin`,
    `prompt_blind_acc`."""

    name, role = "prompt-blind", "aux"
    needs = frozenset({"text"})

    @classmethod
    def selected(cls, cfg) -> bool:
        return cfg.text_probe in ("embedding", "lexical")

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        if cfg.text_probe == "lexical":
            self.needs = frozenset()

    def fit(self, ctx, fitted) -> ProbeResult:
        cfg = self.cfg
        if cfg.text_probe == "lexical":
            done = ctx.inputs.get(("prompt_blind", cfg.seed))
            if done is None:
                rows = LexicalRows.of(ctx, cfg.fit_pairs, cfg.seed)
                l2, blind = fit_heads(rows, ctx.folds, ctx.groups, cfg.seed, with_prompt=False)
                done = (rows.one_pass({"blind": (blind, False)})[0]["blind"], l2)
            margin, l2 = done
        else:
            from audit.bt import LazyFeatures, LinearBT, cross_fit

            _, emb = ctx.inputs["text"]
            diff = LazyFeatures(ctx.m, lambda idx: np.subtract(*emb.take(idx, "cr")))
            margin, l2 = cross_fit(LinearBT, diff, ctx.folds, ctx.groups, seed=cfg.seed, max_fit=cfg.fit_pairs)
        return ProbeResult(margin, l2=l2, columns=[("prompt_blind_margin", margin, None)],
                           summary={"prompt_blind_acc": _calibrated_acc(margin)},
                           encoder={"probe": f"prompt-blind {cfg.text_probe}"})
