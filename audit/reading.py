"""How an audit reads: the sentences that the CLI, the card and the app print from `summary.json`,
written once so that the three say the same thing: the headline with its interval and its distance
from chance, the verdict with what to do next, the threshold behind every count, what SFD means, how
the pairs were grouped and what the prompt-blind accuracy says."""

from __future__ import annotations

# Below NEGLIGIBLE from chance (or when the interval reaches chance) no shortcut is reported; then weak
# below MODERATE accuracy, moderate below STRONG, strong above.
NEGLIGIBLE = 0.02
MODERATE = 0.60
STRONG = 0.75
# Below this multimodal accuracy the image side explains little, whatever the text side does.
WEAK_MM_ACC = 0.6

SFD_HELP = ("SFD (shortcut-failure degradation) = 100 x (multimodal accuracy on the pairs the text-only model gets "
            "right - multimodal accuracy on the pairs it gets wrong). Near 0: the multimodal side is as good where the "
            "text misleads as where it helps. Large and positive: it fails exactly where the text shortcut fails, "
            "i.e. it leans on the same shortcut.")
SFC_HELP = ("SFC (shortcut-failure coefficient) = L_text / (L_mm + L_text) per pair, with L the out-of-fold "
            "Bradley-Terry loss of each side. High: the text-only model is wrong where the multimodal one is right "
            "(a pair that teaches looking); low: the text alone explains the pair (a shortcut pair).")
SIGNAL_HELP = ("Share of pairs a text-only model decides beyond chance, 2 x accuracy - 1: if that share were decided "
               "by their text and the rest were coin flips, the accuracy would be what was measured.")


def pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.{digits}f}%"


def interval(ci: list[float] | None) -> str:
    return "" if not ci else f"95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%"


def threshold_label(summary: dict) -> str:
    return f"text_prob >= {summary.get('threshold', 0.8):.2f}"


def headline(summary: dict) -> str:
    """One sentence: text-only accuracy with its interval, distance from chance, and the share of pairs
    carrying a text signal."""
    acc = summary.get("text_acc")
    if acc is None or acc != acc:
        return "No pair could be scored, so there is no text-only accuracy."
    ci = interval(summary.get("text_acc_ci"))
    share = summary.get("text_signal_share")
    line = (f"A text-only model that never sees the image picks the preferred response {pct(acc)} of the time"
            + (f" ({ci})" if ci else "") + f", {100 * (acc - 0.5):+.1f} points from chance")
    if share is not None and share > 0:
        line += f": about {pct(share, 0)} of the pairs carry a text signal it can use without the image"
    return line + "."


def level(summary: dict) -> str:
    """`none`, `weak`, `moderate` or `strong`: whether the text alone predicts the preference, and how well."""
    acc = summary.get("text_acc")
    if acc is None or acc != acc:
        return "none"
    ci = summary.get("text_acc_ci")
    if acc - 0.5 < NEGLIGIBLE or (ci and ci[0] <= 0.5):
        return "none"
    return "weak" if acc < MODERATE else "moderate" if acc < STRONG else "strong"


def verdict(summary: dict) -> str:
    """What the headline means for training, and what to do next."""
    lv = level(summary)
    if lv == "none":
        return ("No text-only shortcut: the text alone does not predict the preference beyond chance (the interval "
                "reaches 50%). Reweighting will change little; if a reward model still fails out of distribution, "
                "look elsewhere (label noise, the image side).")
    what = {"weak": "A weak text-only shortcut: the text alone predicts a few of these preferences",
            "moderate": "A text-only shortcut: a reward model can learn a good part of these preferences without looking",
            "strong": "A strong text-only shortcut: a reward model can learn most of these preferences without looking"}[lv]
    sl = (summary.get("slices") or {}).get("carriers") or []
    where = (f" It is concentrated in {slice_label(sl[0])}: look there first (app: Overview, \"Where the shortcut "
             "lives\", opens Browse on that slice).") if sl else ""
    return (f"{what}.{where} Next: read the discovered phrases and cues (what the text model uses), open the pairs it is "
            "surest about (`shortcut-audit app`, Browse sorted by text_prob), then export with the weights "
            "(`export --mode weight`) or train with `train --method shortcut-aware`, and evaluate on held-out pairs "
            "whose text points the other way (`eval RUN HELDOUT_AUDIT`: `acc_text_wrong`).")


def mm_weakness(summary: dict) -> str | None:
    """Why the multimodal side cannot be trusted to say where the image matters, in words, or None: its
    accuracy is below WEAK_MM_ACC, or it is no better than the text-only side within the paired 95%
    interval of their difference (`mm_minus_text_ci`; an audit written before it existed: below the
    text-only accuracy). None too without a multimodal side."""
    mm, text = summary.get("mm_acc"), summary.get("text_acc")
    if mm is None or mm != mm or text is None or text != text:
        return None
    diff, ci = summary.get("mm_minus_text"), summary.get("mm_minus_text_ci")
    numbers = f"multimodal accuracy {pct(mm)}, text-only {pct(text)}"
    if ci and diff is not None:
        numbers += f"; the difference {100 * diff:+.1f} points, 95% interval {100 * ci[0]:+.1f} to {100 * ci[1]:+.1f}"
    if mm < WEAK_MM_ACC:
        return (f"the multimodal side is weak ({numbers}): its loss is close to log 2 on most pairs, so SFC is close "
                "to L_text / (L_text + 0.69) and mostly follows the text probe")
    if (ci[0] <= 0) if ci else (mm <= text):
        return (f"the multimodal side is weak: no better than the text side{' within its interval' if ci else ''} "
                f"({numbers}); what it gets right beyond the text is within noise, so the pairs SFC ranks as "
                "'the image gets it right where the text fails' are mostly chance")
    return None


def mm_versus_text(summary: dict) -> str | None:
    """The multimodal side against the text-only side, short (a metric's delta): `+0.7 pts vs text`."""
    diff = summary.get("mm_minus_text")
    return None if diff is None or diff != diff else f"{100 * diff:+.1f} pts vs text"


def shortcut_rate_line(summary: dict) -> str:
    return (f"{pct(summary.get('shortcut_rate'))} of the pairs have {threshold_label(summary)} (`--threshold`): the "
            "ones a text-only model is confident about")


def grouping_line(summary: dict) -> str | None:
    """One sentence on how the pairs were grouped for cross-fitting (card, app, `score`'s output)."""
    f = summary.get("folds") or {}
    links = f.get("links")
    if not links:
        return None
    big = links["largest_group"]
    near = links.get("near_copy_rows")
    return (f"{f['n_groups']:,} groups for {f['k']}-fold cross-fitting (pairs that share a picture, a source row, a "
            f"specific prompt or their two answers stay in one fold); perceptual links: "
            f"{'not available (re-ingest to hash the pictures)' if near is None else f'{near:,} rows whose picture has a near-identical copy'}; "
            f"text links: {links['prompt_linked_rows']:,} rows by prompt, {links.get('answers_linked_rows') or 0:,} by their answers; "
            f"largest group {big['rows']:,} rows ({100 * big['share']:.1f}%)")


def phrase_story(summary: dict) -> str:
    """What the prompt-blind accuracy says, in one sentence (app, card, `score`'s output)."""
    text, blind = summary.get("text_acc"), summary.get("prompt_blind_acc")
    if blind is None or text is None:
        return ""
    if text - 0.5 < 0.05:
        return "the text alone barely predicts the preference (within 5 points of chance)"
    if blind >= text - 0.02:
        return ("the responses alone carry the shortcut (style, templates, phrases): the prompt adds nothing to it")
    if blind - 0.5 < 0.3 * (text - 0.5):
        return "the shortcut needs the prompt: it is in how the answer relates to the question, not in the answers alone"
    return "part of the shortcut is in the answers alone, part needs the prompt"




def slice_label(row: dict) -> str:
    return f"{row['column']} = {row['value']}"


def _also(row: dict) -> str:
    same = row.get("same_as") or []
    return f"; the same pairs as {', '.join(slice_label(s) for s in same)}" if same else ""


def where_line(summary: dict) -> str | None:
    """Which slices of the data carry the shortcut, and how much (`summary.slices`); None when the
    audit examined no slice."""
    sl = summary.get("slices") or {}
    if not sl.get("examined"):
        return None
    carriers = sl.get("carriers") or []
    if not carriers:
        return (f"No slice of the data carries it more than the rest ({sl['examined']} slices of "
                f"{len(sl.get('columns') or [])} columns examined, each of at least {sl['min_size']} pairs).")
    parts = [f"{slice_label(c)}: {pct(c['text_acc'])} text-only ({c['n']:,} pairs{_also(c)})" for c in carriers]
    rest = sl.get("rest_of_carriers") or {}
    tail = f"; the rest ({rest['n']:,} pairs): {pct(rest['text_acc'])}" if rest.get("n") else ""
    return "Where it lives: " + "; ".join(parts) + tail + "."


def components_line(summary: dict) -> str | None:
    """The text probe's components and their own accuracies (`summary.text_components`)."""
    comps = summary.get("text_components") or []
    if len(comps) < 2:
        return None
    best = max(comps, key=lambda c: c["acc"])
    listed = ", ".join(f"{c['name']} {pct(c['acc'])}" for c in comps)
    return f"stack of {listed} (strongest alone: {best['name']})"


def phrase_text(p: dict, slices: bool = True) -> str:
    """A phrase as the CLI and the card list it: counts, precision and where it concentrates."""
    out = f"\"{p['phrase']}\" ({p['n_chosen']} chosen / {p['n_rejected']} rejected"
    if p.get("precision") is not None:
        out += f", {pct(p['precision'], 0)} on the {'chosen' if p['n_chosen'] >= p['n_rejected'] else 'rejected'} side"
    where = p.get("concentrates")
    if slices and where:
        out += f", {pct(where['share'], 0)} of them in {slice_label(where)}"
    return out + ")"
