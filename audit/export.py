"""`export`: an audited table -> a reweighted, pruned or resampled dataset in the format a trainer reads.

Rows are streamed to the writer (images read from the pairs folder one at a time), the scheme can be
re-chosen without re-scoring, and the report accounts for every row: scored pairs in, unscored rows
excluded (by status), rows out, distinct pairs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from audit import schema
from audit.config import ExportConfig, to_dict
from audit.errors import FormatError, SourceError
from audit.images import image_roots, resolve_image
from audit.io import versions, write_json_atomic
from audit.schemes import check_scheme, sfc_kind_of, weights
from audit.sources.writeback import write_back

log = logging.getLogger(__name__)

EXPORT_REPORT = "export_report.json"
_ARROW_KIND = {"String": "string", "Utf8": "string", "Float64": "float64", "Float32": "float64", "Int64": "int64",
               "Int32": "int64", "Boolean": "bool"}
# Columns the writers produce themselves, or that only make sense inside a pairs folder.
_NOT_EXTRA = {"prompt", "chosen", "rejected", "image_path", "status", "status_detail", "extra_json", "source_record",
              "source_item", "_row"}


@dataclass
class ExportPair:
    """What the format writers need of a pair (the same shape as a synthetic pair)."""

    sample_id: str
    image_id: str
    ext: str
    image_png: bytes
    prompt: str
    chosen: str
    rejected: str
    truth: dict = field(default_factory=dict)

    @property
    def image_name(self) -> str:
        return f"{self.image_id}.{self.ext}"


def load_audit(audit_dir: Path):
    """The audited table and summary of an audit folder, with a clear error when it is not one."""
    import polars as pl

    table, summary = audit_dir / "audited.parquet", audit_dir / "summary.json"
    if not table.is_file() or not summary.is_file():
        raise SourceError(f"`{audit_dir}` is not an audit folder (no audited.parquet / summary.json); "
                          "run `shortcut-audit score` first")
    return pl.read_parquet(table), json.loads(summary.read_text(encoding="utf-8"))


def select(ok_weight: np.ndarray, is_shortcut: np.ndarray, pair_ids: list[str], cfg: ExportConfig,
           keep: np.ndarray | None = None) -> np.ndarray:
    """Row indices (into the scored rows) that the mode exports, in output order; `keep` (the pairs
    tagged `keep`) are never pruned."""
    n = len(ok_weight)
    keep = np.zeros(n, bool) if keep is None else np.asarray(keep, bool)
    if cfg.mode == "weight":
        return np.arange(n)
    if cfg.mode == "prune":
        if cfg.prune_fraction is None:
            return np.where(~is_shortcut | keep)[0]
        order = sorted((i for i in range(n) if not keep[i]), key=lambda i: (ok_weight[i], pair_ids[i]))  # lowest first
        drop = set(order[: int(round(cfg.prune_fraction * n))])
        return np.array([i for i in range(n) if i not in drop], dtype=np.int64)
    size = cfg.size or n
    p = ok_weight / ok_weight.sum()
    return np.random.default_rng(cfg.seed).choice(n, size=size, replace=True, p=p)


def write_rows(frame, idx: np.ndarray, pairs_dir: Path, writer_name: str, out: Path, *, container: str = "parquet",
               seed: int = 0, extra: dict[str, np.ndarray] | None = None) -> Path:
    """Write rows `idx` of a pairs (or audited) frame with the writer of a source format, streaming:
    each image is read from the pairs folder when its row is written. The frame's own scalar columns
    travel as extra columns (`_NOT_EXTRA` aside); `extra`: columns to add (float weights, a boolean flag)."""
    from audit.sources import get_format

    fmt = get_format(writer_name)
    roots = image_roots(pairs_dir)
    extra = extra or {}
    extra_cols = [c for c in frame.columns if c not in _NOT_EXTRA
                  and _ARROW_KIND.get(str(frame.schema[c]).split("(")[0])]
    spec = {c: _ARROW_KIND[str(frame.schema[c]).split("(")[0]] for c in extra_cols}
    if "src_image_path" in spec and writer_name in ("rlaif-v", "rlhf-v"):
        spec.pop("src_image_path")   # the writer restores the source's own `image_path`
    spec.update({c: "bool" if v.dtype == bool else "float64" for c, v in extra.items()})
    cols = {c: frame[c].to_list() for c in set(extra_cols) | {"prompt", "chosen", "rejected", "image_path", "image_id", "sample_id"}}

    def pairs() -> Iterator[ExportPair]:
        for i in idx:
            i = int(i)
            path = cols["image_path"][i]
            data = resolve_image(pairs_dir, path, allowed_roots=roots).read_bytes()
            truth = {c: cols[c][i] for c in extra_cols if c in spec}
            truth.update({c: bool(v[i]) if v.dtype == bool else float(v[i]) for c, v in extra.items()})
            if "src_image_path" in cols and writer_name in ("rlaif-v", "rlhf-v"):
                truth["image_path"] = cols["src_image_path"][i]
            yield ExportPair(sample_id=str(cols["sample_id"][i]), image_id=cols["image_id"][i],
                             ext=Path(path).suffix.lstrip(".") or "png", image_png=data, prompt=cols["prompt"][i],
                             chosen=cols["chosen"][i], rejected=cols["rejected"][i], truth=truth)

    out.mkdir(parents=True, exist_ok=True)
    return fmt.write(pairs(), out, container=container, seed=seed, extra_spec=spec)


def _apply_tags(cfg: ExportConfig, ok, weight: np.ndarray, summary: dict, whole):
    """With `--tags`: drop the `exclude` pairs, swap the `swap` pairs (chosen and rejected, and every column
    that depends on the side: `audit.tags.swap_pairs`; their weight becomes the mean of the others': the
    audit weighed them under the other label) and add a `tag` column. Returns the rows, their weights and
    what the tags did (None without `--tags`). `whole`: the whole audit (tags name its scored pairs)."""
    import polars as pl

    from audit.tags import read_tags, swap_pairs, tag_column, tag_counts

    if not cfg.tags:
        return ok, weight, None
    tags = read_tags(cfg.audit)
    ok = ok.with_columns(tag_column(tags))
    matched = int(whole.filter(pl.col("status") == schema.OK)["pair_id"].is_in(list(tags)).sum())
    if tags and not matched:
        raise FormatError(f"none of the {len(tags)} tags in `{cfg.audit / 'tags.parquet'}` names a scored pair of this "
                          f"audit (its pair ids look like `{next(iter(tags))}`, the audit's like `{whole['pair_id'][0]}`): "
                          "were they set on another audit? Tag the pairs again in the app, or export without `--tags`")
    if matched < len(tags):
        log.warning("%d of the %d tags name no scored pair of this audit and are not applied", len(tags) - matched, len(tags))
    excluded = (ok["tag"] == "exclude").fill_null(False).to_numpy()
    ok, weight = ok.filter(pl.Series(~excluded)), weight[~excluded]
    swap = (ok["tag"] == "swap").fill_null(False).to_numpy()
    cues = {f"cue_{c['name']}" for c in summary.get("cues") or [] if isinstance(c, dict) and "name" in c}
    ok = swap_pairs(ok, swap, threshold=float((summary.get("config") or {}).get("threshold", 0.8)), cue_columns=cues)
    if swap.any():
        weight = weight.copy()
        weight[swap] = float(weight[~swap].mean()) if (~swap).any() else 1.0
    return ok, weight, {"file_tags": tag_counts(tags), "in_file": len(tags), "not_applied": len(tags) - matched,
                        "excluded": int(excluded.sum()), "swapped": int(swap.sum()),
                        "kept": int((ok["tag"] == "keep").fill_null(False).sum()),
                        "review": int((ok["tag"] == "review").fill_null(False).sum())}


def _check_outside_audit(out: Path, audit: Path) -> None:
    """An export inside the audit folder would be replaced by a rescore (or taken for the pairs table it
    keeps in `pairs/`); only the app's `app_exports/` there is kept through one."""
    from audit.errors import ConfigError

    r_out, r_audit = Path(out).resolve(), Path(audit).resolve()
    if r_audit in r_out.parents and r_audit / schema.APP_EXPORTS not in r_out.parents:
        raise ConfigError(f"`-o {out}` is inside the audit folder `{audit}`, whose files a rescore replaces (its "
                          "`pairs/` holds the pairs table it scores); pass a folder outside it, or one under "
                          f"`{Path(audit) / schema.APP_EXPORTS}` (kept through a rescore)")


def _swap_flags(cfg: ExportConfig, ok, idx: np.ndarray) -> tuple[dict[str, np.ndarray], dict | None]:
    """With `--flag-swaps`: the `likely_swap` column over `ok` (the rows as written: after `--tags` swaps)
    and what the report records of it (the rule and threshold, and how many exported rows it flags)."""
    if not cfg.flag_swaps:
        return {}, None
    from audit.swaps import LIKELY_SWAP, SWAP_THRESHOLD, likely_swap

    threshold = SWAP_THRESHOLD if cfg.swap_threshold is None else cfg.swap_threshold
    flag = ok.select(likely_swap(threshold)).to_series().to_numpy().astype(bool)
    return {LIKELY_SWAP: flag}, {"column": LIKELY_SWAP, "threshold": threshold, "rule": f"1 - mm_prob >= {threshold:g}",
                                 "rows_flagged": int(flag[idx].sum()), "pairs_flagged": int(flag[np.unique(idx)].sum())}


def _write(cfg: ExportConfig, whole, ok, idx: np.ndarray, pairs_dir: Path, fields: dict) -> tuple[str, Path, int]:
    """Write rows `idx` of `ok` (with `fields` over `ok`: weights, flags); (format written, path, records written).
    `--format source` writes the source's own records back (`audit.sources.writeback`): the scored
    pairs of the whole audit that are not written are kept out of them."""
    if cfg.format == "source":
        swap = (ok["tag"] == "swap").fill_null(False).to_numpy()[idx] if cfg.tags else None
        done = write_back(whole, ok["_row"].to_numpy()[idx], (whole["status"] == schema.OK).to_numpy(), pairs_dir,
                          cfg.out, swap=swap, fields={k: v[idx] for k, v in fields.items()})
        return done["format"], Path(done["path"]), done["records_out"]
    writer_name = {"parquet": "pairs", "hf": "pairs"}.get(cfg.format, cfg.format)
    container = "hf" if cfg.format == "hf" or (cfg.format == "trl" and cfg.container == "hf") else "parquet"
    return writer_name, write_rows(ok, idx, pairs_dir, writer_name, cfg.out, container=container, seed=cfg.seed,
                                   extra=fields), len(idx)


def export(cfg: ExportConfig, only: set[str] | None = None) -> dict:
    """Run an export; `only` restricts it to these pair ids (the app's current filter)."""
    from audit.io import check_output, claim_output

    df, summary = load_audit(cfg.audit)
    pairs_dir = schema.pairs_dir_of(cfg.audit, summary)
    # `-o AUDIT/../pairs` would replace the pairs table; an earlier export's files would linger beside these
    check_output(cfg.out, [cfg.audit, pairs_dir], "export")
    _check_outside_audit(cfg.out, cfg.audit)
    if cfg.flag_swaps:
        from audit.swaps import require_mm_side

        require_mm_side(summary, cfg.audit)
    with claim_output(cfg.out, "export", [cfg.audit, pairs_dir], overwrite=cfg.overwrite):
        return _export(cfg, only, df, summary, pairs_dir)


def _export(cfg: ExportConfig, only: set[str] | None, df, summary: dict, pairs_dir: Path) -> dict:
    import polars as pl

    df = df.with_row_index("_row")     # position in the whole audit: what a source copy leaves out
    whole = df
    if only is not None:
        df = df.filter(pl.col("pair_id").is_in(list(only)))
    ok_mask = (df["status"] == schema.OK).to_numpy()
    excluded = dict(df.filter(~pl.Series(ok_mask)).group_by("status").len().sort("status").iter_rows())
    ok = df.filter(pl.Series(ok_mask))
    if ok.height == 0:
        if summary.get("text_only"):
            raise FormatError(f"`{cfg.audit}` is a text-only audit whose pairs have no usable image, and an export "
                              "carries the pictures; use the `weight` column of its audited.parquet (by `pair_id`), or "
                              "re-audit once the images are in place")
        raise FormatError(f"`{cfg.audit}` has no scored (`ok`) pairs to export")
    weight = ok["weight"].to_numpy().astype(np.float64)
    if cfg.scheme is not None:
        check_scheme(cfg.scheme, sfc_kind_of(summary))
        weight = weights(cfg.scheme, np.ones(ok.height, bool), text_prob=ok["text_prob"].to_numpy(),
                         sfc=ok["sfc"].to_numpy(), clip=cfg.clip, ipw_floor=cfg.ipw_floor, jtt_factor=cfg.jtt_factor)
    ok, weight, tagged = _apply_tags(cfg, ok, weight, summary, whole)
    if ok.height == 0:
        raise FormatError(f"every scored pair of `{cfg.audit}` is tagged `exclude`: nothing to export")
    idx = select(weight, ok["is_shortcut"].to_numpy(), ok["pair_id"].to_list(), cfg,
                 keep=(ok["tag"] == "keep").fill_null(False).to_numpy() if cfg.tags else None)

    out_weight = weight if cfg.mode == "weight" else np.ones(ok.height)
    # A subset (the app's filter, a scheme recomputed here) keeps mean weight 1 over what is exported: a
    # weighted trainer then runs at its learning rate, not at a fraction of it.
    exported_mean = float(out_weight[idx].mean()) if len(idx) else 1.0
    renormalised = cfg.mode == "weight" and exported_mean > 0 and abs(exported_mean - 1.0) > 1e-9
    if renormalised:
        out_weight = out_weight / exported_mean
    fields, swaps = _swap_flags(cfg, ok, idx)
    writer_name, path, records_out = _write(cfg, whole, ok, idx, pairs_dir,
                                            {"weight": out_weight, "audit_weight": weight, **fields})
    rows_out = int(len(idx))
    report = {
        "audit": str(cfg.audit), "mode": cfg.mode, "format": cfg.format, "written_as": writer_name, "path": str(path),
        "records_out": records_out,
        "scheme": cfg.scheme or summary.get("scheme"), "rows_in": int(df.height), "scored": int(ok.height),
        "excluded_unscored": excluded, "rows_out": rows_out, "distinct_pairs": int(len(np.unique(idx))),
        "dropped": int(ok.height - len(np.unique(idx))) if cfg.mode == "prune" else 0,
        "weights": {"mean": float(out_weight[idx].mean()), "min": float(out_weight[idx].min()),
                    "max": float(out_weight[idx].max()),
                    "renormalised_from_mean": exported_mean if renormalised else None},
        "audit_weights": {"mean": float(weight.mean()), "min": float(weight.min()), "max": float(weight.max())},
        "tags": tagged, "likely_swaps": swaps,
        "config": to_dict(cfg), "versions": versions(),
    }
    write_json_atomic(cfg.out / EXPORT_REPORT, report)
    return report
