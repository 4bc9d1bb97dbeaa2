"""Best-of-N of a bench folder, n by n: per pooled group (the cue environments of one strength and size,
as in `results.md`), per regime and per method, the gold accuracy and the lure rate of the pick at every
n, with the paired difference to `standard` (same environment and seed) and its bootstrap 95% interval
over runs. Reads the finished tasks only (`tasks/*.json`), so it also works on a bench still running.

    python benchmarks/bon_curve_diffs.py BENCH_DIR [--regimes adverse,clean] [--results out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def curve_diffs(rows: list[dict], regimes: list[str]) -> dict:
    from audit.bench import _strength_key, bootstrap_ci

    groups: dict[str, list[dict]] = {}
    for r in rows:
        if "bon" in r and _strength_key(r) is not None:
            groups.setdefault(_strength_key(r), []).append(r)
    out: dict = {}
    for g, rs in groups.items():
        base = {(r["train_env"], r["seed"]): r for r in rs if r["method"] == "standard"}
        out[g] = {"n_envs": len({r["train_env"] for r in rs}), "regimes": {}}
        for regime in regimes:
            per_method: dict = {}
            for method in dict.fromkeys(r["method"] for r in rs):
                mine = [r for r in rs if r["method"] == method and (r["train_env"], r["seed"]) in base]
                if not mine:
                    continue
                ns = mine[0]["bon"][regime]["n"]
                entry = {"n": ns, "runs": len(mine)}
                for k in ("gold", "lure"):
                    vals = np.array([r["bon"][regime][k] for r in mine], dtype=float)
                    entry[k] = vals.mean(axis=0).tolist()
                    if method != "standard":
                        ref = np.array([base[r["train_env"], r["seed"]]["bon"][regime][k] for r in mine], dtype=float)
                        d = vals - ref
                        entry[f"{k}_diff"] = d.mean(axis=0).tolist()
                        entry[f"{k}_diff_ci"] = [bootstrap_ci(list(d[:, j])) for j in range(d.shape[1])]
                per_method[method] = entry
            out[g]["regimes"][regime] = per_method
    return out


def markdown(res: dict, methods: tuple[str, ...]) -> str:
    lines = []
    for g, entry in res.items():
        if entry["n_envs"] < 2:
            continue
        for regime, per_method in entry["regimes"].items():
            ns = per_method["standard"]["n"]
            lines += [f"**{g}, {regime} regime**: gold of the pick in %, `standard`, then each method's paired "
                      "difference to it in points [95% interval]; n.s. = the interval holds 0", "",
                      "| | " + " | ".join(f"n={n}" for n in ns) + " |", "|---|" + "---:|" * len(ns),
                      "| standard | " + " | ".join(f"{100 * v:.1f}" for v in per_method["standard"]["gold"]) + " |"]
            for m in methods:
                if m not in per_method:
                    continue
                e = per_method[m]
                cells = []
                for d, ci in zip(e["gold_diff"], e["gold_diff_ci"]):
                    if ci is not None and max(abs(ci[0]), abs(ci[1])) < 5e-4:   # n = 1: the policy's own rate for all
                        cells.append("0")
                        continue
                    text = f"{100 * d:+.1f}" if ci is None else f"{100 * d:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"
                    cells.append(text + (" n.s." if ci is not None and ci[0] <= 0 <= ci[1] else ""))
                lines.append(f"| Δ {m} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench_dir", type=Path)
    ap.add_argument("--regimes", default="adverse,clean")
    ap.add_argument("--methods", default="weighted-debias,oracle,ess-matched,subsample")
    ap.add_argument("--results", type=Path, help="also write the numbers as JSON here")
    a = ap.parse_args()
    rows = []
    for t in sorted((a.bench_dir / "tasks").glob("*.json")):
        rows += json.loads(t.read_text(encoding="utf-8"))["rows"]
    res = curve_diffs(rows, [r.strip() for r in a.regimes.split(",") if r.strip()])
    print(markdown(res, tuple(m.strip() for m in a.methods.split(","))))
    if a.results:
        a.results.write_text(json.dumps({"tasks": len(list((a.bench_dir / "tasks").glob("*.json"))), "groups": res},
                                        indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
