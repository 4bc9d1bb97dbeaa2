"""`eval`: pairwise accuracy of a trained reward model (its multimodal branch alone) on datasets;
with ground truth from the synthetic environments, also the accuracy on cue-aligned and cue-against
pairs, and SFD against the audit's text probe when the dataset is an audit folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audit import metrics
from audit.config import EvalConfig
from audit.io import write_json_atomic
from audit.train.data import load_pairs
from audit.train.loop import checkpoint, load_model, margins


def evaluate(run: Path, data: Path) -> dict:
    model = load_model(checkpoint(Path(run)))
    cfg = dict(model.config)
    if "image_size" not in cfg:           # a VLM backbone: the run's config says how its images were sized
        import json

        cfg.update(image_size=json.loads((Path(run) / "config.json").read_text())["image_size"], vocab=4096)
    pd = load_pairs(data, cfg["image_size"], cfg["vocab"])
    m = margins(model, pd)
    out = {"accuracy": metrics.accuracy(m), "n": int(len(m))}
    if pd.cue_on_chosen is not None and any(x is not None for x in pd.cue_on_chosen):
        known = np.array([x is not None for x in pd.cue_on_chosen])
        flag = np.array([bool(x) for x in pd.cue_on_chosen])
        out["acc_cue_aligned"] = metrics.accuracy(m[known & flag])
        out["acc_cue_against"] = metrics.accuracy(m[known & ~flag])
    if "text_margin" in pd.table.columns:
        out["sfd"] = metrics.sfd(pd.table["text_margin"].to_numpy(), m)
    return out


def eval_run(cfg: EvalConfig) -> dict:
    results = {"run": str(cfg.run), "datasets": {}}
    for d in cfg.data:
        name = Path(d).name or str(d)
        results["datasets"][name] = evaluate(cfg.run, d)
    if cfg.out is not None:
        write_json_atomic(cfg.out, results)
        lines = ["| dataset | n | accuracy | cue-aligned | cue-against | SFD |", "|---|---:|---:|---:|---:|---:|"]
        for name, r in results["datasets"].items():
            f = lambda k: "–" if r.get(k) is None or r.get(k) != r.get(k) else f"{r[k]:.3f}"
            lines.append(f"| {name} | {r['n']} | {f('accuracy')} | {f('acc_cue_aligned')} | {f('acc_cue_against')} | {f('sfd')} |")
        cfg.out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return results
