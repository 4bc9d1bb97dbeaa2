"""Peak host memory of `score` at two dataset sizes: how it grows with the number of pairs.

    python benchmarks/score_memory.py --sizes 20000 80000
    python benchmarks/score_memory.py --sizes 20000 80000 --code /path/to/other/checkout   # compare versions

Synthesizes `leadin` pairs (pairs format, one image per pair), then runs `shortcut-audit score` in a
fresh process per size with an empty cache; peak RSS is that process's `ru_maxrss` (via `wait4`).
Reports MiB per size (and per stage, from the summary) and the growth in KiB per pair between the two
sizes. Above `--fit-pairs` the probes' memory stops growing; pass a small `--fit-pairs` to see that
regime at sizes this machine scores in minutes. `--code DIR` runs the
`audit` package found in DIR instead (PYTHONPATH), for before / after numbers in the same run.
Results: results/score_memory.json (or --results).
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


def run(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err[-2000:]}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs=2, default=[20_000, 80_000], help="two dataset sizes (pairs)")
    ap.add_argument("--fit-pairs", type=int, default=None, help="pass `--fit-pairs` to score")
    ap.add_argument("--code", type=Path, default=None, help="run `score` from this checkout instead")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "score_memory", help="scratch folder (deleted)")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "score_memory.json", help="JSON results")
    args = ap.parse_args()

    from audit.io import versions

    args.work = args.work.resolve()
    shutil.rmtree(args.work, ignore_errors=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cwd = None
    if args.code is not None:   # `python -m` puts the working directory first on sys.path: run from there
        cwd = args.code.resolve()
        env["PYTHONPATH"] = str(cwd)
    rows = []
    for n in args.sizes:
        src = args.work / f"src-{n}"
        run([sys.executable, "-m", "audit", "synth", "--env", "leadin", "--n", str(n), "--format", "pairs", "-o", str(src)])
        extra = [] if args.fit_pairs is None else ["--fit-pairs", str(args.fit_pairs)]
        seconds, rss = run([sys.executable, "-m", "audit", "score", str(src), "-o", str(args.work / f"audit-{n}"), *extra],
                           env, cwd)
        import_check = subprocess.run([sys.executable, "-c", "import audit; print(audit.__file__)"], env=env, cwd=cwd,
                                      capture_output=True, text=True).stdout.strip()
        summary = json.loads((args.work / f"audit-{n}" / "summary.json").read_text())
        stages = summary.get("peak_rss_mib")
        rows.append({"pairs": n, "score_s": round(seconds, 2), "peak_rss_mib": round(rss, 1), "by_stage": stages,
                     "audit_package": import_check})
        print(json.dumps(rows[-1]), flush=True)
    shutil.rmtree(args.work, ignore_errors=True)
    (a, b) = rows
    growth = (b["peak_rss_mib"] - a["peak_rss_mib"]) * 1024 / (b["pairs"] - a["pairs"])
    result = {"command": "python benchmarks/score_memory.py --sizes " + " ".join(map(str, args.sizes))
              + (f" --fit-pairs {args.fit_pairs}" if args.fit_pairs else "") + (f" --code {args.code}" if args.code else ""),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "versions": versions(),
              "rows": rows, "growth_kib_per_pair": round(growth, 3),
              "ratio_large_to_small": round(b["peak_rss_mib"] / a["peak_rss_mib"], 3)}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(f"growth {growth:.2f} KiB per pair; peak RSS ratio {result['ratio_large_to_small']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
