"""Export: each format read back by its own reader (and by our ingest), rows, weights and image bytes
compared; prune and resample counts; resample is seeded and follows the weights."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from audit.config import ExportConfig, IngestConfig, ScoreConfig, SynthConfig
from audit.export import export, select
from audit.images import resolve_image
from audit.ingest import ingest
from audit.schemes import weights
from audit.score import score
from audit.synth import synth
from conftest import png_bytes, write_jsonl

N = 160


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    src = synth(SynthConfig(env="leadin", out=root / "src", n=N, format="rlaif-v", pairs_per_image=2))
    score(ScoreConfig(source=src.parent, out=root / "audit", cache_dir=root / "cache"))
    return root / "audit"


def _audited(audit_dir):
    df = pl.read_parquet(audit_dir / "audited.parquet").filter(pl.col("status") == "ok")
    pairs_dir = audit_dir / "pairs"
    images = {r["image_id"]: resolve_image(pairs_dir, r["image_path"]).read_bytes() for r in df.iter_rows(named=True)}
    return df, images


def _check_reingest(out, df, images, tmp_path, weight_col="weight"):
    """Our own ingest reads the export back: same pairs, same images (by content hash), same weights."""
    ingest(IngestConfig(source=out, out=tmp_path / "back"))
    back = pl.read_parquet(tmp_path / "back" / "pairs.parquet")
    assert back.height == df.height and (back["status"] == "ok").all()
    key = ["prompt", "chosen", "rejected"]
    joined = df.select(*key, "image_id", pl.col("weight").alias("w0")).join(
        back.select(*key, pl.col("image_id").alias("image_id_back"), pl.col(weight_col).alias("w1")), on=key)
    assert joined.height == df.height
    assert (joined["image_id"] == joined["image_id_back"]).all()
    assert joined["w1"].to_list() == pytest.approx(joined["w0"].to_list())


def test_parquet_roundtrip(audit_dir, tmp_path):
    import datasets

    df, images = _audited(audit_dir)
    rep = export(ExportConfig(audit=audit_dir, out=tmp_path / "x", format="parquet"))
    assert rep["rows_out"] == rep["scored"] == N
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "x" / "pairs.parquet"), split="train")
    assert ds.num_rows == N
    ds = ds.cast_column("image", datasets.Image(decode=False))
    for row in ds:
        assert row["image"]["bytes"] == images[row["image_id"]]
    assert ds["weight"] == pytest.approx(df["weight"].to_list())
    _check_reingest(tmp_path / "x" / "pairs.parquet", df, images, tmp_path)


def test_hf_save_to_disk_decodes_to_pil(audit_dir, tmp_path):
    import datasets
    from PIL import Image

    df, images = _audited(audit_dir)
    export(ExportConfig(audit=audit_dir, out=tmp_path / "x", format="hf"))
    ds = datasets.load_from_disk(str(tmp_path / "x" / "pairs_dataset"))
    assert ds.num_rows == N and isinstance(ds[0]["image"], Image.Image)
    raw = ds.cast_column("image", datasets.Image(decode=False))
    assert all(r["image"]["bytes"] == images[r["image_id"]] for r in raw)
    assert ds["weight"] == pytest.approx(df["weight"].to_list())
    _check_reingest(tmp_path / "x" / "pairs_dataset", df, images, tmp_path)


def test_alignrm_jsonl_with_images_beside(audit_dir, tmp_path):
    import datasets
    from PIL import Image

    df, images = _audited(audit_dir)
    export(ExportConfig(audit=audit_dir, out=tmp_path / "x", format="alignrm"))
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "x" / "alignrm_pairs.jsonl"), split="train")
    assert ds.num_rows == N and {"prompt", "img_path", "chosen", "rejected", "weight"} <= set(ds.column_names)
    files = sorted((tmp_path / "x" / "images").iterdir())
    assert len(files) == N // 2                    # two pairs per image: each image written once
    for f in files:
        Image.open(f).verify()                     # every exported image opens
    for r in ds:
        assert (tmp_path / "x" / r["img_path"]).read_bytes() == images[r["image_id"]]
    _check_reingest(tmp_path / "x" / "alignrm_pairs.jsonl", df, images, tmp_path)


def test_trl_format(audit_dir, tmp_path):
    import datasets

    df, images = _audited(audit_dir)
    export(ExportConfig(audit=audit_dir, out=tmp_path / "x", format="trl"))
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "x" / "train-00000-of-00001.parquet"), split="train")
    row = ds[0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert len(row["images"]) == 1 and "weight" in ds.column_names
    _check_reingest(tmp_path / "x" / "train-00000-of-00001.parquet", df, images, tmp_path)


def test_back_to_source_format(audit_dir, tmp_path):
    df, images = _audited(audit_dir)
    rep = export(ExportConfig(audit=audit_dir, out=tmp_path / "x", format="source"))
    assert rep["written_as"] == "rlaif-v"
    _check_reingest(tmp_path / "x" / "RLAIF-V-Dataset_000.parquet", df, images, tmp_path)


def test_vlfeedback_source_keeps_the_rating_margin(tmp_path):
    src = synth(SynthConfig(env="closing", out=tmp_path / "src", n=60, format="vlfeedback"))
    score(ScoreConfig(source=src.parent, out=tmp_path / "audit", cache_dir=tmp_path / "c"))
    export(ExportConfig(audit=tmp_path / "audit", out=tmp_path / "x", format="source"))
    ingest(IngestConfig(source=tmp_path / "x", out=tmp_path / "back"))
    a = pl.read_parquet(tmp_path / "audit" / "audited.parquet").sort("chosen", "rejected")
    b = pl.read_parquet(tmp_path / "back" / "pairs.parquet").sort("chosen", "rejected")
    assert b["margin"].to_list() == pytest.approx(a["margin"].to_list())
    assert b["weight"].to_list() == pytest.approx(a["weight"].to_list())


def test_prune_counts(audit_dir, tmp_path):
    df, _ = _audited(audit_dir)
    rep = export(ExportConfig(audit=audit_dir, out=tmp_path / "a", mode="prune"))
    kept = pl.read_parquet(tmp_path / "a" / "pairs.parquet")
    assert rep["rows_out"] == kept.height == int((~df["is_shortcut"]).sum())
    assert rep["dropped"] == int(df["is_shortcut"].sum())
    assert not kept["is_shortcut"].any() and (kept["weight"] == 1.0).all()
    rep = export(ExportConfig(audit=audit_dir, out=tmp_path / "b", mode="prune", prune_fraction=0.25))
    kept = pl.read_parquet(tmp_path / "b" / "pairs.parquet")
    assert rep["rows_out"] == kept.height == N - 40
    assert kept["audit_weight"].min() >= df["weight"].sort()[39]     # the 40 lowest weights are gone


def test_scheme_rechosen_at_export(audit_dir, tmp_path):
    df, _ = _audited(audit_dir)
    export(ExportConfig(audit=audit_dir, out=tmp_path / "x", scheme="ipw", clip=4.0))
    got = pl.read_parquet(tmp_path / "x" / "pairs.parquet")["weight"].to_numpy()
    expected = weights("ipw", np.ones(N, bool), text_prob=df["text_prob"].to_numpy(), sfc=df["sfc"].to_numpy(), clip=4.0)
    assert got == pytest.approx(expected) and got.max() <= 4.0 + 1e-9


def test_resample_is_seeded_and_follows_the_weights(audit_dir, tmp_path):
    r1 = export(ExportConfig(audit=audit_dir, out=tmp_path / "a", mode="resample", size=500, seed=3))
    export(ExportConfig(audit=audit_dir, out=tmp_path / "b", mode="resample", size=500, seed=3))
    a = pl.read_parquet(tmp_path / "a" / "pairs.parquet")
    assert r1["rows_out"] == a.height == 500
    assert (tmp_path / "a" / "pairs.parquet").read_bytes() == (tmp_path / "b" / "pairs.parquet").read_bytes()
    # Frequencies: 40 pairs with weights 1..40, 200,000 draws, fixed seed. Pearson's chi-square with
    # 39 degrees of freedom stays below 72.1, its 0.001 critical value.
    w = np.arange(1, 41, dtype=float)
    idx = select(w, np.zeros(40, bool), [str(i) for i in range(40)],
                 ExportConfig(audit=tmp_path, out=tmp_path, mode="resample", size=200_000, seed=0))
    counts = np.bincount(idx, minlength=40)
    expected = 200_000 * w / w.sum()
    assert ((counts - expected) ** 2 / expected).sum() < 72.1


def test_unscored_rows_are_accounted_for(tmp_path):
    for i in range(30):
        (tmp_path / f"{i}.png").write_bytes(png_bytes((i * 8, 90, 200 - i)))
    rows = [{"prompt": f"What is {i}?", "chosen": f"It is {i}.", "rejected": f"It is {i + 1}.", "image": f"{i}.png"}
            for i in range(30)]
    rows[4]["image"] = "gone.png"
    write_jsonl(tmp_path / "d.jsonl", rows)
    score(ScoreConfig(source=tmp_path / "d.jsonl", out=tmp_path / "audit", cache_dir=tmp_path / "c"))
    rep = export(ExportConfig(audit=tmp_path / "audit", out=tmp_path / "x"))
    assert (rep["rows_in"], rep["scored"], rep["rows_out"]) == (30, 29, 29)
    assert rep["excluded_unscored"] == {"image_missing": 1}
    assert json.loads((tmp_path / "x" / "export_report.json").read_text())["rows_out"] == 29
