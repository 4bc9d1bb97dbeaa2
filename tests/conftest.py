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
# Under pytest-xdist (pyproject's addopts) each worker gets one torch / BLAS thread unless told otherwise:
# two workers with a thread per core each would fight over the cores. Set before anything imports torch;
# subprocesses (the CLI, torchrun) inherit it, so in-process and subprocess runs still compute alike.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


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


# Data that a Markdown or HTML renderer would act on: a remote image (fetched on sight), a link, a
# heading, raw HTML, backticks that close a code span, Streamlit's own `:red[...]` and `$...$`.
HOSTILE = ("# Injected heading\n\n![pixel](http://127.0.0.1:9/pixel.png) [click](http://evil.example/) "
           "<script>alert(1)</script> <iframe src=\"http://evil.example/\"></iframe> <img src=x onerror=alert(1)> "
           "`` ` ``` www.evil.example :red[red] $x^2$ | pipe")


def hostile_audit(root: Path) -> Path:
    """An audit whose every prompt, answer and one column name carries HOSTILE (answers with blank lines,
    which end an HTML block in Markdown); the first three pairs share a prompt (a group the summary warns
    about, quoting it), the chosen answer is always the longer one (a cue that stands out, so the card
    shows examples), and one picture is missing under a hostile file name (a status detail that quotes it)."""
    from audit.config import ScoreConfig
    from audit.score import score

    src = root / "hostile"
    rows = []
    for i in range(40):
        (src / "img").mkdir(parents=True, exist_ok=True)
        (src / "img" / f"{i}.png").write_bytes(png_bytes((i * 6, 100, 200 - i)))
        rows.append({"id": f"row`{i}` ![r](http://evil.example/{i}.png)", "prompt": f"{HOSTILE} {0 if i < 3 else i}",
                     "chosen": f"Fine answer {i}, at length.\n\n{HOSTILE}\n\n![c](http://127.0.0.1:9/c{i}.png)",
                     "rejected": f"Bad {i}.\n\n# Rejected heading {i}\n\n[link](http://evil.example/{i})",
                     "image": f"img/{i}.png", "<img src=http://evil.example/col.png>|`k`": HOSTILE})
    rows[39]["image"] = "img/![m](http:evil.example) `x`.png"
    write_jsonl(src / "d.jsonl", rows)
    score(ScoreConfig(source=src / "d.jsonl", out=root / "hostile_audit", folds=3, cache_dir=root / "cache"))
    return root / "hostile_audit"


LIVE_TAGS = {"a", "img", "script", "iframe", "object", "embed", "style", "link", "svg", "form", "input",
             "h1", "h2", "h3", "h4", "h5", "h6"}


def live_markup(markdown: str) -> list[str]:
    """What a CommonMark + GFM renderer would make live in `markdown` (raw HTML allowed, as Streamlit's
    `unsafe_allow_html` and the Hub do) out of HOSTILE data: links, images, headings, scripts, frames,
    event handlers, and bare URLs a GFM renderer links by itself. Local links and images (`weights.png`)
    and headings without the data's words are the document's own."""
    import re
    from html.parser import HTMLParser

    from markdown_it import MarkdownIt

    found: list[str] = []

    class Tags(HTMLParser):
        heading = None

        def handle_starttag(self, tag, attrs):
            local = all(re.fullmatch(r"[\w.-]+", v or "") for k, v in attrs if k in ("href", "src"))
            if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
                self.heading = tag
            elif tag in LIVE_TAGS and not (tag in ("a", "img") and local):
                found.append(f"<{tag} {attrs}>")
            found.extend(f"{tag}[{k}]" for k, _ in attrs if k.startswith("on"))

        def handle_data(self, data):
            if self.heading and "heading" in data:
                found.append(f"<{self.heading}>{data}")

        def handle_endtag(self, tag):
            self.heading = None if tag == self.heading else self.heading

    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    Tags().feed(md.render(markdown))
    for token in md.parse(markdown):      # GFM links bare URLs in Markdown text by itself (not in code or HTML)
        for child in token.children or []:
            if child.type == "text":
                found.extend(re.findall(r"https?://\S+|www\.\S+|\S+@\S+\.\w+", child.content))
    return found


def scored_synth_audit(root: Path, env: str = "leadin", n: int = 120) -> Path:
    """`synth` (RLAIF-V format) then `score` with the defaults under `root`; the audit folder."""
    from audit.config import ScoreConfig, SynthConfig
    from audit.score import score
    from audit.synth import synth

    src = synth(SynthConfig(env=env, out=root / "src", n=n, format="rlaif-v"))
    score(ScoreConfig(source=src.parent, out=root / "audit", cache_dir=root / "cache"))
    return root / "audit"
