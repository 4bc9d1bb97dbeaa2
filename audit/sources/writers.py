"""Streamed writers used by the formats' `write` (synth now, export later): JSONL, JSON array,
Parquet with Hugging Face feature metadata, HF `save_to_disk` folders, and image files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from audit.io import atomic_path, write_bytes_atomic


def write_jsonl(rows: Iterable[dict], path: Path) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_json_array(rows: Iterable[dict], path: Path) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("[")
        for i, row in enumerate(rows):
            fh.write(("," if i else "") + "\n" + json.dumps(row, ensure_ascii=False))
        fh.write("\n]\n")
    return path


def hf_features(spec: dict) -> Any:
    """A `datasets.Features` from a plain dict spec ({"col": "string" | "int64" | "image" | ...})."""
    import datasets

    def conv(v: Any) -> Any:
        if v == "image":
            return datasets.Image()
        if isinstance(v, str):
            return datasets.Value(v)
        if isinstance(v, list):
            return datasets.List(conv(v[0]))
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        raise TypeError(v)

    return datasets.Features({k: conv(v) for k, v in spec.items()})


def _batches(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_parquet(rows: Iterable[dict], path: Path, spec: dict, batch_size: int = 2048) -> Path:
    """Parquet whose schema carries the HF features, so `datasets` decodes Image columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = hf_features(spec).arrow_schema
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in _batches(rows, batch_size):
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    return path


def write_hf_folder(rows: Iterable[dict], path: Path, spec: dict) -> Path:
    """A `Dataset.save_to_disk` folder (built through `datasets` itself, so it is the real layout)."""
    import datasets

    features = hf_features(spec)
    with tempfile.TemporaryDirectory() as cache:
        # Stream rows to Parquet first (bounded memory), then let `datasets` build and save its Arrow files.
        staged = write_parquet(rows, Path(cache) / "staged.parquet", spec)
        ds = datasets.Dataset.from_parquet(str(staged), features=features, cache_dir=str(Path(cache) / "hf"))
        ds.save_to_disk(str(path))
    return path


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}")
_SAFE_EXT = re.compile(r"\.[A-Za-z0-9]{1,8}")


def safe_file_name(name: str) -> str:
    """`name` when it is one plain file name (letters, digits, `._-`, no `..`); otherwise a cleaned
    name plus a hash of the original, so two different names never meet and none is ever a path."""
    name = str(name)
    if _SAFE_NAME.fullmatch(name) and ".." not in name:
        return name
    base, ext = os.path.splitext(name)
    ext = ext if _SAFE_EXT.fullmatch(ext) else ""
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", base).strip("_-")[:80] or "file"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{clean}-{digest}{ext}"


def inside(path: Path, root: Path) -> Path:
    """`path` if it resolves inside `root`, else a SourceError: no write ever leaves the output folder."""
    from audit.errors import SourceError

    real, top = Path(path).resolve(), Path(root).resolve()
    if real != top and top not in real.parents:
        raise SourceError(f"refusing to write `{path}`: it resolves outside the output folder `{root}`")
    return path


class ImageFiles:
    """Writes each scene's image once under `folder`, returning the path relative to `base`. Names come
    from the data (ids, hashes), so each is made a safe file name and the target checked to stay inside
    `base`."""

    def __init__(self, base: Path, folder: str, name: Callable[[Any], str] | None = None,
                 encode: Callable[[bytes], bytes] | None = None) -> None:
        self.base, self.folder = Path(base), folder
        self.name = name or (lambda p: p.image_name)
        self.encode = encode
        self._last: str | None = None

    def __call__(self, pair: Any) -> str:
        name = safe_file_name(self.name(pair))
        rel = f"{self.folder}/{name}" if self.folder else name
        if rel != self._last:
            target = inside(self.base / rel, self.base)
            if not target.exists():
                data = self.encode(pair.image_png) if self.encode else pair.image_png
                write_bytes_atomic(target, data)
            self._last = rel
        return rel


def png_to_jpeg(png: bytes, quality: int = 95) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
