"""`synth --format F` then `ingest` gives back the same pairs, for every source format."""

from __future__ import annotations

import hashlib

import pytest

from audit.cli import main
from audit.synth import generate
from conftest import read_pairs, read_report

FORMATS = [("pairs", "parquet"), ("pairs", "jsonl"), ("pairs", "json"), ("pairs", "hf"), ("vlfeedback", None),
           ("rlaif-v", None), ("rlhf-v", None), ("povid", None), ("trl", "parquet"), ("trl", "hf"),
           ("vl-rewardbench", None), ("alignrm", None)]
N = 24


@pytest.mark.parametrize("fmt,container", FORMATS)
def test_synth_ingest_roundtrip(tmp_path, fmt, container):
    args = ["synth", "--env", "markdown", "--n", str(N), "--seed", "3", "--format", fmt,
            "--pairs-per-image", "2", "-o", str(tmp_path / "src")]
    if container:
        args += ["--container", container]
    assert main(args) == 0
    assert main(["ingest", str(tmp_path / "src"), "-o", str(tmp_path / "out")]) == 0
    rep, df = read_report(tmp_path / "out"), read_pairs(tmp_path / "out")
    expected = list(generate("markdown", N, seed=3, pairs_per_image=2))

    assert rep["format"] == fmt
    assert rep["records_in"] == rep["rows_out"] == N and rep["pairs_ok"] == N
    assert df["prompt"].to_list() == [p.prompt for p in expected]
    assert df["chosen"].to_list() == [p.chosen for p in expected]
    assert df["rejected"].to_list() == [p.rejected for p in expected]
    # Ground truth travels as the source's own columns, with its types.
    assert df["cue_on_chosen"].to_list() == [p.truth["cue_on_chosen"] for p in expected]
    assert df["task"].to_list() == [p.truth["task"] for p in expected]
    # Two pairs per image: each image is one id (VLFeedback writes one JPEG per row, same pixels).
    if fmt != "vlfeedback":
        assert df["image_id"].to_list() == [hashlib.sha256(p.image_png).hexdigest()[:32] for p in expected]
        assert df["image_id"].n_unique() == N // 2
    else:
        assert (df["margin"] > 0).all()
        assert df["image_id"].n_unique() == N // 2   # identical JPEG bytes for the same scene


def test_synth_is_deterministic(tmp_path):
    for k in (1, 2):
        assert main(["synth", "--env", "leadin", "--n", "30", "--format", "rlaif-v", "-o", str(tmp_path / f"s{k}")]) == 0
    a = (tmp_path / "s1" / "RLAIF-V-Dataset_000.parquet").read_bytes()
    b = (tmp_path / "s2" / "RLAIF-V-Dataset_000.parquet").read_bytes()
    assert a == b


def test_ingest_is_deterministic(tmp_path):
    assert main(["synth", "--env", "closing", "--n", "40", "--format", "alignrm", "-o", str(tmp_path / "src")]) == 0
    for k in (1, 2):
        assert main(["ingest", str(tmp_path / "src"), "-o", str(tmp_path / f"o{k}")]) == 0
    assert (tmp_path / "o1" / "pairs.parquet").read_bytes() == (tmp_path / "o2" / "pairs.parquet").read_bytes()
