"""Leak-proof grouping and train / eval overlap: re-encoded or resized copies of a picture are one
picture, equal answers link pairs, duplicates are marked (never dropped), and `overlap` finds copies
between two sets with few false alarms."""

from __future__ import annotations

import io
import json

import numpy as np
import polars as pl
import pytest
from PIL import Image

from audit.cli import main
from audit.config import IngestConfig, OverlapConfig, ScoreConfig
from audit.folds import assign_folds, group_ids
from audit.ingest import ingest
from audit.links import BandIndex, hash_words, image_clusters, image_phash, near_pairs
from audit.overlap import overlap
from audit.synth.scenes import draw_scene, make_scene
from conftest import write_jsonl


def scene(i: int, size: int = 96) -> Image.Image:
    return draw_scene(make_scene(np.random.default_rng([7, i])), size)


def encode(im: Image.Image, fmt: str, scale: float = 1.0, quality: int = 80) -> bytes:
    if scale != 1.0:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def noise_image(rng: np.random.Generator, size: int = 128) -> Image.Image:
    """A photo-like picture: 1/f noise in each channel (natural images' spectrum)."""
    f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
    f[0, 0] = 1
    chans = []
    for _ in range(3):
        x = np.real(np.fft.ifft2((rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / f))
        chans.append((x - x.min()) / (x.max() - x.min() + 1e-9))
    return Image.fromarray((np.stack(chans, -1) * 255).astype(np.uint8))


def test_png_jpeg_and_resized_copies_are_one_picture_and_one_fold(tmp_path):
    """Three encodings of each of 12 pictures, under a templated prompt (used with every picture, so
    it links nothing): the copies share a group and a fold; different pictures do not."""
    rows = []
    for i in range(12):
        im = scene(i)
        for k, (fmt, scale) in enumerate((("PNG", 1.0), ("JPEG", 1.0), ("JPEG", 0.5))):
            name = f"{i}-{k}.{'png' if fmt == 'PNG' else 'jpg'}"
            (tmp_path / name).write_bytes(encode(im, fmt, scale))
            rows.append({"prompt": "Describe this image in detail.", "chosen": f"answer {i}-{k} good",
                         "rejected": f"answer {i}-{k} bad", "image": name})
    write_jsonl(tmp_path / "d.jsonl", rows)
    ingest(IngestConfig(source=tmp_path / "d.jsonl", out=tmp_path / "pairs"))
    df = pl.read_parquet(tmp_path / "pairs" / "pairs.parquet")
    assert df["image_id"].n_unique() == 36 and df["image_phash"].null_count() == 0
    picture = image_clusters(df["image_phash"])
    groups = group_ids(df["image_id"], df["sample_id"], df["prompt_id"], phash_cluster=picture)
    folds = assign_folds(groups, 5, 0)
    for i in range(12):
        assert len(set(groups[3 * i: 3 * i + 3].tolist())) == 1
        assert len(set(folds[3 * i: 3 * i + 3].tolist())) == 1
    assert len(set(groups.tolist())) == 12


def test_identical_answers_under_different_pictures_group_and_templates_do_not(tmp_path):
    image = [f"img{i}" for i in range(10)]
    sample = [str(i) for i in range(10)]
    prompt = [f"p{i}" for i in range(10)]
    answers = ["a", "a", "b", "c", "t", "t", "t", "t", "t", "d"]   # `t`: the same two answers with 5 pictures
    g = group_ids(image, sample, prompt, answers=answers)
    assert g[0] == g[1] and len(set(g[4:9].tolist())) == 5 and len(set(g.tolist())) == 9


def test_near_index_finds_what_all_pairs_finds():
    """The band index against comparing every pair: every pair within 15 bits is found (pigeonhole),
    nothing beyond the threshold is reported."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=(300, 4), dtype=np.uint64)
    flips = []
    for d in (0, 3, 9, 15, 25, 40):
        w = base[:20].copy()
        for row in w:
            for bit in rng.choice(256, d, replace=False):
                row[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
        flips.append(w)
    words = np.concatenate([base, *flips])
    i, j, d = near_pairs(words, 32)
    full = np.bitwise_count(words[:, None, :] ^ words[None, :, :]).sum(-1)
    iu = np.triu_indices(len(words), 1)
    truth = {(a, b) for a, b, x in zip(*iu, full[iu]) if x <= 32}
    found = set(zip(i.tolist(), j.tolist()))
    assert found <= truth and all(x <= 32 for x in d)
    assert {(a, b) for a, b in truth if full[a, b] <= 15} <= found
    q, x, dq = BandIndex(words[:300]).query(words[300:], 32)
    assert {(int(a), int(b)) for a, b in zip(q, x)} >= {(k * 20 + r, r) for k in range(4) for r in range(20)}


def test_flat_pictures_are_not_hashed():
    assert image_phash(Image.new("RGB", (40, 40), (200, 10, 10))) is None
    assert len(image_phash(scene(1))) == 64


def test_false_alarms_on_unrelated_pictures_are_rare():
    """1,000 synthetic scenes and 300 photo-like pictures: unrelated ones rarely fall within the
    threshold (the measured rates are in benchmarks/RESULTS.md), copies nearly always do."""
    scenes = [scene(i, 64) for i in range(1000)]
    words, _ = hash_words([image_phash(s) for s in scenes])
    i, j, _ = near_pairs(words)
    assert len(i) / (1000 * 999 / 2) < 5e-4
    rng = np.random.default_rng(3)
    photos = [noise_image(rng) for _ in range(300)]
    pw, _ = hash_words([image_phash(p) for p in photos])
    assert len(near_pairs(pw)[0]) == 0
    copies, _ = hash_words([image_phash(Image.open(io.BytesIO(encode(p, "JPEG", 0.75, 60)))) for p in photos[:100]])
    q, x, _ = BandIndex(pw).query(copies)
    assert set(zip(q.tolist(), x.tolist())) >= {(k, k) for k in range(100)}


def test_duplicates_are_marked_never_dropped(tmp_path):
    im = scene(3)
    (tmp_path / "a.png").write_bytes(encode(im, "PNG"))
    (tmp_path / "b.jpg").write_bytes(encode(im, "JPEG", 0.75))
    rows = [{"prompt": "What is shown?", "chosen": "A red  circle.", "rejected": "A blue square.", "image": "a.png"},
            {"prompt": "what is shown?", "chosen": "a red circle.", "rejected": "A blue square.", "image": "b.jpg"},
            {"prompt": "What is shown?", "chosen": "A blue square.", "rejected": "A red circle.", "image": "a.png"}]
    write_jsonl(tmp_path / "d.jsonl", rows)
    rep = ingest(IngestConfig(source=tmp_path / "d.jsonl", out=tmp_path / "pairs"))
    df = pl.read_parquet(tmp_path / "pairs" / "pairs.parquet")
    assert df.height == 3 and df["status"].to_list() == ["ok", "duplicate", "ok"]
    assert "encoding" in df["status_detail"][1] and rep["duplicates"] == 1
    assert df["pair_id"].n_unique() == 3


def _sets(tmp_path, plant: int = 12):
    from audit.config import SynthConfig
    from audit.synth import synth

    synth(SynthConfig(env="clean", out=tmp_path / "train", n=150, image_size=96))
    synth(SynthConfig(env="clean", out=tmp_path / "eval", n=60, seed=5, plant=plant, image_size=96,
                      format="vl-rewardbench"))


def test_overlap_finds_planted_copies_and_excludes_them_in_bs_format(tmp_path, capsys):
    _sets(tmp_path)
    assert main(["overlap", str(tmp_path / "train"), str(tmp_path / "eval"), "-o", str(tmp_path / "ov"),
                 "--exclude", "--kinds", "image,near_image,pair"]) == 0
    assert "near_image" in capsys.readouterr().out
    rep = json.loads((tmp_path / "ov" / "overlap.json").read_text())
    m = pl.read_parquet(tmp_path / "ov" / "overlap.parquet")
    near = m.filter(pl.col("kind") == "near_image")
    planted = {f"clean-s5-{i:07d}" for i in range(12)}
    assert planted <= set(near["b_sample_id"].to_list())                  # every re-encoded copy found
    assert len(set(near["b_sample_id"].to_list()) - planted) <= 2      # a near-identical scene by chance, rarely
    assert (near["distance"] <= 32).all()          # 0 is possible: other bytes, the same hash
    assert planted <= set(m.filter(pl.col("kind") == "pair")["b_sample_id"].to_list())   # the texts were copied too
    assert rep["kinds"]["near_image"]["b_rows"] >= 12 and rep["b_by_source"]["vl-rewardbench"]["rows"] == 60
    ex = rep["excluded"]
    assert ex["format"] == "vl-rewardbench" and ex["rows_out"] == 60 - rep["contaminated"]["b_rows"]
    kept = pl.read_parquet(ex["path"])
    assert kept.height == ex["rows_out"]
    assert not planted & set(kept["id"].to_list() if "id" in kept.columns else [])


def test_overlap_of_unrelated_sets_is_quiet_on_pictures(tmp_path):
    _sets(tmp_path, plant=0)
    rep = overlap(OverlapConfig(a=tmp_path / "train", b=tmp_path / "eval", out=tmp_path / "ov"))
    assert rep["kinds"]["image"]["matches"] == 0
    assert rep["kinds"]["near_image"]["b_rows"] <= 3      # a near-identical scene by chance, at most a few


def test_overlap_options_are_validated():
    from audit.errors import ConfigError

    with pytest.raises(ConfigError, match="--kinds"):
        OverlapConfig(a="a", b="b", out="o", kinds="image,colour")
    with pytest.raises(ConfigError, match="near-distance|near_distance"):
        OverlapConfig(a="a", b="b", out="o", near_distance=300)


def test_score_reports_links_and_warns_on_a_large_group(tmp_path):
    """A picture copied (re-encoded) under many pairs makes one large group: the summary counts the
    rows its links merged and warns, naming the key."""
    rows = []
    big = scene(0)
    for i in range(30):
        name = f"big{i}.jpg"
        (tmp_path / name).write_bytes(encode(big, "JPEG", 1.0, 60 + i))
        rows.append({"prompt": f"Question {i} about it?", "chosen": f"Good answer number {i}.",
                     "rejected": f"Bad answer number {i}.", "image": name, "rm_c": 1.0, "rm_r": float(i % 2)})
    for i in range(1, 60):
        (tmp_path / f"s{i}.png").write_bytes(encode(scene(i), "PNG"))
        rows.append({"prompt": f"Other question {i}?", "chosen": f"Fine reply {i}.", "rejected": f"Poor reply {i}.",
                     "image": f"s{i}.png", "rm_c": 1.0, "rm_r": float(i % 2)})
    write_jsonl(tmp_path / "d.jsonl", rows)
    from audit.score import score

    s = score(ScoreConfig(source=tmp_path / "d.jsonl", out=tmp_path / "audit", mm_scores="rm_c,rm_r",
                          cache_dir=tmp_path / "cache"))
    links = s["folds"]["links"]
    assert links["near_copy_rows"] >= 30 and links["largest_group"]["rows"] >= 30
    assert links["largest_group"]["key"] == "picture"
    assert any("one group holds" in w and "picture" in w for w in s["warnings"])
    assert s["encoders"]["text"]["probe"] == "stack"


def test_keying_a_huge_answer_takes_bounded_memory_and_keeps_the_keys_of_ordinary_texts():
    """A 200 MB response took gigabytes in the text-link normalisation (NFKC, case-fold and whitespace
    copies of the whole text, twice): past its first NORMALISED_CHARS characters a text is keyed as it is."""
    import tracemalloc

    from audit import links
    from audit.links import answers_key, text_key

    # keys of texts within the bound are the ones earlier versions wrote (pair ids and groups stay put)
    assert answers_key("Yes,  a DOG.", "ﬁne \u00b4") == "f2800b83fc9e418c"
    assert text_key("What is shown?", "Yes,  a DOG.", "no") == "e1ab4dacc1ccb66e"
    big = "Ünïcödé  wörds\tand   ÀÉÎ ﬁ " * 400_000                 # 11M characters, 22 MB
    tracemalloc.start()
    try:
        keys = [answers_key(big, "no"), text_key("p", big, "r")]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8e6, peak                                       # a few MB, not a few copies of the text
    assert keys[0] == answers_key("no", big) != answers_key(big + "!", "no")
    n = links.NORMALISED_CHARS
    head = big[:n].replace("wörds", "WÖRDS").replace("and   ", "AND \t\n")          # same length, same normal form
    assert answers_key(head + big[n:], "no") == keys[0]


def _low_texture_sets(root, per_kind: int = 8, seed: int = 0):
    """Two pairs sources: A holds `per_kind` pictures of each low-texture kind (96 px PNG), B a resized
    (72-80 px) JPEG copy of each, in the same order; every text is specific, so only pictures link."""
    from audit.synth.pictures import LOW_TEXTURE, resized_copy

    rng = np.random.default_rng(seed)
    for side in ("a", "b"):
        (root / side).mkdir(parents=True, exist_ok=True)
    rows = {"a": [], "b": []}
    for kind, draw in LOW_TEXTURE.items():
        for i in range(per_kind):
            name = f"{kind.replace(' ', '_')}{i}"
            im = draw(rng)
            (root / "a" / f"{name}.png").write_bytes(encode(im, "PNG"))
            (root / "b" / f"{name}.jpg").write_bytes(resized_copy(im, rng))
            for side, ext in (("a", "png"), ("b", "jpg")):
                rows[side].append({"id": f"{side}-{name}", "prompt": f"What does {side} {name} show?",
                                   "chosen": f"{side} {name} shows it well.", "rejected": f"{side} {name} is blank.",
                                   "image": f"{name}.{ext}"})
    for side in ("a", "b"):
        write_jsonl(root / side / "d.jsonl", rows[side])
    return len(rows["a"])


def test_resized_copies_of_low_texture_pictures_are_found_by_overlap(tmp_path):
    """Gradients, smooth fields, renders, charts and diagrams copied at 72-80 px as JPEG: `overlap` finds
    at least 95% of the copies (each with its own original only), as it does for photographs."""
    n = _low_texture_sets(tmp_path)
    rep = overlap(OverlapConfig(a=tmp_path / "a" / "d.jsonl", b=tmp_path / "b" / "d.jsonl", out=tmp_path / "ov"))
    near = pl.read_parquet(tmp_path / "ov" / "overlap.parquet").filter(pl.col("kind") == "near_image")
    assert rep["kinds"]["near_image"]["b_rows"] >= 0.95 * n, rep["kinds"]["near_image"]
    assert (near["a_sample_id"].str.slice(2) == near["b_sample_id"].str.slice(2)).all()   # no false alarm


def test_resized_copies_of_low_texture_pictures_share_a_fold(tmp_path):
    """The same pictures in one table: each copy is grouped (so folded) with its original, and no two
    originals are grouped together."""
    from audit.context import open_pairs

    n = _low_texture_sets(tmp_path)
    both = [json.loads(line) for side in ("a", "b") for line in (tmp_path / side / "d.jsonl").read_text().splitlines()]
    for side in ("a", "b"):
        for f in (tmp_path / side).glob("*.*g"):
            f.rename(tmp_path / f.name)
    write_jsonl(tmp_path / "both.jsonl", both)
    ingest(IngestConfig(source=tmp_path / "both.jsonl", out=tmp_path / "pairs"))
    ctx = open_pairs(ScoreConfig(source=tmp_path / "pairs", out=tmp_path / "audit", folds=5), tmp_path / "pairs", "cpu")
    assert ctx.m == 2 * n
    together = np.mean([ctx.groups[k] == ctx.groups[n + k] for k in range(n)])
    assert together >= 0.95, together
    assert len(set(ctx.groups[:n].tolist())) == n and (np.mean([ctx.folds[k] == ctx.folds[n + k] for k in range(n)]) >= 0.95)


def test_only_smooth_pictures_get_a_thumbnail_and_text_pages_never_link_by_it():
    """The thumbnail is kept for smooth pictures (where the hash is unreliable), not for textured ones:
    unrelated text pages share their layout, so their thumbnails are close, and they must not link. A
    two-colour ramp of one brightness has no hash (flat in grey) but its thumbnail links its copy."""
    from audit.links import Pictures, image_signature, near_pairs
    from audit.synth.pictures import gradient, resized_copy, text_page

    rng = np.random.default_rng(5)
    assert image_signature(gradient(rng))[1] is not None
    assert image_signature(Image.new("RGB", (40, 40), (200, 10, 10))) == (None, None)
    pages = [image_signature(text_page(rng)) for _ in range(60)]
    assert all(t is None for _, t in pages) and len(near_pairs(Pictures.of(*zip(*pages))[0])[0]) == 0
    t = np.linspace(0, 1, 96)[None, :, None]
    ramp = Image.fromarray((np.array([180, 60, 120]) * (1 - t) + np.array([60, 120, 170]) * t).repeat(96, 0)
                           .astype(np.uint8))
    copy = Image.open(io.BytesIO(resized_copy(ramp, rng)))
    (h0, t0), (h1, t1) = image_signature(ramp), image_signature(copy)
    assert h0 is None and t0 is not None
    pics = Pictures.of([h0, h1], [t0, t1])[0]
    assert pics.near(np.array([0]), pics, np.array([1]))[0].all()
