"""End-to-end `score` time vs the encoders alone on the same unique inputs (not a timed test).

    python benchmarks/score_bench.py --n 10000

1. synth + ingest N pairs (`leadin`, RLAIF-V layout, one image per pair);
2. in a fresh process: import torch, load the text encoder and the image featuriser, encode every
   unique text and image of the ok rows once (what any scorer must do): the encoder baseline;
3. in a fresh process: `shortcut-audit score` with an empty cache: the end-to-end time;
and reports the overhead ratio (2 over 1... i.e. score / encoders) and both peak RSS values.
Results: results/score.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

ENCODE_ONLY = r"""
import sys, time
t0 = time.perf_counter()
import polars as pl
from pathlib import Path
from audit.encoders.text import load_text_encoder
from audit.encoders.image import load_image_encoder
from audit.images import resolve_image
pairs = Path(sys.argv[1])
df = pl.read_parquet(pairs / "pairs.parquet").filter(pl.col("status") == "ok")
texts = sorted(set(df["prompt"].to_list()) | set(df["chosen"].to_list()) | set(df["rejected"].to_list()))
paths = df.unique("image_id", keep="first", maintain_order=True)["image_path"].to_list()
enc = load_text_encoder(device="cpu")
enc.encode(texts)
img = load_image_encoder("pixels")
img.encode([resolve_image(pairs, p).read_bytes() for p in paths])
print(len(texts), len(paths), time.perf_counter() - t0)
"""


def run(cmd: list[str]) -> tuple[float, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="pairs")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "score", help="scratch folder (deleted)")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "score.json", help="JSON results")
    args = ap.parse_args()

    from audit.io import versions

    shutil.rmtree(args.work, ignore_errors=True)
    py = [sys.executable, "-m", "audit"]
    run(py + ["synth", "--env", "leadin", "--n", str(args.n), "--format", "rlaif-v", "-o", str(args.work / "src")])
    run(py + ["ingest", str(args.work / "src"), "-o", str(args.work / "pairs")])
    enc_s, enc_rss, out = run([sys.executable, "-c", ENCODE_ONLY, str(args.work / "pairs")])
    n_texts, n_images, enc_inner = out.split()
    score_s, score_rss, _ = run(py + ["score", str(args.work / "pairs"), "-o", str(args.work / "audit")])
    summary = json.loads((args.work / "audit" / "summary.json").read_text())
    shutil.rmtree(args.work, ignore_errors=True)
    row = {"pairs": args.n, "unique_texts": int(n_texts), "unique_images": int(n_images),
           "encoders_s": round(enc_s, 2), "score_s": round(score_s, 2), "overhead_ratio": round(score_s / enc_s, 3),
           "encoders_peak_rss_mib": round(enc_rss, 1), "score_peak_rss_mib": round(score_rss, 1),
           "score_timings": summary["timings"]}
    result = {"command": f"python benchmarks/score_bench.py --n {args.n}",
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "versions": versions(), "row": row}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
