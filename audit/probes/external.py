"""External scores: a user's existing multimodal reward model, as two columns of rewards.

A reward that is NaN, infinite or missing gives no margin: `score` sets such a row's status to
`score_not_finite` before grouping (so it is left out of the folds, SFC, the weights and every
metric, and counted in `status_counts`), and `eval --scores` leaves it out of the accuracy and counts
it as `n_not_finite`. Counted as a wrong answer it would pull the multimodal accuracy towards 0, and
its SFC would read 0.5."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audit import schema
from audit.errors import FormatError


def score_columns(spec: str, option: str = "--mm-scores") -> list[str]:
    """The column names of a spec: "CHOSEN_COL,REJECTED_COL" (rewards) or "MARGIN_COL"."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if len(names) not in (1, 2):
        raise FormatError(f"`{option}` takes CHOSEN_COL,REJECTED_COL or one MARGIN_COL")
    return names


def _numbers(name: str, values, option: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        example = next((v for v in values if v is not None), None)
        raise FormatError(f"`{option}` column `{name}` holds values that are not numbers (e.g. {str(example)[:40]!r}): "
                          "name the columns of the reward model's scores") from None


def external_margins(columns: dict[str, np.ndarray], spec: str, option: str = "--mm-scores") -> np.ndarray:
    """`spec` = "CHOSEN_COL,REJECTED_COL" (rewards) or "MARGIN_COL" (chosen minus rejected). NaN where a
    reward is missing, NaN or infinite (see `np.isfinite`)."""
    names = score_columns(spec, option)
    for n in names:
        if n not in columns:
            raise FormatError(f"`{option}` column `{n}` is not in the pairs table; columns: "
                              f"{', '.join(sorted(columns))[:400]}")
    values = [_numbers(n, columns[n], option) for n in names]
    with np.errstate(invalid="ignore"):
        margin = values[0] if len(values) == 1 else values[0] - values[1]
    return np.where(np.isfinite(margin), margin, np.nan)


def not_finite_rows(pairs_file: Path, spec: str) -> np.ndarray:
    """Per row of the pairs table: True where the `--mm-scores` margin is not a finite number."""
    import pyarrow.parquet as pq

    present = pq.read_schema(pairs_file).names
    wanted = [n for n in score_columns(spec) if n in present]
    table = pq.read_table(pairs_file, columns=wanted)
    return ~np.isfinite(external_margins({**dict.fromkeys(present), **{n: table[n].to_numpy(zero_copy_only=False)
                                                                       for n in wanted}}, spec))


def not_finite_detail(spec: str) -> str:
    return f"a `--mm-scores` reward ({spec}) is NaN, infinite or missing: no multimodal margin"


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
        wanted = set(score_columns(self.cfg.mm_scores))
        margin = external_margins({c: ctx.rows.column(c) if c in wanted else None for c in ctx.names},
                                  self.cfg.mm_scores)
        return ProbeResult(margin, calibrate=False, encoder={"mm": "external", "columns": self.cfg.mm_scores},
                           summary={"mm_scores_not_finite": int(ctx.status_counts.get(schema.SCORE_NOT_FINITE, 0))})
