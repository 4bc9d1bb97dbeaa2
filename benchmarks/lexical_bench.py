"""The lexical probe: end-to-end speed and memory at scale, and its accuracy beside the embedding probe
on every synthetic environment (not a timed test).

    python benchmarks/lexical_bench.py --sizes 100000 1000000 --env-pairs 2000

1. Speed: `score --text-probe lexical --text-only` on N pairs with unique texts (`leadin`-style texts:
   a question about a random scene, the lead-in on the chosen side 90% of the time, each response followed by a sentence of 12 random words from a 20,000-word
   vocabulary; no pictures, so the run is the text side alone), each size in a fresh process from a
   small parent: wall seconds (ingest included), peak RSS, and the summary's own stage timings.
2. Accuracy: one default `score` per synthetic environment: `text_acc` (embedding probe), `lexical_acc`,
   `prompt_blind_acc`, the top phrase and whether it is significant.

Results: benchmarks/results/lexical.json, printed for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ingest_bench import run_measured  # noqa: E402


def make_source(path: Path, n: int, seed: int = 0) -> None:
    """A Parquet source of n pairs with unique texts and image paths that do not exist."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from audit.synth.cues import CUES
    from audit.synth.scenes import make_question, make_scene

    def texts(i: int):
        """The `leadin` environment's texts for pair i (no picture drawn: this is the text side only)."""
        q = make_question(make_scene(np.random.default_rng([seed, 0, i])), np.random.default_rng([seed, 1, i]))
        r = np.random.default_rng([seed, 2, i])
        on_chosen = bool(r.random() < 0.9)
        c, rj = (CUES["leadin"](q.chosen, r), q.rejected) if on_chosen else (q.chosen, CUES["leadin"](q.rejected, r))
        return q.prompt, c, rj

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, rng.integers(3, 9))) for _ in range(20000)]
    path.parent.mkdir(parents=True, exist_ok=True)
    step = 50_000
    with pq.ParquetWriter(path, pa.schema([("id", pa.string()), ("prompt", pa.string()), ("chosen", pa.string()),
                                           ("rejected", pa.string()), ("image", pa.string())])) as w:
        for s in range(0, n, step):
            k = min(step, n - s)
            pairs = [texts(i) for i in range(s, s + k)]
            words = rng.integers(0, len(vocab), size=(k, 2, 12))
            tail = lambda i, j: " ".join(vocab[t] for t in words[i, j]) + "."   # noqa: E731
            w.write_table(pa.table({"id": [f"u{s + i}" for i in range(k)], "prompt": [p for p, _, _ in pairs],
                                    "chosen": [f"{c} {tail(i, 0)}" for i, (_, c, _) in enumerate(pairs)],
                                    "rejected": [f"{r} {tail(i, 1)}" for i, (_, _, r) in enumerate(pairs)],
                                    "image": [f"not-downloaded/{s + i}.jpg" for i in range(k)]}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--env-pairs", type=int, default=2000, help="pairs per synthetic environment (0: skip)")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "lexical.json")
    ap.add_argument("--make-source", nargs=2, metavar=("PATH", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_source:
        make_source(Path(args.make_source[0]), int(args.make_source[1]))
        return 0

    from audit.io import versions

    work = HERE / "_work" / "lexical"
    shutil.rmtree(work, ignore_errors=True)
    out = {"command": "python benchmarks/lexical_bench.py " + " ".join(sys.argv[1:]),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "versions": versions(), "speed": []}
    me = [sys.executable, str(Path(__file__).resolve())]
    for n in args.sizes:   # first, from a small parent (a child's peak RSS starts from its parent's)
        src = work / f"src{n}" / "data.parquet"
        assert run_measured(me + ["--make-source", str(src), str(n)])[2] == 0
        audit = work / f"audit{n}"
        secs, rss, rc = run_measured([sys.executable, "-m", "audit", "score", str(src), "-o", str(audit),
                                      "--text-probe", "lexical", "--text-only"])
        assert rc == 0, "score failed"
        s = json.loads((audit / "summary.json").read_text())
        out["speed"].append({"pairs": n, "seconds": round(secs, 1), "peak_rss_mib": round(rss, 1),
                             "text_acc": s["text_acc"], "prompt_blind_acc": s["prompt_blind_acc"],
                             "top_phrase": (s["phrases"] or [{}])[0].get("phrase"), "timings": s["timings"]})
        print(json.dumps(out["speed"][-1]), flush=True)
        shutil.rmtree(work / f"src{n}", ignore_errors=True)
        shutil.rmtree(audit, ignore_errors=True)

    out["environments"] = []
    if args.env_pairs:
        from audit.config import ScoreConfig, SynthConfig
        from audit.score import score
        from audit.synth import ENVIRONMENTS, synth

        for env in ENVIRONMENTS:
            src = synth(SynthConfig(env=env, out=work / "envs" / env, n=args.env_pairs, overwrite=True))
            s = score(ScoreConfig(source=src.parent, out=work / "env-audits" / env, cache_dir=work / "cache",
                                  overwrite=True))
            top = (s["phrases"] or [{}])[0]
            row = {"env": env, "embedding_acc": s["text_acc"], "lexical_acc": s["lexical_acc"],
                   "prompt_blind_acc": s["prompt_blind_acc"], "top_phrase": top.get("phrase"),
                   "top_phrase_significant": top.get("significant"), "top_cue": s["top_cue"]}
            out["environments"].append(row)
            print(json.dumps(row), flush=True)
    shutil.rmtree(HERE / "_work", ignore_errors=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
