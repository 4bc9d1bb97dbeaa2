"""Write kept pairs back in their source's own format (`export --format source`, `overlap --exclude`):
each kept record as `ingest` read it (`audit.sources.records`), in the container it came in (JSONL,
JSON array, Parquet or Arrow with the source's own schema, a `save_to_disk` folder), with its own
picture. The format decides what a partly kept or a swapped record becomes (`SourceFormat.write_back`).

Pictures: embedded ones go back into the record; a picture the record names by path is written under
that path inside the copy's folder when it is a plain relative path that is free (or holds the same
bytes), else as `images/<image id>.<ext>`, and the record is pointed at it. Two records that name one
path for different pictures so keep their own. The copy is written into a fresh folder: a picture of
an earlier run is never taken for this one's.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from audit.errors import FormatError, SourceError
from audit.io import atomic_path, temp_dir_beside, write_bytes_atomic
from audit.sources.readers import METADATA_NAMES
from audit.sources.records import decode, read_meta, stored_records
from audit.sources.writers import inside, safe_file_name

_CONTENT_DIR = "images"


@dataclass
class Draw:
    """One written pair: which record and pair of it, reversed or not, and the fields to add."""

    record: int
    item: int
    swap: bool
    fields: dict
    image_path: str | None
    image_id: str | None
    sample_id: str


def write_back(frame, selected: np.ndarray, eligible: np.ndarray, pairs_dir: Path, out: Path, *,
               swap: np.ndarray | None = None, fields: dict[str, np.ndarray] | None = None) -> dict:
    """Write rows `selected` of `frame` (a pairs or audited table of `pairs_dir`; repeats allowed, each
    one draw) back in the source's format into the new folder `out`. `eligible`: rows that could have
    been selected; those left unselected are kept out of multi-pair records. `swap`, `fields`: per
    selected row, reverse its preference, and fields to add (float weights, a boolean flag). Returns what
    was written."""
    from audit.images import image_roots
    from audit.sources import get_format

    meta = read_meta(pairs_dir)
    fmt = get_format(meta["format"])
    draws = _Draws(frame, np.asarray(selected, dtype=np.int64), eligible, swap, fields or {})
    targets = _targets(meta)
    pictures = Pictures(out, set(targets.values()))
    where = (Path(pairs_dir), image_roots(pairs_dir))      # the pairs folder and its image roots
    n = 0
    with contextlib.ExitStack() as stack:
        sinks = _Sinks(stack, meta, targets, out, fmt.added_fields(_arrow_types(fields or {})))
        for row, group in draws.grouped(pairs_dir):
            for rec in _records_of(fmt, meta, row, group, draws.avoided(row["record"]), pictures, where):
                sinks.add(row["file"], rec)
                n += 1
        paths = sinks.close()
    return {"path": str(paths[0] if len(paths) == 1 else out), "files": [str(p) for p in paths],
            "records_out": n, "pairs_out": len(draws.record), "format": fmt.name}


def _arrow_types(fields: dict[str, np.ndarray]) -> dict:
    """The Arrow type of each added field, by name: boolean for a boolean array, else float."""
    import pyarrow as pa

    return {name: pa.bool_() if fields[name].dtype == bool else pa.float64() for name in sorted(fields)}


def _value(values: np.ndarray, i: int) -> bool | float:
    return bool(values[i]) if values.dtype == bool else float(values[i])


class _Draws:
    """The selected rows as arrays (no Python object per row), grouped by source record on demand."""

    def __init__(self, frame, sel: np.ndarray, eligible, swap, fields: dict[str, np.ndarray]) -> None:
        if any(c not in frame.columns for c in ("source_record", "source_item")) or \
                (len(sel) and frame["source_record"].gather(sel).null_count()):
            raise FormatError("these pairs do not say which source record they came from (ingested by an older "
                              "version): re-ingest the source (or `score` it again) to write an exact copy in its own "
                              "format, or pick `--format parquet`")
        rec, item = frame["source_record"].to_numpy(), frame["source_item"].to_numpy()
        self.cols, self.sel = frame.select("image_path", "image_id", "sample_id"), sel
        self.record, self.item = rec[sel].astype(np.int64), item[sel].astype(np.int64)
        self.swap = np.zeros(len(sel), bool) if swap is None else np.asarray(swap, bool)
        self.fields = fields
        # each (record, pair) at most once: a record's pairs are written together; else (resampling)
        # each draw is written alone, and no other pair of its record comes with it
        self.repeats = len(np.unique(sel)) < len(sel)
        left = np.asarray(eligible, bool).copy()
        left[sel] = False
        order = np.argsort(rec[left], kind="stable")
        self.left_record, self.left_item = rec[left][order], item[left][order]

    def avoided(self, record: int) -> set[int] | None:
        """The pairs of `record` that could have been written and were not (kept out of its copy)."""
        if self.repeats:
            return None
        lo, hi = np.searchsorted(self.left_record, [record, record + 1])
        return {int(k) for k in self.left_item[lo:hi]}

    def _draw(self, i: int) -> Draw:
        row = self.cols.row(int(self.sel[i]), named=True)
        return Draw(int(self.record[i]), int(self.item[i]), bool(self.swap[i]),
                    {f: _value(v, i) for f, v in self.fields.items()}, row["image_path"], row["image_id"],
                    str(row["sample_id"]))

    def grouped(self, pairs_dir: Path) -> Iterator[tuple[dict, list[Draw]]]:
        """(stored record, the draws written from it together), in source order."""
        order = np.argsort(self.record, kind="stable")
        wanted = np.unique(self.record)
        rows = stored_records(pairs_dir, wanted.tolist())
        ends = np.searchsorted(self.record[order], wanted, side="right")
        start = 0
        for r, end in zip(wanted.tolist(), ends):
            group = [self._draw(i) for i in order[start:end]]
            start = end
            row = next(rows, None)
            if row is None or row["record"] != r or row["json"] is None:
                raise SourceError(f"the source record of row `{group[0].sample_id}` (record {r}) was not kept by "
                                  "ingest (nested too deeply, or a value of an unknown type): it cannot be written "
                                  "back; leave it out or pick `--format parquet`")
            for part in ([[d] for d in group] if self.repeats else [group]):
                yield row, part


def _records_of(fmt, meta: dict, row: dict, group: list[Draw], avoid, pictures: "Pictures",
                where: tuple) -> list[dict]:
    """The records to write for one group of draws of a stored record, pictures placed. `where`: the
    pairs folder and its image roots (the pictures are read from there)."""
    from audit.images import resolve_image

    first = group[0]

    def picture() -> bytes:
        data = resolve_image(where[0], first.image_path, allowed_roots=where[1]).read_bytes()
        if hashlib.sha256(data).hexdigest()[:32] != first.image_id:
            raise SourceError(f"the picture of row `{first.sample_id}` (`{first.image_path}`) changed since it was "
                              "ingested: re-ingest the source to write a copy of what it holds now")
        return data

    raw = decode(row["json"], picture)
    mapping = meta.get("columns") or {}
    renamed = {mapping.get(k, k): v for k, v in raw.items()} if mapping else raw
    keep = {d.item: d.fields for d in group}
    out = fmt.write_back(renamed, row["record"], keep, {d.item for d in group if d.swap}, avoid)
    if row["image_ref"] is not None:
        wanted = json.loads(row["image_ref"])
        rel = pictures.place(wanted, picture, first.image_id, os.path.splitext(first.image_path or "")[1])
        if rel != wanted:
            key = None if row["image_key"] is None else tuple(json.loads(row["image_key"]))
            for rec in out:
                fmt.point_image(rec, key, rel)
    return [_unrename(rec, raw, mapping) for rec in out]


def _unrename(rec: dict, raw: dict, mapping: dict[str, str]) -> dict:
    """`rec` (canonical names, as the format read it) under the source's own column names again."""
    if not mapping:
        return rec
    targets = set(mapping.values())
    out = {}
    for k in raw:
        if k in mapping:
            if mapping[k] in rec:
                out[k] = rec[mapping[k]]
        else:
            out[k] = raw[k] if k in targets else rec.get(k, raw[k])   # a column a mapped one hid: as read
    out.update({k: v for k, v in rec.items() if k not in out and k not in targets})
    return out


def _safe_rel(path: Any) -> str | None:
    """`path` when it is a plain relative path of safe names (no `..`, no absolute path), else None."""
    if not isinstance(path, str) or not path or "\\" in path or path.startswith("/"):
        return None
    parts = path.split("/")
    if len(parts) > 16 or any(p in ("", ".", "..") or safe_file_name(p) != p for p in parts):
        return None
    return path


class Pictures:
    """Places the pictures of a copy inside `out`, never over its data files or another picture."""

    def __init__(self, out: Path, data: set[str]) -> None:
        self.out = Path(out)
        self.data = data
        self.parents = {str(Path(d).parent.as_posix()) for d in data} | {p.as_posix() for d in data for p in Path(d).parents}

    def _reserved(self, rel: str) -> bool:
        top = rel.split("/")[0]
        return (rel in self.data or rel in self.parents or top.startswith(".") or top in METADATA_NAMES
                or any(rel.startswith(d + "/") for d in self.data))

    def place(self, wanted: str, picture, image_id: str, ext: str) -> str:
        """Where the picture is in the copy: `wanted` if it can be, else a name of its content."""
        ext = ext if ext and safe_file_name(ext[1:]) == ext[1:] and len(ext) <= 9 else ".img"
        rel = _safe_rel(wanted)
        content = [f"{_CONTENT_DIR}/{image_id}{ext}", *(f"{_CONTENT_DIR}/{image_id}-{n}{ext}" for n in range(1, 64))]
        for cand in ([rel] if rel else []) + content:
            if self._reserved(cand):
                continue
            target = inside(self.out / cand, self.out)
            if target.is_file() and not target.is_symlink():
                if hashlib.sha256(target.read_bytes()).hexdigest()[:32] == image_id:
                    return cand
                continue
            if os.path.lexists(target):
                continue
            try:
                write_bytes_atomic(target, picture())
            except (NotADirectoryError, FileExistsError):
                continue      # a picture's name is a folder of another's path
            return cand
        raise SourceError(f"no free name for picture `{wanted}` in `{self.out}`")


_SUFFIX = {"jsonl": ".jsonl", "json": ".json", "parquet": ".parquet", "arrow": ".arrow"}


def _targets(meta: dict) -> dict[int, str]:
    """Source file index -> where its records go in the copy (a path relative to the copy's folder)."""
    if meta.get("hf_folder") is not None:
        name = safe_file_name(meta["hf_folder"] or "dataset")
        return {i: name for i in range(len(meta["files"]))}
    return {i: _safe_rel(f["name"]) or f"data-{i}{_SUFFIX[f['kind']]}" for i, f in enumerate(meta["files"])}


def _schema(encoded: str, added: dict):
    """The source file's Arrow schema plus the fields a write-back adds (weights and flags replace a column
    of the same name); HF features in its metadata list them too, so `datasets` reads the copy as the source."""
    import pyarrow as pa

    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(encoded)))
    new = []
    for name, kind in added.items():
        if name not in schema.names:
            new.append(pa.field(name, kind))
        elif kind in (pa.float64(), pa.bool_()) and schema.field(name).type != kind:
            schema = schema.set(schema.get_field_index(name), pa.field(name, kind))
            new.append(schema.field(name))
    schema = pa.schema([*schema, *(f for f in new if f.name not in schema.names)], metadata=schema.metadata)
    meta = dict(schema.metadata or {})
    if new and b"huggingface" in meta:
        import datasets

        info = json.loads(meta[b"huggingface"])
        feats = info.setdefault("info", {}).setdefault("features", {})
        feats.update(datasets.Features.from_arrow_schema(pa.schema(new)).to_dict())
        meta[b"huggingface"] = json.dumps(info).encode()
    return schema.with_metadata(meta)


class _Lines:
    """JSONL, or a JSON array (`array`), one record at a time."""

    def __init__(self, stack: contextlib.ExitStack, path: Path, array: bool) -> None:
        self.path, self.array, self.n = path, array, 0
        self.fh = stack.enter_context(open(stack.enter_context(atomic_path(path)), "w", encoding="utf-8"))

    def add(self, rec: dict, split: str | None) -> None:
        text = json.dumps(rec, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:       # a lone surrogate the source escaped: escape it again
            text = json.dumps(rec)
        self.fh.write((("[" if not self.n else ",") + "\n" + text) if self.array else text + "\n")
        self.n += 1

    def close(self) -> Path:
        if self.array:
            self.fh.write("\n]\n" if self.n else "[]\n")
        self.fh.close()
        return self.path


class _Table:
    """Parquet (or an Arrow IPC stream, `ipc`) with the source's schema, batch by batch."""

    def __init__(self, stack: contextlib.ExitStack | None, path: Path, schema, ipc: bool = False, batch: int = 256) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path, self.schema, self.batch, self.rows = path, schema, batch, []
        tmp = path if stack is None else stack.enter_context(atomic_path(path))   # None: a staged file
        self.writer = pa.ipc.new_stream(str(tmp), schema) if ipc else pq.ParquetWriter(tmp, schema, compression="zstd")

    def add(self, rec: dict, split: str | None) -> None:
        self.rows.append(rec)
        if len(self.rows) >= self.batch:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> Path:
        self.flush()
        self.writer.close()
        return self.path


class _HfFolder:
    """A `save_to_disk` folder (a DatasetDict when the source had splits), built by `datasets` from
    Parquet staged per split."""

    def __init__(self, stack: contextlib.ExitStack, path: Path, schema, splits: bool) -> None:
        self.stack, self.path, self.schema, self.splits = stack, path, schema, splits
        self.stage = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=path.parent, prefix=".stage-")))
        self.parts: dict[str, _Table] = {}

    def add(self, rec: dict, split: str | None) -> None:
        split = split or "train"
        if split not in self.parts:
            self.parts[split] = _Table(None, self.stage / f"{safe_file_name(split)}.parquet", self.schema)
        self.parts[split].add(rec, split)

    def close(self) -> Path:
        import datasets

        for part in self.parts.values():
            part.close()
        features = datasets.Features.from_arrow_schema(self.schema)
        done = {s: datasets.Dataset.from_parquet(str(self.stage / f"{safe_file_name(s)}.parquet"), features=features,
                                                 cache_dir=str(self.stage / "cache")) for s in self.parts}
        ds = datasets.DatasetDict(done) if self.splits else next(iter(done.values()))
        return ds, self.path


class _Sinks:
    """One writer per target of the copy, opened when its first record comes; records come file by
    file, so a target is finished when the next one starts (the HF folder, one target, at the end)."""

    def __init__(self, stack: contextlib.ExitStack, meta: dict, targets: dict[int, str], out: Path, added: dict) -> None:
        self.stack, self.meta, self.targets, self.out, self.added = stack, meta, targets, Path(out), added
        self.open: dict[str, Any] = {}
        self.done: list[Path] = []

    def _new(self, file: int, target: str):
        f = self.meta["files"][file]
        path = inside(self.out / target, self.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.meta.get("hf_folder") is not None:
            return _HfFolder(self.stack, path, _schema(f["schema"], self.added),
                             any(g.get("split") for g in self.meta["files"]))
        if f["kind"] in ("jsonl", "json"):
            return _Lines(self.stack, path, f["kind"] == "json")
        return _Table(self.stack, path, _schema(f["schema"], self.added), ipc=f["kind"] == "arrow")

    def add(self, file: int, rec: dict) -> None:
        target = self.targets[file]
        if target not in self.open:
            for t in list(self.open):
                self._finish(self.open.pop(t))
            self.open[target] = self._new(file, target)
        self.open[target].add(rec, self.meta["files"][file].get("split"))

    def _finish(self, sink) -> None:
        done = sink.close()
        if isinstance(done, tuple):          # an HF folder: saved beside, then moved in place
            ds, path = done
            tmp = temp_dir_beside(path)
            try:
                ds.save_to_disk(str(tmp / "d"))
                os.replace(tmp / "d", path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            done = path
        self.done.append(done)

    def close(self) -> list[Path]:
        if not self.open and not self.done:      # nothing kept: the copy is an empty file of the format
            self.open[self.targets[0]] = self._new(0, self.targets[0])
        for t in list(self.open):
            self._finish(self.open.pop(t))
        return self.done
