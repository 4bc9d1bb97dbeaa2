"""Source formats, one file each, registered by name: detect, read into pairs, write (synth/export).

Adding a format = one file with a `SourceFormat` subclass + one line in `_REGISTRY`.
"""

from __future__ import annotations

from audit.errors import FormatError
from audit.sources.alignrm import AlignRM
from audit.sources.base import SourceFormat
from audit.sources.pairs import Pairs
from audit.sources.povid import POVID
from audit.sources.rlaif_v import RLAIFV
from audit.sources.rlhf_v import RLHFV
from audit.sources.trl import TRL
from audit.sources.vl_rewardbench import VLRewardBench
from audit.sources.vlfeedback import VLFeedback

_REGISTRY: dict[str, type[SourceFormat]] = {
    cls.name: cls for cls in (VLFeedback, RLAIFV, RLHFV, POVID, TRL, VLRewardBench, AlignRM, Pairs)
}
FORMAT_NAMES = tuple(_REGISTRY)


def get_format(name: str) -> SourceFormat:
    if name not in _REGISTRY:
        raise FormatError(f"unknown format `{name}`; valid: {', '.join(FORMAT_NAMES)}")
    return _REGISTRY[name]()


def all_formats() -> list[SourceFormat]:
    return [cls() for cls in _REGISTRY.values()]


def columns_hint(lacking: list[str]) -> str:
    """How to map the columns a format lacks (`ingest` and `score` take `--columns`)."""
    pairs = ",".join(f"{c}=YOUR_COLUMN" for c in lacking)
    return f"map {'it' if len(lacking) == 1 else 'them'} with `--columns {pairs}`"


def detect_format(rec: dict, where: str) -> SourceFormat:
    """The single most specific format that `rec` matches, or a FormatError that says what to do."""
    scores = [(f.detect(rec), f) for f in all_formats()]
    best = max(s for s, _ in scores)
    keys = ", ".join(f"`{k}`" for k in list(rec)[:20]) or "(none)"
    if best == 0:
        # The closest format: the one with most of its identifying columns present.
        near = max(all_formats(), key=lambda f: (len(f.signature) - len(f.missing(rec))) / len(f.signature))
        lacking = near.missing(rec)
        if lacking and len(lacking) < len(near.signature):
            raise FormatError(f"{where}: looks like format `{near.name}` but column "
                              f"{', '.join(f'`{c}`' for c in lacking)} is missing (columns: {keys}); "
                              f"{columns_hint(lacking)} or pass `--format`")
        raise FormatError(f"{where}: unknown format (columns: {keys}); pass `--format` with one of "
                          f"{', '.join(FORMAT_NAMES)}, and `--columns` to map column names")
    top = [f.name for s, f in scores if s == best]
    if len(top) > 1:
        raise FormatError(f"{where}: ambiguous format, the record matches {', '.join(f'`{t}`' for t in top)} "
                          f"(columns: {keys}); pass `--format` to choose")
    return next(f for s, f in scores if s == best)
