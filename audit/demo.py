"""`demo`: the pipeline on built-in synthetic data, offline, in a couple of minutes on a laptop.

Runs synth -> ingest -> score -> export -> card on a shortcut environment and the cue-free one and
prints the headline of each audit; then trains a small reward model on the shortcut environment with
each method (standard, weighted with the audit's weights, shortcut-aware) and evaluates it on the
cue-free data (o.o.d.: there only the image tells the answers apart). `bench` is the full experiment.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

from audit.config import CardConfig, DemoConfig, ExportConfig, IngestConfig, ScoreConfig, SynthConfig
from audit.ingest import ingest
from audit.synth import synth

log = logging.getLogger(__name__)

DEMO_ENVS = ("leadin", "clean")


def table_summary(pairs_dir: Path) -> list[str]:
    """A few lines about a pairs table: rows by status, sources, unique prompts and images."""
    import polars as pl

    lf = pl.scan_parquet(Path(pairs_dir) / "pairs.parquet")
    stats = lf.select(
        pl.len().alias("rows"),
        (pl.col("status") == "ok").sum().alias("ok"),
        pl.col("prompt_id").n_unique().alias("prompts"),
        pl.col("image_id").drop_nulls().n_unique().alias("images"),
        pl.col("chosen").str.len_chars().mean().alias("chosen_chars"),
        pl.col("rejected").str.len_chars().mean().alias("rejected_chars"),
    ).collect().row(0, named=True)
    by_status = lf.group_by("status").len().sort("len", descending=True).collect()
    lines = [
        f"  rows {stats['rows']} (ok {stats['ok']}), unique prompts {stats['prompts']}, unique images {stats['images']}",
        f"  mean length chosen {stats['chosen_chars'] or 0:.1f} chars, rejected {stats['rejected_chars'] or 0:.1f} chars",
        "  status: " + ", ".join(f"{s}={n}" for s, n in by_status.iter_rows()),
    ]
    return lines


def _sfd(x: float) -> str:
    return "n/a (the text model is never confidently right or wrong)" if x != x else f"{x:.1f}"


def demo(cfg: DemoConfig) -> Iterator[str]:
    """The pipeline, step by step (one line per result). A rerun into the same folder rewrites the data,
    pairs and exports and reuses the audits' embedding cache and the finished training runs."""
    from audit.io import claim_output

    with claim_output(cfg.out, "demo", overwrite=cfg.overwrite, resumable=True):
        yield from _demo(cfg)


def _demo(cfg: DemoConfig) -> Iterator[str]:
    out = cfg.out
    for env in DEMO_ENVS:
        src = synth(SynthConfig(env=env, out=out / "synth" / env, n=cfg.n, seed=cfg.seed, format="rlaif-v",
                                overwrite=True))
        pairs_dir = out / "pairs" / env
        rep = ingest(IngestConfig(source=src, out=pairs_dir, overwrite=True))
        yield f"[{env}] synth -> {src}"
        yield f"[{env}] ingest -> {pairs_dir / 'pairs.parquet'} ({rep['rows_out']} rows in {rep['seconds']:.1f}s)"
        yield from table_summary(pairs_dir)
        from audit.reading import headline, interval, pct, threshold_label
        from audit.score import score

        audit_dir = out / "audit" / env
        s = score(ScoreConfig(source=pairs_dir, out=audit_dir, seed=cfg.seed, cache_dir=out / "cache"))
        yield (f"[{env}] score -> {audit_dir / 'audited.parquet'}: text-only acc {pct(s['text_acc'])} "
               f"({interval(s['text_acc_ci'])}), multimodal acc {pct(s['mm_acc'])}, SFD {_sfd(s['sfd'])}, "
               f"{threshold_label(s)}: {pct(s['shortcut_rate'])}")
        yield f"  {headline(s)}"
        from audit.reading import components_line

        if components_line(s):
            yield f"  text-only model: {components_line(s)}"
        standing = [c for c in s["cues"] if c.get("stands_out")]
        yield "  top cues: " + (", ".join(f"{c['name']} ({c['coefficient']:+.2f}, 95% [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}])"
                                          for c in standing[:3]) or "none stands out")
        sig = [p for p in s.get("phrases") or [] if p.get("significant")]
        yield (f"  prompt-blind acc {100 * s['prompt_blind_acc']:.1f}%; phrases: "
               + (", ".join(f"\"{p['phrase']}\" ({p['n_chosen']}/{p['n_rejected']})" for p in sig[:3]) or "none stands out"))
        if s.get("cue_share"):
            yield ("  cue share by weight (untouched " + f"{s['cue_share']['untouched']:.2f}): "
                   + ", ".join(f"{k} {v:.2f}" for k, v in s["cue_share"].items() if k != "untouched"))
        from audit.card import card
        from audit.export import export

        rep = export(ExportConfig(audit=audit_dir, out=out / "export" / env, overwrite=True))
        yield f"[{env}] export -> {rep['path']} ({rep['rows_out']} pairs with weights)"
        path = card(CardConfig(audit=audit_dir, out=out / "cards", name=f"synthetic-{env}", export=out / "export" / env))
        yield f"[{env}] card -> {path}"
    yield from _train_step(cfg)
    yield f"done: outputs under {out.resolve()}"
    yield f"look at the shortcut-heavy pairs: shortcut-audit app {out / 'audit' / DEMO_ENVS[0]}"


def _train_step(cfg: DemoConfig) -> Iterator[str]:
    from audit.config import TrainConfig
    from audit.eval import evaluate
    from audit.train.loop import checkpoint, load_model, train

    out = cfg.out
    shortcut, clean = out / "audit" / DEMO_ENVS[0], out / "audit" / DEMO_ENVS[1]
    for method in ("standard", "weighted", "shortcut-aware"):
        run = out / "runs" / method
        # One torch thread, as `bench`: the trained weights depend on the thread count, and the demo must
        # print the same numbers on every machine (the README shows its output).
        s = train(TrainConfig(data=shortcut, out=run, method=method, seed=cfg.seed, cache_dir=out / "cache",
                              threads=1))
        model = load_model(checkpoint(run))
        own, ood = evaluate(run, shortcut, model), evaluate(run, clean, model)
        yield (f"[train] {method} on {DEMO_ENVS[0]} -> {run}: {DEMO_ENVS[0]} acc {100 * own['accuracy']:.1f}% "
               f"(training set; cue-against pairs {100 * own['acc_cue_against']:.1f}%), {DEMO_ENVS[1]} acc "
               f"{100 * ood['accuracy']:.1f}% (o.o.d.), {s['train_seconds']:.1f}s")
    yield "  the full cross-distribution experiment: shortcut-audit bench --quick"
