"""Two audits of the same 120 pairs for the Pair and Compare views: A with the multimodal side given as
external scores (`--mm-scores`) that are sure of the chosen answer on even rows and of the rejected one
on odd rows, so A holds pairs whose SFC is high while the text-only model still prefers the chosen
answer (and low while it prefers the rejected one); B the same data scored with other folds and seed,
so some verdicts change. Row 0's chosen answer is 20,000 characters long and row 1's answers are
Chinese (no spaces)."""

from __future__ import annotations

from pathlib import Path

LONG_CHARS = 20_000
CJK_CHOSEN = "图中有三个红色的圆。"
CJK_REJECTED = "图中有两个红色的圆。"


def long_answer(n: int = LONG_CHARS) -> str:
    words = "the red circle sits left of a small blue square near the top edge".split()
    out, i = [], 0
    while sum(len(w) + 1 for w in out) < n:
        out.append(words[i % len(words)])
        i += 1
    return " ".join(out)[:n]


def build(root: Path) -> tuple[Path, Path]:
    """(audit A, audit B) under `root`."""
    import polars as pl

    from audit.config import ScoreConfig, SynthConfig
    from audit.score import score
    from audit.synth import synth

    src = synth(SynthConfig(env="leadin-0.7", out=root / "src", n=120, format="rlaif-v"))
    even = pl.int_range(pl.len()) % 2 == 0
    df = pl.read_parquet(src).with_columns(
        rm_c=pl.when(even).then(4.0).otherwise(0.0), rm_r=pl.when(even).then(0.0).otherwise(4.0),
        chosen=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(long_answer()))
        .when(pl.int_range(pl.len()) == 1).then(pl.lit(CJK_CHOSEN)).otherwise(pl.col("chosen")),
        rejected=pl.when(pl.int_range(pl.len()) == 1).then(pl.lit(CJK_REJECTED)).otherwise(pl.col("rejected")))
    df.write_parquet(src)
    cache = root / "cache"
    score(ScoreConfig(source=src.parent, out=root / "a", cache_dir=cache, mm_scores="rm_c,rm_r"))
    score(ScoreConfig(source=src.parent, out=root / "b", cache_dir=cache, mm_scores="rm_c,rm_r", folds=3, seed=1))
    return root / "a", root / "b"
