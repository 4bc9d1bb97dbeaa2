"""`eval`: pairwise accuracy of a trained reward model (its multimodal branch alone), or of an external
reward model's scores, on datasets; with ground truth from the synthetic environments, also the
accuracy on cue-aligned and cue-against pairs, and SFD against the audit's text probe when the dataset
is an audit folder. The datasets split into i.i.d. (the training data's distribution) and o.o.d. (the
rest): the run's row of the i.i.d. / o.o.d. matrix, with the mean o.o.d. accuracy and the gap.

A dataset that shares pairs with the run's own training data is never i.i.d. nor o.o.d.: it is
reported as `train` (an accuracy on seen pairs measures memory, not generalisation), and `--iid` must
name a held-out split (`synth --holdout` writes one)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from audit import metrics
from audit.config import EVAL_TABLE_HEADER, EvalConfig
from audit.io import write_bytes_atomic, write_json_atomic
from audit.train.data import load_pairs
from audit.train.loop import checkpoint, load_model, margins


def _report(m: np.ndarray, pd, keep: np.ndarray | None = None) -> dict:
    """Accuracies of margins `m` over the pairs of `pd` (only the rows `keep`, when given)."""
    keep = np.ones(len(m), dtype=bool) if keep is None else keep
    m = m[keep]
    out = {"accuracy": metrics.accuracy(m), "n": int(len(m))}
    if pd.cue_on_chosen is not None and any(x is not None for x in pd.cue_on_chosen):
        known = np.array([x is not None for x in pd.cue_on_chosen])[keep]
        flag = np.array([bool(x) for x in pd.cue_on_chosen])[keep]
        out["acc_cue_aligned"] = metrics.accuracy(m[known & flag])
        out["acc_cue_against"] = metrics.accuracy(m[known & ~flag])
    if "text_margin" in pd.table.columns:      # an audit: the pairs its text-only model gets right / wrong
        t = pd.table["text_margin"].to_numpy().astype(np.float64)[keep]
        wrong = t < 0
        out["acc_text_right"] = metrics.accuracy(m[t > 0]) if (t > 0).any() else None
        out["acc_text_wrong"] = metrics.accuracy(m[wrong]) if wrong.any() else None   # the pairs that need the picture
        out["n_text_wrong"] = int(wrong.sum())
        out["sfd"] = metrics.sfd(t, m)
    return out


def _run_config(run: Path) -> dict:
    f = Path(run) / "config.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def evaluate(run: Path, data: Path, model=None, with_table: bool = False):
    model = model if model is not None else load_model(checkpoint(Path(run)))
    cfg = dict(model.config)
    if "image_size" not in cfg:           # a VLM backbone: the run's config says how its images were sized
        cfg.update(image_size=_run_config(run)["image_size"], vocab=4096)
    # A raw source is ingested into a folder that lives as long as the evaluation, so that a VLM reads
    # each picture at its own resolution (`PairData.native_images`), never the small model's square copy.
    with tempfile.TemporaryDirectory(prefix="shortcut-audit-eval-") as tmp:
        pd = load_pairs(data, cfg["image_size"], cfg["vocab"], workdir=Path(tmp))
        report = _report(margins(model, pd), pd)
    return (report, pd.table) if with_table else report


def evaluate_scores(data: Path, spec: str) -> dict:
    """An external reward model's rewards, read from the dataset's own columns (`score --mm-scores` spec);
    pairs whose reward is NaN, infinite or missing are left out of every number and counted in `n_not_finite`."""
    from audit.probes.external import external_margins

    pd = load_pairs(data, 8, 16)
    t = pd.table
    m = external_margins({c: t[c].to_numpy() for c in t.columns}, spec, option="--scores")
    keep = np.isfinite(m)      # a NaN, infinite or missing reward: no margin, left out (counted)
    return {**_report(m, pd, keep), "n_not_finite": int((~keep).sum())}


def _same(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _pair_ids(path: Path) -> set[str] | None:
    """The `pair_id`s of an audit / pairs folder or export (None when the folder cannot be read so)."""
    import polars as pl

    path = Path(path)
    for f in (path / "audited.parquet", path / "pairs.parquet"):
        if f.is_file():
            try:
                return set(pl.read_parquet(f, columns=["pair_id"])["pair_id"].drop_nulls().to_list())
            except Exception:  # noqa: BLE001 - a table without pair_id: fall back on the path
                return None
    return None


def _seen_in_training(d: Path, trained_on: str | None, train_ids: set[str] | None, table) -> int:
    """How many of the dataset's pairs the run trained on (all of them when it is the training data)."""
    if trained_on is None:
        return 0
    if _same(d, trained_on):
        return int(table.height)
    if train_ids is None or "pair_id" not in table.columns:
        return 0
    return int(table["pair_id"].is_in(list(train_ids)).sum())


def eval_run(cfg: EvalConfig) -> dict:
    from audit.errors import ConfigError

    results: dict = {"run": None if cfg.run is None else str(cfg.run), "scores": cfg.scores, "datasets": {}}
    model = None if cfg.run is None else load_model(checkpoint(cfg.run))
    trained_on = _run_config(cfg.run).get("data") if cfg.run is not None else None
    train_ids = _pair_ids(Path(trained_on)) if trained_on is not None and Path(trained_on).is_dir() else None
    seen: dict[str, int] = {}
    for d in cfg.data:
        name = Path(d).name or str(d)
        if name in results["datasets"]:
            name = str(d)
        if cfg.scores:
            results["datasets"][name] = evaluate_scores(d, cfg.scores)
        else:
            results["datasets"][name], table = evaluate(cfg.run, d, model, with_table=True)
            seen[name] = _seen_in_training(d, trained_on, train_ids, table)
            if seen[name]:
                results["datasets"][name]["seen_in_training"] = seen[name]
    iid = cfg.iid
    if iid is not None and iid not in results["datasets"]:
        raise ConfigError(f"`--iid {iid}` is not one of the datasets: {', '.join(results['datasets'])}")
    if iid is not None and seen.get(iid):
        raise ConfigError(f"`--iid {iid}`: {seen[iid]} of its {results['datasets'][iid]['n']} pairs are the run's own "
                          "training data, which measures memory, not i.i.d. accuracy; pass a held-out split of the "
                          "same distribution (`shortcut-audit synth --holdout N` writes one beside a training set)")
    for k, r in results["datasets"].items():
        r["split"] = "train" if seen.get(k) else ("i.i.d." if k == iid else ("o.o.d." if iid is not None else None))
    ood = {k: r["accuracy"] for k, r in results["datasets"].items() if r["split"] == "o.o.d."}
    results["iid"] = None if iid is None else {"dataset": iid, "accuracy": results["datasets"][iid]["accuracy"]}
    results["mean_ood"] = float(np.mean(list(ood.values()))) if ood and iid is not None else None
    if iid is not None and ood:
        results["gap"] = results["iid"]["accuracy"] - results["mean_ood"]
    if cfg.out is not None:
        write_json_atomic(cfg.out, results)
        write_bytes_atomic(cfg.out.with_suffix(".md"), markdown(results).encode("utf-8"))
    return results


def markdown(results: dict) -> str:
    cols = ("accuracy", "acc_cue_aligned", "acc_cue_against", "acc_text_right", "acc_text_wrong", "sfd")
    lines = [EVAL_TABLE_HEADER, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results["datasets"].items():
        f = lambda k: "–" if r.get(k) is None or r.get(k) != r.get(k) else f"{r[k]:.3f}"  # noqa: E731
        lines.append(f"| {name} | {r.get('split') or '–'} | {r['n']} | " + " | ".join(f(k) for k in cols) + " |")
    if results.get("mean_ood") is not None:
        lines += ["", f"i.i.d. {results['iid']['accuracy']:.3f}, mean o.o.d. {results['mean_ood']:.3f}, "
                      f"gap {results['gap']:+.3f}"]
    return "\n".join(lines) + "\n"
