"""How much of a bench model's Best-of-N curve its image skill explains: per trained model of a bench
folder, on the held-out Best-of-N prompts of its cue, among the plain (cue-free) responses of one
template, how often the right value beats one wrong value (the pairwise accuracy Best-of-N starts from)
and how often it beats all of them (what best-of-many needs once the cue is out of the way).

    python benchmarks/bon_image_skill.py BENCH_DIR [--prompts 300] [--results out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def image_skill(model, bs) -> dict:
    from audit.bon.score import small_rewards

    scores = small_rewards(model, bs.images, bs.prompt_ids, bs.response_ids, bs.owner)
    beats_one, tops = [], []
    for g in range(len(bs.offsets) - 1):
        sl = slice(bs.offsets[g], bs.offsets[g + 1])
        plain = ~bs.cued[sl]
        s, right = scores[sl][plain], bs.correct[sl][plain]
        per_template = len(s) // 4                      # the support is template-major: 4 templates x V values
        for t in range(4):
            v, r = s[t * per_template:(t + 1) * per_template], right[t * per_template:(t + 1) * per_template]
            beats_one.append(float(np.mean(v[r][0] > v[~r])))
            tops.append(bool(r[np.argmax(v)]))
    return {"right_beats_a_wrong_value": float(np.mean(beats_one)), "right_tops_all_values": float(np.mean(tops))}


def main() -> None:
    import torch

    from audit.bon.synthetic import build_bon_set
    from audit.synth import get_env
    from audit.train.loop import CHECKPOINT, load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", type=Path)
    ap.add_argument("--prompts", type=int, default=300)
    ap.add_argument("--results", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out, sets = {}, {}
    for ckpt in sorted(args.bench.glob(f"runs/*/*/{CHECKPOINT}")):
        task, method = ckpt.parent.parent.name, ckpt.parent.name
        cue = get_env(task.rsplit("-n", 1)[0]).cue
        if cue not in sets:
            sets[cue] = build_bon_set(cue, args.prompts, 64, 4096)
        out[f"{task}/{method}"] = image_skill(load_model(ckpt), sets[cue])
        print(f"{task} {method}: " + ", ".join(f"{k} {v:.3f}" for k, v in out[f"{task}/{method}"].items()))
    if args.results:
        args.results.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
