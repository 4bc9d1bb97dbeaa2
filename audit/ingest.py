"""`ingest`: any supported source -> the canonical pairs table (pairs.parquet + images/ + report).

Streams: records are read batch by batch, rows written batch by batch, images checked once and
stored once by content hash; memory stays flat in the dataset size. Every source record ends up as
a row with a `status` (rows in = rows out), except comparisons of multi-response sources that
make no pair (ties, unparsable ratings), which are counted in the report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from audit import schema
from audit.config import IngestConfig, to_dict
from audit.errors import AuditError, FormatError, SourceError
from audit.images import ImageStore
from audit.io import atomic_path, versions, write_json_atomic
from audit.links import Pictures, text_key
from audit.sources import columns_hint, detect_format, get_format
from audit.sources.base import BadRecord, NotPaired, RawPair, SourceFormat, strip_image_token
from audit.sources.readers import SourceFiles, iter_file_records, iter_records, locate
from audit.sources.records import RECORDS_FILE, RecordsWriter, describe

log = logging.getLogger(__name__)

_DETECT_SAMPLE = 50


def _h64(*parts: str) -> bytes:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.digest()


def _clean(text: str) -> str:
    """Replace lone surrogates (possible in JSON) so the text can be stored as UTF-8."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class Dedup:
    """Counts earlier occurrences of 64-bit keys: a sorted numpy array of the keys seen (8 bytes a
    pair, no Python set), a dict only for keys seen more than once, and a small pending batch."""

    def __init__(self, flush_every: int = 65536) -> None:
        self.keys = np.empty(0, dtype=np.uint64)
        self.repeats: dict[int, int] = {}     # key -> count, for keys in `keys` seen more than once
        self.pending: dict[int, int] = {}     # keys since the last merge -> count
        self.flush_every = flush_every

    def _known(self, key: int) -> int:
        if self.keys.size:
            pos = int(np.searchsorted(self.keys, np.uint64(key)))
            if pos < self.keys.size and int(self.keys[pos]) == key:
                return self.repeats.get(key, 1)
        return 0

    def seen_before(self, key: int) -> int:
        """How many times `key` was seen before this call (and records this one)."""
        n = self.pending.get(key, 0) + self._known(key)
        self.pending[key] = self.pending.get(key, 0) + 1
        if len(self.pending) >= self.flush_every:
            self._flush()
        return n

    def _flush(self) -> None:
        fresh = []
        for key, count in self.pending.items():
            known = self._known(key)
            if known:
                self.repeats[key] = known + count
            else:
                fresh.append(key)
                if count > 1:
                    self.repeats[key] = count
        new = np.sort(np.fromiter(fresh, dtype=np.uint64, count=len(fresh)))
        # Merge two sorted arrays in O(n): one new array, no re-sort of what was there.
        self.keys = np.insert(self.keys, np.searchsorted(self.keys, new), new)
        self.pending = {}


class SameContent:
    """Whether an earlier row had the same normalised texts and the same picture (`audit.links.Pictures.near`:
    a near-identical hash or, for a smooth picture, thumbnail): per row 8 bytes of text key and 41 of
    hash (plus 192 of thumbnail for a smooth picture), in sorted numpy arrays merged batch by batch (no
    Python object per row)."""

    def __init__(self, flush_every: int = 65536) -> None:
        self.keys = np.empty(0, dtype=np.uint64)
        self.pics = Pictures.concat([])
        self.pending: dict[int, list] = {}
        self.n_pending = 0
        self.flush_every = flush_every

    def seen_before(self, key: int, pic) -> bool:
        """`pic`: the row's picture (a one-row `Pictures`), or None when it has neither hash nor thumbnail
        (then `key` holds the image's id: an earlier row under it has the same bytes)."""
        lo, hi = np.searchsorted(self.keys, np.uint64(key), "left"), np.searchsorted(self.keys, np.uint64(key), "right")
        cands = Pictures.concat([self.pics.take(np.arange(lo, hi)), *self.pending.get(key, [])])
        if pic is None:
            dup = len(cands) > 0
        else:
            dup = bool(cands.near(np.arange(len(cands)), pic, np.zeros(len(cands), dtype=np.int64))[0].any())
        if not dup:      # a copy adds nothing new to compare against
            self.pending.setdefault(key, []).append(pic if pic is not None else Pictures.one(None, None))
            self.n_pending += 1
            if self.n_pending >= self.flush_every:
                self._flush()
        return dup

    def _flush(self) -> None:
        keys = np.array([k for k, ps in self.pending.items() for _ in ps], dtype=np.uint64)
        new = Pictures.concat([p for ps in self.pending.values() for p in ps])
        at = np.searchsorted(self.keys, keys)
        self.keys = np.insert(self.keys, at, keys)
        order = np.insert(np.arange(len(self.pics)), at, len(self.pics) + np.arange(len(new)))
        self.pics = Pictures.concat([self.pics, new]).take(order)
        self.pending, self.n_pending = {}, 0


def _infer_type(values: list[Any]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "string"
    if all(isinstance(v, bool) for v in vals):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63 for v in vals):
        return "int64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return "float64"
    return "string"


def _fits(v: Any, kind: str) -> bool:
    if v is None:
        return True
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "int64":
        return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63
    if kind == "float64":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return True


def _as_text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return None if v is None else _clean(v)
    if isinstance(v, (bytes, bytearray)):
        return f"<{len(v)} bytes>"
    return _clean(json.dumps(v, ensure_ascii=False, default=str))


class PairsWriter:
    """Buffers rows and writes them as Parquet batches; the source's own columns follow the
    canonical ones with types inferred from the first batch (values that do not fit, and keys
    first seen later, go to `extra_json`)."""

    def __init__(self, path: Path, batch_rows: int) -> None:
        self.path, self.batch_rows = path, batch_rows
        self.rows: list[dict] = []
        self.extras: list[dict] = []
        self.extra_types: dict[str, str] | None = None
        self.writer = None
        self.schema = None
        self.n = 0

    def add(self, row: dict, extra: dict) -> None:
        # Every string that reaches Parquet must be valid UTF-8: ids, paths, details and the source's own
        # column names can carry lone surrogates from a damaged JSON file, not only the texts.
        self.rows.append({k: _clean(v) if isinstance(v, str) else v for k, v in row.items()})
        self.extras.append({_clean(str(k)): v for k, v in extra.items()})
        if len(self.rows) >= self.batch_rows:
            self.flush()

    def _start(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys: dict[str, list] = {}
        for e in self.extras:
            for k, v in e.items():
                keys.setdefault(k, []).append(v)
        self.extra_types = {k: _infer_type(v) for k, v in keys.items()}
        fields = list(schema.PAIRS_SCHEMA)
        arrow = {"bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}
        fields += [pa.field(k, arrow[t]) for k, t in self.extra_types.items()]
        fields.append(pa.field(schema.EXTRA_JSON, pa.string()))
        self.schema = pa.schema(fields)
        self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")

    def flush(self) -> None:
        import pyarrow as pa

        if self.writer is None:
            self._start()
        if not self.rows:
            return
        assert self.extra_types is not None
        cols: dict[str, list] = {name: [r.get(name) for r in self.rows] for name in schema.PAIRS_COLUMNS}
        for k, kind in self.extra_types.items():
            cols[k] = []
        leftovers = []
        for e in self.extras:
            left = {}
            for k, kind in self.extra_types.items():
                v = e.get(k)
                if _fits(v, kind):
                    cols[k].append(_as_text(v) if kind == "string" else v)
                else:
                    cols[k].append(None)
                    left[k] = v
            for k, v in e.items():
                if k not in self.extra_types:
                    left[k] = v
            leftovers.append(_as_text(left) if left else None)
        cols[schema.EXTRA_JSON] = leftovers
        self.writer.write_table(pa.Table.from_pydict(cols, schema=self.schema))
        self.n += len(self.rows)
        self.rows, self.extras = [], []

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


def _text_status(raw: RawPair) -> tuple[str, str | None]:
    for name in ("prompt", "chosen", "rejected"):
        v = getattr(raw, name)
        if v is None:
            return schema.MISSING_FIELD, f"`{name}` is missing"
        if not isinstance(v, str):
            return schema.BAD_TEXT, f"`{name}` is a {type(v).__name__}, expected text"
    if not raw.chosen.strip() or not raw.rejected.strip():
        side = "chosen" if not raw.chosen.strip() else "rejected"
        return schema.EMPTY_RESPONSE, f"`{side}` is empty"
    if raw.chosen.strip() == raw.rejected.strip():
        return schema.IDENTICAL_RESPONSES, "`chosen` and `rejected` are the same text"
    return schema.OK, None


class _Run:
    """The state of one ingest: turns records into table rows (and keeps the records, for write-back)."""

    def __init__(self, fmt: SourceFormat, src: SourceFiles, store: ImageStore, root: Path, explicit: bool) -> None:
        self.fmt, self.src, self.store, self.root = fmt, src, store, root
        self.explicit = explicit    # `--format` given: a record of another format is read as this one
        self.dedup = Dedup()        # exact content: numbers repeated rows for a stable, unique pair_id
        self.same = SameContent()   # normalised texts and near-identical picture: marks later copies `duplicate`
        self.status_counts: Counter[str] = Counter()
        self.not_paired: Counter[str] = Counter()

    def add(self, index: int, file: int, raw: dict | BadRecord, rec: dict | BadRecord, writer: "PairsWriter",
            records: RecordsWriter) -> None:
        """One source record (`raw` as read, `rec` with `--columns` applied): its rows, and the record kept."""
        if isinstance(rec, BadRecord):
            writer.add(*self.row(RawPair(f"row{index}", status=schema.BAD_ROW, detail=f"{rec.where}: {rec.detail}"),
                                 f"r{index}", index, 0))
            return
        fmt = self.fmt
        try:
            items = list(fmt.to_pairs(rec, index))
        except Exception as e:  # a reader bug on one odd record must not kill the run
            log.debug("record %d: %s", index, e, exc_info=True)
            items = [RawPair(fmt.sample_id(rec, index, "id"), status=schema.BAD_ROW,
                             detail=f"record does not fit format `{fmt.name}` ({type(e).__name__}: {e})")]
        if fmt.name != "vlfeedback" and not items:
            items = [RawPair(f"row{index}", status=schema.BAD_ROW, detail="record produced no pair")]
        picture: tuple = (None, None)
        for k, item in enumerate(items):
            if isinstance(item, NotPaired):
                self.not_paired[item.reason] += 1
                continue
            if item.status is None and not self.explicit and not fmt.detect(rec):
                other = _other_format(rec)
                if other is not None:
                    item.status, item.detail = schema.BAD_ROW, (
                        f"record looks like format `{other}`, not `{fmt.name}`: the file mixes formats")
            row, extra = self.row(item, f"r{index}.{k}", index, k)
            writer.add(row, extra)
            if picture[0] is None and item.image is not None:
                picture = (item.image, row["image_id"])
        if any(isinstance(item, RawPair) for item in items):
            records.add(index, file, raw, *picture)

    def row(self, raw: RawPair, where: str, record: int, item: int) -> tuple[dict, dict]:
        extra = dict(raw.extra)
        source = extra.pop("source", None) if self.src.is_pairs_dir else None
        for k in [k for k in extra if k in schema.PAIRS_COLUMNS or k == schema.EXTRA_JSON]:
            extra[f"src_{k}"] = extra.pop(k)   # never shadow a canonical column
        raw.prompt = strip_image_token(raw.prompt)
        for name in ("prompt", "chosen", "rejected"):
            v = getattr(raw, name)
            if isinstance(v, str):
                setattr(raw, name, _clean(v))
        status, detail = (raw.status, raw.detail) if raw.status else _text_status(raw)
        img = self.store.add(raw.image, self.root) if raw.image is not None or status == schema.OK else None
        if img is not None and status == schema.OK and img.status != schema.OK:
            status, detail = img.status, img.detail
        prompt = raw.prompt if isinstance(raw.prompt, str) else ""
        image_id = img.image_id if img is not None else None
        phash, thumb = (img.phash, img.thumb) if img is not None and img.status == schema.OK else (None, None)
        if status == schema.OK:
            key = _h64(prompt, raw.chosen, raw.rejected, image_id or "")
            seen = self.dedup.seen_before(int.from_bytes(key, "big"))
            same = int(text_key(prompt, raw.chosen, raw.rejected, "" if phash or thumb else f"id:{image_id}"), 16)
            if self.same.seen_before(same, Pictures.one(phash, thumb) if phash or thumb else None):
                status, detail = schema.DUPLICATE, ("same prompt, responses and image as an earlier row" if seen else
                                                    "same prompt, responses and picture as an earlier row (up to "
                                                    "case, spacing or the picture's encoding)")
        else:
            # Rows that cannot be used are never duplicates of each other: key them by position.
            key = _h64("row", where, str(raw.sample_id))
            seen = self.dedup.seen_before(int.from_bytes(key, "big"))
        pair_id = hashlib.blake2b(key + seen.to_bytes(4, "big"), digest_size=8).hexdigest()
        self.status_counts[status] += 1
        margin = raw.margin if isinstance(raw.margin, (int, float)) and math.isfinite(raw.margin) else None
        return {
            "pair_id": pair_id, "sample_id": str(raw.sample_id), "source": source or self.fmt.name,
            "prompt": raw.prompt if isinstance(raw.prompt, str) else None,
            "chosen": raw.chosen if isinstance(raw.chosen, str) else None,
            "rejected": raw.rejected if isinstance(raw.rejected, str) else None,
            "image_path": img.path if img is not None else None, "image_id": image_id, "image_phash": phash,
            "image_thumb": thumb,
            "prompt_id": hashlib.blake2b(prompt.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest(),
            "margin": margin, "status": status, "status_detail": detail, "source_record": record, "source_item": item,
        }, extra


def _rename(rec: dict, mapping: dict[str, str]) -> dict:
    return {mapping.get(k, k): v for k, v in rec.items()} if mapping else rec


def _records(src: SourceFiles, mapping: dict[str, str], limit: int | None) -> Iterator[tuple]:
    """(file index, record as read, record with `--columns` applied) for each source record."""
    for i, (file, rec) in enumerate(iter_file_records(src)):
        if limit is not None and i >= limit:
            return
        yield file, rec, (rec if isinstance(rec, BadRecord) else _rename(rec, mapping))


def _check_mapping(src: SourceFiles, mapping: dict[str, str], limit: int | None) -> None:
    """Every `--columns CANON=SRC` must name a column the source has (a typo used to be ignored)."""
    if not mapping:
        return
    seen: set[str] = set()
    for i, rec in enumerate(iter_records(src)):
        if isinstance(rec, dict):
            seen.update(rec)
        if i + 1 >= min(_DETECT_SAMPLE, limit or _DETECT_SAMPLE):
            break
    missing = [s for s in mapping if s not in seen]
    if missing:
        cols = ", ".join(f"`{k}`" for k in list(seen)[:20])
        raise FormatError(f"`--columns`: the source has no column {', '.join(f'`{m}`' for m in missing)} "
                          f"(mapped to `{mapping[missing[0]]}`; columns: {cols or 'none'}); fix the name")


def _choose_format(cfg: IngestConfig, src: SourceFiles, head: list[dict | BadRecord]) -> SourceFormat:
    good = [r for r in head if isinstance(r, dict)]
    where = f"`{src.files[0]}`"
    if cfg.format:
        fmt = get_format(cfg.format)
        if good:
            lacking = fmt.missing(good[0])
            if lacking:
                cols = ", ".join(f"`{k}`" for k in list(good[0])[:20])
                raise FormatError(f"{where}: format `{fmt.name}` needs column {', '.join(f'`{c}`' for c in lacking)}, "
                                  f"not found (columns: {cols}); {columns_hint(lacking)} or pick another `--format`")
        return fmt
    if not good:
        if head:
            raise FormatError(f"{where}: none of the first {len(head)} records could be parsed "
                              f"({head[0].detail}); fix the file or check its type")
        raise FormatError(f"{where}: the source holds no records")
    return detect_format(good[0], where)


def source_reads(source: Path, image_root: Path | None = None, src: SourceFiles | None = None) -> list[Path]:
    """The paths an ingest of `source` reads: the source, the folder its image paths resolve in, and the
    image roots a pairs folder recorded (a run that replaces its output folder leaves them in place).
    `src`: the source already located."""
    try:
        src = src or locate(source)
    except AuditError:
        return [Path(source)]
    return [Path(source), Path(image_root) if image_root else src.root, *src.image_roots]


def ingest(cfg: IngestConfig) -> dict:
    """Run an ingest; returns the report (also written to OUT/ingest_report.json). Holds a lock on OUT
    while it writes (a second ingest into the same folder is an error)."""
    from audit.io import claim_output

    src = locate(cfg.source)      # a missing source is reported before anything is created
    opened = _open_source(cfg, src)   # and so is one whose columns need mapping, or an image root that is no folder
    with claim_output(cfg.out, "ingest", [cfg.source, *src.files], overwrite=cfg.overwrite,
                      reads=source_reads(cfg.source, cfg.image_root, src)):
        return _ingest(cfg, src, opened)


def check_source(cfg: IngestConfig) -> None:
    """Refuse, before any output folder is made, a source that `ingest` would refuse at its start: not
    found, an image root that is no folder, a `--columns` name the source lacks, a format that is not
    given and cannot be told from its first records (or that lacks a column it needs). `score` on a raw
    source calls it before it claims its folder."""
    _open_source(cfg, locate(cfg.source))


def _open_source(cfg: IngestConfig, src: SourceFiles) -> tuple[SourceFormat, list[tuple], Iterator[tuple]]:
    """The checks of `check_source`; returns the format, the first records read and the rest of them."""
    if cfg.image_root is not None and not Path(cfg.image_root).is_dir():
        raise SourceError(f"`--image-root {cfg.image_root}` is not a folder; pass the folder that holds the "
                          "dataset's images")
    _check_mapping(src, cfg.column_map(), cfg.limit)
    rest = _records(src, cfg.column_map(), cfg.limit)
    head: list[tuple] = []
    for rec in rest:
        head.append(rec)
        if len(head) >= _DETECT_SAMPLE:
            break
    return _choose_format(cfg, src, [rec for _, _, rec in head]), head, rest


def _ingest(cfg: IngestConfig, src: SourceFiles, opened: tuple) -> dict:
    t0 = time.perf_counter()
    root = Path(cfg.image_root) if cfg.image_root else src.root
    fmt, head, rest = opened
    log.info("ingesting %s as `%s`", src.describe(), fmt.name)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    store = ImageStore(out, [root, out, *src.image_roots], cfg.max_pixels, cfg.verify_images == "full",
                       source_root=src.root, copy=cfg.copy_images)
    run = _Run(fmt, src, store, root, explicit=bool(cfg.format))
    records_in = 0
    with atomic_path(out / schema.PAIRS_FILE) as tmp, atomic_path(out / RECORDS_FILE) as kept:
        writer = PairsWriter(tmp, cfg.batch_rows)
        records = RecordsWriter(kept, describe(src, fmt.name, cfg.column_map()))

        def all_records() -> Iterator[tuple]:
            yield from head
            yield from rest

        next_log = time.perf_counter() + 10
        for index, (file, raw, rec) in enumerate(all_records()):
            records_in += 1
            if time.perf_counter() > next_log:   # progress on long runs (visible with -v)
                next_log = time.perf_counter() + 10
                done = writer.n + len(writer.rows)
                log.info("%d records, %d rows, %.0f rows/s", records_in, done, done / (time.perf_counter() - t0))
            run.add(index, file, raw, rec, writer, records)
        writer.close()
        records.close()
        rows_out = writer.n
    not_paired = run.not_paired

    seconds = time.perf_counter() - t0
    counts = {s: run.status_counts.get(s, 0) for s in schema.STATUSES if run.status_counts.get(s, 0)}
    report = {
        "source": str(cfg.source), "format": fmt.name, "files": [str(f) for f in src.files],
        "image_root": str(root), "image_roots": sorted({str(Path(r).resolve()) for r in [root, *src.image_roots]}),
        "records_in": records_in, "rows_out": rows_out, "status_counts": counts,
        "pairs_ok": counts.get(schema.OK, 0), "duplicates": counts.get(schema.DUPLICATE, 0),
        "not_paired": dict(sorted(not_paired.items())), "comparisons": rows_out + sum(not_paired.values()),
        "images": {"checked": store.checked, "stored_new": store.stored, "stored_bytes_new": store.stored_bytes},
        "seconds": round(seconds, 3), "pairs_per_s": round(rows_out / seconds, 1) if seconds > 0 else None,
        "config": to_dict(cfg), "versions": versions(),
    }
    write_json_atomic(out / schema.REPORT_FILE, report)
    log.info("wrote %d rows (%d ok) to %s", rows_out, report["pairs_ok"], out)
    return report


def _other_format(rec: dict) -> str | None:
    from audit.sources import all_formats

    scores = [(f.detect(rec), f.name) for f in all_formats()]
    best = max(scores)
    return best[1] if best[0] > 0 else None
