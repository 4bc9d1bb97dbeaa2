"""`overlap A B -o DIR`: what two datasets share, so an eval set's numbers are not inflated by its
training set (VL-RewardBench draws pairs from RLAIF-V, POVID, RLHF-V and VLFeedback; those share
COCO pictures).

Kinds of match (each row of `overlap.parquet` is one A row and one B row):

    image         the same image bytes
    near_image    a near-identical picture (re-encoded, resized): perceptual hashes at most
                  `--near-distance` bits apart, or two smooth pictures with near-identical
                  thumbnails (`audit.links`); `distance` is the hashes' distance in bits (null
                  where a picture has no hash)
    pair          the same prompt and answers on the same sides (texts normalised)
    swapped_pair  the same prompt and answers with the preference reversed
    response      the same answer (chosen or rejected, either side), at least `--min-chars` long
    prompt        the same specific prompt, at least `--min-chars` long

A prompt or an answer that either dataset uses with more than `audit.folds.TEMPLATE_PICTURES`
different pictures is a template ("Describe this image in detail.") and is not a match. Rows are
compared when they have texts and an image (status `ok` or `duplicate`). A B row is contaminated when it
has a match of one of `--kinds` (all but `prompt` by default); `--exclude` writes B without those rows.

Streams A: B's keys are held (a few dozen bytes a row), A is read twice in batches (template counts
of B's texts, then the matches), and matches are written as they are found.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from audit import schema
from audit.config import IngestConfig, OverlapConfig, to_dict
from audit.folds import TEMPLATE_PICTURES
from audit.io import atomic_path, temp_dir_beside, versions, write_json_atomic
from audit.links import BandIndex, Pictures
from audit.stream import read_batches

log = logging.getLogger(__name__)

KINDS = ("image", "near_image", "pair", "swapped_pair", "response", "prompt")
OVERLAP_JSON, OVERLAP_PARQUET = "overlap.json", "overlap.parquet"
_COLUMNS = ["pair_id", "sample_id", "source", "prompt", "chosen", "rejected", "image_id", "image_phash", "image_thumb",
            "status"]
_COMPARED = (schema.OK, schema.DUPLICATE)


def _norm(col: str):
    """`audit.links.normalise` as a polars expression: NFKC, lower case, whitespace collapsed, trimmed."""
    import polars as pl

    return (pl.col(col).fill_null("").str.normalize("NFKC").str.to_lowercase()
            .str.replace_all(r"\s+", " ").str.strip_chars())


def _key(*cols: str):
    import polars as pl

    return pl.concat_str([pl.col(c) for c in cols], separator="\x00").hash(seed=20250303).reinterpret(signed=True)


def keys_of(batch, min_chars: int, start: int = 0):
    """The comparison keys of a batch of pairs rows (a pyarrow table or polars frame), as a polars
    frame: row (position in its table), image_id, image_phash, image_thumb, prompt_k, chosen_k, rejected_k, pair_k,
    swapped_k; null where a row is not compared or a text is too short to compare on its own.
    Vectorised (polars string kernels and 64-bit hashes), so no Python object per row."""
    import polars as pl

    df = batch if isinstance(batch, pl.DataFrame) else pl.from_arrow(batch)
    df = df.with_columns([pl.lit(None, dtype=pl.String).alias(c) for c in _COLUMNS if c not in df.columns])
    compared = pl.col("status").is_in(list(_COMPARED)).fill_null(False)
    t = df.select(pl.int_range(start, start + df.height, dtype=pl.Int64).alias("row"), compared.alias("cmp"),
                  pl.col("image_id").cast(pl.String), pl.col("image_phash").cast(pl.String),
                  pl.col("image_thumb").cast(pl.String),
                  _norm("prompt").alias("p"), _norm("chosen").alias("c"), _norm("rejected").alias("r"))

    def when(cond, expr, name):
        return pl.when(pl.col("cmp") & cond).then(expr).otherwise(None).alias(name)

    return t.select(
        "row", *(when(pl.lit(True), pl.col(c), c) for c in ("image_id", "image_phash", "image_thumb")),
        when(pl.col("p").str.len_chars() >= min_chars, _key("p"), "prompt_k"),
        when(pl.col("c").str.len_chars() >= min_chars, _key("c"), "chosen_k"),
        when(pl.col("r").str.len_chars() >= min_chars, _key("r"), "rejected_k"),
        when(pl.lit(True), _key("p", "c", "r"), "pair_k"), when(pl.lit(True), _key("p", "r", "c"), "swapped_k"))


def _texts(keys) -> "object":
    """(key, image_id) of a keys frame's prompts and answers, long format."""
    import polars as pl

    return pl.concat([keys.select(pl.col(c).alias("key"), "image_id") for c in ("prompt_k", "chosen_k", "rejected_k")]
                     ).drop_nulls()


def _capped(pairs, cap: int = TEMPLATE_PICTURES + 1):
    """Distinct (key, image_id), at most `cap` images per key (enough to tell a template)."""
    return pairs.unique().group_by("key").head(cap).select("key", "image_id").sort("key", "image_id")


def _pairs_dir(src: Path, out: Path, name: str) -> Path:
    if (src / schema.PAIRS_FILE).is_file() and (src / schema.REPORT_FILE).is_file():
        return src
    from audit.ingest import ingest

    dest = out / "pairs" / name
    ingest(IngestConfig(source=src, out=dest, overwrite=True))
    return dest


def overlap(cfg: OverlapConfig) -> dict:
    """Compare A with B; returns the report (also OUT/overlap.json)."""
    from audit.io import claim_output

    with claim_output(cfg.out, "overlap", [cfg.a, cfg.b], overwrite=cfg.overwrite, resumable=True):
        return _overlap(cfg)


class _Counts:
    """Distinct rows per kind on each side, overall and per source."""

    def __init__(self, b_n: int, b_source: np.ndarray, contaminating: tuple[str, ...]) -> None:
        self.contaminating = contaminating
        self.b_hit = {k: np.zeros(b_n, dtype=bool) for k in KINDS}
        self.b_source = b_source
        self.a_rows = {k: 0 for k in KINDS}
        self.a_any = 0
        self.a_by_source: dict[str, dict[str, int]] = {}
        self.matches = {k: 0 for k in KINDS}

    def add(self, m, a_source: list) -> None:
        import polars as pl

        for kind in KINDS:
            sel = m.filter(pl.col("kind") == kind)
            if sel.height == 0:
                continue
            self.matches[kind] += sel.height
            self.b_hit[kind][sel["b_row"].to_numpy()] = True
            a_rows = sel["a_pos"].unique().to_numpy()
            self.a_rows[kind] += len(a_rows)
            for s in (a_source[i] for i in a_rows):
                d = self.a_by_source.setdefault(s, {k: 0 for k in KINDS})
                d[kind] += 1
        bad = m.filter(pl.col("kind").is_in(list(self.contaminating)))
        self.a_any += bad["a_pos"].n_unique()

    def contaminated(self) -> np.ndarray:
        return np.logical_or.reduce([self.b_hit[k] for k in self.contaminating])


def _overlap(cfg: OverlapConfig) -> dict:
    """B's keys held, A streamed twice: once for which texts are templates, once for the matches."""
    import polars as pl
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    a_dir, b_dir = _pairs_dir(cfg.a, cfg.out, "a"), _pairs_dir(cfg.b, cfg.out, "b")
    a_file, b_file = a_dir / schema.PAIRS_FILE, b_dir / schema.PAIRS_FILE
    bk, b = _b_side(b_file, cfg.min_chars)
    b_pics, b_pos = Pictures.of(bk["image_phash"], bk["image_thumb"])
    b_uniq, b_inv = b_pics.unique() if len(b_pos) else (b_pics, np.zeros(0, dtype=np.int64))
    b_hash = pl.DataFrame({"h": b_inv.astype(np.int64), "b_row": b_pos.astype(np.int64)})
    index = BandIndex(b_uniq)
    a_cols = [c for c in _COLUMNS if c in pq.read_schema(a_file).names]
    templates, a_n = _template_keys(a_file, [c for c in a_cols if c not in ("image_phash", "image_thumb")], bk,
                                    cfg.min_chars)     # pass 1 reads texts and image ids only

    def specific(frame, col):
        return frame.filter(pl.col(col).is_not_null() & ~pl.col(col).is_in(templates.implode()))

    b_resp = pl.concat([specific(bk, c).select("row", pl.col(c).alias("key")) for c in ("chosen_k", "rejected_k")])
    counts = _Counts(b.height, b["source"].to_numpy(), tuple(cfg.kinds.split(",")))
    _write_matches(cfg, a_file, a_cols, bk, b, b_resp, b_hash, index, specific, counts)
    report = _report(cfg, a_dir, b_dir, a_n, b, counts, int(templates.len()))
    if cfg.exclude:
        report["excluded"] = _write_excluded(cfg, b_dir, ~counts.contaminated())
    report.update({"seconds": round(time.perf_counter() - t0, 3), "config": to_dict(cfg), "versions": versions()})
    write_json_atomic(cfg.out / OVERLAP_JSON, report)
    return report


def _b_side(b_file: Path, min_chars: int):
    """B's keys and ids (B is the smaller side, an eval set): the texts are read batch by batch and dropped."""
    import polars as pl
    import pyarrow.parquet as pq

    b_cols = [c for c in _COLUMNS if c in pq.read_schema(b_file).names]
    parts, metas, start = [], [], 0
    for batch in read_batches(b_file, b_cols):
        parts.append(keys_of(batch, min_chars, start))
        metas.append(pl.from_arrow(batch.select(["sample_id", "pair_id", "source", "status"])))
        start += batch.num_rows
    bk = pl.concat(parts) if parts else keys_of(pl.DataFrame({c: [] for c in b_cols}, schema={c: pl.String for c in b_cols}), min_chars)
    b = pl.concat(metas) if metas else pl.DataFrame(schema={c: pl.String for c in ("sample_id", "pair_id", "source", "status")})
    return bk, b


def _template_keys(a_file: Path, a_cols: list[str], bk, min_chars: int):
    """Pass 1 over A: which of B's texts are templates (seen with too many pictures in A or in B); and A's row count."""
    import polars as pl

    b_texts = _capped(_texts(bk))
    wanted = b_texts["key"].unique()
    seen, a_n = b_texts, 0
    for batch in read_batches(a_file, a_cols):
        ak = keys_of(batch, min_chars, a_n)
        a_n += batch.num_rows
        seen = _capped(pl.concat([seen, _capped(_texts(ak).filter(pl.col("key").is_in(wanted.implode())))]))
    per_key = seen.group_by("key").agg(pl.col("image_id").n_unique().alias("pictures"))
    return per_key.filter(pl.col("pictures") > TEMPLATE_PICTURES)["key"], a_n


def _write_matches(cfg: OverlapConfig, a_file: Path, a_cols: list[str], bk, b, b_resp, b_hash, index: BandIndex,
                   specific, counts: "_Counts") -> None:
    """Pass 2 over A: every match, batch by batch, into OVERLAP_PARQUET (atomically), counted in `counts`."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_schema = pa.schema([("a_sample_id", pa.string()), ("a_pair_id", pa.string()), ("a_source", pa.string()),
                            ("b_sample_id", pa.string()), ("b_pair_id", pa.string()), ("b_source", pa.string()),
                            ("kind", pa.string()), ("distance", pa.int64())])
    b_meta = b.select(pl.col("sample_id").alias("b_sample_id"), pl.col("pair_id").alias("b_pair_id"),
                      pl.col("source").alias("b_source")).with_row_index("b_row").with_columns(pl.col("b_row").cast(pl.Int64))
    with atomic_path(cfg.out / OVERLAP_PARQUET) as tmp:
        writer = pq.ParquetWriter(tmp, out_schema, compression="zstd")
        try:
            for batch in read_batches(a_file, a_cols):
                ak = keys_of(batch, cfg.min_chars, 0)
                a_meta = pl.from_arrow(batch).select(pl.col("sample_id").alias("a_sample_id"),
                                                     pl.col("pair_id").alias("a_pair_id"), pl.col("source").alias("a_source"))
                m = _matches(ak, bk, b_resp, b_hash, index, specific, cfg.near_distance)
                if m.height:
                    m = m.with_columns(pl.col("a_pos").cast(pl.Int64), pl.col("b_row").cast(pl.Int64))
                    counts.add(m, a_meta["a_source"].to_list())
                    rows = pl.concat([a_meta[m["a_pos"].to_numpy()], b_meta[m["b_row"].to_numpy()].drop("b_row"),
                                      m.select("kind", "distance")], how="horizontal")
                    writer.write_table(rows.select(out_schema.names).to_arrow().cast(out_schema))
        finally:
            writer.close()


def _report(cfg: OverlapConfig, a_dir: Path, b_dir: Path, a_n: int, b, counts: "_Counts", templates: int) -> dict:
    contaminated = counts.contaminated()
    by_source = {s: (b["source"] == s).to_numpy() for s in sorted(set(b["source"].to_list()))}
    return {
        "a": str(cfg.a), "b": str(cfg.b), "a_pairs_dir": str(a_dir), "b_pairs_dir": str(b_dir),
        "a_rows": a_n, "b_rows": b.height,
        "b_compared": int(b["status"].is_in(list(_COMPARED)).sum()),
        "kinds": {k: {"matches": counts.matches[k], "b_rows": int(counts.b_hit[k].sum()), "a_rows": counts.a_rows[k]}
                  for k in KINDS},
        "contaminated": {"b_rows": int(contaminated.sum()), "b_share": round(float(contaminated.mean()), 4) if b.height else 0.0,
                         "a_rows": counts.a_any, "kinds": cfg.kinds.split(",")},
        "b_by_source": {s: {"rows": int(sel.sum()), **{k: int(counts.b_hit[k][sel].sum()) for k in KINDS},
                            "contaminated": int(contaminated[sel].sum())} for s, sel in by_source.items()},
        "a_by_source": counts.a_by_source,
        "templates_skipped": templates,
        "near_distance": cfg.near_distance, "min_chars": cfg.min_chars,
        "excluded": None,
    }


def _matches(ak, bk, b_resp, b_hash, index: BandIndex, specific, near_distance: int):
    """The matches of one batch of A against B: a_pos (row in the batch), b_row, kind, distance."""
    import polars as pl

    parts = []

    def add(frame, kind, distance=0):
        if frame.height:
            parts.append(frame.select(pl.col("a_pos").cast(pl.Int64), pl.col("b_row").cast(pl.Int64),
                                      pl.lit(kind).alias("kind"),
                                      (pl.col("distance") if isinstance(distance, str) else pl.lit(distance)).cast(pl.Int64).alias("distance")))

    a = ak.with_row_index("a_pos").with_columns(pl.col("a_pos").cast(pl.Int64))
    bb = bk.rename({"row": "b_row"})
    add(a.drop_nulls("image_id").join(bb.drop_nulls("image_id").select("image_id", "b_row"), on="image_id"), "image")
    # Near-identical pictures: A's pictures looked up in B's index; exact bytes are `image` already.
    pics, pos = Pictures.of(a["image_phash"], a["image_thumb"])
    if len(pos):
        q, x, d = index.query(pics, near_distance)
        if len(q):
            near = pl.DataFrame({"a_pos": pos[q].astype(np.int64), "h": x.astype(np.int64),
                                 "distance": pl.Series(d.astype(np.int64)).replace(-1, None)})
            near = near.join(b_hash, on="h").join(a.select("a_pos", "image_id"), on="a_pos")
            near = near.join(bb.select("b_row", pl.col("image_id").alias("b_image")), on="b_row")
            add(near.filter(pl.col("image_id").is_null() | (pl.col("image_id") != pl.col("b_image"))), "near_image", "distance")
    add(a.drop_nulls("pair_k").join(bb.drop_nulls("pair_k").select("pair_k", "b_row"), on="pair_k"), "pair")
    add(a.drop_nulls("pair_k").join(bb.drop_nulls("swapped_k").select(pl.col("swapped_k").alias("pair_k"), "b_row"),
                                    on="pair_k"), "swapped_pair")
    a_resp = pl.concat([specific(a, c).select("a_pos", pl.col(c).alias("key")) for c in ("chosen_k", "rejected_k")])
    add(a_resp.join(b_resp.rename({"row": "b_row"}), on="key").unique(["a_pos", "b_row"]), "response")
    add(specific(a, "prompt_k").join(specific(bb, "prompt_k").select("prompt_k", "b_row"), on="prompt_k"), "prompt")
    if not parts:
        return pl.DataFrame(schema={"a_pos": pl.Int64, "b_row": pl.Int64, "kind": pl.String, "distance": pl.Int64})
    return pl.concat(parts).sort("a_pos", "b_row", "kind")


def _write_excluded(cfg: OverlapConfig, b_dir: Path, keep: np.ndarray) -> dict:
    """B's rows that share nothing contaminating with A, written back in B's own format (each kept
    record as it was read, `audit.sources.writeback`) to OUT/excluded. The copy is built in a fresh
    folder beside it and then takes its place: nothing of an earlier run's copy is kept."""
    import json
    import shutil

    import polars as pl

    from audit.sources.writeback import write_back

    table = pl.read_parquet(b_dir / schema.PAIRS_FILE)
    fmt = json.loads((b_dir / schema.REPORT_FILE).read_text(encoding="utf-8")).get("format", "pairs")
    writable = table["status"].is_in(list(_COMPARED)).to_numpy()
    idx = np.flatnonzero(keep & writable)
    dest = cfg.out / "excluded"
    stage = temp_dir_beside(dest)
    try:
        done = write_back(table, idx, writable, b_dir, stage)
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.exists():
            shutil.rmtree(dest)
        stage.rename(dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    not_written = table.filter(pl.Series(~writable)).group_by("status").len().sort("status")
    return {"path": str(dest / Path(done["path"]).relative_to(stage)), "format": fmt, "rows_in": table.height,
            "rows_out": int(len(idx)), "records_out": done["records_out"], "removed": int((~keep & writable).sum()),
            "not_written": dict(not_written.iter_rows())}
