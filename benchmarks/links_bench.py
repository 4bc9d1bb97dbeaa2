"""Perceptual image links and `overlap` at scale (not a timed test).

    python benchmarks/links_bench.py --scenes 3000 --photos 1000 --overlap 100000 1000000 --b-rows 100000

1. Hash quality: copies of synthetic scenes (small flat shapes: the hard case) and of photo-like
   pictures (1/f noise, the spectrum of natural images) re-encoded as JPEG (quality 30, 60, 80),
   halved and doubled: the share found within `NEAR_DISTANCE` by the band index; and the rate of
   unrelated pictures that fall within it (every pair compared).
2. Grouping: the largest group and the group count of templated synthetic data under the old rule (a
   prompt shared by at most 10% of the rows links) and the current one (texts used with at most 3
   pictures link; perceptual and answer links added).
3. `overlap` on generated pairs tables (row groups of 8,192 rows, as ingest writes them) (A rows x B rows, texts and hashes only, 5% of B copied from A
   with flipped hash bits): seconds and peak RSS of the command in a fresh process, at two sizes of A.

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


def variants(im):
    from PIL import Image

    def jpeg(x, q):
        buf = io.BytesIO()
        x.convert("RGB").save(buf, format="JPEG", quality=q)
        return Image.open(io.BytesIO(buf.getvalue()))

    w, h = im.size
    return {"jpeg30": jpeg(im, 30), "jpeg60": jpeg(im, 60), "jpeg80": jpeg(im, 80),
            "half": im.resize((w // 2, h // 2), Image.Resampling.BICUBIC),
            "double": im.resize((w * 2, h * 2), Image.Resampling.BICUBIC),
            "half_jpeg60": jpeg(im.resize((w // 2, h // 2), Image.Resampling.BICUBIC), 60)}


def quality(name: str, images: list, n_copies: int) -> dict:
    from audit.links import NEAR_DISTANCE, BandIndex, hash_words, image_phash

    t0 = time.perf_counter()
    hexes = [image_phash(im) for im in images]
    secs = time.perf_counter() - t0
    words, pos = hash_words(hexes)
    full = np.bitwise_count(words[:, None, :] ^ words[None, :, :]).sum(-1)
    iu = np.triu_indices(len(words), 1)
    d = full[iu]
    index = BandIndex(words)
    found = {}
    for k in range(n_copies):
        for v, im in variants(images[pos[k]]).items():
            h = image_phash(im)
            if h is None:
                continue
            q, x, _ = index.query(hash_words([h])[0])
            found.setdefault(v, []).append(bool((x == k).any()))
    return {"images": name, "n": len(images), "hashed": int(len(pos)), "hash_per_s": round(len(images) / secs, 1),
            "unrelated_pairs": int(d.size), "unrelated_within": int((d <= NEAR_DISTANCE).sum()),
            "unrelated_rate": float((d <= NEAR_DISTANCE).mean()), "unrelated_min_distance": int(d.min()),
            "copies_found": {v: round(float(np.mean(f)), 4) for v, f in found.items()}}


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


def write_table(path: Path, n: int, seed: int, copy_from: Path | None = None, copies: float = 0.0) -> None:
    """A pairs table of n rows (texts and hashes, no image files): specific prompts and answers."""
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
                    "image_phash": [w.astype(">u8").tobytes().hex() for w in words],
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
                    for c in ("prompt", "chosen", "rejected"):
                        cols[c][j] = src[c][r].as_py()
            w.write_table(pa.Table.from_pydict(cols, schema=schema.PAIRS_SCHEMA), row_group_size=8192)   # as ingest writes
    (path / schema.REPORT_FILE).write_text(json.dumps({"format": "pairs", "image_roots": []}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=3000)
    ap.add_argument("--photos", type=int, default=1000)
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
                              args.copies),
                      quality("photo-like 128 px", [noise_image(rng) for _ in range(args.photos)], args.copies)]
    print(json.dumps(out["quality"], indent=1), flush=True)
    out["grouping"] = grouping(args.grouping)
    print(json.dumps(out["grouping"]), flush=True)
    shutil.rmtree(HERE / "_work", ignore_errors=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
