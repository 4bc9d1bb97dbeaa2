"""`bench`: the paper's cross-distribution experiment on the synthetic environments, in one command.

Each environment is a distribution with its own text shortcut (and `clean` has none: the upper
reference). For every training environment and seed: synthesize a training set, audit it (`score`),
and train one reward model per method: `standard`, `shortcut-aware` (the paper's dynamic loss),
`weighted` with each static scheme (audit once, train once), and `oracle` (weights from the planted
cue itself, cue share exactly 0.5: what reweighting alone can give). Evaluate every model on held-out
test sets: i.i.d. = its own environment as trained, o.o.d. = each other environment with its cue on a
random side (OOD_P) and the cue-free one.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from audit import metrics
from audit.config import BenchConfig, ScoreConfig, SynthConfig, TrainConfig, to_dict
from audit.io import versions, write_json_atomic

log = logging.getLogger(__name__)

TEST_ENVS = ("leadin", "closing", "verbose", "markdown", "clean")
STATIC = ("sfc", "debias", "ipw", "jtt")
# o.o.d. test sets place their environment's cue on a random side. At the training strength (0.9 on the
# chosen side) every cue says "extra text on the better answer", and a model that learnt that on one
# environment carries it to the others: measured with the small model trained on `leadin`, 89 / 90 / 85
# on closing / verbose / markdown at p = 0.9 against 67 on `clean` (benchmarks/RESULTS.md). That is a
# shared shortcut, not generalisation; at p = 0.5 only what the model reads from the image counts.
OOD_P = 0.5
METHODS = ("standard", "shortcut-aware", *(f"weighted-{s}" for s in STATIC), "oracle")


def oracle_weights(truth: list) -> np.ndarray:
    """w = 0.5 / (share of pairs with the cue on this side), mean 1: the weighted share of cue-aligned
    pairs is exactly 0.5 (the realised share, not the planted p, so it is exact on a finite sample)."""
    known = [t for t in truth if t is not None]
    if not known or all(known) or not any(known):
        return np.ones(len(truth))
    p = sum(bool(t) for t in known) / len(known)
    w = np.array([1.0 if t is None else (0.5 / p if t else 0.5 / (1 - p)) for t in truth])
    return w / w.mean()


def _mean_std(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=float)
    return float(a.mean()), float(a.std(ddof=0))


def bench(cfg: BenchConfig) -> dict:
    import polars as pl

    from audit.score import score
    from audit.synth import get_env, synth
    from audit.train.data import load_pairs
    from audit.train.loop import CHECKPOINT, load_model, margins, train

    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    small = dict(epochs=cfg.epochs, batch_size=64, dim=64, image_size=64, vocab=4096)

    # Held-out test sets, their own seeds. i.i.d.: the environment as trained (cue at its strength), with
    # an audit (SFD needs the text probe's margins). o.o.d.: the environment's cue on a random side
    # (p = 0.5), a distribution where no text cue predicts the label (see OOD_P).
    tests, ood_tests = {}, {}
    for k, env in enumerate(TEST_ENVS):
        src = synth(SynthConfig(env=env, out=out / "data" / "test" / env, n=cfg.n_test, seed=10_000 + k, format="pairs"))
        audit = out / "audit" / "test" / env
        score(ScoreConfig(source=src.parent, out=audit, seed=0, cache_dir=out / "cache"))
        tests[env] = (load_pairs(audit, small["image_size"], small["vocab"]),
                      pl.read_parquet(audit / "audited.parquet").filter(pl.col("status") == "ok")["text_margin"].to_numpy())
        if get_env(env).cue is None:
            ood_tests[env] = tests[env][0]
        else:
            src = synth(SynthConfig(env=env, out=out / "data" / "test-ood" / env, n=cfg.n_test, seed=20_000 + k,
                                    p=OOD_P, format="pairs"))
            ood_tests[env] = load_pairs(src.parent, small["image_size"], small["vocab"])

    rows = []
    for env in cfg.env_list():
        for seed in range(cfg.seeds):
            src = synth(SynthConfig(env=env, out=out / "data" / "train" / f"{env}-s{seed}", n=cfg.n_train, seed=seed,
                                    format="pairs"))
            audit = out / "audit" / "train" / f"{env}-s{seed}"
            summary = score(ScoreConfig(source=src.parent, out=audit, seed=seed, cache_dir=out / "cache"))
            table = pl.read_parquet(audit / "audited.parquet").filter(pl.col("status") == "ok")
            for method in METHODS:
                run = out / "runs" / f"{env}-s{seed}-{method}"
                kw = dict(data=audit, out=run, seed=seed, cache_dir=out / "cache", **small)
                override = None
                if method in ("standard", "shortcut-aware"):
                    tcfg = TrainConfig(method=method, **kw)
                elif method == "oracle":
                    tcfg = TrainConfig(method="weighted", **kw)
                    override = oracle_weights(table["cue_on_chosen"].to_list())
                else:
                    tcfg = TrainConfig(method="weighted", scheme=method.split("-", 1)[1], **kw)
                t0 = time.perf_counter()
                ts = train(tcfg, weights=override)
                seconds = time.perf_counter() - t0
                model = load_model(run / CHECKPOINT)
                data, text_margin = tests[env]
                m = margins(model, data)
                iid, sfd = metrics.accuracy(m), metrics.sfd(text_margin, m)
                ood = {e: metrics.accuracy(margins(model, d)) for e, d in ood_tests.items() if e != env}
                hist = ts["history"]
                rows.append({"train_env": env, "method": method, "seed": seed, "iid": iid, "ood": ood,
                             "mean_ood": float(np.mean(list(ood.values()))), "sfd": sfd,
                             "cue_share": hist[-1].get("cue_share"),
                             "cue_share_per_epoch": [h.get("cue_share") for h in hist],
                             "seconds": round(seconds, 2), "train_seconds": ts["train_seconds"],
                             "text_acc_audit": summary["text_acc"]})
                log.info("%s %s seed %d: iid %.3f mean ood %.3f", env, method, seed, iid, rows[-1]["mean_ood"])
                write_json_atomic(out / "results.json", {"rows": rows, "config": to_dict(cfg), "versions": versions()})

    table_md = summarise(rows)
    (out / "results.md").write_text(table_md, encoding="utf-8")
    result = {"rows": rows, "config": to_dict(cfg), "versions": versions(), "table": table_md}
    write_json_atomic(out / "results.json", result)
    return result


def summarise(rows: list[dict]) -> str:
    """One Markdown table per training environment: mean ± std over seeds, per method."""
    lines = []
    std_step = {}
    for r in rows:
        if r["method"] == "standard":
            std_step.setdefault(r["train_env"], []).append(r["train_seconds"])
    for env in dict.fromkeys(r["train_env"] for r in rows):
        lines += [f"**trained on `{env}`**", "",
                  "| method | i.i.d. | mean o.o.d. | " + " | ".join(f"o.o.d. {e}" for e in TEST_ENVS if e != env)
                  + " | SFD | cue share | train s (x standard) |",
                  "|---|---:|---:|" + "---:|" * (len(TEST_ENVS) - 1) + "---:|---:|---:|"]
        for method in METHODS:
            rs = [r for r in rows if r["train_env"] == env and r["method"] == method]
            if not rs:
                continue
            iid, iid_s = _mean_std([r["iid"] for r in rs])
            mo, mo_s = _mean_std([r["mean_ood"] for r in rs])
            per = " | ".join(f"{100 * _mean_std([r['ood'][e] for r in rs])[0]:.1f}" for e in TEST_ENVS if e != env)
            sfd = [r["sfd"] for r in rs if r["sfd"] is not None and r["sfd"] == r["sfd"]]
            share = [r["cue_share"] for r in rs if r["cue_share"] is not None]
            ts = _mean_std([r["train_seconds"] for r in rs])[0]
            base = _mean_std(std_step.get(env, [ts]))[0] or ts
            lines.append(f"| {method} | {100 * iid:.1f} ± {100 * iid_s:.1f} | {100 * mo:.1f} ± {100 * mo_s:.1f} | {per} | "
                         f"{(_mean_std(sfd)[0] if sfd else float('nan')):.1f} | "
                         f"{(_mean_std(share)[0] if share else float('nan')):.3f} | {ts:.1f} ({ts / base:.2f}x) |")
        lines.append("")
    return "\n".join(lines)
