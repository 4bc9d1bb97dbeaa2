"""The multimodal role of a text-only audit (`score --text-only`): there is none. Its margins are NaN,
so the mm_* columns and SFC are null and the weights come from a text-only scheme."""

from __future__ import annotations

import numpy as np

from audit.probes.base import Probe, ProbeResult, register


@register
class NoMultimodalSide(Probe):
    name, role = "text-only", "mm"

    @classmethod
    def selected(cls, cfg) -> bool:
        return bool(cfg.text_only)

    def fit(self, ctx, fitted) -> ProbeResult:
        return ProbeResult(np.full(ctx.m, np.nan), calibrate=False,
                           encoder={"mm": "none (--text-only: no multimodal side)"})
