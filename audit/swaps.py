"""Likely label swaps, the way cleanlab lists likely label issues: the scored pairs whose multimodal side
confidently prefers the rejected answer (out of fold: p(rejected) = 1 - mm_prob at least a threshold),
ranked by that confidence. The app's "Likely label swaps" page and `export --flag-swaps` read them here.

Why the multimodal side: it is the model that sees the picture, and a wrong label in image-grounded
preference data is most often an answer that contradicts the picture. The text-only side is shown
beside it: when both prefer the rejected answer the evidence is stronger; when only the text side does,
it is a shortcut pair, not a swap. A weak multimodal side (`audit.reading.mm_weakness`) makes the list
noise; a text-only audit has no list."""

from __future__ import annotations

from audit.config import SWAP_THRESHOLD    # noqa: F401  (the default, declared with the export option)
from audit.errors import FormatError

LIKELY_SWAP = "likely_swap"


def likely_swap(threshold: float = SWAP_THRESHOLD):
    """A polars expression: the pair's multimodal side prefers its rejected answer with probability at
    least `threshold` (1 - mm_prob >= threshold; a pair without mm_prob is not flagged), named
    `likely_swap`."""
    import polars as pl

    return ((1.0 - pl.col("mm_prob")) >= threshold).fill_null(False).alias(LIKELY_SWAP)


def has_mm_side(summary: dict) -> bool:
    """Whether the audit has a multimodal side to find swaps with (a text-only audit has none)."""
    return not summary.get("text_only") and summary.get("mm_acc") is not None


def require_mm_side(summary: dict, where: str) -> None:
    """A FormatError that says how to get a multimodal side, for an audit that has none."""
    if not has_mm_side(summary):
        raise FormatError(f"`{where}` is a text-only audit: likely label swaps need a multimodal side (the model that "
                          "sees the picture prefers the rejected answer). Score again without `--text-only`, with the "
                          "images in place, or with your reward model (`--rm`) or its scores (`--mm-scores`)")


def ranked(frame, threshold: float = SWAP_THRESHOLD):
    """The scored pairs of `frame` (a polars DataFrame or LazyFrame with `pair_id`, `status`, `mm_prob`,
    `text_prob`) that are likely swaps, most confident first: by mm_prob ascending, then by text_prob
    ascending (the text side agreeing is more evidence), then by `pair_id` (a stable order)."""
    import polars as pl

    return (frame.filter((pl.col("status") == "ok") & likely_swap(threshold))
            .sort(["mm_prob", "text_prob", "pair_id"], nulls_last=True))
