"""The cue probe: interpretable text features of each response, a cross-fitted BT logistic model on
their chosen-minus-rejected differences, and each cue's association with the label.

A cue is one small function registered by name (`@cue`); the audited table gets one column per cue,
`cue_<name>` = value(chosen) - value(rejected).
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from audit.registry import Registry

CUE_FUNCS = Registry("cue")      # name -> fn(response, prompt) -> value
CUE_HELP = CUE_FUNCS.help
cue = CUE_FUNCS.register


_WORD = re.compile(r"\w+", re.UNICODE)
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


@lru_cache(maxsize=8)
def _lower(text: str) -> str | None:
    """`text.lower()` when matching it case-sensitively finds exactly what a case-insensitive pattern
    finds in `text`: every character is ASCII or has no case (quotes, dashes, CJK, emoji), so lowering
    changes only ASCII letters. Else None (`İ`, `ſ`, Greek, ...: the case-insensitive pattern runs).
    Cached: every cue of one response asks for it."""
    if all(c.lower() == c == c.upper() for c in _NON_ASCII.findall(text)):
        return text.lower()
    return None


@lru_cache(maxsize=8)
def _words(text: str) -> list[str]:
    """The response's words, lower-cased (computed once for the cues that count them)."""
    return [w.lower() for w in _WORD.findall(text)]


@lru_cache(maxsize=4096)
def _prompt_words(prompt: str) -> frozenset[str]:
    return frozenset(w.lower() for w in _WORD.findall(prompt))


class _Caseless:
    """A case-insensitive pattern, run case-sensitively on the lower-cased text where that finds the
    same matches (about 3x faster in Python's `re`)."""

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self.slow = re.compile(pattern, flags | re.I)
        self.fast = re.compile(pattern, flags)

    def findall(self, text: str) -> list:
        low = _lower(text)
        return self.fast.findall(low) if low is not None else self.slow.findall(text)

    def search(self, text: str):
        low = _lower(text)
        return self.fast.search(low) if low is not None else self.slow.search(text)


_LEAD_IN = _Caseless(r"^\W*(great question|good question|certainly|sure|of course|absolutely|happy to help|"
                     r"gladly|great|excellent question)\b")
_CLOSING = _Caseless(r"(hope (this|that) (helps|answers)|let me know|feel free to|any other questions|"
                     r"happy to help further)[^\n]*$")
_HEDGE = _Caseless(r"\b(i think|i believe|might|may be|maybe|possibly|perhaps|it seems|likely|probably|"
                   r"not sure|appears to)\b")
_REFUSAL = _Caseless(r"\b(i'?m sorry|i am sorry|i cannot|i can'?t|as an ai|unable to|i do not have|i don'?t have)\b")
_LIST = re.compile(r"^\s*([-*•]|\d+[.)])\s+", re.M)
_MARKDOWN = re.compile(r"(\*\*[^*]+\*\*|^#{1,6}\s|`[^`]+`|__[^_]+__)", re.M)
_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)?\b")
_IMAGE = _Caseless(r"\b(image|picture|photo|photograph|shown|visible|depicted|scene)\b")
_CITATION = re.compile(r"【\d+†source】")
_FIRST_PERSON = _Caseless(r"\b(i|me|my|i'm|i've)\b")


@cue("length", "log(1 + characters): verbosity")
def _length(text: str, prompt: str) -> float:
    return float(np.log1p(len(text)))


@cue("lead_in", "starts with a pleasantry (\"Great question!\", \"Certainly!\")")
def _lead_in(text: str, prompt: str) -> float:
    return float(bool(_LEAD_IN.search(text)))


@cue("closing", "ends with a pleasantry (\"I hope this helps!\", \"Let me know ...\")")
def _closing(text: str, prompt: str) -> float:
    return float(bool(_CLOSING.search(text.strip())))


@cue("hedge", "hedging words per 100 words (might, perhaps, I think)")
def _hedge(text: str, prompt: str) -> float:
    return 100.0 * len(_HEDGE.findall(text)) / max(1, len(_words(text)))


@cue("refusal", "refusal or apology phrases (I'm sorry, I cannot, as an AI)")
def _refusal(text: str, prompt: str) -> float:
    return float(len(_REFUSAL.findall(text)))


@cue("list_items", "lines formatted as list items (-, *, 1.)")
def _list_items(text: str, prompt: str) -> float:
    return float(len(_LIST.findall(text)))


@cue("markdown", "markdown emphasis, headers or code spans")
def _markdown(text: str, prompt: str) -> float:
    return float(len(_MARKDOWN.findall(text)))


@cue("numbers", "numbers mentioned")
def _numbers(text: str, prompt: str) -> float:
    return float(len(_NUMBER.findall(text)))


@cue("prompt_overlap", "share of the response's words that appear in the prompt")
def _prompt_overlap(text: str, prompt: str) -> float:
    words = set(_words(text))
    if not words:
        return 0.0
    return len(words & _prompt_words(prompt)) / len(words)


@cue("image_mention", "mentions of the image itself (image, picture, shown, visible)")
def _image_mention(text: str, prompt: str) -> float:
    return float(len(_IMAGE.findall(text)))


@cue("repetition", "share of repeated word trigrams")
def _repetition(text: str, prompt: str) -> float:
    words = _words(text)
    grams = list(zip(words, words[1:], words[2:]))
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


@cue("first_person", "first-person words per 100 words (I, me, my)")
def _first_person(text: str, prompt: str) -> float:
    return 100.0 * len(_FIRST_PERSON.findall(text)) / max(1, len(_words(text)))


@cue("citation", "GPT-4V citation markers 【n†source】 (VLFeedback)")
def _citation(text: str, prompt: str) -> float:
    return float(len(_CITATION.findall(text)))


CUE_CHARS = 100_000      # a longer text's cues read its first and last halves of this (its length stays whole)


def bounded(text: str) -> str:
    """A text as the cues read it: whole up to `CUE_CHARS` characters (every real answer), else its head
    and tail, so that a hostile 200 MB answer costs what a long one does."""
    if len(text) <= CUE_CHARS:
        return text
    return text[: CUE_CHARS // 2] + "\n" + text[-(CUE_CHARS // 2):]


def cue_values(texts: list[str], prompts: list[str]) -> np.ndarray:
    """(n, n_cues) values of every cue for each (text, prompt); each distinct pair computed once."""
    out = np.zeros((len(texts), len(CUE_FUNCS)), dtype=np.float64)
    seen: dict[tuple[str, str], np.ndarray] = {}
    fns = list(CUE_FUNCS.values())
    length = list(CUE_FUNCS).index("length")
    for i, key in enumerate(zip(texts, prompts)):
        row = seen.get(key)
        if row is None:
            row = seen[key] = np.array([fn(bounded(key[0]), bounded(key[1])) for fn in fns])
            row[length] = _length(key[0], key[1])
        out[i] = row
    return out


def cue_differences(prompts: list[str], chosen: list[str], rejected: list[str]) -> np.ndarray:
    """(n, n_cues): value(chosen) - value(rejected) per pair."""
    return cue_values(chosen, prompts) - cue_values(rejected, prompts)


def association(diff: np.ndarray) -> np.ndarray:
    """Per cue: P(chosen has more of it) - P(rejected has more), over the pairs: in [-1, 1]."""
    if diff.shape[0] == 0:
        return np.zeros(diff.shape[1])
    return np.sign(diff).mean(axis=0)


def fit_cue_probe(cue_diff: np.ndarray, folds: np.ndarray, groups: np.ndarray, seed: int):
    """Cross-fitted margins of the cue model, and the cue table (ranked by |standardised coefficient|
    of the model fitted on all pairs: among correlated cues, the joint fit credits the one that
    carries the signal, e.g. a bullet list over the extra length it brings). Each coefficient has a 95%
    interval from a bootstrap over groups; a cue `stands_out` when its interval excludes zero, and the
    summary's `top_cue` is the first cue of the ranking that does (None: no cue stands out). This one
    ranking is what the CLI, the app and the card show."""
    from audit.bt import LinearBT, PairFeatures, cross_fit

    scale = cue_diff.std(axis=0) + 1e-9
    x = PairFeatures(linear=cue_diff / scale)
    margin, l2 = cross_fit(LinearBT, x, folds, groups, seed=seed)
    full = LinearBT(l2).fit(x, None, seed)   # for the coefficients reported in the summary
    boot = bootstrap_coefficients(x, groups, l2, seed, init=full.w)
    lo, hi = np.quantile(boot, [0.025, 0.975], axis=0)
    assoc = association(cue_diff)
    table = sorted(({"name": name, "coefficient": round(float(full.w[j]), 4),
                     "ci_low": round(float(lo[j]), 4), "ci_high": round(float(hi[j]), 4),
                     "stands_out": bool(lo[j] > 0 or hi[j] < 0),
                     "association": round(float(assoc[j]), 4),
                     "share_differs": round(float((cue_diff[:, j] != 0).mean()), 4), "help": CUE_HELP[name]}
                    for j, name in enumerate(CUE_FUNCS)), key=lambda c: -abs(c["coefficient"]))
    return margin, table, l2


BOOTSTRAP_ROUNDS = 30


def bootstrap_coefficients(x, groups: np.ndarray, l2: float, seed: int, rounds: int = BOOTSTRAP_ROUNDS,
                           init=None) -> np.ndarray:
    """(rounds, cues) coefficients of the cue model refitted on bootstrap resamples of the groups
    (whole groups drawn with replacement: pairs of one picture or prompt move together)."""
    from audit.bt import LinearBT, PairFeatures

    rng = np.random.default_rng([seed, 17])
    n_groups = int(groups.max()) + 1
    out = np.zeros((rounds, x.linear.shape[1]))
    for b in range(rounds):
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        rows = np.repeat(np.arange(len(groups)), counts[groups])
        out[b] = LinearBT(l2).fit(PairFeatures(linear=x.linear[rows]), None, seed + b, init=init).w
    return out


from audit.probes.base import Probe, ProbeResult, register  # noqa: E402  (the registry imports no probe)


@register
class CueProbe(Probe):
    """The interpretable cue model: which hand-written cue carries the text shortcut."""

    name, role = "cue", "cue"

    @classmethod
    def selected(cls, cfg) -> bool:
        return True

    def fit(self, ctx, fitted) -> ProbeResult:
        margin, table, l2 = fit_cue_probe(ctx.cue_diff, ctx.folds, ctx.groups, self.cfg.seed)
        out = [c for c in table if c["stands_out"]]
        return ProbeResult(margin, l2=l2, summary={"cues": table, "top_cue": out[0]["name"] if out else None,
                                                   "cue_stands_out": bool(out)})
