"""Perceptual image links and `overlap` at scale (not a timed test).

    python benchmarks/links_bench.py --scenes 3000 --photos 1000 --low-texture 600 --pages 500 \\
        --overlap 100000 1000000 --b-rows 100000

1. Picture links (`audit.links`: the perceptual hash, and the thumbnail of smooth pictures): copies
   of synthetic scenes (small flat shapes), photo-like pictures (1/f noise, the spectrum of natural
   images), low-texture pictures (smooth gradients, smooth fields, shaded renders, bar charts, box
   diagrams: `audit.synth.pictures`) and text pages, re-encoded as JPEG (quality 30, 60, 80), halved,
   doubled, halved + JPEG 60, and resized to 75-83% as JPEG 50-90 (a re-upload): the share the
   index finds, with the hash alone (the rule before thumbnails) and with hash or thumbnail; and the
   unrelated pairs of each set called one picture (every pair compared).
2. Grouping: the largest group and the group count of templated synthetic data under the old rule (a
   prompt shared by at most 10% of the rows links) and the current one (texts used with at most 3
   pictures link; perceptual and answer links added).
3. `overlap` on generated pairs tables (row groups of 8,192 rows, as ingest writes them; A rows x B
   rows, texts, hashes and, on a quarter of the rows, thumbnails; 5% of B copied from A with flipped
   hash bits and a thumbnail moved by +-2 levels): seconds and peak RSS of the command in a fresh
   process, at two sizes of A.

Results: benchmarks/results/links.json, printed as Markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ingest_bench import run_measured  # noqa: E402


def noise_image(rng, size=128):
    from PIL import Image

    f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
    f[0, 0] = 1
    chans = []
    for _ in range(3):
        x = np.real(np.fft.ifft2((rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / f ** rng.uniform(0.8, 1.3)))
        chans.append((x - x.min()) / (x.max() - x.min() + 1e-9))
    return Image.fromarray((np.stack(chans, -1) * 255).astype(np.uint8))


def variants(im, rng):
    from PIL import Image

    from audit.synth.pictures import resized_copy

    def jpeg(x, q):
        buf = io.BytesIO()
        x.convert("RGB").save(buf, format="JPEG", quality=q)
        return Image.open(io.BytesIO(buf.getvalue()))

    w, h = im.size
    return {"jpeg30": jpeg(im, 30), "jpeg60": jpeg(im, 60), "jpeg80": jpeg(im, 80),
            "half": im.resize((w // 2, h // 2), Image.Resampling.BICUBIC),
            "double": im.resize((w * 2, h * 2), Image.Resampling.BICUBIC),
            "half_jpeg60": jpeg(im.resize((w // 2, h // 2), Image.Resampling.BICUBIC), 60),
            # a re-upload: 75-83% of the side (72-80 px of 96), JPEG quality 50-90
            "resized_jpeg": Image.open(io.BytesIO(resized_copy(im, rng, (round(0.75 * w), round(0.83 * w)))))}


def _hash_only(pics):
    """The same pictures without their thumbnails: the rule before thumbnails (hash bits only)."""
    from audit.links import Pictures

    return Pictures(pics.words, pics.hashed, pics.thumbs[:0], np.full(len(pics), -1, dtype=np.int64))


def _unrelated(pics, block: int = 256) -> dict:
    """Every pair of distinct pictures of the set checked with the rule (`Pictures.near`): how many are
    called one picture by the hash alone and by hash or thumbnail, and the closest hash distance."""
    from audit.links import NEAR_DISTANCE as NEAR

    n, by_hash, by_rule, closest = len(pics), 0, 0, None
    for s in range(0, n - 1, block):
        rows = np.arange(s, min(s + block, n - 1))
        count = n - rows - 1
        i = np.repeat(rows, count)
        j = i + 1 + (np.arange(i.size) - np.repeat(np.cumsum(count) - count, count))
        keep, d = pics.near(i, pics, j)
        by_hash += int(((d >= 0) & (d <= NEAR)).sum())
        by_rule += int(keep.sum())
        hashed = d[d >= 0]
        closest = min(closest if closest is not None else 256, int(hashed.min())) if hashed.size else closest
    pairs = n * (n - 1) // 2
    return {"unrelated_pairs": pairs, "unrelated_within_hash": by_hash, "unrelated_within": by_rule,
            "unrelated_rate": by_rule / pairs if pairs else 0.0, "unrelated_min_distance": closest}


def quality(name: str, images: list, n_copies: int, rng) -> dict:
    """Hash (and thumbnail) quality on one set: copies found by the index, with the hash alone and with
    the hash or thumbnail, and the unrelated pairs of the set called one picture."""
    from audit.links import BandIndex, Pictures, image_signature

    t0 = time.perf_counter()
    sigs = [image_signature(im) for im in images]
    secs = time.perf_counter() - t0
    pics, pos = Pictures.of([h for h, _ in sigs], [t for _, t in sigs])
    index, old = BandIndex(pics), BandIndex(_hash_only(pics))
    found, found_hash = {}, {}
    copies = [(k, variants(images[pos[k]], rng)) for k in range(min(n_copies, len(pos)))]
    for v in copies[0][1]:
        sig = [image_signature(c[v]) for _, c in copies]
        cp, cpos = Pictures.of([h for h, _ in sig], [t for _, t in sig])
        for out, idx, q_pics in ((found, index, cp), (found_hash, old, _hash_only(cp))):
            q, x, _ = idx.query(q_pics)
            hit = set(zip(cpos[q].tolist(), x.tolist()))
            out[v] = round(float(np.mean([(k, k) in hit for k, _ in copies])), 4)
    return {"images": name, "n": len(images), "hashed": int(pics.hashed.sum()), "thumbed": int((pics.thumb_of >= 0).sum()),
            "signatures_per_s": round(len(images) / secs, 1), **_unrelated(pics),
            "copies_found": found, "copies_found_by_hash_alone": found_hash}


def grouping(n: int) -> dict:
    import polars as pl

    from audit.config import IngestConfig, SynthConfig
    from audit.folds import codes, group_keys, link_groups
    from audit.ingest import ingest
    from audit.links import answers_key, image_clusters
    from audit.synth import synth

    work = HERE / "_work" / "grouping"
    shutil.rmtree(work, ignore_errors=True)
    synth(SynthConfig(env="leadin", n=n, pairs_per_image=2, out=work / "src"))
    ingest(IngestConfig(source=work / "src", out=work / "pairs"))
    d = pl.read_parquet(work / "pairs" / "pairs.parquet").filter(pl.col("status") == "ok")
    m = d.height
    prompt = codes(d["prompt_id"])
    counts = np.bincount(prompt)
    old = link_groups([d["image_id"], d["sample_id"], np.where(counts[prompt] <= max(2, int(0.1 * m)), prompt, -1)])
    keys = group_keys(codes(d["image_id"]), codes(d["sample_id"]), prompt, image_clusters(d["image_phash"]),
                      codes(pl.Series([answers_key(c, r) for c, r in zip(d["chosen"], d["rejected"])])))
    new = link_groups(keys)
    shutil.rmtree(work, ignore_errors=True)
    return {"pairs": m, "rule_10pct_rows": {"groups": int(old.max() + 1), "largest": int(np.bincount(old).max())},
            "rule_3_pictures": {"groups": int(new.max() + 1), "largest": int(np.bincount(new).max())}}


def _thumbs(rng, k: int, share: float = 0.25) -> list:
    """Thumbnails (hex) on `share` of k rows: random smooth layouts (a random colour per quarter of the
    picture, +-8 levels of noise per cell); None elsewhere."""
    base = np.repeat(np.repeat(rng.integers(0, 256, (k, 2, 2, 3)), 4, axis=1), 4, axis=2)
    cells = np.clip(base + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8).reshape(k, -1)
    return [c.tobytes().hex() if on else None for c, on in zip(cells, rng.random(k) < share)]


def _moved(thumb: str | None, rng) -> str | None:
    if thumb is None:
        return None
    t = np.frombuffer(bytes.fromhex(thumb), dtype=np.uint8).astype(np.int64)
    return np.clip(t + rng.integers(-2, 3, t.size), 0, 255).astype(np.uint8).tobytes().hex()


def write_table(path: Path, n: int, seed: int, copy_from: Path | None = None, copies: float = 0.0) -> None:
    """A pairs table of n rows (texts, hashes and some thumbnails, no image files): specific prompts and answers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from audit import schema

    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    step = 100_000
    src = pq.read_table(copy_from / schema.PAIRS_FILE) if copy_from is not None else None
    with pq.ParquetWriter(path / schema.PAIRS_FILE, schema.PAIRS_SCHEMA, compression="zstd") as w:
        for s in range(0, n, step):
            k = min(step, n - s)
            ids = np.arange(s, s + k)
            words = rng.integers(0, 2**63, size=(k, 4), dtype=np.uint64)
            cols = {"pair_id": [f"{seed}-{i}" for i in ids], "sample_id": [f"s{seed}-{i}" for i in ids],
                    "source": ["bench"] * k,
                    "prompt": [f"What does picture {seed}-{i} show in its upper half?" for i in ids],
                    "chosen": [f"It shows item {i} of set {seed} near the top edge, clearly." for i in ids],
                    "rejected": [f"It shows nothing at all in picture {seed}-{i}, I think." for i in ids],
                    "image_path": [None] * k, "image_id": [f"{seed:04d}{i:028x}" for i in ids],
                    "image_phash": [w.astype(">u8").tobytes().hex() for w in words], "image_thumb": _thumbs(rng, k),
                    "prompt_id": [f"{seed}-{i}" for i in ids], "margin": [None] * k,
                    "status": ["ok"] * k, "status_detail": [None] * k}
            if src is not None:
                take = np.flatnonzero(rng.random(k) < copies)
                for j in take:
                    r = int(rng.integers(src.num_rows))
                    h = bytearray(bytes.fromhex(src["image_phash"][r].as_py()))
                    for bit in rng.choice(256, 6, replace=False):
                        h[bit // 8] ^= 1 << (bit % 8)
                    cols["image_phash"][j] = bytes(h).hex()
                    cols["image_thumb"][j] = _moved(src["image_thumb"][r].as_py(), rng)
                    for c in ("prompt", "chosen", "rejected"):
                        cols[c][j] = src[c][r].as_py()
            w.write_table(pa.Table.from_pydict(cols, schema=schema.PAIRS_SCHEMA), row_group_size=8192)   # as ingest writes
    (path / schema.REPORT_FILE).write_text(json.dumps({"format": "pairs", "image_roots": []}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=3000)
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--low-texture", type=int, default=600, help="pictures of each low-texture kind (gradients, "
                    "smooth fields, renders, charts, diagrams)")
    ap.add_argument("--pages", type=int, default=500, help="text pages (textured, one layout: a check on false alarms)")
    ap.add_argument("--copies", type=int, default=300, help="pictures whose copies are looked up, per image set")
    ap.add_argument("--grouping", type=int, default=3000, help="templated synthetic pairs for the grouping rule")
    ap.add_argument("--overlap", type=int, nargs="*", default=[100_000, 1_000_000], help="sizes of A")
    ap.add_argument("--b-rows", type=int, default=100_000)
    ap.add_argument("--results", type=Path, default=HERE / "results" / "links.json")
    ap.add_argument("--make-table", nargs=3, metavar=("DIR", "ROWS", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("--copy-from", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_table:
        d, n, seed = args.make_table
        write_table(Path(d), int(n), int(seed), copy_from=args.copy_from, copies=0.05)
        return 0

    from audit.io import versions
    from audit.synth.pictures import LOW_TEXTURE, text_page
    from audit.synth.scenes import draw_scene, make_scene

    out = {"command": "python benchmarks/links_bench.py " + " ".join(sys.argv[1:]),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "versions": versions()}
    work = HERE / "_work" / "overlap"
    shutil.rmtree(work, ignore_errors=True)
    rows = []
    # First, while this process is small: a child's peak RSS (wait4) starts from its parent's, since
    # exec keeps the high-water mark of the memory it replaces. The tables are made by child processes.
    me = [sys.executable, str(Path(__file__).resolve())]
    for n_a in args.overlap:
        for cmd in (me + ["--make-table", str(work / f"a{n_a}"), str(n_a), "1"],
                    me + ["--make-table", str(work / f"b{n_a}"), str(args.b_rows), "2", "--copy-from", str(work / f"a{n_a}")]):
            assert run_measured(cmd)[2] == 0
        secs, rss, rc = run_measured([sys.executable, "-m", "audit", "overlap", str(work / f"a{n_a}"),
                                      str(work / f"b{n_a}"), "-o", str(work / f"o{n_a}")])
        assert rc == 0
        rep = json.loads((work / f"o{n_a}" / "overlap.json").read_text())
        import polars as pl

        planted = int(pl.read_parquet(work / f"b{n_a}" / "pairs.parquet", columns=["prompt"])["prompt"]
                      .str.contains("picture 1-", literal=True).sum())
        rows.append({"a_rows": n_a, "b_rows": args.b_rows, "planted_copies": planted, "seconds": round(secs, 1), "peak_rss_mib": round(rss, 1),
                     "near_image_b_rows": rep["kinds"]["near_image"]["b_rows"], "pair_b_rows": rep["kinds"]["pair"]["b_rows"],
                     "contaminated_b_rows": rep["contaminated"]["b_rows"]})
        print(json.dumps(rows[-1]), flush=True)
        shutil.rmtree(work / f"a{n_a}")
    out["overlap"] = rows
    rng = np.random.default_rng(0)
    out["quality"] = [quality("synthetic scenes 64 px", [draw_scene(make_scene(rng), 64) for _ in range(args.scenes)],
                              args.copies, rng),
                      quality("photo-like 128 px", [noise_image(rng) for _ in range(args.photos)], args.copies, rng)]
    out["quality"] += [quality(f"{kind}s 96 px", [draw(rng) for _ in range(args.low_texture)], args.copies, rng)
                       for kind, draw in LOW_TEXTURE.items()]
    out["quality"].append(quality("text pages 256 px", [text_page(rng) for _ in range(args.pages)], args.copies, rng))
    print(json.dumps(out["quality"], indent=1), flush=True)
    out["grouping"] = grouping(args.grouping)
    print(json.dumps(out["grouping"]), flush=True)
    shutil.rmtree(HERE / "_work", ignore_errors=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
