"""External scores: a user's existing multimodal reward model, as two columns of rewards."""

from __future__ import annotations

import numpy as np

from audit.errors import FormatError


def external_margins(columns: dict[str, np.ndarray], spec: str) -> np.ndarray:
    """`spec` = "CHOSEN_COL,REJECTED_COL" (rewards) or "MARGIN_COL" (chosen minus rejected)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for n in names:
        if n not in columns:
            raise FormatError(f"`--mm-scores` column `{n}` is not in the pairs table; columns: "
                              f"{', '.join(sorted(columns))[:400]}")
    if len(names) == 1:
        return np.asarray(columns[names[0]], dtype=np.float64)
    if len(names) == 2:
        return np.asarray(columns[names[0]], dtype=np.float64) - np.asarray(columns[names[1]], dtype=np.float64)
    raise FormatError("`--mm-scores` takes CHOSEN_COL,REJECTED_COL or one MARGIN_COL")
