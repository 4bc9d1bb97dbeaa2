"""Cue share per weight scheme on every synthetic environment (the trap of a multimodal probe that sees the text, measured).

    python benchmarks/cue_share.py --n 2000

For each environment: synth -> score, then the text probe's accuracy, the AUROC of `text_prob` for
cue-aligned vs cue-against pairs, the cue probe's top cue, the multimodal probe's accuracy, and the
cue share (fraction of total weight on pairs whose planted cue sits on the chosen side) of each scheme.
Untouched data has share p; 0.5 means the shortcut is neutralised. Results: results/cue_share.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENVS = ["leadin", "closing", "verbose", "markdown", "leadin-0.7", "closing-0.7", "verbose-0.7", "markdown-0.7", "clean"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="pairs per environment")
    ap.add_argument("--envs", nargs="+", default=ENVS, help="environments")
    ap.add_argument("--seed", type=int, default=0, help="seed")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "cue_share", help="scratch folder")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "cue_share.json", help="JSON results")
    args = ap.parse_args()

    import polars as pl

    from audit import metrics
    from audit.config import ScoreConfig, SynthConfig
    from audit.io import versions
    from audit.score import score
    from audit.synth import synth

    rows = []
    for env in args.envs:
        src = synth(SynthConfig(env=env, out=args.work / "src" / env, n=args.n, seed=args.seed, format="rlaif-v"))
        t0 = time.perf_counter()
        s = score(ScoreConfig(source=src.parent, out=args.work / env, seed=args.seed, cache_dir=args.work / "cache"))
        df = pl.read_parquet(args.work / env / "audited.parquet")
        truth = df["cue_on_chosen"]
        auc = None if truth.null_count() == df.height else metrics.auroc(df["text_prob"].to_numpy(), truth.to_numpy())
        rows.append({"env": env, "n": args.n, "text_acc": round(s["text_acc"], 4), "text_auroc_cue": auc and round(auc, 4),
                     "cue_acc": round(s["cue_acc"], 4), "mm_acc": round(s["mm_acc"], 4), "sfd": round(s["sfd"], 2),
                     "top_cue": s["top_cue"], "cue_share": s["cue_share"], "max_weight": round(s["weights"]["max"], 2),
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    shutil.rmtree(args.work, ignore_errors=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"command": f"python benchmarks/cue_share.py --n {args.n}",
                                        "versions": versions(), "rows": rows}, indent=2) + "\n")
    schemes = ["untouched", "sfc", "debias", "ipw", "jtt"]
    print("\n| env | text acc | AUROC(cue) | top cue | mm acc | " + " | ".join(f"share {k}" for k in schemes) + " |")
    print("|---|---:|---:|---|---:|" + "---:|" * len(schemes))
    for r in rows:
        share = r["cue_share"] or {}
        print(f"| {r['env']} | {r['text_acc']:.3f} | {r['text_auroc_cue'] if r['text_auroc_cue'] is not None else '–'} | "
              f"{r['top_cue']} | {r['mm_acc']:.3f} | " + " | ".join(f"{share[k]:.3f}" if k in share else "–" for k in schemes) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
