"""The front door of the command line: `score` on a raw file whose columns need mapping says so and takes
`--columns` (the hint named an option `score` then refused), and a failed run leaves no half-made folder;
`--version`; `app` on a missing folder; an image that cannot be found names the full path looked for."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from audit.cli import main
from conftest import run_ingest, write_jsonl

N = 40


def _noise_png(seed: int) -> bytes:
    """A picture of its own (noise: no two are near-identical, so each pair is its own group)."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def raw(tmp_path) -> Path:
    """A JSONL of one's own: `question`, `good`, `bad`, `img` (none of them a known format's names)."""
    for i in range(N):
        (tmp_path / f"im{i}.png").write_bytes(_noise_png(i))
    rows = [{"question": f"What is in picture {i}?", "good": f"A detailed answer {i} about the scene.",
             "bad": f"Wrong {i}.", "img": f"im{i}.png"} for i in range(N)]
    return write_jsonl(tmp_path / "raw.jsonl", rows)


MAPPING = "prompt=question,chosen=good,rejected=bad,image=img"


def _cli_error(capsys, args) -> str:
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: "), err   # one line, no traceback
    return err[0]


def _tree(d: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}


# ---- `score` on a raw file whose columns need mapping -------------------------------------------

def test_score_on_unmapped_columns_says_to_map_them_and_makes_no_folder(raw, tmp_path, capsys):
    out = tmp_path / "new" / "audit"
    err = _cli_error(capsys, ["score", str(raw), "-o", str(out)])
    assert not out.exists() and not (tmp_path / "new").exists()
    assert err.startswith(f"Error: `{raw}`: ") and "`--columns chosen=YOUR_COLUMN,rejected=YOUR_COLUMN`" in err
    # a folder that was there (empty, or an earlier audit's) is left as it was
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    before = _tree(kept)
    _cli_error(capsys, ["score", str(raw), "-o", str(kept)])
    assert _tree(kept) == before


def test_score_takes_columns_as_ingest_does(raw, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(["score", str(raw), "-o", str(out), "--columns", MAPPING, "--stack", "tokens,lexical,cue"]) == 0
    assert "audited table:" in capsys.readouterr().out
    import polars as pl

    df = pl.read_parquet(out / "audited.parquet")
    assert df.height == N and set(df["status"]) == {"ok"}
    assert df["prompt"][0] == "What is in picture 0?" and df["chosen"][0] == "A detailed answer 0 about the scene."
    report = json.loads((out / "pairs" / "ingest_report.json").read_text())
    assert report["config"]["columns"] == MAPPING
    assert json.loads((out / "config.json").read_text())["columns"] == MAPPING


def test_score_columns_are_checked_like_ingests(raw, tmp_path, capsys):
    err = _cli_error(capsys, ["score", str(raw), "-o", str(tmp_path / "a"), "--columns", "prompt"])
    assert err == "Error: `--columns` entry 'prompt' is not CANON=SRC; write e.g. `--columns prompt=question,chosen=good`"
    err = _cli_error(capsys, ["score", str(raw), "-o", str(tmp_path / "a"), "--columns", "prompt=quest"])
    assert "`--columns`: the source has no column `quest`" in err
    assert not (tmp_path / "a").exists()
    run_ingest(raw, tmp_path / "pairs", columns=MAPPING)
    err = _cli_error(capsys, ["score", str(tmp_path / "pairs"), "-o", str(tmp_path / "a"), "--columns", MAPPING])
    assert "`--columns` maps the columns of a raw source" in err and "is a pairs folder" in err
    assert not (tmp_path / "a").exists()


def test_a_run_that_fails_later_on_bad_input_removes_the_folder_it_made(raw, tmp_path, capsys):
    """Ingested (AUDIT_DIR/pairs written), then too few groups for the folds: no half-made audit stays."""
    rows = [json.loads(line) for line in raw.read_text().splitlines()]
    few = write_jsonl(tmp_path / "few.jsonl", [{**r, "img": f"im{i % 3}.png"} for i, r in enumerate(rows)])
    out = tmp_path / "audit"
    err = _cli_error(capsys, ["score", str(few), "-o", str(out), "--columns", MAPPING])
    assert "form only 3 group(s)" in err
    assert not out.exists()


# ---- item: version, app on a missing folder, where an image was looked for ---------------------

def test_version_comes_from_the_installed_package(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"shortcut-audit {metadata.version('shortcut-audit')}"


def test_app_on_a_missing_folder_says_it_does_not_exist_before_starting(tmp_path, capsys, monkeypatch):
    import os

    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("Streamlit was started"))
    monkeypatch.chdir(tmp_path)
    err = _cli_error(capsys, ["app", "nope"])
    assert err == (f"Error: AUDIT_DIR `nope` does not exist (looked for `{tmp_path / 'nope'}`); pass the folder that "
                   "`shortcut-audit score -o` wrote")
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "audited.parquet").write_bytes(b"")
    err = _cli_error(capsys, ["app", "audit", "--compare", "other"])
    assert err.startswith("Error: `--compare` `other` does not exist")
    err = _cli_error(capsys, ["app", str(tmp_path)])          # there, but no audit
    assert "is not an audit folder (no audited.parquet)" in err


def test_a_missing_image_names_the_full_path_it_looked_for(raw, tmp_path):
    rows = [json.loads(line) for line in raw.read_text().splitlines()][:3]
    rows[1]["img"] = "pics/missing.png"
    src = write_jsonl(tmp_path / "sub" / "d.jsonl", rows)
    for i in (0, 2):
        (tmp_path / "sub" / f"im{i}.png").write_bytes(_noise_png(i))
    _, df = run_ingest(src, tmp_path / "pairs", columns=MAPPING)
    assert df["status"].to_list() == ["ok", "image_missing", "ok"]
    looked = (tmp_path / "sub" / "pics" / "missing.png").resolve()
    assert df["status_detail"][1] == (f"`pics/missing.png` not found: no file `{looked}` (image root "
                                      f"`{(tmp_path / 'sub').resolve()}`); put the image there, or pass the folder "
                                      "that holds the images as `--image-root`")
