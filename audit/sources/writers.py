"""Streamed writers used by the formats' `write` (synth now, export later): JSONL, JSON array,
Parquet with Hugging Face feature metadata, HF `save_to_disk` folders, and image files."""

from __future__ import annotations

import json
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


class ImageFiles:
    """Writes each scene's image once under `folder`, returning the path relative to `base`."""

    def __init__(self, base: Path, folder: str, name: Callable[[Any], str] | None = None,
                 encode: Callable[[bytes], bytes] | None = None) -> None:
        self.base, self.folder = Path(base), folder
        self.name = name or (lambda p: p.image_name)
        self.encode = encode
        self._last: str | None = None

    def __call__(self, pair: Any) -> str:
        rel = f"{self.folder}/{self.name(pair)}" if self.folder else self.name(pair)
        if rel != self._last:
            target = self.base / rel
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
