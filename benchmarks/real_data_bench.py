"""The audit on real data: the text probes on the real VL-RewardBench texts, the stack against its
components on every synthetic environment, and `score`'s speed on 10^5 pairs of real-length texts
(not a timed test).

    python benchmarks/real_data_bench.py dev --seeds 0 1 2 3 4
    python benchmarks/real_data_bench.py envs --pairs 2000
    python benchmarks/real_data_bench.py speed --pairs 100000

1. `dev`: `score --text-only` on the 610 real records of ../shared/reference/real/vl-rewardbench-dev.jsonl
   (texts only: the images are not in the file) with each text probe (the stack as `auto` chooses it at
   this size, the stack without the text encoder as `auto` chooses it for large data on CPU, and every
   component alone) and each fold seed; the text-only accuracy with its interval, the carrier slices
   and the top phrases. The file is never copied into the project.
2. `envs`: default `score` on every synthetic environment: the stack's accuracy beside each
   component's, the top phrase and the carrier slice.
3. `speed`: a Parquet source of N pairs whose texts follow the dev set's lengths and words (a dev record
   drawn at random for each pair, 30% of its words replaced by words drawn from the dev texts, so every
   text is distinct and as long as a real one) and a distinct 24 x 24 placeholder picture per pair;
   `ingest`, then the default `score` and `score --text-only`, each in a fresh process (wall seconds,
   peak RSS, stage timings). Encoder throughput before and after in the same run: texts per second of
   the text encoder (the default text probe's encoder until this version) and of the static token
   embeddings (this version's default), on the same 2,000 real-length texts.

Results: benchmarks/results/real_data_<mode>.json, printed for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEV = HERE.parent.parent / "shared" / "reference" / "real" / "vl-rewardbench-dev.jsonl"
sys.path.insert(0, str(HERE))
from ingest_bench import run_measured  # noqa: E402

PROBES = {"stack (auto, small data)": dict(text_probe="stack", stack="tokens,lexical,cue,embedding"),
          "stack (auto, large data on CPU)": dict(text_probe="stack", stack="tokens,lexical,cue"),
          "tokens": dict(text_probe="tokens"), "embedding": dict(text_probe="embedding"),
          "lexical": dict(text_probe="lexical"), "cue": dict(text_probe="cue")}


def dev(args, work: Path) -> dict:
    from audit.config import IngestConfig, ScoreConfig
    from audit.ingest import ingest
    from audit.score import score

    src = work / "dev" / DEV.name
    src.parent.mkdir(parents=True)
    shutil.copy(DEV, src)                      # inside the scratch folder only (deleted afterwards)
    pairs = work / "dev-pairs"
    ingest(IngestConfig(source=src, out=pairs))
    rows = []
    for name, kw in PROBES.items():
        for seed in args.seeds:
            s = score(ScoreConfig(source=pairs, out=work / "a", text_only=True, seed=seed, overwrite=True,
                                  cache_dir=work / "cache", **kw))
            row = {"probe": name, "seed": seed, "text_acc": s["text_acc"], "text_acc_ci": s["text_acc_ci"],
                   "prompt_blind_acc": s["prompt_blind_acc"], "components": s["text_components"],
                   "carriers": [(c["column"], c["value"], c["n"], c["text_acc"], c["rest_acc"])
                                for c in s["slices"]["carriers"]],
                   "phrases": [(p["phrase"], p["n_chosen"], p["n_rejected"], p["significant"]) for p in s["phrases"][:8]],
                   "function_words": [p["phrase"] for p in s["function_words"] if p["significant"]],
                   "seconds": s["timings"]["total"]}
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("probe", "seed", "text_acc", "carriers", "seconds")}), flush=True)
    return {"rows": rows}


def envs(args, work: Path) -> dict:
    from audit.config import ScoreConfig, SynthConfig
    from audit.score import score
    from audit.synth import ENVIRONMENTS, synth

    rows = []
    for env in ENVIRONMENTS:
        src = synth(SynthConfig(env=env, out=work / "envs" / env, n=args.pairs, overwrite=True))
        s = score(ScoreConfig(source=src.parent, out=work / "audits" / env, cache_dir=work / "cache", overwrite=True))
        top = (s["phrases"] or [{}])[0]
        row = {"env": env, "stack_acc": s["text_acc"], "stack_ci": s["text_acc_ci"],
               **{f"{c['name']}_acc": c["acc"] for c in s["text_components"]},
               "prompt_blind_acc": s["prompt_blind_acc"], "top_phrase": top.get("phrase"),
               "top_phrase_significant": top.get("significant"), "top_cue": s["top_cue"],
               "carriers": [(c["column"], c["value"]) for c in s["slices"]["carriers"]]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"rows": rows}


def real_like_texts(n: int, seed: int = 0) -> dict[str, list[str]]:
    """n pairs whose prompts and responses follow the dev records' lengths and words (module docstring)."""
    recs = [json.loads(line) for line in DEV.read_text(encoding="utf-8").splitlines() if line.strip()]
    words = np.array([w for r in recs for t in [r["query"], *r["response"]] for w in t.split()], dtype=object)
    rng = np.random.default_rng(seed)

    def mutate(text: str) -> str:
        w = np.array(text.split(), dtype=object)
        swap = rng.random(len(w)) < 0.3
        w[swap] = words[rng.integers(0, len(words), int(swap.sum()))]
        return " ".join(w)

    picks = rng.integers(0, len(recs), n)
    out = {"prompt": [], "chosen": [], "rejected": []}
    for i, k in enumerate(picks):
        r = recs[k]
        best = r["human_ranking"].index(0)
        out["prompt"].append(f"{mutate(r['query'])} (#{i})")
        out["chosen"].append(mutate(r["response"][best]))
        out["rejected"].append(mutate(r["response"][1 - best]))
    return out


def make_source(path: Path, n: int) -> None:
    """The speed source: real-like texts and a distinct placeholder picture per pair (embedded PNG)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    texts = real_like_texts(n)
    rng = np.random.default_rng(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    step = 20_000
    with pq.ParquetWriter(path, pa.schema([("id", pa.string()), ("prompt", pa.string()), ("chosen", pa.string()),
                                           ("rejected", pa.string()), ("image", image_type)])) as w:
        for s in range(0, n, step):
            k = min(step, n - s)
            pics = []
            for _ in range(k):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(buf, format="PNG")
                pics.append({"bytes": buf.getvalue(), "path": None})
            w.write_table(pa.table({"id": [f"u{s + i}" for i in range(k)],
                                    **{c: texts[c][s:s + k] for c in ("prompt", "chosen", "rejected")},
                                    "image": pa.array(pics, type=image_type)}))


def throughput(n_texts: int = 2000) -> dict:
    """Texts per second of the text encoder and of the static token embeddings on the same real-length texts."""
    import torch

    from audit.encoders.text import load_text_encoder
    from audit.encoders.tokens import TokenEmbedder

    t = real_like_texts(n_texts // 2, seed=3)
    texts = (t["chosen"] + t["rejected"])[:n_texts]
    out = {"texts": len(texts), "mean_chars": round(float(np.mean([len(x) for x in texts])), 1),
           "torch_threads": torch.get_num_threads()}
    for name, enc, sample in (("text encoder (minilm, max 256 tokens)", load_text_encoder("minilm"), texts[:500]),
                              ("static token embeddings (minilm vocabulary)", TokenEmbedder("minilm"), texts)):
        enc.encode(sample[:32])                 # warm-up
        t0 = time.perf_counter()
        enc.encode(sample)
        out[name] = round(len(sample) / (time.perf_counter() - t0), 1)
    out["ratio"] = round(out["static token embeddings (minilm vocabulary)"] / out["text encoder (minilm, max 256 tokens)"], 1)
    return out


def speed(args, work: Path) -> dict:
    out = {"throughput": throughput(), "runs": []}
    print(json.dumps(out["throughput"]), flush=True)
    me = [sys.executable, str(Path(__file__).resolve())]
    src = work / "src" / "data.parquet"
    assert run_measured(me + ["_make", str(src), str(args.pairs)])[2] == 0
    pairs = work / "pairs"
    secs, rss, rc = run_measured([sys.executable, "-m", "audit", "ingest", str(src), "-o", str(pairs)])
    assert rc == 0, "ingest failed"
    out["ingest"] = {"seconds": round(secs, 1), "peak_rss_mib": round(rss, 1)}
    print(json.dumps(out["ingest"]), flush=True)
    for name, extra in (("score --text-only", ["--text-only"]), ("score", [])):
        audit = work / name.replace(" ", "_")
        secs, rss, rc = run_measured([sys.executable, "-m", "audit", "score", str(pairs), "-o", str(audit), *extra])
        assert rc == 0, f"{name} failed"
        s = json.loads((audit / "summary.json").read_text())
        row = {"command": name, "pairs": args.pairs, "seconds": round(secs, 1), "peak_rss_mib": round(rss, 1),
               "components": [c["name"] for c in s["text_components"]], "text_acc": s["text_acc"],
               "timings": s["timings"]}
        out["runs"].append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(audit, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("dev", "envs", "speed", "_make"))
    ap.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="`dev`: fold seeds")
    ap.add_argument("--pairs", type=int, default=None, help="`envs`: pairs per environment (2000); `speed`: pairs (100000)")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "real", help="scratch folder (deleted afterwards)")
    args = ap.parse_args()
    if args.mode == "_make":
        make_source(Path(args.args[0]), int(args.args[1]))
        return 0
    if args.mode == "dev" and not DEV.is_file():
        print(f"the dev set is not here: {DEV}", file=sys.stderr)
        return 1
    args.pairs = args.pairs or {"envs": 2000, "speed": 100_000}.get(args.mode)
    from audit.io import versions

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    result = {"command": "python benchmarks/real_data_bench.py " + " ".join(sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "versions": versions(),
              **{"dev": dev, "envs": envs, "speed": speed}[args.mode](args, args.work)}
    shutil.rmtree(args.work, ignore_errors=True)
    path = HERE / "results" / f"real_data_{args.mode}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
