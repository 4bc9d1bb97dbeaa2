"""The slices that carry the shortcut: the text-only accuracy per value of every low-cardinality column.

Real datasets carry their subsets in their own columns (VL-RewardBench `query_source`, VLFeedback's
models, a user's `subset` / `task` / `annotator`) or in their image folders; one number for the whole
set hides that one subset is text-solvable and the rest is not. For the format's `source`, every
string, boolean or integer column with 2 to `MAX_VALUES` distinct values over the scored pairs, and
the folder of the source's image paths, each value holding at least `MIN_SLICE` pairs (and leaving at
least as many outside it) is compared with the rest: its out-of-fold text-only accuracy with a 95%
interval (bootstrap over the cross-fitting groups inside it), and a two-proportion z-test against the
pairs outside it, Holm-corrected over every slice examined. Slices that select the same pairs (a
normalised copy of a column, a folder per subset) are examined once and named together, and the two
values of a two-valued column are one test, counted once. A slice
significantly above the rest carries the shortcut; one below it is where the text says least (or
points the other way). A carrier must also show a shortcut of its own: its interval lies above 50%
(a slice at 50% beside a rest below chance carries nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from audit import metrics, schema
from audit.probes.base import AUX, Probe, ProbeResult, register

MAX_VALUES = 30           # a column with more distinct values is an id or free text, not a slice
MIN_SLICE = 30            # pairs a slice (and the rest) must hold to be examined
SLICE_ALPHA = 0.05        # family-wise level over the slices examined (Holm)
MAX_CARRIERS = 3
FOLDER = "image folder"   # the derived column: where the source's image paths live
MISSING = "(missing)"
# Not slices: the pair's own texts, ids and image references, the audit's columns, and the synthetic
# truth that says on which side the planted cue is (a label, not a subset).
_SKIP = set(schema.PAIRS_COLUMNS) - {"source"} | {schema.EXTRA_JSON, "src_image_path", "cue_on_chosen"}


@dataclass
class SliceColumn:
    """One column's value per scored pair, as codes into `labels`; `shares[v]`: the share of pairs with value v."""

    name: str
    codes: np.ndarray
    labels: list[str]
    shares: np.ndarray


def _sliceable(field) -> bool:
    import pyarrow as pa

    t = field.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t) or pa.types.is_integer(t)


def _audit_column(name: str) -> bool:
    from audit.score import AUDIT_COLUMNS

    return name in AUDIT_COLUMNS or name.startswith("cue_") or name.endswith("_margin") or name in ("status",)


def _coded(name: str, values: list) -> SliceColumn | None:
    import polars as pl

    s = pl.Series(values).cast(pl.String).fill_null(MISSING)
    uniq = s.unique().sort()
    if not 2 <= len(uniq) <= MAX_VALUES:
        return None
    labels = uniq.to_list()
    codes = s.replace_strict(labels, list(range(len(labels))), return_dtype=pl.Int64).to_numpy()
    return SliceColumn(name, codes, labels, np.bincount(codes, minlength=len(labels)) / len(codes))


def _folders(paths: list) -> list:
    """Each path's folder, relative to the folders' common prefix (None where there is no path)."""
    dirs = [None if not isinstance(p, str) or not p else str(PurePosixPath(p.replace("\\", "/")).parent) for p in paths]
    real = [d.split("/") for d in dirs if d is not None]
    if not real:
        return dirs
    common = 0
    while all(len(d) > common and d[common] == real[0][common] for d in real):
        common += 1
    common = min(common, min(len(d) for d in real) - 1)      # keep at least the last folder name
    return [None if d is None else "/".join(d.split("/")[common:]) for d in dirs]


def slice_columns(ctx) -> list[SliceColumn]:
    """The candidate slice columns of the scored pairs (module docstring), read one column at a time."""
    import pyarrow.parquet as pq

    schema_ = pq.read_schema(ctx.pairs_file)
    out = []
    for field in schema_:
        if field.name in _SKIP or _audit_column(field.name) or not _sliceable(field):
            continue
        col = _coded(field.name, ctx.rows.column(field.name).tolist())
        if col is not None:
            out.append(col)
    path_col = "src_image_path" if "src_image_path" in schema_.names else "image_path"
    paths = ctx.rows.column(path_col).tolist()
    if path_col == "src_image_path" or any(isinstance(p, str) and p.startswith("/") for p in paths):
        col = _coded(FOLDER, _folders(paths))
        if col is not None:
            out.append(col)
    return out


def _two_proportion_p(k1: float, n1: int, k2: float, n2: int) -> float:
    from scipy.stats import norm

    p = (k1 + k2) / (n1 + n2)
    se = np.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return float(2 * norm.sf(abs(k1 / n1 - k2 / n2) / se))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence)."""
    n = len(pvalues)
    order = np.argsort(pvalues)
    adj = np.zeros(n)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (n - rank) * pvalues[i]))
        adj[i] = running
    return adj.tolist()


def slice_table(columns: list[SliceColumn], margin: np.ndarray, groups: np.ndarray, seed: int = 0) -> dict:
    """Every examined slice with its accuracy, interval, the rest's accuracy and the Holm-adjusted p;
    the carriers (significantly above the rest, strongest first) and the slices below the rest."""
    right = (margin > 0) + 0.5 * (margin == 0)
    m = len(margin)
    seen: dict[bytes, dict] = {}
    rows = []
    for col in columns:
        for v, label in enumerate(col.labels):
            mask = col.codes == v
            n = int(mask.sum())
            if n < MIN_SLICE or m - n < MIN_SLICE:
                continue
            key = np.packbits(mask).tobytes()
            if key in seen:
                seen[key]["same_as"].append({"column": col.name, "value": label})
                continue
            k = float(right[mask].sum())
            ci = metrics.grouped_accuracy_ci(margin[mask], groups[mask], seed=seed)
            other = seen.get(np.packbits(~mask).tobytes())   # the rest of a slice already examined: the same test
            row = {"column": col.name, "value": label, "code": v, "n": n, "text_acc": round(k / n, 4),
                   "text_acc_ci": None if ci is None else [round(ci[0], 4), round(ci[1], 4)],
                   "rest_acc": round(float(right[~mask].sum()) / (m - n), 4), "rest_n": m - n,
                   "p": _two_proportion_p(k, n, float(right[~mask].sum()), m - n), "same_as": [],
                   "test": other["test"] if other else len({r["test"] for r in rows})}
            seen[key] = row
            rows.append(row)
    tests = {r["test"]: r["p"] for r in rows}
    adjusted = dict(zip(tests, holm(list(tests.values()))))
    for row in rows:
        row.pop("p")
        row["p_adjusted"] = float(f"{adjusted[row.pop('test')]:.3g}")
        row["differs"] = bool(row["p_adjusted"] < SLICE_ALPHA)
    gap = lambda r: abs(r["text_acc"] - r["rest_acc"])   # noqa: E731
    masks = {(r["column"], r["value"]): next(c.codes == r["code"] for c in columns if c.name == r["column"]) for r in rows}
    # a carrier is above the rest and shows a shortcut of its own (its interval above chance)
    shows = lambda r: r["text_acc_ci"] is not None and r["text_acc_ci"][0] > 0.5   # noqa: E731
    pick = lambda up: _explain_away(sorted((r for r in rows if r["differs"] and (r["text_acc"] > r["rest_acc"]) == up  # noqa: E731
                                            and (shows(r) or not up)), key=gap, reverse=True), masks, right, len(tests))
    carriers = pick(True)[:MAX_CARRIERS]
    outside = ~np.logical_or.reduce([masks[(c["column"], c["value"])] for c in carriers] or [np.zeros(m, dtype=bool)])
    rest = {"n": int(outside.sum()), "text_acc": round(float(right[outside].mean()), 4) if outside.any() else None}
    return {"examined": len(tests), "min_size": MIN_SLICE, "alpha": SLICE_ALPHA, "slices": rows,
            "carriers": carriers, "rest_of_carriers": rest if carriers else None, "below": pick(False)[:MAX_CARRIERS],
            "columns": [c.name for c in columns]}


def _explain_away(ranked: list[dict], masks: dict, right: np.ndarray, tests: int) -> list[dict]:
    """Keep a slice only if it still differs from the rest once the pairs of the slices kept before it
    are set aside (e.g. `judge = human` when most of its pairs are the POVID ones already named);
    the others are recorded on the slice that explains them (`explains`)."""
    kept: list[dict] = []
    taken = np.zeros(len(right), dtype=bool)
    for r in ranked:
        mask = masks[(r["column"], r["value"])]
        inside, outside = mask & ~taken, ~mask & ~taken
        n1, n2 = int(inside.sum()), int(outside.sum())
        alone = (n1 >= MIN_SLICE and n2 >= MIN_SLICE
                 and _two_proportion_p(float(right[inside].sum()), n1, float(right[outside].sum()), n2) * tests < SLICE_ALPHA)
        if kept and not alone:
            kept[_first_overlap(kept, masks, mask)].setdefault("explains", []).append(
                {"column": r["column"], "value": r["value"], "n": r["n"], "text_acc": r["text_acc"]})
            continue
        kept.append(r)
        taken |= mask
    return kept


def _first_overlap(kept: list[dict], masks: dict, mask: np.ndarray) -> int:
    """The kept slice sharing most pairs with `mask`."""
    return int(np.argmax([(masks[(k["column"], k["value"])] & mask).sum() for k in kept]))


@register
class SlicesProbe(Probe):
    """`summary.slices` (module docstring); hands the carrier slices to phrase discovery."""

    name, role = "slices", AUX

    @classmethod
    def selected(cls, cfg) -> bool:
        return True

    def fit(self, ctx, fitted) -> ProbeResult:
        columns = slice_columns(ctx)
        table = slice_table(columns, fitted["text"].margin, ctx.groups, self.cfg.seed)
        by_name = {c.name: c for c in columns}
        carriers = [{"column": r["column"], "value": r["value"], "code": r["code"],
                     "rows": np.flatnonzero(by_name[r["column"]].codes == r["code"])} for r in table["carriers"]]
        return ProbeResult(np.zeros(ctx.m), summary={"slices": table},
                           extra={"columns": columns, "carriers": carriers})
