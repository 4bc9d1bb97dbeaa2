"""Do two code trees write the same audits, checkpoints and cards? (A refactor check, not a timing.)

    python benchmarks/same_outputs.py OLD_TREE NEW_TREE [-o DIR]

e.g. `git worktree add /tmp/old HEAD~3` for OLD_TREE and `.` for NEW_TREE. Each tree runs, in its own
process with a fresh embedding cache: `score` on synthetic data in six configurations (default probes,
ipw scheme, `--rm` with a tiny random Llava, `--mm-scores`, `--text-probe finetune` with a tiny text
RM, other folds/seed/scheme/threshold), `train` (standard, weighted, shortcut-aware; 2 epochs) and
`card`. Reported: audited.parquet values (exact, per column), column order, summary.json (timings,
memory, versions, config and paths left out), checkpoint and card bytes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RUN = r'''
import json, shutil, sys
from pathlib import Path
# This tree's code, not the installed one: drop an editable install's import hook, put the tree first.
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path[:0] = [sys.argv[1], str(Path(sys.argv[1]) / "tests")]
import audit
assert Path(audit.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), audit.__file__
from audit.config import CardConfig, ScoreConfig, SynthConfig, TrainConfig
from audit.card import card
from audit.score import score
from audit.synth import synth
from audit.tiny import tiny_llava, tiny_text_rm
from audit.train.loop import train
from conftest import png_bytes

data, out = Path(sys.argv[2]), Path(sys.argv[3])
if not (data / "done").exists():
    synth(SynthConfig(env="leadin", out=data / "leadin", n=400, format="rlaif-v"))
    synth(SynthConfig(env="closing", out=data / "closing", n=200, format="vl-rewardbench", image_size=32))
    tiny_llava(data / "llava")
    tiny_text_rm(data / "textrm")
    (data / "ext").mkdir()
    rows = []
    for i in range(80):
        (data / "ext" / f"{i}.png").write_bytes(png_bytes((i * 3, 100, 200 - i)))
        rows.append({"prompt": f"What is {i % 7}?", "chosen": f"It is {i} surely.", "rejected": f"It is {i + 1}.",
                     "image": f"{i}.png", "rm_c": float(i % 3), "rm_r": 1.0})
    (data / "ext" / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (data / "done").write_text("")
runs = {
    "default": dict(source=data / "leadin"),
    "ipw": dict(source=data / "closing", scheme="ipw"),
    "rm": dict(source=data / "closing", rm=str(data / "llava"), scheme="sfc"),
    "external": dict(source=data / "ext" / "d.jsonl", mm_scores="rm_c,rm_r", folds=3),
    "finetune": dict(source=data / "closing", text_probe="finetune", finetune_model=str(data / "textrm"),
                     finetune_epochs=1, finetune_batch=16, folds=3),
    "folds-seed": dict(source=data / "leadin", folds=3, seed=3, scheme="jtt", threshold=0.7),
}
for name, kw in runs.items():
    score(ScoreConfig(out=out / "audit" / name, cache_dir=out / "cache", **kw))
    card(CardConfig(audit=out / "audit" / name, out=out / "cards", name=name, examples=2))
for method in ("standard", "weighted", "shortcut-aware"):
    train(TrainConfig(data=out / "audit" / "default", out=out / "train" / method, method=method, epochs=2,
                      cache_dir=out / "cache"))
'''

VOLATILE = ("timings", "peak_rss_mib", "rss_mib", "versions", "config", "pairs_dir")


def compare(a: Path, b: Path) -> list[str]:
    import polars as pl
    from polars.testing import assert_frame_equal

    lines = []
    for d in sorted((a / "audit").iterdir()):
        x, y = pl.read_parquet(d / "audited.parquet"), pl.read_parquet(b / "audit" / d.name / "audited.parquet")
        try:
            assert_frame_equal(x, y.select(x.columns), check_exact=True)
            order = "same column order" if x.columns == y.columns else \
                f"column order differs: {[c for c, e in zip(y.columns, x.columns) if c != e][:6]}"
            lines.append(f"{d.name}: audited.parquet values identical ({x.height} rows; {order})")
        except AssertionError as e:
            lines.append(f"{d.name}: audited.parquet DIFFERS: {str(e).splitlines()[0]}")
        sx, sy = (json.loads((p / "audit" / d.name / "summary.json").read_text()) for p in (a, b))
        diff = sorted(k for k in (set(sx) | set(sy)) - set(VOLATILE) if sx.get(k) != sy.get(k))
        lines.append(f"{d.name}: summary.json " + ("identical" if not diff else f"differs in {diff}"))
        ca, cb = ((p / "cards" / d.name / "README.md").read_text().replace(str(p), "OUT") for p in (a, b))
        same = ca == cb                                   # the card names its audit folder: compared as OUT
        lines.append(f"{d.name}: card " + ("identical" if same else "DIFFERS"))
    for d in sorted((a / "train").iterdir()):
        same = (d / "model.safetensors").read_bytes() == (b / "train" / d.name / "model.safetensors").read_bytes()
        lines.append(f"train {d.name}: model.safetensors " + ("identical" if same else "DIFFERS"))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("-o", "--out", type=Path, default=Path("same-outputs"))
    args = ap.parse_args()
    data = args.out / "data"
    for name, tree in (("old", args.old), ("new", args.new)):
        subprocess.run([sys.executable, "-c", RUN, str(tree.resolve()), str(data.resolve()),
                        str((args.out / name).resolve())], check=True, stdout=subprocess.DEVNULL)
    for line in compare(args.out / "old", args.out / "new"):
        print(line)


if __name__ == "__main__":
    main()
