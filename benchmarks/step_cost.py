"""Cost of a shortcut-aware training step relative to a standard one.

    python benchmarks/step_cost.py --rounds 15 --steps 10

Both methods run the training loop's own step (`audit.train.loop.loss_terms`, backward, AdamW) on the
same batches of a synthetic `leadin` set, in alternating rounds so machine noise hits both alike; the
ratio of the median per-step times is reported for the pretrained (frozen) and the scratch image
encoder. As in `train`, a frozen encoder's features are computed once for the whole set
(`vision_features`), so its steps run the slots and the text side only. Results: results/step_cost.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024, help="pairs in the synthetic set")
    ap.add_argument("--batch-size", type=int, default=64, help="pairs per step")
    ap.add_argument("--rounds", type=int, default=15, help="alternating rounds per method")
    ap.add_argument("--steps", type=int, default=10, help="steps per round")
    ap.add_argument("--vision-scenes", type=int, default=6000, help="scenes the encoder is pretrained on")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "step_cost.json", help="JSON results")
    args = ap.parse_args()

    import torch

    from audit.config import SynthConfig
    from audit.io import versions
    from audit.synth import synth
    from audit.train.data import load_pairs
    from audit.train.loop import loss_terms, vision_features
    from audit.train.models import SmallMMRM
    from audit.train.vision import pretrained_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        src = synth(SynthConfig(env="leadin", out=Path(tmp) / "src", n=args.n, seed=0, format="pairs"))
        data = load_pairs(src.parent, 64, 4096)
        enc, _ = pretrained_encoder(64, args.vision_scenes, cache=Path(tmp) / "cache")
    out = {"config": vars(args) | {"results": str(args.results)}, "versions": versions(), "threads": torch.get_num_threads(),
           "settings": {}}
    for vision in ("pretrained", "scratch"):
        torch.manual_seed(0)
        runs = {}
        for method in ("standard", "shortcut-aware"):
            model, bias = SmallMMRM(vision=vision), SmallMMRM(vision=vision) if method == "shortcut-aware" else None
            for m in (model, bias):
                if m is not None and vision == "pretrained":
                    m.vision.load_state_dict(enc)
                    m.vision.requires_grad_(False)
            params = [p for m in (model, bias) if m is not None for p in m.parameters() if p.requires_grad]
            feats = vision_features(model, data) if vision == "pretrained" else None   # as `train` does
            runs[method] = (model, bias, torch.optim.AdamW(params, lr=2e-3), feats)
        times = {m: [] for m in runs}
        g = torch.Generator().manual_seed(0)
        for r in range(args.rounds + 1):                      # round 0 warms up, not counted
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]
            batches = [torch.randperm(len(data), generator=g)[:args.batch_size] for _ in range(args.steps)]
            for method in order:
                model, bias, opt, feats = runs[method]
                t0 = time.perf_counter()
                for idx in batches:
                    per_pair, *_ = loss_terms(method, model, bias, data, idx, None, feats=feats)
                    opt.zero_grad()
                    (per_pair.sum() / len(idx)).backward()
                    opt.step()
                if r:
                    times[method].append((time.perf_counter() - t0) / args.steps)
        med = {m: statistics.median(v) for m, v in times.items()}
        ratios = [a / b for a, b in zip(times["shortcut-aware"], times["standard"])]
        out["settings"][vision] = {"ms_per_step": {m: round(1000 * v, 3) for m, v in med.items()},
                                   "ratio_of_medians": round(med["shortcut-aware"] / med["standard"], 3),
                                   "ratio_per_round": {"median": round(statistics.median(ratios), 3),
                                                       "min": round(min(ratios), 3), "max": round(max(ratios), 3)}}
        print(f"{vision:>10}: standard {1000 * med['standard']:.1f} ms/step, shortcut-aware "
              f"{1000 * med['shortcut-aware']:.1f} ms/step -> {out['settings'][vision]['ratio_of_medians']:.2f}x "
              f"(per round {min(ratios):.2f}-{max(ratios):.2f}x)", flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
