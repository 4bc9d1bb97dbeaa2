"""Pieces of the ingest: duplicate counting, the source-column schema, image checks, the benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.images import check_image, resolve_image
from audit.ingest import Dedup, PairsWriter
from conftest import png_bytes, run_ingest, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), max_size=300), st.integers(min_value=1, max_value=8))
def test_dedup_counts_earlier_occurrences(keys, flush_every):
    dedup, seen = Dedup(flush_every=flush_every), Counter()
    for k in keys:
        assert dedup.seen_before(k) == seen[k]
        seen[k] += 1


def test_dedup_handles_full_64_bit_keys():
    dedup = Dedup(flush_every=2)
    big = [2**64 - 1, 2**63, 0, 2**64 - 1, 2**63]
    assert [dedup.seen_before(k) for k in big] == [0, 0, 0, 1, 1]


def _row(i):
    return {"pair_id": f"p{i}", "sample_id": str(i), "source": "pairs", "prompt": "p", "chosen": "c", "rejected": "r",
            "image_path": None, "image_id": None, "prompt_id": "x", "margin": None, "status": "ok", "status_detail": None}


def test_source_columns_keep_types_and_spill_to_extra_json(tmp_path):
    w = PairsWriter(tmp_path / "t.parquet", batch_rows=2)
    w.add(_row(0), {"flag": True, "n": 1, "x": 0.5, "tags": ["a"], "name": "a"})
    w.add(_row(1), {"flag": False, "n": 2, "x": 1, "tags": None, "name": None})
    w.add(_row(2), {"flag": "yes", "n": 3, "x": 2.5, "late": {"k": 1}})   # "yes" does not fit bool; `late` is new
    w.close()
    t = pq.read_table(tmp_path / "t.parquet")
    types = {f.name: str(f.type) for f in t.schema}
    assert (types["flag"], types["n"], types["x"], types["tags"], types["name"]) == ("bool", "int64", "double", "string", "string")
    cols = t.to_pydict()
    assert cols["flag"] == [True, False, None]
    assert cols["tags"] == ['["a"]', None, None]
    assert [json.loads(v) if v else None for v in cols["extra_json"]] == [None, None, {"flag": "yes", "late": {"k": 1}}]


def test_check_image_statuses():
    assert check_image(png_bytes(), 10_000, True)[0] == "ok"
    assert check_image(png_bytes(size=(200, 200)), 10_000, True)[:2] == (
        "image_too_large", "declares 200x200 = 40000 pixels, above --max-pixels 10000")
    assert check_image(b"", 10_000, True)[0] == "image_corrupt"


def test_resolve_image_refuses_paths_outside(tmp_path):
    (tmp_path / "p" / "images").mkdir(parents=True)
    (tmp_path / "p" / "images" / "a.png").write_bytes(png_bytes())
    assert resolve_image(tmp_path / "p", "images/a.png") == (tmp_path / "p" / "images" / "a.png").resolve()
    for bad in ("../x.png", "/etc/passwd", "images/../../x.png"):
        try:
            resolve_image(tmp_path / "p", bad)
        except PermissionError:
            continue
        raise AssertionError(f"{bad} was not refused")


def test_images_shared_by_pairs_are_checked_and_stored_once(tmp_path):
    (tmp_path / "img.png").write_bytes(png_bytes())
    rows = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b", "image": "img.png"} for i in range(6)]
    rep, df = run_ingest(write_jsonl(tmp_path / "d.jsonl", rows), tmp_path / "o")
    assert rep["images"]["checked"] == 1 and df["image_id"].n_unique() == 1


def test_ingest_benchmark_script_runs(tmp_path):
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ingest_bench.py"), "--sizes", "200", "400",
                    "--work", str(tmp_path / "w"), "--results", str(out)], check=True, capture_output=True)
    res = json.loads(out.read_text())
    assert [r["pairs"] for r in res["rows"]] == [200, 400]
    assert all(r["pairs_per_s"] > 0 and r["peak_rss_mib"] > 0 for r in res["rows"])


def test_copy_images_makes_the_pairs_folder_self_contained_and_uid_becomes_sample_id(tmp_path):
    import shutil

    from audit.images import image_roots

    src = tmp_path / "src"
    (src / "pics").mkdir(parents=True)
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        (src / "pics" / f"{i}.png").write_bytes(png_bytes(colour, size=(16, 16)))
    rows = [{"uid": f"u-{i}", "prompt": f"q{i}", "chosen": "a", "rejected": "b", "image": f"pics/{i % 2}.png"}
            for i in range(4)]
    rep, df = run_ingest(write_jsonl(src / "d.jsonl", rows), tmp_path / "o", copy_images=True)
    assert df["sample_id"].to_list() == ["u-0", "u-1", "u-2", "u-3"]
    assert rep["images"]["stored_new"] == 2 and all(p.startswith("images/") for p in df["image_path"].to_list())
    shutil.rmtree(src)                                   # the source is gone: every image still resolves
    for p in df["image_path"].to_list():
        assert resolve_image(tmp_path / "o", p, image_roots(tmp_path / "o")).is_file()
    rep, df = run_ingest(write_jsonl(tmp_path / "s2" / "d.jsonl", [{**rows[0], "image": None}]), tmp_path / "o2")
    assert df["sample_id"].to_list() == ["u-0"]
