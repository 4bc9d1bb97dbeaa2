"""Stream records (dicts) out of JSONL, JSON, Parquet, Arrow and HF `save_to_disk` folders.

Memory stays bounded: Parquet and Arrow are read batch by batch, JSONL line by line, and a JSON
array is decoded one element at a time. A broken record becomes a `BadRecord`, never a crash.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from audit.errors import SourceError
from audit.sources.base import BadRecord

DATA_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".arrow": "arrow"}
# JSON files that describe a dataset rather than hold its rows.
METADATA_NAMES = {"dataset_info.json", "state.json", "dataset_dict.json", "ingest_report.json",
                  "summary.json", "config.json", "export_report.json"}


@dataclass
class SourceFiles:
    path: Path                 # as given by the user
    kind: str                  # jsonl | json | parquet | arrow
    files: list[Path]
    root: Path                 # default image root: the folder that holds the source
    split_of: dict[Path, str] = field(default_factory=dict)   # DatasetDict split per file
    image_roots: list[Path] = field(default_factory=list)     # extra allowed roots (a pairs folder's)
    is_pairs_dir: bool = False

    def describe(self) -> str:
        return str(self.path)


def _check_readable(p: Path) -> None:
    try:
        with open(p, "rb") as fh:
            fh.read(1)
    except OSError as e:
        raise SourceError(f"cannot read `{p}`: {e.strerror or e}; check the path and its permissions") from None


def locate(path: Path) -> SourceFiles:
    """Find the data files of a source file or folder."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"`{path}` does not exist; pass a data file (.jsonl, .json, .parquet, .arrow) "
                          "or a folder (HF save_to_disk, shards, a pairs folder)")
    if path.is_file():
        kind = DATA_SUFFIXES.get(path.suffix.lower())
        if kind is None:
            raise SourceError(f"`{path}`: unsupported file type `{path.suffix or '(none)'}`; supported: "
                              f"{', '.join(sorted(DATA_SUFFIXES))}, or a dataset folder")
        _check_readable(path)
        return SourceFiles(path, kind, [path], path.parent)

    # Our own pairs folder: re-ingest keeps its images (store and source roots) reachable.
    if (path / "pairs.parquet").is_file() and (path / "ingest_report.json").is_file():
        from audit.images import image_roots

        return SourceFiles(path, "parquet", [path / "pairs.parquet"], path, image_roots=image_roots(path),
                           is_pairs_dir=True)

    if (path / "dataset_dict.json").is_file():      # HF DatasetDict.save_to_disk
        try:
            splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        except (OSError, ValueError, KeyError) as e:
            raise SourceError(f"`{path / 'dataset_dict.json'}` is not a valid HF DatasetDict index: {e}") from None
        files, split_of = [], {}
        for split in splits:
            for f in _hf_arrow_files(path / split):
                files.append(f)
                split_of[f] = split
        return SourceFiles(path, "arrow", files, path, split_of=split_of)
    if (path / "state.json").is_file():              # HF Dataset.save_to_disk
        return SourceFiles(path, "arrow", _hf_arrow_files(path), path)

    found: dict[str, list[Path]] = {}
    # Our own outputs inside the folder (a pairs folder written there earlier) are not source data.
    owned = {f.parent for f in path.rglob("ingest_report.json")}
    for f in sorted(path.rglob("*")):
        if not f.is_file() or f.name in METADATA_NAMES or any(part.startswith(".") for part in f.relative_to(path).parts):
            continue          # hidden files and folders (.git, .cache, a replaced output kept aside) are not data
        if any(parent in owned for parent in f.parents):
            continue
        kind = DATA_SUFFIXES.get(f.suffix.lower())
        if kind:
            found.setdefault(kind, []).append(f)
    if not found:
        raise SourceError(f"`{path}` holds no data files (.jsonl, .json, .parquet, .arrow); "
                          "point at the data file or the dataset folder")
    if len(found) > 1:
        listing = "; ".join(f"{k}: {', '.join(str(p.relative_to(path)) for p in v[:3])}" for k, v in found.items())
        raise SourceError(f"`{path}` mixes data file types ({listing}); pass one file, or a folder of one type")
    kind, files = next(iter(found.items()))
    for f in files:
        _check_readable(f)
    return SourceFiles(path, kind, files, path)


def _hf_arrow_files(folder: Path) -> list[Path]:
    state = folder / "state.json"
    try:
        names = [d["filename"] for d in json.loads(state.read_text(encoding="utf-8"))["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SourceError(f"`{state}` is not a valid HF save_to_disk state file: {e}; "
                          "re-save the dataset with `Dataset.save_to_disk`") from None
    files = [folder / n for n in names]
    for f in files:
        if not f.is_file():
            raise SourceError(f"`{f}` is listed in `{state}` but missing; the dataset folder is incomplete")
    return files


def iter_records(src: SourceFiles, batch_bytes: int = 64 << 20) -> Iterator[dict | BadRecord]:
    """Yield every record of the source in order; DatasetDict rows get their `split`."""
    for _, rec in iter_file_records(src, batch_bytes):
        yield rec


def iter_file_records(src: SourceFiles, batch_bytes: int = 64 << 20) -> Iterator[tuple[int, dict | BadRecord]]:
    """(index of its file in `src.files`, record) for every record of the source, in order."""
    for i, f in enumerate(src.files):
        split = src.split_of.get(f)
        reader = {"jsonl": _iter_jsonl, "json": _iter_json, "parquet": _iter_parquet, "arrow": _iter_arrow}[src.kind]
        for rec in reader(f, batch_bytes) if src.kind in ("parquet", "arrow") else reader(f):
            if split is not None and isinstance(rec, dict):
                rec.setdefault("split", split)
            yield i, rec


def hf_folder(path: Path) -> bool:
    """Whether `path` is a `save_to_disk` folder (a Dataset or a DatasetDict)."""
    return Path(path).is_dir() and ((Path(path) / "state.json").is_file() or (Path(path) / "dataset_dict.json").is_file())


def arrow_schema(f: Path, kind: str):
    """The Arrow schema of a Parquet or Arrow file (its metadata, e.g. HF features, included)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if kind == "parquet":
        return pq.read_schema(f)
    try:
        return pa.ipc.open_stream(pa.memory_map(str(f))).schema
    except Exception:  # noqa: BLE001 - not a stream: the file layout
        return pa.ipc.open_file(pa.memory_map(str(f))).schema


def _iter_jsonl(f: Path) -> Iterator[dict | BadRecord]:
    with open(f, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):   # a UTF-8 byte-order mark is no part of the data
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                yield BadRecord(f"{f.name}:{lineno}", f"line is not valid UTF-8 ({e.reason} at byte {e.start})")
                continue
            except (ValueError, RecursionError) as e:
                yield BadRecord(f"{f.name}:{lineno}", f"line is not valid JSON ({_json_problem(e)})")
                continue
            if not isinstance(obj, dict):
                yield BadRecord(f"{f.name}:{lineno}", f"line is a JSON {type(obj).__name__}, expected an object")
                continue
            yield obj


def _json_problem(e: Exception) -> Exception | str:
    """What a JSON parse error says; a record nested deeper than Python's parser follows is one too."""
    return "nested deeper than the JSON parser follows; flatten the record" if isinstance(e, RecursionError) else e


_LIST_KEYS = ("data", "train", "rows", "records", "examples", "items")


def _iter_json_object(f: Path, text: str) -> Iterator[dict | BadRecord]:
    """A file that starts with an object: one record, a {"data": [...]} wrapper (small enough to parse
    whole), or several objects one per line (JSONL with a .json name)."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        yield from _iter_jsonl(f)
        return
    for k in _LIST_KEYS:
        if isinstance(obj.get(k), list):
            for i, item in enumerate(obj[k]):
                yield item if isinstance(item, dict) else BadRecord(
                    f"{f.name}[{k}][{i}]", f"element is a JSON {type(item).__name__}, expected an object")
            return
    yield obj


def _iter_json(f: Path) -> Iterator[dict | BadRecord]:
    """A JSON array decoded element by element; also a JSON object holding one (or one record)."""
    decoder = json.JSONDecoder()
    with open(f, "r", encoding="utf-8-sig", errors="surrogateescape") as fh:   # -sig: a leading BOM is dropped
        buf = fh.read(1 << 16)
        pos = len(buf) - len(buf.lstrip())
        if pos >= len(buf):
            raise SourceError(f"`{f}` is empty; expected a JSON array of records")
        if buf[pos] == "{":
            yield from _iter_json_object(f, buf + fh.read())
            return
        if buf[pos] != "[":
            raise SourceError(f"`{f}` is not a JSON array or object (starts with {buf[pos]!r}); "
                              "expected a JSON array of records or JSONL")
        pos += 1
        index = 0
        while True:
            while True:   # skip whitespace and the separating comma, refilling the buffer as needed
                while pos < len(buf) and buf[pos] in " \t\r\n,":
                    pos += 1
                if pos < len(buf):
                    break
                more = fh.read(1 << 16)
                if not more:
                    yield BadRecord(f"{f.name}[{index}]", "the JSON array is not closed (file truncated?)")
                    return
                buf, pos = more, 0
            if buf[pos] == "]":
                rest = buf[pos + 1:]
                while not rest.strip() and (more := fh.read(1 << 16)):
                    rest = more
                if not rest.strip():
                    return
                # The array closed early (a stray `]`) and the file goes on: say so, and read on after it.
                yield BadRecord(f"{f.name}[{index}]", "the JSON array closes early (a stray `]`?) and the file goes on; "
                                "read on after it")
                index += 1
                buf, pos = rest, 0
                continue
            while True:
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                    break
                except (ValueError, RecursionError) as e:
                    e = _json_problem(e)
                    stop = _element_end(buf, pos)
                    if stop is None:      # the element runs past the buffer: read on, or the file ends inside it
                        more = fh.read(1 << 20)
                        if more:
                            buf, pos = buf[pos:] + more, 0
                            continue
                        nxt = _NEXT_LINE_ELEMENT.search(buf, pos)   # brackets never balanced: resume at the next line's element
                        if nxt is None and index == 0:
                            raise SourceError(f"`{f}` is not valid JSON ({e}); fix the file or export it as JSONL") from None
                        if nxt is None:
                            yield BadRecord(f"{f.name}[{index}]", f"the JSON array ends inside this element (file truncated?): {e}")
                            return
                        stop = nxt.end() - 1
                    stop = _fragments_end(buf, stop)
                    # A broken element: one bad row, then on with the next element.
                    yield BadRecord(f"{f.name}[{index}]", f"element is not valid JSON ({e}); read on from the next element")
                    obj, end = _SKIPPED, stop
                    break
            if obj is _SKIPPED:
                pass
            elif isinstance(obj, dict):
                yield obj
            else:
                yield BadRecord(f"{f.name}[{index}]", f"element is a JSON {type(obj).__name__}, expected an object")
            index += 1
            pos = end


_SKIPPED = object()
_NEXT_LINE_ELEMENT = re.compile(r",[ \t\r]*\n\s*[{\[]")


def _fragments_end(buf: str, stop: int) -> int:
    """After a broken element ending at `stop`, the end of the fragments that follow it and cannot start a
    record (a lost `{` splits an object at its commas): they belong to the same broken element."""
    while stop < len(buf) and buf[stop] == ",":
        k = stop + 1
        while k < len(buf) and buf[k] in " \t\r\n":
            k += 1
        if k >= len(buf) or buf[k] in "{[]":
            break
        nxt = _element_end(buf, k)
        if nxt is None:
            break
        stop = nxt
    return stop


def _element_end(buf: str, pos: int) -> int | None:
    """Index of the `,` or `]` that ends the top-level array element starting at `pos` (outside strings
    and brackets), or None when `buf` ends first. A raw newline ends a string (JSON strings cannot hold
    one), so an unbalanced quote costs one element, not the rest of the file."""
    depth, in_str, esc = 0, False, False
    for i in range(pos, len(buf)):
        c = buf[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"' or c == "\n":
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "[{":
            depth += 1
        elif c in "]}":
            if depth == 0 and c == "]":
                return i
            depth = max(depth - 1, 0)    # a stray `}` at the top level is part of the broken element
        elif c == "," and depth == 0:
            return i
    return None


def _batch_rows(bytes_per_row: float, batch_bytes: int) -> int:
    return int(min(8192, max(16, batch_bytes / max(bytes_per_row, 1.0))))


def _iter_parquet(f: Path, batch_bytes: int) -> Iterator[dict]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError with varying messages
        raise SourceError(f"`{f}` is not a readable Parquet file ({e}); check the file or re-export it") from None
    md = pf.metadata
    groups = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    if any(r < 0 for r in groups) or sum(groups) != md.num_rows:
        # a damaged footer: its row counts cannot be trusted, so neither can the count of rows to account for
        raise SourceError(f"`{f}` is damaged: its footer says {md.num_rows} rows but its row groups hold "
                          f"{groups[:8]}{' ...' if len(groups) > 8 else ''}; re-export the file")
    rows = max(md.num_rows, 1)
    size = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
    step = _batch_rows(size / rows, batch_bytes)
    for g in range(md.num_row_groups):      # a row group at a time: a damaged one costs its own rows only
        first = sum(md.row_group(k).num_rows for k in range(g))
        done = 0
        try:
            for batch in pf.iter_batches(batch_size=step, row_groups=[g]):
                recs = batch.to_pylist()
                done += len(recs)
                yield from recs
        except Exception as e:  # noqa: BLE001 - a corrupt page raises ArrowInvalid / OSError / ... per build
            detail = f"row group {g} could not be read ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            for i in range(done, md.row_group(g).num_rows):    # one bad row per unread row: rows in = rows out
                yield BadRecord(f"{f.name}:row{first + i}", detail)


def _iter_arrow(f: Path, batch_bytes: int) -> Iterator[dict]:
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(f)))
    except Exception:
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(f)))
        except Exception as e:
            raise SourceError(f"`{f}` is not a readable Arrow file ({e})") from None
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    else:
        batches = iter(reader)
    n = 0
    try:
        for batch in batches:
            step = _batch_rows(batch.nbytes / max(batch.num_rows, 1), batch_bytes)
            for start in range(0, batch.num_rows, step):
                recs = batch.slice(start, step).to_pylist()
                n += len(recs)
                yield from recs
    except Exception as e:  # noqa: BLE001 - a truncated stream raises ArrowInvalid / OSError
        # How many rows the damaged tail held is unknowable: stop with a clear error, never a silent loss.
        raise SourceError(f"`{f}` is damaged after its first {n} rows ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200]}); re-create it (`save_to_disk`) or re-download it") from None
