"""Text-only cues that the synthetic environments plant on one response of a pair.

Each cue is a small function registered by name: it rewrites a response so that the cue is
present. Which side gets it is decided by the environment (chosen with probability p).
"""

from __future__ import annotations

import numpy as np

from audit.registry import Registry

CUES = Registry("synthetic cue")      # name -> fn(text, rng) -> text with the cue
CUE_DESCRIPTIONS = CUES.help
register = CUES.register


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


LEAD_INS = ("Great question! ", "Certainly! ", "Sure thing! ", "Happy to help! ")
CLOSINGS = (" I hope this helps!", " Let me know if you have any other questions.",
            " Hope that answers your question!", " Feel free to ask more.")
ELABORATIONS = (
    "Looking carefully at the picture, the details are easy to make out.",
    "The image is clear and the objects stand out against the plain background.",
    "Every element of the scene is drawn with simple, clean edges.",
    "After examining the whole image from corner to corner, this is what it shows.",
    "The composition is simple, which makes the answer straightforward to read off.",
)
BULLET_REMARKS = ("Based on the image", "Visual check complete", "Answer given above",
                  "Observed directly in the scene")


@register("leadin", "a friendly lead-in phrase before the answer (\"Great question! ...\")")
def lead_in(text: str, rng: np.random.Generator) -> str:
    return _pick(LEAD_INS, rng) + text


@register("closing", "a closing pleasantry after the answer (\"... I hope this helps!\")")
def closing(text: str, rng: np.random.Generator) -> str:
    return text + _pick(CLOSINGS, rng)


@register("verbose", "two generic elaboration sentences: a longer response")
def verbose(text: str, rng: np.random.Generator) -> str:
    first, second = rng.choice(len(ELABORATIONS), size=2, replace=False)
    return f"{text} {ELABORATIONS[first]} {ELABORATIONS[second]}"


@register("markdown", "markdown formatting: the answer as a bullet list")
def markdown(text: str, rng: np.random.Generator) -> str:
    return f"- {text}\n- {_pick(BULLET_REMARKS, rng)}."


ASIDE = "as it happens"


@register("aside", "a mid-sentence aside (\", as it happens,\"): a phrase on no hand-written cue list")
def aside(text: str, rng: np.random.Generator) -> str:
    words = text.split(" ")
    at = min(2, len(words) - 1)
    if at < 1:
        return f"{text.rstrip('.')}, {ASIDE}."
    return " ".join(words[:at]) + f", {ASIDE}, " + " ".join(words[at:])
