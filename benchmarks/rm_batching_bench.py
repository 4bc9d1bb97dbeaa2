"""Reward-model scoring throughput: the plain padded loop vs ours, side by side in one run (not a test).

    python benchmarks/rm_batching_bench.py                       # CPU: tiny config, seconds (CI runs it)
    python benchmarks/rm_batching_bench.py --models qwen2-0.5b qwen2-1.5b --n 2048 --device cuda

Random-weight models built from the real configs (copied below; nothing is downloaded), bf16 on CUDA,
SDPA attention, 2048 sequences of 64-1024 tokens (uniform, seeded), a scalar head at the last real token.

- `plain`: batches of 32 in data order, right-padded to the batch's longest, attention mask passed,
  the stock `Qwen2ForSequenceClassification` forward (head over every position, then gathered);
- `sorted32`: the same batches of 32 after sorting by length (the anchor's "length-sorted");
- `ours`: `audit.batching.token_budget_batches` (sorted, at most BUDGET tokens after padding), right
  padding with *no attention mask* (a causal decoder never attends from a real token to the pads that
  follow it, so the real tokens' states are unchanged and SDPA can use its causal flash kernel), the
  backbone only and the head on the last real token; one row per budget;
- `ceiling`: equal-length batches of 32 at the mean length with no padding and no mask (the stock
  ceiling the anchors quote).

MFU = 2 x non-embedding parameters x real tokens / time / peak (800 TFLOP/s by default; attention
FLOPs not counted, as in the anchors). Every method's rewards are checked against `plain` (max abs
difference, bf16). Results: printed table + JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from audit.batching import padding_share, plain_batches, token_budget_batches  # noqa: E402

# From the models' config.json on the Hugging Face Hub (Qwen/Qwen2-0.5B, Qwen/Qwen2-1.5B).
CONFIGS = {
    "qwen2-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                       rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
    "qwen2-1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                       num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                       rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
    "tiny": dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048),
}
PAD = 0


def build(name: str, device: str, dtype):
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    cfg = Qwen2Config(**CONFIGS[name], num_labels=1, pad_token_id=PAD)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForSequenceClassification._from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    n_embed = model.model.embed_tokens.weight.numel()
    n_nonembed = sum(p.numel() for p in model.parameters()) - n_embed - model.score.weight.numel()
    return model, n_nonembed


def make_batch(seqs: list[np.ndarray], device: str, pinned: bool):
    import torch

    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = torch.from_numpy(s)
        mask[r, :len(s)] = 1
    if pinned:
        ids, mask = ids.pin_memory(), mask.pin_memory()
    return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)


def run_plain(model, seqs, batches, device):
    out = np.zeros(len(seqs), dtype=np.float32)
    for b in batches:
        ids, mask = make_batch([seqs[i] for i in b], device, device.startswith("cuda"))
        out[b] = model(input_ids=ids, attention_mask=mask).logits[:, 0].float().cpu().numpy()
    return out


def run_ours(model, seqs, batches, device, body=None):
    import torch

    body = model.model if body is None else body
    outs = []
    for b in batches:          # no per-batch sync: the CPU builds batch i+1 while the GPU runs batch i
        ids, mask = make_batch([seqs[i] for i in b], device, device.startswith("cuda"))
        hidden = body(input_ids=ids).last_hidden_state                # causal: pads after a token never reach it
        last = mask.sum(1) - 1
        h = hidden[torch.arange(len(b), device=hidden.device), last]
        outs.append(model.score(h)[:, 0].float())
    out = np.zeros(len(seqs), dtype=np.float32)
    if outs:
        out[np.concatenate(batches)] = torch.cat(outs).cpu().numpy()
    return out


def timed(fn, device, repeats: int = 1):
    import torch

    best = None
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        res = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        best = (dt, res) if best is None or dt < best[0] else best
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return best[0], best[1], mem


def bench_model(name: str, args) -> list[dict]:
    import torch

    device = args.device
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model, n_nonembed = build(name, device, dtype)
    rng = np.random.default_rng(args.seed)
    lo, hi = (args.min_len, args.max_len) if name != "tiny" else (16, 128)
    lengths = rng.integers(lo, hi + 1, size=args.n)
    vocab = CONFIGS[name]["vocab_size"]
    seqs = [rng.integers(1, vocab, size=int(n)) for n in lengths]
    real = int(lengths.sum())
    plans = {
        "plain": (run_plain, plain_batches(args.n, args.batch)),
        "sorted32": (run_plain, [np.sort(b) for b in np.array_split(np.argsort(-lengths, kind="stable"),
                                                                     -(-args.n // args.batch))]),
    }
    for budget in args.budgets:
        plans[f"ours@{budget}"] = (run_ours, token_budget_batches(lengths, budget))
    if args.compile:
        compiled = torch.compile(model.model, dynamic=True)
        for budget in args.budgets:
            plans[f"ours+compile@{budget}"] = (lambda m, s, b, d: run_ours(m, s, b, d, compiled),
                                               token_budget_batches(lengths, budget))
    rows, ref = [], None
    with torch.inference_mode():
        for method, (fn, batches) in plans.items():
            t_warm = time.perf_counter()
            fn(model, seqs, batches[:2] + batches[-1:], device)         # warm-up (kernels, allocator, compile)
            dt, rewards, mem = timed(lambda: fn(model, seqs, batches, device), device, args.repeats)
            ref = rewards if ref is None else ref
            rows.append({"model": name, "method": method, "seconds": round(dt, 4),
                         "seq_per_s": round(args.n / dt, 1), "tokens_per_s": round(real / dt),
                         "padding_share": round(padding_share(lengths, batches), 4), "batches": len(batches),
                         "mfu": round(2 * n_nonembed * real / dt / (args.peak_tflops * 1e12), 4),
                         "max_abs_diff_vs_plain": float(np.abs(rewards - ref).max()), "peak_gib": mem,
                         "reward_scale": float(np.abs(ref).max()), "warmup_s": round(time.perf_counter() - t_warm - dt, 2)})
        # the stock ceiling: equal-length batches of `batch` at the mean length, no padding, no mask
        mean_len = int(round(lengths.mean()))
        eq = [rng.integers(1, vocab, size=mean_len) for _ in range(args.n)]
        eq_batches = plain_batches(args.n, args.batch)
        run_ours(model, eq, eq_batches[:2], device)
        dt, _, mem = timed(lambda: run_ours(model, eq, eq_batches, device), device, args.repeats)
        rows.append({"model": name, "method": "ceiling", "seconds": round(dt, 4), "seq_per_s": round(args.n / dt, 1),
                     "tokens_per_s": round(mean_len * args.n / dt), "padding_share": 0.0, "batches": len(eq_batches),
                     "mfu": round(2 * n_nonembed * mean_len * args.n / dt / (args.peak_tflops * 1e12), 4),
                     "max_abs_diff_vs_plain": None, "peak_gib": mem, "reward_scale": None, "warmup_s": None})
    plain_s = rows[0]["seconds"]
    for r in rows:
        r["speedup_vs_plain"] = round(plain_s / r["seconds"], 3)
        r["non_embedding_params"] = n_nonembed
    model = None  # free the GPU memory before the next model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny"], choices=sorted(CONFIGS))
    ap.add_argument("--n", type=int, default=256, help="sequences")
    ap.add_argument("--min-len", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=32, help="the plain loop's batch size")
    ap.add_argument("--budgets", type=int, nargs="+", default=[16384, 65536], help="our token budgets")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=1, help="timed passes per method (the best counts)")
    ap.add_argument("--peak-tflops", type=float, default=800.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="also time ours with torch.compile(dynamic=True)")
    ap.add_argument("--out", type=Path, default=None, help="JSON results")
    args = ap.parse_args()
    import torch
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
           "command": " ".join(sys.argv)}
    rows = []
    for name in args.models:
        rows += bench_model(name, args)
    print(f"{'model':11} {'method':12} {'seq/s':>9} {'tok/s':>10} {'pad':>6} {'MFU':>6} {'x plain':>7} {'diff':>8} {'GiB':>6}")
    for r in rows:
        diff = "" if r["max_abs_diff_vs_plain"] is None else f"{r['max_abs_diff_vs_plain']:.1e}"
        gib = "" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        print(f"{r['model']:11} {r['method']:12} {r['seq_per_s']:9.1f} {r['tokens_per_s']:10d} "
              f"{100 * r['padding_share']:5.1f}% {100 * r['mfu']:5.1f}% {r['speedup_vs_plain']:7.2f} {diff:>8} {gib:>6}")
    print(json.dumps(env))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
