"""The source records behind a pairs table, kept by `ingest` so that a copy in the source's own format
(`export --format source`, `overlap --exclude`) is written back exactly as the record was read.

`records.parquet` in the pairs folder holds one row per source record that made at least one pair:
`record` (its position in the source: the `source_record` of its pairs), `file` (which source file),
`json` (the record as read, see `encode`), `image_key` (JSON: where the record holds its picture) and
`image_ref` (JSON: the path the record names for its picture; null when the picture is embedded). The
picture's bytes are not repeated: the image store keeps them. The file's metadata (`describe`) names
the format, the `--columns` mapping and each source file's container, split and Arrow schema, so a
Parquet or Arrow copy gets the source's own column types back. Records are streamed in and out.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator

from audit.errors import FormatError

RECORDS_FILE = "records.parquet"
META_KEY = b"shortcut_audit_records"
_TAG = "\u0000shortcut-audit"       # marks an encoded non-JSON value; no key of a real record starts so
_IMAGE = "image"                    # the marker of the record's own picture (bytes in the image store)


def _enc(v: Any, image_id: str | None) -> Any:
    if isinstance(v, dict):
        return {k: _enc(x, image_id) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_enc(x, image_id) for x in v]
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        if image_id and hashlib.sha256(b).hexdigest()[:32] == image_id:
            return {_TAG: _IMAGE}
        return {_TAG: "bytes", "v": base64.b64encode(b).decode("ascii")}
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return {_TAG: type(v).__name__, "v": v.isoformat()}
    if isinstance(v, dt.timedelta):
        return {_TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]}
    if isinstance(v, decimal.Decimal):
        return {_TAG: "decimal", "v": str(v)}
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    raise TypeError(f"cannot keep a {type(v).__name__} value")


def encode(rec: dict, image_id: str | None) -> str | None:
    """The record as JSON: bytes equal to the pair's picture (`image_id`) become a marker, other bytes,
    dates and decimals tagged values. None when the record cannot be kept (nested too deep, a value of
    an unknown type): such a record is never written back."""
    try:
        text = json.dumps(_enc(rec, image_id), ensure_ascii=False)
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:        # a lone surrogate (a damaged source): kept escaped, read back the same
        return json.dumps(_enc(rec, image_id))
    except (RecursionError, TypeError, ValueError):
        return None


_DECODE = {"bytes": lambda v: base64.b64decode(v), "datetime": dt.datetime.fromisoformat,
           "date": dt.date.fromisoformat, "time": dt.time.fromisoformat, "decimal": decimal.Decimal,
           "timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2])}


def decode(text: str, picture: Callable[[], bytes]) -> dict:
    """The record `encode` kept; `picture()` gives the bytes of its own picture (read only when needed)."""

    def hook(obj: dict) -> Any:
        kind = obj.get(_TAG)
        if kind is None:
            return obj
        return picture() if kind == _IMAGE else _DECODE[kind](obj["v"])

    return json.loads(text, object_hook=hook)


def describe(src, fmt_name: str, mapping: dict[str, str]) -> dict:
    """What a write-back needs to know of the source's files: where each goes in a copy, its container
    and split, and (Parquet, Arrow) its schema, base64 of the Arrow IPC serialisation."""
    from audit.sources.readers import arrow_schema, hf_folder

    files = []
    for f in src.files:
        schema = arrow_schema(f, src.kind) if src.kind in ("parquet", "arrow") else None
        name = f.name if src.path.is_file() else f.relative_to(src.path).as_posix()
        files.append({"name": name, "kind": src.kind, "split": src.split_of.get(f),
                      "schema": None if schema is None else base64.b64encode(schema.serialize().to_pybytes()).decode()})
    return {"version": 1, "format": fmt_name, "columns": mapping, "files": files,
            "hf_folder": src.path.name if hf_folder(src.path) else None}


class RecordsWriter:
    """Streams kept records into `records.parquet` (zstd), `batch_rows` at a time."""

    def __init__(self, path: Path, meta: dict, batch_rows: int = 1024) -> None:
        import pyarrow as pa

        self.path, self.batch_rows, self.rows = Path(path), batch_rows, []
        self.schema = pa.schema([("record", pa.int64()), ("file", pa.int32()), ("json", pa.large_string()),
                                 ("image_key", pa.string()), ("image_ref", pa.string())],
                                metadata={META_KEY: json.dumps(meta).encode()})
        self.writer = None

    def add(self, record: int, file: int, rec: dict, ref, image_id: str | None) -> None:
        key = None if ref is None or ref.key is None else json.dumps(list(ref.key))
        path = None if ref is None or ref.data is not None else json.dumps(ref.path)   # JSON: any string is UTF-8
        self.rows.append({"record": record, "file": file, "json": encode(rec, image_id), "image_key": key,
                          "image_ref": path})
        if len(self.rows) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def read_meta(pairs_dir: Path) -> dict:
    """The records file's description, or a FormatError that says how to get one."""
    import pyarrow.parquet as pq

    path = Path(pairs_dir) / RECORDS_FILE
    if not path.is_file():
        raise FormatError(f"`{pairs_dir}` keeps no source records (`{RECORDS_FILE}`; ingested by an older version): "
                          "re-ingest the source (`shortcut-audit ingest SOURCE -o DIR`, or `score` it again) to write "
                          "an exact copy in its own format, or pick `--format parquet`")
    return json.loads(pq.read_schema(path).metadata[META_KEY])


def stored_records(pairs_dir: Path, wanted: list[int]) -> Iterator[dict]:
    """The stored rows of the records in `wanted` (ascending), streamed batch by batch."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(Path(pairs_dir) / RECORDS_FILE)
    at = 0
    for batch in pf.iter_batches(batch_size=512):
        if at >= len(wanted):
            return
        for row in batch.to_pylist():
            while at < len(wanted) and wanted[at] < row["record"]:
                at += 1          # asked for a record that was not kept: the caller reports it
            if at < len(wanted) and wanted[at] == row["record"]:
                yield row
                at += 1
