"""Lexical probes and phrase discovery: which words and phrases predict the preferred response.

Features of a pair: hashed word 1-3-grams (scikit-learn's `HashingVectorizer`, 2^20 buckets,
presence only) of the chosen response minus those of the rejected one: +1 for an n-gram only the
chosen has, -1 for one only the rejected has. The prompt-aware variant adds a second block, the same
difference restricted to n-grams that also occur in the prompt (does the answer echo the question?).
A Bradley-Terry logistic head (scikit-learn `LogisticRegression` on the differences, no intercept) is
cross-fitted on the grouped folds, its L2 strength chosen inside the first fold's training groups.

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
C_GRID = (0.03, 0.1, 0.3, 1.0)           # inverse L2 strength, chosen inside the folds
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
    most `--fit-pairs` per fold), and a window-by-window pass that scores every row: memory is the
    sample's sparse matrix plus one window, whatever the dataset size."""

    def __init__(self, ctx, with_prompt: bool, max_fit: int | None, seed: int) -> None:
        from audit.bt import fit_sample

        k = len(np.unique(ctx.folds))
        cap = None if max_fit is None else -(-max_fit * k // (k - 1))
        self.ctx, self.with_prompt = ctx, with_prompt
        self.sample = np.sort(fit_sample(np.arange(ctx.m), cap, seed))
        got = ctx.rows.take(self.sample, ["prompt", "chosen", "rejected"])
        self.x = pair_features(got["prompt"], got["chosen"], got["rejected"], with_prompt)

    def margins(self, coef_by_fold: dict[int, np.ndarray]) -> np.ndarray:
        """Every scored row's margin under the head of its own fold (out of fold)."""
        out = np.zeros(self.ctx.m, dtype=np.float64)
        for pos, cols in self.ctx.rows.windows(["prompt", "chosen", "rejected"]):
            x = pair_features(cols["prompt"], cols["chosen"], cols["rejected"], self.with_prompt)
            folds = self.ctx.folds[pos]
            for f, coef in coef_by_fold.items():
                sel = np.flatnonzero(folds == f)
                if sel.size:
                    out[pos[sel]] = x[sel] @ coef
        return out


def _fit(x, c: float, seed: int):
    """A BT head on difference rows: logistic regression on [x; -x] with labels [1; 0], no intercept."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    n = x.shape[0]
    used = np.unique(x.indices)          # fitted on the columns present: a few thousand of the 2^20 buckets
    xs = x[:, used]
    head = LogisticRegression(C=c, fit_intercept=False, solver="liblinear", max_iter=200, random_state=seed)
    head.fit(sp.vstack([xs, -xs], format="csr"), np.r_[np.ones(n), np.zeros(n)])
    coef = np.zeros(x.shape[1], dtype=np.float64)
    coef[used] = head.coef_.ravel()
    return coef


def _loss(margin: np.ndarray) -> float:
    return float(np.logaddexp(0.0, -margin).mean())


def choose_c(x, groups: np.ndarray, seed: int) -> float:
    """The C of `C_GRID` with the lowest held-out BT loss on a grouped 80/20 split."""
    rng = np.random.default_rng(seed)
    ug = np.unique(groups)
    held = np.isin(groups, rng.permutation(ug)[: max(1, len(ug) // 5)])
    if held.sum() < 5 or (~held).sum() < 10:
        return 1.0
    tr, va = np.flatnonzero(~held), np.flatnonzero(held)
    losses = [_loss(x[va] @ _fit(x[tr], c, seed)) for c in C_GRID]
    return C_GRID[int(np.argmin(losses))]


def cross_fit_lexical(rows: LexicalRows, folds: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """Out-of-fold margins and the C used (chosen on the first fold's training groups only). Heads are
    fitted on the sample's rows outside their fold; every row is scored by the head of its own fold."""
    s = rows.sample
    f_s, g_s = folds[s], groups[s]
    fold_ids = np.unique(folds)
    first = np.flatnonzero(f_s != fold_ids[0])
    c = choose_c(rows.x[first], g_s[first], seed)
    coefs = {int(f): _fit(rows.x[np.flatnonzero(f_s != f)], c, seed + int(f)) for f in fold_ids}
    return rows.margins(coefs), c


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


def _contains_phrase(texts: list, phrase: str) -> np.ndarray:
    pat = re.compile(phrase_regex(phrase))
    return np.array([bool(pat.search(t)) if isinstance(t, str) else False for t in texts])


def discover_phrases(ctx, rows: LexicalRows, groups: np.ndarray, seed: int) -> list[dict]:
    """The phrases that most predict chosen vs rejected (see the module docstring)."""
    from scipy.stats import binomtest

    from audit.bt import fit_sample

    n = ctx.m
    x_resp = rows.x[:, :N_FEATURES]
    g = groups[rows.sample]
    coef = _fit(x_resp, choose_c(x_resp, g, seed), seed)
    top = np.argsort(-np.abs(coef))[:TOP_BUCKETS]
    top = top[np.abs(coef[top]) > 1e-6]
    if top.size == 0:
        return []
    # Map buckets back to n-grams: the n-grams of a sample of responses, hashed again.
    analyzer = vectorizer().build_analyzer()
    seen: dict[int, dict[str, int]] = {int(b): {} for b in top}
    look = set(seen)
    scan = np.sort(fit_sample(np.arange(n), 20000, seed + 7))
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
            col = x_resp[:, int(b)]
            cands.append({"phrase": phrase, "coefficient": float(coef[b]), "pairs": int(col.count_nonzero())})
    phrases = merge_phrases(cands)[:MAX_PHRASES]
    # Count each phrase over every pair (window by window), on the chosen or the rejected side only.
    counts = {p["phrase"]: [0, 0, []] for p in phrases}
    for pos, cols in ctx.rows.windows(["chosen", "rejected", "pair_id"]):
        for p in phrases:
            c, r = _contains_phrase(cols["chosen"], p["phrase"]), _contains_phrase(cols["rejected"], p["phrase"])
            entry = counts[p["phrase"]]
            entry[0] += int((c & ~r).sum())
            entry[1] += int((r & ~c).sum())
            side = (c & ~r) if p["coefficient"] > 0 else (r & ~c)
            entry[2].extend(np.asarray(cols["pair_id"], dtype=object)[side][: 3 - len(entry[2])].tolist())
    out = []
    for p in phrases:
        nc, nr, ex = counts[p["phrase"]]
        decided = nc + nr
        pval = binomtest(nc, decided, 0.5).pvalue if decided else 1.0
        p_adj = min(1.0, pval * max(len(cands), 1))
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
        rows = LexicalRows(ctx, True, cfg.fit_pairs, cfg.seed)
        margin, c = cross_fit_lexical(rows, ctx.folds, ctx.groups, cfg.seed)
        phrases = discover_phrases(ctx, rows, ctx.groups, cfg.seed) if cfg.phrases else []
        summary = {"phrases": phrases}
        if self.role == "aux":
            summary["lexical_acc"] = _calibrated_acc(margin)
        return ProbeResult(margin, l2=round(1.0 / c, 6), calibrate=True, summary=summary,
                           columns=[("lexical_margin", margin, None)] if self.role == "aux" else [],
                           encoder={"probe": "lexical", "features": f"hashed word {NGRAMS[0]}-{NGRAMS[1]}-grams, "
                                    f"{N_FEATURES} buckets, chosen - rejected, + prompt-echo block", "C": c},
                           )


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
            rows = LexicalRows(ctx, False, cfg.fit_pairs, cfg.seed)
            margin, c = cross_fit_lexical(rows, ctx.folds, ctx.groups, cfg.seed)
            l2 = round(1.0 / c, 6)
        else:
            from audit.bt import LazyFeatures, LinearBT, cross_fit

            _, emb = ctx.inputs["text"]
            diff = LazyFeatures(ctx.m, lambda idx: np.subtract(*emb.take(idx, "cr")))
            margin, l2 = cross_fit(LinearBT, diff, ctx.folds, ctx.groups, seed=cfg.seed, max_fit=cfg.fit_pairs)
        return ProbeResult(margin, l2=l2, columns=[("prompt_blind_margin", margin, None)],
                           summary={"prompt_blind_acc": _calibrated_acc(margin)},
                           encoder={"probe": f"prompt-blind {cfg.text_probe}"})
