"""Shared fixtures: tiny images and source files built by hand, offline Hugging Face settings."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

# Nothing may download in tests: a mistake fails at once instead of hanging on the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """The pretrained scene encoder's default cache lives under XDG_CACHE_HOME: keep it in the session's
    temp folder, never the user's home."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


def png_bytes(color=(200, 30, 30), size=(8, 8)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(color=(30, 30, 200), size=(32, 32)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def noisy_jpeg(size=(128, 128)) -> bytes:
    """A JPEG whose scan data dominates the file, so cutting it in half truncates pixels, not headers."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path


def read_pairs(out: Path):
    import polars as pl

    return pl.read_parquet(Path(out) / "pairs.parquet")


def read_report(out: Path) -> dict:
    return json.loads((Path(out) / "ingest_report.json").read_text(encoding="utf-8"))


def run_ingest(source: Path, out: Path, **kw):
    from audit.config import IngestConfig
    from audit.ingest import ingest

    rep = ingest(IngestConfig(source=source, out=out, **kw))
    return rep, read_pairs(out)


@pytest.fixture
def red_png() -> bytes:
    return png_bytes()
