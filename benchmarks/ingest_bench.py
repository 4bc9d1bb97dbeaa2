"""Ingest throughput and peak memory at two dataset sizes (not a timed test).

    python benchmarks/ingest_bench.py --sizes 100000 1000000

Writes synthetic pairs (RLAIF-V layout: Parquet with embedded PNGs, 10 pairs per image), ingests
each size in a fresh process and reports pairs/s and that process's peak RSS. Results go to
benchmarks/results/ingest.json and are printed as a Markdown table for benchmarks/RESULTS.md.
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


def run_measured(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB (of that child alone, via wait4) and exit code."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="pair counts to ingest")
    ap.add_argument("--pairs-per-image", type=int, default=10, help="pairs that share one image")
    ap.add_argument("--work", type=Path, default=HERE / "_work", help="scratch folder (deleted afterwards)")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "ingest.json", help="JSON results file")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()

    from audit.io import versions

    exe = [sys.executable, "-m", "audit"]
    rows = []
    for n in args.sizes:
        src, out = args.work / f"src-{n}", args.work / f"pairs-{n}"
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        synth_s, _, rc = run_measured(exe + ["synth", "--env", "leadin", "--n", str(n), "--format", "rlaif-v",
                                             "--pairs-per-image", str(args.pairs_per_image), "-o", str(src)])
        assert rc == 0, "synth failed"
        secs, rss, rc = run_measured(exe + ["ingest", str(src), "-o", str(out)])
        assert rc == 0, "ingest failed"
        rep = json.loads((out / "ingest_report.json").read_text())
        assert rep["rows_out"] == n
        rows.append({"pairs": n, "unique_images": n // args.pairs_per_image, "ingest_s": round(secs, 2),
                     "pairs_per_s": round(n / secs, 1), "peak_rss_mib": round(rss, 1),
                     "ingest_s_in_process": rep["seconds"], "synth_s": round(synth_s, 2)})
        print(json.dumps(rows[-1]), flush=True)
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)

    base = rows[0]["peak_rss_mib"]
    for r in rows:
        r["rss_ratio_vs_smallest"] = round(r["peak_rss_mib"] / base, 3)
    result = {"command": "python benchmarks/ingest_bench.py --sizes " + " ".join(map(str, args.sizes)),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.machine()},
              "versions": versions(), "rows": rows}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| pairs | unique images | ingest s | pairs/s | peak RSS MiB | RSS vs smallest |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['pairs']:,} | {r['unique_images']:,} | {r['ingest_s']} | {r['pairs_per_s']:,.0f} | "
              f"{r['peak_rss_mib']} | {r['rss_ratio_vs_smallest']}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
