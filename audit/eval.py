"""`eval`: pairwise accuracy of a trained reward model (its multimodal branch alone), or of an external
reward model's scores, on datasets; with ground truth from the synthetic environments, also the
accuracy on cue-aligned and cue-against pairs, and SFD against the audit's text probe when the dataset
is an audit folder. The datasets split into i.i.d. (the training data's distribution) and o.o.d. (the
rest): the run's row of the i.i.d. / o.o.d. matrix, with the mean o.o.d. accuracy and the gap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from audit import metrics
from audit.config import EvalConfig
from audit.io import write_json_atomic
from audit.train.data import load_pairs
from audit.train.loop import checkpoint, load_model, margins


def _report(m: np.ndarray, pd) -> dict:
    out = {"accuracy": metrics.accuracy(m), "n": int(len(m))}
    if pd.cue_on_chosen is not None and any(x is not None for x in pd.cue_on_chosen):
        known = np.array([x is not None for x in pd.cue_on_chosen])
        flag = np.array([bool(x) for x in pd.cue_on_chosen])
        out["acc_cue_aligned"] = metrics.accuracy(m[known & flag])
        out["acc_cue_against"] = metrics.accuracy(m[known & ~flag])
    if "text_margin" in pd.table.columns:
        out["sfd"] = metrics.sfd(pd.table["text_margin"].to_numpy(), m)
    return out


def _run_config(run: Path) -> dict:
    f = Path(run) / "config.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def evaluate(run: Path, data: Path, model=None) -> dict:
    model = model if model is not None else load_model(checkpoint(Path(run)))
    cfg = dict(model.config)
    if "image_size" not in cfg:           # a VLM backbone: the run's config says how its images were sized
        cfg.update(image_size=_run_config(run)["image_size"], vocab=4096)
    pd = load_pairs(data, cfg["image_size"], cfg["vocab"])
    return _report(margins(model, pd), pd)


def evaluate_scores(data: Path, spec: str) -> dict:
    """An external reward model's rewards, read from the dataset's own columns (`score --mm-scores` spec)."""
    from audit.probes.external import external_margins

    pd = load_pairs(data, 8, 16)
    t = pd.table
    return _report(external_margins({c: t[c].to_numpy() for c in t.columns}, spec), pd)


def _same(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def eval_run(cfg: EvalConfig) -> dict:
    results: dict = {"run": None if cfg.run is None else str(cfg.run), "scores": cfg.scores, "datasets": {}}
    model = None if cfg.run is None else load_model(checkpoint(cfg.run))
    trained_on = _run_config(cfg.run).get("data") if cfg.run is not None else None
    iid = cfg.iid
    for d in cfg.data:
        name = Path(d).name or str(d)
        if name in results["datasets"]:
            name = str(d)
        results["datasets"][name] = evaluate_scores(d, cfg.scores) if cfg.scores else evaluate(cfg.run, d, model)
        if iid is None and trained_on is not None and _same(d, trained_on):
            iid = name
    if iid is not None and iid not in results["datasets"]:
        from audit.errors import ConfigError

        raise ConfigError(f"`--iid {iid}` is not one of the datasets: {', '.join(results['datasets'])}")
    ood = {k: r["accuracy"] for k, r in results["datasets"].items() if k != iid}
    results["iid"] = None if iid is None else {"dataset": iid, "accuracy": results["datasets"][iid]["accuracy"]}
    results["mean_ood"] = float(np.mean(list(ood.values()))) if ood and iid is not None else None
    if iid is not None and ood:
        results["gap"] = results["iid"]["accuracy"] - results["mean_ood"]
    if cfg.out is not None:
        write_json_atomic(cfg.out, results)
        cfg.out.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    return results


def markdown(results: dict) -> str:
    lines = ["| dataset | split | n | accuracy | cue-aligned | cue-against | SFD |", "|---|---|---:|---:|---:|---:|---:|"]
    iid = (results.get("iid") or {}).get("dataset")
    for name, r in results["datasets"].items():
        f = lambda k: "–" if r.get(k) is None or r.get(k) != r.get(k) else f"{r[k]:.3f}"  # noqa: E731
        split = "–" if iid is None else ("i.i.d." if name == iid else "o.o.d.")
        lines.append(f"| {name} | {split} | {r['n']} | {f('accuracy')} | {f('acc_cue_aligned')} | {f('acc_cue_against')} | {f('sfd')} |")
    if results.get("mean_ood") is not None:
        lines += ["", f"i.i.d. {results['iid']['accuracy']:.3f}, mean o.o.d. {results['mean_ood']:.3f}, "
                      f"gap {results['gap']:+.3f}"]
    return "\n".join(lines) + "\n"
