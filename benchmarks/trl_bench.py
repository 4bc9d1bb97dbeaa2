"""TRL standard vs TRL weighted (the audit's weights) on a synthetic set with a planted text cue.

    python benchmarks/trl_bench.py --seeds 3 --n-train 256 --epochs 3

Per seed: synthesize `leadin` (a friendly lead-in on the chosen side of 90% of pairs), audit it (`score`,
the default weight scheme), `export --format trl`, and build a tiny random Llava (CLIP 56 px + a 2-layer
Qwen2, `audit.tiny`) from that seed. Then train it twice through `train --trainer trl` (TRL's vision
DPOTrainer): `standard` (the stock trainer) and `weighted` (WeightedDPOTrainer with the export's `weight`),
from the same initial model, on the same data order. Each trained policy is scored by its implicit DPO
reward margin [log pi(c) - log pi_ref(c)] - [log pi(r) - log pi_ref(r)] on held-out sets (their own seeds):
i.i.d. (`leadin`, p = 0.9), reversed cue (`leadin-reversed`, p = 0.1) and cue-free (`clean`). The paired
difference weighted - standard per seed gets a bootstrap 95% interval (`audit.bench.bootstrap_ci`).
Results: results/trl_bench.json and results/trl_bench.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))       # trl_fixtures: the Llava chat template and tokenizer
TESTS = {"iid": "leadin", "reversed": "leadin-reversed", "cue_free": "clean"}


def build_data(work: Path, seed: int, n_train: int, n_test: int) -> tuple[Path, dict]:
    from audit.config import ExportConfig, ScoreConfig, SynthConfig
    from audit.export import export
    from audit.score import score
    from audit.synth import synth

    src = synth(SynthConfig(env="leadin", out=work / f"s{seed}" / "src", n=n_train, seed=seed, overwrite=True))
    score(ScoreConfig(source=src.parent, out=work / f"s{seed}" / "audit", seed=seed, cache_dir=work / "cache",
                      overwrite=True))
    export(ExportConfig(audit=work / f"s{seed}" / "audit", out=work / f"s{seed}" / "export", format="trl",
                        overwrite=True))
    tests = {}
    for role, env in TESTS.items():
        tests[role] = work / "test" / env
        if not (tests[role] / "train-00000-of-00001.parquet").is_file():
            synth(SynthConfig(env=env, out=tests[role], n=n_test, seed=1_000_000 + zlib.crc32(env.encode()) % 1_000_000, format="trl",
                              overwrite=True))
    return work / f"s{seed}" / "export", tests


def implicit_margins(policy, ref, processor, path: Path, batch: int = 32):
    """Implicit DPO reward margin per pair (beta = 1; its sign is the preference)."""
    import numpy as np
    import torch
    from datasets import Dataset
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    ds = Dataset.from_parquet(str(next(path.glob("*.parquet"))))
    collate = DataCollatorForVisionPreference(processor)
    out = []
    with torch.no_grad():
        for s in range(0, len(ds), batch):
            inputs = collate([ds[i] for i in range(s, min(s + batch, len(ds)))])
            mask = inputs.pop("completion_mask")[:, 1:].float()
            target = inputs["input_ids"][:, 1:]
            logps = []
            for model in (policy, ref):
                logits = model(**inputs, use_cache=False).logits[:, :-1].float()
                tok = torch.log_softmax(logits, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
                c, r = (tok * mask).sum(1).chunk(2)
                logps.append(c - r)
            out.append((logps[0] - logps[1]).numpy())
    return np.concatenate(out)


def run_seed(args, work: Path, seed: int) -> list[dict]:
    import numpy as np
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    import trl_fixtures as F
    from audit.config import TrainConfig
    from audit.train.trl_run import MODEL, train_trl

    data, tests = build_data(work, seed, args.n_train, args.n_test)
    init = work / f"s{seed}" / "llava"
    F.llava(init, seed=seed)
    ref = LlavaForConditionalGeneration.from_pretrained(init).eval()
    processor = AutoProcessor.from_pretrained(init)
    rows = []
    for method in ("standard", "weighted"):
        t0 = time.perf_counter()
        s = train_trl(TrainConfig(data=data, out=work / f"s{seed}" / method, trainer="trl", model=str(init),
                                  method=method, seed=seed, epochs=args.epochs, batch_size=args.batch_size,
                                  lr=args.lr, warmup=0, threads=args.threads, overwrite=True))
        policy = LlavaForConditionalGeneration.from_pretrained(work / f"s{seed}" / method / MODEL).eval()
        row = {"seed": seed, "method": method, "trl_trainer": s["trl_trainer"], "steps": s["steps"],
               "train_seconds": round(time.perf_counter() - t0, 1)}
        for role, path in tests.items():
            m = implicit_margins(policy, ref, processor, path)
            row[role] = float(np.mean(m > 0))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def summarise(rows: list[dict], args) -> tuple[dict, str]:
    import numpy as np

    from audit.bench import bootstrap_ci

    stats, lines = {}, ["| metric | standard | weighted | weighted - standard [95% CI] |", "|---|---:|---:|---:|"]
    for role in TESTS:
        std = {r["seed"]: r[role] for r in rows if r["method"] == "standard"}
        wtd = {r["seed"]: r[role] for r in rows if r["method"] == "weighted"}
        diffs = [wtd[s] - std[s] for s in std if s in wtd]
        ci = bootstrap_ci(diffs)
        stats[role] = {"standard": [float(np.mean(list(std.values()))), float(np.std(list(std.values())))],
                       "weighted": [float(np.mean(list(wtd.values()))), float(np.std(list(wtd.values())))],
                       "diff": float(np.mean(diffs)), "diff_ci": ci}
        e = stats[role]
        holds0 = ci is None or ci[0] <= 0 <= ci[1]
        ci_text = "–" if ci is None else f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" + (" n.s." if holds0 else "")
        lines.append(f"| {role} ({TESTS[role]}) | {100 * e['standard'][0]:.1f} ± {100 * e['standard'][1]:.1f} | "
                     f"{100 * e['weighted'][0]:.1f} ± {100 * e['weighted'][1]:.1f} | {100 * e['diff']:+.1f} {ci_text} |")
    lines.append("")
    lines.append(f"accuracy of the implicit DPO reward in % (mean ± std over {args.seeds} seeds); {args.n_train} "
                 f"training pairs, {args.epochs} epochs, batch {args.batch_size}, lr {args.lr:g}, {args.n_test} test "
                 "pairs per set; n.s. = the interval holds 0 (no difference)")
    return stats, "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="seeds (each: its own data, audit and initial model)")
    ap.add_argument("--n-train", type=int, default=256, help="training pairs")
    ap.add_argument("--n-test", type=int, default=200, help="pairs per held-out set")
    ap.add_argument("--epochs", type=int, default=3, help="passes over the training set")
    ap.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    ap.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "trl_bench", help="scratch folder")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "trl_bench.json", help="JSON results")
    args = ap.parse_args()

    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets
    import transformers

    from audit.io import versions, write_bytes_atomic, write_json_atomic
    from audit.train.trl_weights import check_trl_version

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    t0 = time.perf_counter()
    rows = [r for seed in range(args.seeds) for r in run_seed(args, args.work, seed)]
    stats, table = summarise(rows, args)
    print(table)
    write_json_atomic(args.results, {"rows": rows, "stats": stats, "args": {k: str(v) for k, v in vars(args).items()},
                                     "seconds": round(time.perf_counter() - t0, 1),
                                     "versions": {**versions(), "trl": check_trl_version()}})
    write_bytes_atomic(args.results.with_suffix(".md"), table.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
