"""GPU checks that CI cannot run (one prepared call on a lent GPU machine; output into RESULTS.md).

    python benchmarks/gpu_check.py --out results/gpu_check.json

1. The vision-language RM path (`audit.vlm`) on CUDA in bf16 vs CPU in fp32, tiny Qwen2-VL and Llava
   built from configs: same preferences, rewards within bf16 tolerance, blank-image margins too.
2. Out-of-memory splitting for real: a Qwen2-0.5B-sized model under a capped memory fraction gets a
   batch that does not fit; `audit.batching.run_batches` splits it and the rewards equal those of
   small batches.
3. The fine-tuned text probe's training step on CUDA (bf16 autocast) on a tiny model: loss falls.
Needs only torch and transformers (the lent machine has no polars).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def vlm_check(tmp: Path) -> dict:
    from PIL import Image

    from audit.tiny import tiny_llava, tiny_qwen2_vl
    from audit.vlm import VLMRewardModel, blank_image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8))
              for h, w in rng.integers(40, 200, size=(16, 2))]
    prompts = [f"what colour is the square in picture {i}?" for i in range(16)]
    responses = [("the square is red " * (1 + i % 5)).strip() for i in range(16)]
    out = {}
    for name, make in (("qwen2_vl", tiny_qwen2_vl), ("llava", tiny_llava)):
        path = make(tmp / name)
        res = {}
        for dev in ("cpu", "cuda"):
            rm = VLMRewardModel(path, device=dev)
            res[dev] = (rm.rewards(prompts, responses, images), rm.rewards(prompts, responses, [blank_image()] * 16))
        diff = max(float(np.abs(res["cpu"][k] - res["cuda"][k]).max()) for k in (0, 1))
        scale = float(np.abs(res["cpu"][0]).max())
        out[name] = {"max_abs_diff": diff, "reward_scale": scale,
                     "corr": float(np.corrcoef(res["cpu"][0], res["cuda"][0])[0, 1]),
                     "ok": bool(diff <= 0.05 * max(scale, 1.0))}
    return out


def oom_check() -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from rm_batching_bench import build

    from audit.batching import run_batches

    model, _ = build("qwen2-0.5b", "cuda", torch.bfloat16)
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(1, 150000, size=(256, 1024))).cuda()
    ref = np.zeros(256, np.float32)
    with torch.inference_mode():
        for s in range(0, 256, 8):
            ref[s:s + 8] = model(input_ids=ids[s:s + 8]).logits[:, 0].float().cpu().numpy()
    free, total = torch.cuda.mem_get_info()
    used = torch.cuda.memory_allocated()
    cap = (used + 6 * 2**30) / total          # room for about 6 GiB of activations
    torch.cuda.set_per_process_memory_fraction(cap)
    out = np.zeros(256, np.float32)

    def fn(b):
        with torch.inference_mode():
            out[b] = model(input_ids=ids[b]).logits[:, 0].float().cpu().numpy()

    t0 = time.perf_counter()
    splits = run_batches([np.arange(256)], fn)
    dt = time.perf_counter() - t0
    torch.cuda.set_per_process_memory_fraction(1.0)
    return {"memory_fraction": round(cap, 4), "splits": splits, "seconds": round(dt, 2),
            "max_abs_diff_vs_small_batches": float(np.abs(out - ref).max()), "ok": bool(splits > 0)}


def finetune_check(tmp: Path) -> dict:
    import torch

    from audit.probes.finetune import _load, _rewards
    from audit.tiny import tiny_text_rm

    path = tiny_text_rm(tmp / "textrm")
    tok, model = _load(str(path), 0, "cuda", False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    p = ["which is better?"] * 8
    c = ["sure the square is red"] * 8
    r = ["the square is blue"] * 8
    losses = []
    for _ in range(20):
        rw = _rewards(model, tok, p + p, c + r, 64, "cuda")
        loss = torch.nn.functional.softplus(-(rw[:8] - rw[8:])).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return {"first_loss": losses[0], "last_loss": losses[-1], "ok": bool(losses[-1] < losses[0])}


def loader_check(tmp: Path) -> dict:
    """The scorer's batch loop on CUDA: DataLoader workers (pinned memory), token-budget batches, no
    per-batch sync; the same rewards as one batch per item on CPU within bf16 tolerance."""
    from PIL import Image

    from audit.probes.reward_model import Item, VLMAdapter, score_items
    from audit.tiny import tiny_qwen2_vl
    from audit.vlm import VLMRewardModel

    path = tiny_qwen2_vl(tmp / "qwen-loader")
    rng = np.random.default_rng(1)
    store = {f"im{i}": Image.fromarray(rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8))
             for i, (h, w) in enumerate(rng.integers(40, 200, size=(24, 2)))}
    items = [Item(f"what is in picture {i}?", "a red square " * (1 + i % 7), f"im{i % 24}", f"im{i % 24}")
             for i in range(96)]
    load = store.__getitem__
    res = {}
    for dev, workers in (("cpu", 0), ("cuda", 2)):
        scorer = VLMAdapter(VLMRewardModel(path, device=dev))
        lengths = [scorer.n_tokens(it.prompt, it.response, store[it.image].size) for it in items]
        stats: dict = {}
        t0 = time.perf_counter()
        res[dev] = score_items(scorer, items, lengths, load, token_budget=2048, workers=workers, stats=stats)
        res[dev + "_s"] = round(time.perf_counter() - t0, 2)
        res[dev + "_batches"] = stats["batches"]
    diff = float(np.abs(res["cpu"] - res["cuda"]).max())
    return {"max_abs_diff": diff, "reward_scale": float(np.abs(res["cpu"]).max()),
            "batches": res["cuda_batches"], "cpu_s": res["cpu_s"], "cuda_s": res["cuda_s"],
            "ok": bool(diff <= 0.05 * max(float(np.abs(res["cpu"]).max()), 1.0))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", nargs="+", default=None, help="run these checks only")
    args = ap.parse_args()
    import torch
    import transformers

    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "transformers": transformers.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("vlm", lambda: vlm_check(Path(tmp))), ("oom_split", oom_check),
                         ("finetune", lambda: finetune_check(Path(tmp))), ("loader", lambda: loader_check(Path(tmp)))):
            if args.only and name not in args.only:
                continue
            try:
                res[name] = fn()
            except Exception as e:   # noqa: BLE001 - report every check
                res[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
            print(name, json.dumps(res[name]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
