"""The probe interface and its registry.

A probe fits one model of the preference out of fold and returns its per-pair margins (chosen minus
rejected, in logits). Each probe has a role: `cue` (the interpretable cue model), `text` (the
text-only shortcut model, whose loss is L_text in SFC) or `mm` (the multimodal side, L_mm). `score`
runs exactly one probe per role, chosen from the registry by the config (`selected`), in role order,
so the multimodal probe sees the text probe's margins (its product-of-experts offset).

What a probe declares:
- `needs`: the cached inputs it reads (`text` embeddings, `image` features, `rm` reward-model
  scores); `audit.inputs` encodes exactly what the selected probes need, once, data-parallel and
  resumable, and hands them over in `ctx.inputs`;
- `prepare(ctx, shard)`: optional work of its own that every rank of a data-parallel run shares (the
  fine-tuned text probe trains its folds there);
- `fit(ctx, fitted)`: its margins, its extra audited columns and its summary entries (`ProbeResult`);
- `summary(result, margins)`: a summary block that needs the calibrated margins of all roles.

Auxiliary probes (role `aux`: the slices, phrase discovery, the prompt-blind probe) run after the
three roles, each one selected runs, in registry order, and they add columns and summary keys only:
SFC and the weights come from the three roles.

Adding a probe: one module with a `Probe` subclass decorated with `@register`, its import in
`audit/probes/__init__.py`, and a test (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

ROLES = ("cue", "text", "mm")
AUX = "aux"          # auxiliary probes: every selected one runs after the roles (own columns and summary keys)
PROBES: dict[str, type["Probe"]] = {}


@dataclass
class ProbeResult:
    """What a probe hands back: out-of-fold margins over the scored rows and what it owns downstream."""

    margin: np.ndarray
    l2: float | None = None                          # the ridge strength chosen inside the folds
    calibrate: bool = True                           # temperature-scale the margin (a probe's own model)
    columns: list = field(default_factory=list)      # extra audited columns: (name, values, fill of others)
    encoder: dict = field(default_factory=dict)      # its entry under summary["encoders"]
    summary: dict = field(default_factory=dict)      # its own top-level summary keys
    extra: dict = field(default_factory=dict)        # anything its `summary` hook needs later
    nested: Any = None     # text role: fold f -> margins of the rows outside f from heads that never saw f


class Probe:
    name: ClassVar[str]
    role: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, cfg, ctx=None) -> None:
        self.cfg = cfg        # `ctx` (the scored pairs, when known) lets a probe size what it needs to the data

    @classmethod
    def selected(cls, cfg) -> bool:
        """Whether this probe fills its role under `cfg`."""
        raise NotImplementedError

    def prepare(self, ctx, shard: tuple[int, int]) -> None:
        """Work every rank of a data-parallel run shares, before rank 0 fits (default: none)."""

    def fit(self, ctx, fitted: dict[str, ProbeResult]) -> ProbeResult:
        raise NotImplementedError

    def summary(self, result: ProbeResult, margins: dict[str, np.ndarray]) -> dict[str, Any]:
        """Summary keys that need the calibrated margins of every role (default: `result.summary`)."""
        return result.summary


def register(cls: type[Probe]) -> type[Probe]:
    if cls.role not in ROLES + (AUX,):
        raise ValueError(f"probe `{cls.name}`: role must be one of {ROLES + (AUX,)}, got {cls.role!r}")
    PROBES[cls.name] = cls
    return cls


def select(cfg, ctx=None) -> dict[str, Probe]:
    """One probe per role for `cfg`, in role order (the first registered one that is selected), then
    every selected auxiliary probe under its own name."""
    chosen = {}
    for role in ROLES:
        for cls in PROBES.values():
            if cls.role == role and cls.selected(cfg):
                chosen[role] = cls(cfg, ctx)
                break
        else:
            raise ValueError(f"no registered probe fills the `{role}` role for this config")
    chosen.update({cls.name: cls(cfg, ctx) for cls in PROBES.values() if cls.role == AUX and cls.selected(cfg)})
    return chosen
