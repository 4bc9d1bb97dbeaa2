"""The named synthetic environments: one planted cue each (or none) and its default strength."""

from __future__ import annotations

from dataclasses import dataclass

from audit.errors import ConfigError
from audit.synth.cues import CUE_DESCRIPTIONS


@dataclass(frozen=True)
class Environment:
    name: str
    cue: str | None      # a key of audit.synth.cues.CUES, or None for the cue-free environment
    p: float             # probability that the cue sits on the chosen side
    description: str


ENVIRONMENTS: dict[str, Environment] = {}
# The name the audit's cue model gives each planted cue (`score`, the app, the card). `aside` is on no
# hand-written list: the audit finds it as a discovered phrase ("as it happens").
AUDIT_CUE = {"leadin": "lead_in", "closing": "closing", "verbose": "length", "markdown": "list_items",
             "aside": "phrase: as it happens"}


def _add(name: str, cue: str | None, p: float) -> None:
    what = "no text cue: only the image tells the responses apart" if cue is None else CUE_DESCRIPTIONS[cue]
    ENVIRONMENTS[name] = Environment(name, cue, p, what)


_add("clean", None, 0.5)
CUE_ENVS = ("leadin", "closing", "verbose", "markdown")
for _cue in CUE_ENVS:
    _add(_cue, _cue, 0.9)
    _add(f"{_cue}-0.7", _cue, 0.7)
for _cue in CUE_ENVS:   # the cue on the rejected side: where a model that learnt it fails
    _add(f"{_cue}-reversed", _cue, 0.1)
# A planted phrase that no hand-written cue describes: what phrase discovery must find on its own.
_add("aside", "aside", 0.9)
_add("aside-0.7", "aside", 0.7)


def get_env(name: str) -> Environment:
    if name not in ENVIRONMENTS:
        raise ConfigError(f"unknown environment `{name}`; valid: {', '.join(ENVIRONMENTS)} "
                          "(see `shortcut-audit synth --list`)")
    return ENVIRONMENTS[name]
