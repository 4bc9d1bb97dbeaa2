"""External scores: a user's existing multimodal reward model, as two columns of rewards."""

from __future__ import annotations

import numpy as np

from audit.errors import FormatError


def external_margins(columns: dict[str, np.ndarray], spec: str, option: str = "--mm-scores") -> np.ndarray:
    """`spec` = "CHOSEN_COL,REJECTED_COL" (rewards) or "MARGIN_COL" (chosen minus rejected)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for n in names:
        if n not in columns:
            raise FormatError(f"`{option}` column `{n}` is not in the pairs table; columns: "
                              f"{', '.join(sorted(columns))[:400]}")
    if len(names) not in (1, 2):
        raise FormatError(f"`{option}` takes CHOSEN_COL,REJECTED_COL or one MARGIN_COL")
    scores = []
    for n in names:
        try:
            scores.append(np.asarray(columns[n], dtype=np.float64))
        except (TypeError, ValueError):
            raise FormatError(f"`{option} {spec}`: column `{n}` does not hold numbers; name the column(s) that hold "
                              "your reward model's scores") from None
    return scores[0] if len(scores) == 1 else scores[0] - scores[1]


from audit.probes.base import Probe, ProbeResult, register  # noqa: E402


@register
class ExternalScoresProbe(Probe):
    """The multimodal side read from the user's own reward model's scores (`--mm-scores`): the paper's
    SFC, with the user's model as the multimodal model. Its margins are not re-calibrated."""

    name, role = "external-scores", "mm"

    @classmethod
    def selected(cls, cfg) -> bool:
        return bool(cfg.mm_scores) and not cfg.rm

    def fit(self, ctx, fitted) -> ProbeResult:
        wanted = {c.strip() for c in self.cfg.mm_scores.split(",")}
        margin = external_margins({c: ctx.rows.column(c) if c in wanted else None for c in ctx.names},
                                  self.cfg.mm_scores)
        return ProbeResult(margin, calibrate=False, encoder={"mm": "external", "columns": self.cfg.mm_scores})
