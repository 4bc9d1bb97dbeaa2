"""Why reweighting does (not) move o.o.d. accuracy in `bench`: numbers behind the README's reading.

    python benchmarks/bench_analysis.py bench-full

Reads a finished `shortcut-audit bench` folder. Per training environment and method, over seeds:
- image skill: accuracy on the cue-free test set (o.o.d. `clean`; for the `clean`-trained model its
  i.i.d.), i.e. what the model reads from the image with no text cue at all;
- the penalty of a misleading cue: clean accuracy minus the mean over the other cue sets at p = 0.5;
- effective sample size of the training weights, ESS = (sum w)^2 / sum w^2 as a share of n (1 for
  uniform weights; the dynamic loss's weights change every step, so its row uses its last-epoch mean);
- cue share of the effective weight (last epoch) and, for shortcut-aware, per epoch.
Results: results/bench_analysis.json (and printed as Markdown).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def ess_share(w: np.ndarray) -> float:
    w = np.asarray(w, float)
    return float(w.sum() ** 2 / (w ** 2).sum() / len(w))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", type=Path, help="a finished bench output folder")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "bench_analysis.json", help="JSON results")
    args = ap.parse_args()

    import polars as pl

    from audit.bench import STATIC, oracle_weights
    from audit.schemes import weights

    rows = json.loads((args.bench / "results.json").read_text())["rows"]
    envs = list(dict.fromkeys(r["train_env"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out, lines = {}, []
    lines += ["| trained on | method | image skill (clean acc) | cue penalty (clean - cue sets at p=0.5) | ESS / n | cue share (last epoch) |",
              "|---|---|---:|---:|---:|---:|"]
    for env in envs:
        ess = {}
        for seed in sorted({r["seed"] for r in rows if r["train_env"] == env}):
            t = pl.read_parquet(args.bench / "audit" / "train" / f"{env}-s{seed}" / "audited.parquet").filter(pl.col("status") == "ok")
            ok = np.ones(t.height, bool)
            kw = dict(text_prob=t["text_prob"].to_numpy(), sfc=t["sfc"].to_numpy())
            for s in STATIC:
                ess.setdefault(f"weighted-{s}", []).append(ess_share(weights(s, ok, **kw)))
            ess.setdefault("oracle", []).append(ess_share(oracle_weights(t["cue_on_chosen"].to_list())))
            ess.setdefault("standard", []).append(1.0)
        for m in methods:
            rs = [r for r in rows if r["train_env"] == env and r["method"] == m]
            if not rs:
                continue
            clean = [r["iid"] if env == "clean" else r["ood"]["clean"] for r in rs]
            cue_sets = [np.mean([a for e, a in r["ood"].items() if e != "clean"]) for r in rs]
            penalty = [c - s for c, s in zip(clean, cue_sets)]
            share = [r["cue_share"] for r in rs if r["cue_share"] is not None]
            rec = {"image_skill": float(np.mean(clean)), "image_skill_std": float(np.std(clean)),
                   "cue_penalty": float(np.mean(penalty)), "ess_share": float(np.mean(ess[m])) if m in ess else None,
                   "cue_share": float(np.mean(share)) if share else None,
                   "cue_share_per_epoch": [float(np.mean(x)) for x in zip(*[r["cue_share_per_epoch"] for r in rs])]
                   if share else None}
            out.setdefault(env, {})[m] = rec
            f = lambda x, d=3: "–" if x is None else f"{x:.{d}f}"  # noqa: E731
            lines.append(f"| {env} | {m} | {100 * rec['image_skill']:.1f} ± {100 * rec['image_skill_std']:.1f} | "
                         f"{100 * rec['cue_penalty']:+.1f} | {f(rec['ess_share'], 2)} | {f(rec['cue_share'])} |")
    sa = {env: out[env]["shortcut-aware"]["cue_share_per_epoch"] for env in envs if "shortcut-aware" in out[env]
          and out[env]["shortcut-aware"]["cue_share_per_epoch"]}
    if sa:
        lines += ["", "shortcut-aware cue share per epoch (mean over seeds):", ""]
        for env, xs in sa.items():
            lines.append(f"- {env}: " + ", ".join(f"{x:.3f}" for x in xs))
    text = "\n".join(lines)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"by_env": out, "table": text}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
