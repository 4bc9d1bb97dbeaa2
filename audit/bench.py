"""`bench`: the cross-distribution experiment on the synthetic environments, built so that it can tell a
reweighting that removes a shortcut from one that only throws data away.

For every training environment (a cue at strength p on the chosen side, or `clean`), size and seed:
synthesize a training set, audit it (`score`), and train one `small` reward model per method:
`standard`; `shortcut-aware` (the paper's dynamic loss); `weighted-<scheme>` for each static scheme
(audit once, train once); `oracle` (weights from the planted cue itself, weighted cue share exactly
0.5: what reweighting alone can give); and two controls with the oracle's effective sample size but no
knowledge of the cue, `ess-matched` (the oracle's weights shuffled across pairs) and `subsample` (a
random subset of ESS pairs). Then evaluate each model on held-out shift sets (own seeds, never the
training pairs):

- i.i.d.: the training distribution; worst-group = the lower of its cue-aligned / cue-against accuracy;
- reversed: the training cue on the rejected side (p = 0.1); neutral: on a random side (p = 0.5);
- the other environments' cues at p = 0.5 (only the image counts) and at p = 0.9 (a shared
  "extra text wins" shortcut would carry over); `clean`.

Each method's paired difference to `standard` (same environment, size and seed) gets a bootstrap 95%
interval over seeds. Training runs with a fixed thread count and deterministic algorithms, so the same
seed gives the same numbers; `--jobs` trains (environment, seed) tasks in parallel processes, each of
which writes its rows when done, so an interrupted bench resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from pathlib import Path

import numpy as np

from audit import metrics
from audit.config import BON_REGIMES, BenchConfig, ScoreConfig, SynthConfig, TrainConfig, to_dict
from audit.io import versions, write_json_atomic

log = logging.getLogger(__name__)

CUES = ("leadin", "closing", "verbose", "markdown")   # the environments with a planted cue (their base names)
STATIC = ("sfc-residual", "debias", "ipw", "jtt")
CONTROLS = ("ess-matched", "subsample")
METHODS = ("standard", "shortcut-aware", *(f"weighted-{s}" for s in STATIC), "oracle", *CONTROLS)
NEEDS_CUE = ("oracle", *CONTROLS)     # defined by the planted cue: not trained on `clean`
REVERSED_P, NEUTRAL_P, ALIGNED_P = 0.1, 0.5, 0.9
BOOTSTRAP = 10_000
# metrics reported per method: (key, label); the first two are the primary ones
METRICS = (("reversed", "reversed cue"), ("worst_group", "worst-group"), ("iid", "i.i.d."), ("neutral", "neutral cue"),
           ("other_neutral", "other cues p=0.5"), ("other_aligned", "other cues p=0.9"), ("clean", "clean"))


# ---- the shift sets ---------------------------------------------------------------------------------

def set_name(cue: str | None, p: float | None = None) -> str:
    return "clean" if cue is None else f"{cue}@{p:g}"


def shift_sets(env_name: str) -> dict[str, str]:
    """role -> test-set name for a training environment: `iid`, `reversed`, `neutral`, `clean`,
    `other@0.5:<cue>`, `other@0.9:<cue>` (roles of cue-free training leave out what needs a cue)."""
    from audit.synth import get_env

    env = get_env(env_name)
    roles = {"iid": set_name(env.cue, env.p), "clean": "clean"}
    if env.cue is not None:
        roles.update(reversed=set_name(env.cue, REVERSED_P), neutral=set_name(env.cue, NEUTRAL_P))
    for c in CUES:
        if c != env.cue:
            roles[f"other@0.5:{c}"] = set_name(c, NEUTRAL_P)
            roles[f"other@0.9:{c}"] = set_name(c, ALIGNED_P)
    return roles


def _build_test_set(out: Path, name: str, n: int) -> Path:
    """Write (once) the named held-out set: its seed comes from its name, so it never depends on which
    other sets a bench builds, and it is far from every training seed."""
    from audit.synth import synth

    cue, _, p = name.partition("@")
    folder = out / "data" / "test" / name
    if not (folder / "pairs.parquet").is_file():
        synth(SynthConfig(env="clean" if name == "clean" else cue, out=folder, n=n,
                          seed=1_000_000 + zlib.crc32(name.encode()) % 1_000_000,
                          p=None if name == "clean" else float(p), format="pairs", overwrite=True))
    return folder


# ---- weights of the oracle and its controls --------------------------------------------------------

def oracle_weights(truth: list) -> np.ndarray:
    """w = 0.5 / (share of pairs with the cue on this side), mean 1: the weighted share of cue-aligned
    pairs is exactly 0.5 (the realised share, not the planted p, so it is exact on a finite sample)."""
    known = [t for t in truth if t is not None]
    if not known or all(known) or not any(known):
        return np.ones(len(truth))
    p = sum(bool(t) for t in known) / len(known)
    w = np.array([1.0 if t is None else (0.5 / p if t else 0.5 / (1 - p)) for t in truth])
    return w / w.mean()


def ess(w: np.ndarray) -> float:
    """Effective sample size (sum w)^2 / sum w^2."""
    w = np.asarray(w, dtype=np.float64)
    return float(w.sum() ** 2 / (w * w).sum()) if (w * w).sum() > 0 else 0.0


def ess_matched_weights(oracle: np.ndarray, seed: int) -> np.ndarray:
    """The oracle's multiset of weights, assigned to pairs at random: its effective sample size, none of
    its knowledge of the cue."""
    return np.random.default_rng([seed, 0xE55]).permutation(np.asarray(oracle, dtype=np.float64))


def subsample_weights(oracle: np.ndarray, seed: int) -> np.ndarray:
    """A random subset of round(ESS(oracle)) pairs at equal weight (mean 1 over all pairs), 0 elsewhere."""
    n = len(oracle)
    k = max(1, min(n, int(round(ess(oracle)))))
    w = np.zeros(n)
    w[np.random.default_rng([seed, 0x5AB]).choice(n, size=k, replace=False)] = n / k
    return w


def method_weights(method: str, truth: list, seed: int) -> np.ndarray | None:
    if method not in NEEDS_CUE:
        return None
    w = oracle_weights(truth)
    return {"oracle": w, "ess-matched": ess_matched_weights(w, seed), "subsample": subsample_weights(w, seed)}[method]


# ---- one task: (environment, size, seed), every method ----------------------------------------------

def task_id(env: str, n: int, seed: int) -> str:
    return f"{env}-n{n}-s{seed}"


def _determinism(threads: int, device: str) -> None:
    import torch

    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _audit_training_set(out: Path, env: str, n: int, seed: int, cache_dir: Path, device: str) -> Path:
    from audit.score import score
    from audit.synth import synth

    tid = task_id(env, n, seed)
    audit = out / "audit" / "train" / tid
    if not (audit / "summary.json").is_file():
        src = synth(SynthConfig(env=env, out=out / "data" / "train" / tid, n=n, seed=seed, format="pairs",
                                overwrite=True))      # an interrupted write is redone
        score(ScoreConfig(source=src.parent, out=audit, seed=seed, cache_dir=cache_dir, device=device))
    return audit


def _bon_set(env: str, small: dict, bon_prompts: int):
    """The held-out Best-of-N prompts of an environment's cue (None when Best-of-N is off)."""
    if not bon_prompts:
        return None
    from audit.bon.synthetic import build_bon_set
    from audit.synth import get_env

    return build_bon_set(get_env(env).cue, bon_prompts, small["image_size"], small["vocab"])


def _add_best_of_n(out: Path, tid: str, rows: list[dict], bon_set, device: str) -> list[dict]:
    """A task finished before Best-of-N was asked for: add it to its rows from the saved checkpoints."""
    from audit.bon.synthetic import bon_row
    from audit.train.loop import CHECKPOINT, load_model

    for r in rows:
        if "bon" not in r:
            r.update(bon_row(load_model(out / "runs" / tid / r["method"] / CHECKPOINT).to(device), bon_set))
    write_json_atomic(out / "tasks" / f"{tid}.json", {"rows": rows})
    return rows


def run_task(out: str, env: str, n: int, seed: int, small: dict, methods: list[str], threads: int,
             device: str, roles: dict[str, str], cache_dir: str, worker_audit: bool = False,
             bon_prompts: int = 0) -> list[dict]:
    """Train every method on one audited training set and evaluate on the shift sets: the bench's unit
    of work (run in a worker process under `--jobs`; with `worker_audit` it also writes and audits its
    training set, with an embedding cache of its own). With `bon_prompts`, each model also picks among
    the candidates of that many held-out prompts (`audit.bon.synthetic`). Returns its rows; also writes
    them to `OUT/tasks/<task>.json`, which marks the task done for a resumed bench."""
    import polars as pl

    from audit.train.data import load_pairs
    from audit.train.loop import CHECKPOINT, load_model, margins, train

    _determinism(threads, device)
    out_p = Path(out)
    tid = task_id(env, n, seed)
    bon_set = _bon_set(env, small, bon_prompts)
    done = out_p / "tasks" / f"{tid}.json"
    if done.is_file():            # trained before Best-of-N was asked for: only that is left to do
        rows = json.loads(done.read_text())["rows"]
        return rows if bon_set is None else _add_best_of_n(out_p, tid, rows, bon_set, device)
    if worker_audit:
        _audit_training_set(out_p, env, n, seed, Path(cache_dir) / f"task-{tid}", device)
    audit = out_p / "audit" / "train" / tid
    table = pl.read_parquet(audit / "audited.parquet").filter(pl.col("status") == "ok")
    summary = json.loads((audit / "summary.json").read_text())
    truth = table["cue_on_chosen"].to_list() if "cue_on_chosen" in table.columns else [None] * table.height
    has_cue = any(t is not None for t in truth)
    data = load_pairs(audit, small["image_size"], small["vocab"])
    tests = {name: load_pairs(out_p / "data" / "test" / name, small["image_size"], small["vocab"])
             for name in dict.fromkeys(roles.values())}
    iid_audit = out_p / "audit" / "test" / roles["iid"]
    iid_text_margin = pl.read_parquet(iid_audit / "audited.parquet").filter(pl.col("status") == "ok")["text_margin"].to_numpy()

    rows = []
    for method in methods:
        if method in NEEDS_CUE and not has_cue:
            continue
        run = out_p / "runs" / tid / method
        kw = dict(data=audit, out=run, seed=seed, cache_dir=Path(cache_dir), threads=threads, device=device, **small)
        if method in ("standard", "shortcut-aware"):
            tcfg = TrainConfig(method=method, **kw)
        elif method.startswith("weighted-"):
            tcfg = TrainConfig(method="weighted", scheme=method.split("-", 1)[1], **kw)
        else:
            tcfg = TrainConfig(method="weighted", **kw)
        t0 = time.perf_counter()
        ts = train(tcfg, weights=method_weights(method, truth, seed), pairs=data)
        seconds = time.perf_counter() - t0
        model = load_model(run / CHECKPOINT).to(device)
        acc = {name: margins(model, d) for name, d in tests.items()}
        rows.append(_row(env, n, seed, method, roles, acc, tests, iid_text_margin, ts, seconds, summary, threads, device))
        if bon_set is not None:
            from audit.bon.synthetic import bon_row

            rows[-1].update(bon_row(model, bon_set))
        log.info("%s %s: iid %.3f reversed %s worst-group %s", tid, method, rows[-1]["iid"],
                 rows[-1]["reversed"], rows[-1]["worst_group"])
    write_json_atomic(out_p / "tasks" / f"{tid}.json", {"rows": rows})
    return rows


def _row(env, n, seed, method, roles, margins_by_test, tests, iid_text_margin, ts, seconds, summary, threads, device):
    acc = {name: metrics.accuracy(m) for name, m in margins_by_test.items()}
    iid_name = roles["iid"]
    m_iid = margins_by_test[iid_name]
    truth = tests[iid_name].cue_on_chosen
    aligned = against = worst = None
    if truth is not None and any(t is not None for t in truth):
        known = np.array([t is not None for t in truth])
        flag = np.array([bool(t) for t in truth])
        aligned, against = metrics.accuracy(m_iid[known & flag]), metrics.accuracy(m_iid[known & ~flag])
        worst = worst_group(aligned, against)
    mean_of = lambda prefix: float(np.mean([acc[v] for k, v in roles.items() if k.startswith(prefix)]))  # noqa: E731
    ood = {name: a for name, a in acc.items() if name != iid_name}
    hist = ts["history"]
    return {"train_env": env, "n_train": n, "method": method, "seed": seed, "iid": acc[iid_name],
            "worst_group": worst, "acc_cue_aligned": aligned, "acc_cue_against": against,
            "reversed": acc.get(roles.get("reversed")), "neutral": acc.get(roles.get("neutral")),
            "other_neutral": mean_of("other@0.5:"), "other_aligned": mean_of("other@0.9:"), "clean": acc["clean"],
            "ood": ood, "mean_ood": float(np.mean(list(ood.values()))),
            "sfd": metrics.sfd(iid_text_margin, m_iid), "cue_share": hist[-1].get("cue_share"),
            "cue_share_per_epoch": [h.get("cue_share") for h in hist], "ess": hist[-1].get("ess"),
            "seconds": round(seconds, 2), "train_seconds": ts["train_seconds"], "threads": threads, "device": device,
            "text_acc_audit": summary["text_acc"]}


def worst_group(aligned: float, against: float) -> float:
    """Worst-group accuracy (GroupDRO, JTT, DFR): the lower of the cue-aligned and cue-against accuracy."""
    return float(min(aligned, against))


# ---- the bench --------------------------------------------------------------------------------------

def _prepare(cfg: BenchConfig, small: dict):
    """Yield the training tasks (environment, size, seed, roles), each once its training set and shift
    sets are written and audited. This runs in the main process (the audits share one embedding cache)
    while earlier tasks train in the workers; with `--worker-audits` the workers audit their own sets)."""
    from audit.score import score

    out = cfg.out
    runs = [(env, cfg.n_train) for env in cfg.env_list()]
    if cfg.scale_n:
        runs.append((cfg.scale_env, cfg.scale_n))
    for env, n in runs:
        roles = shift_sets(env)
        for name in dict.fromkeys(roles.values()):
            folder = _build_test_set(out, name, cfg.n_test)
            if name == roles["iid"] and not (out / "audit" / "test" / name / "summary.json").is_file():
                score(ScoreConfig(source=folder, out=out / "audit" / "test" / name, seed=0, cache_dir=cfg.cache_dir,
                                  device=cfg.device))
        for seed in range(cfg.seeds):
            if not cfg.worker_audits and not (out / "tasks" / f"{task_id(env, n, seed)}.json").is_file():
                _audit_training_set(out, env, n, seed, cfg.cache_dir, cfg.device)
            yield env, n, seed, roles


def bench(cfg: BenchConfig) -> dict:
    """Run (or resume: finished tasks keep their rows) the bench into `cfg.out`."""
    from audit.io import claim_output

    with claim_output(cfg.out, "bench", overwrite=cfg.overwrite, resumable=True):
        return _bench(cfg)


def _bench(cfg: BenchConfig) -> dict:
    from audit.train.vision import pretrained_encoder

    out = cfg.out
    small = dict(epochs=cfg.epochs, batch_size=64, dim=64, image_size=64, vocab=4096)
    t_start = time.perf_counter()
    _determinism(cfg.threads, "cpu")
    pretrained_encoder(small["image_size"], cache=cfg.cache_dir)    # once, before any worker needs it
    tasks: list[tuple] = []
    done: dict[str, list] = {}

    def finished(t: tuple) -> list | None:       # resume: a finished task keeps its rows (Best-of-N added if asked)
        f = out / "tasks" / f"{task_id(*t[:3])}.json"
        rows = json.loads(f.read_text())["rows"] if f.is_file() else None
        return None if rows is None or (cfg.best_of_n and any("bon" not in r for r in rows)) else rows

    def args(t: tuple) -> tuple:
        return (str(out), t[0], t[1], t[2], small, cfg.method_list(), cfg.threads, cfg.device, t[3], str(cfg.cache_dir),
                cfg.worker_audits, cfg.bon_prompts if cfg.best_of_n else 0)

    def save() -> None:
        rows = [r for t in tasks for r in done.get(task_id(*t[:3]), [])]
        write_json_atomic(out / "results.json", {"rows": rows, "config": to_dict(cfg), "versions": versions()})

    if cfg.jobs == 1:
        for t in _prepare(cfg, small):
            tasks.append(t)
            done[task_id(*t[:3])] = finished(t) or run_task(*args(t))
            save()
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {}

            def collect(fut) -> None:
                done[futures[fut]] = fut.result()   # a failed task stops the bench; finished ones are kept
                log.info("task %s done (%d of %d)", futures[fut], len(done), len(tasks))
                save()

            for t in _prepare(cfg, small):          # tasks start training as soon as their data is audited
                tasks.append(t)
                rows = finished(t)
                if rows is not None:
                    done[task_id(*t[:3])] = rows
                else:
                    futures[pool.submit(run_task, *args(t))] = task_id(*t[:3])
                for fut in [f for f in futures if f.done() and futures[f] not in done]:
                    collect(fut)
            for fut in as_completed([f for f in futures if futures[f] not in done]):
                collect(fut)

    rows = [r for t in tasks for r in done.get(task_id(*t[:3]), [])]
    stats = statistics(rows)
    table_md = summarise(rows, stats, cfg)
    extra = _best_of_n_report(out, rows, stats, cfg, small) if cfg.best_of_n else {}
    table_md += extra.get("table", "")
    (out / "results.md").write_text(table_md, encoding="utf-8")
    result = {"rows": rows, "stats": stats, "config": to_dict(cfg), "versions": versions(), "table": table_md,
              **{k: v for k, v in extra.items() if k != "table"}, "wall_seconds": round(time.perf_counter() - t_start, 1)}
    write_json_atomic(out / "results.json", result)
    return result


def _best_of_n_report(out: Path, rows: list[dict], stats: dict, cfg: BenchConfig, small: dict) -> dict:
    """The Best-of-N table (appended to results.md), its figure (OUT/best_of_n.png, or .html without a
    browser engine) and the reference pickers' curves."""
    from audit.bon.report import bench_figure, bench_table
    from audit.bon.synthetic import reference_curves

    reference = reference_curves(_bon_set(cfg.env_list()[0], small, min(cfg.bon_prompts, 50)))
    # the figure shows the cue environments at p = 0.9 pooled when the bench has several, else its first group
    pooled = [r for r in rows if r["n_train"] == cfg.n_train and _strength_key(r) and "p=0.9" in _strength_key(r)]
    if len({r["train_env"] for r in pooled}) > 1:
        title, shown = _strength_key(pooled[0]), pooled
    else:
        title = _group_key(rows[0]) if rows else ""
        shown = [r for r in rows if _group_key(r) == title]
    figure = bench_figure(shown, title, reference, out / "best_of_n")
    return {"table": bench_table(stats, reference, figure), "bon_reference": reference,
            "bon_figure": None if figure is None else figure.name}


# ---- statistics -------------------------------------------------------------------------------------

def bootstrap_ci(diffs: list[float], n_boot: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float] | None:
    """Percentile 95% interval of the mean of paired differences, resampling the pairs (seeds) with
    replacement; None with fewer than two pairs."""
    d = np.asarray([x for x in diffs if x is not None and x == x], dtype=np.float64)
    if d.size < 2:
        return None
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _group_key(r: dict) -> str:
    return f"{r['train_env']} (n={r['n_train']})"


def _strength_key(r: dict) -> str | None:
    from audit.synth import get_env

    env = get_env(r["train_env"])
    return None if env.cue is None else f"all cues at p={env.p:g} (n={r['n_train']})"


def statistics(rows: list[dict]) -> dict:
    """Per group (one training environment and size, or all cue environments of one strength and size):
    per method and metric, the mean, the std over seeds and the paired difference to `standard` matched
    by (environment, size, seed), with its bootstrap 95% interval."""
    by_key: dict[tuple, dict] = {(r["train_env"], r["n_train"], r["seed"], r["method"]): r for r in rows}
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(_group_key(r), []).append(r)
    pooled: dict[str, list[dict]] = {}
    for r in rows:
        if _strength_key(r) is not None:
            pooled.setdefault(_strength_key(r), []).append(r)
    for g, rs in pooled.items():              # a pooled group only where it pools several environments
        if len({r["train_env"] for r in rs}) > 1:
            groups[g] = rs
    keys = [k for k, _ in METRICS] + ["mean_ood", "sfd", "cue_share", "ess", "train_seconds"]
    keys += sorted({k for r in rows for k in r if k.startswith("bon_") and k.split("_")[1] in BON_REGIMES})  # Best-of-N
    out = {}
    for g, rs in groups.items():
        out[g] = {}
        for method in dict.fromkeys(r["method"] for r in rs):
            mine = [r for r in rs if r["method"] == method]
            entry = {"n_runs": len(mine)}
            for k in keys:
                vals = [r[k] for r in mine if r.get(k) is not None and r[k] == r[k]]
                if not vals:
                    continue
                e = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
                base = [by_key.get((r["train_env"], r["n_train"], r["seed"], "standard")) for r in mine]
                diffs = [r[k] - b[k] for r, b in zip(mine, base)
                         if b is not None and r.get(k) is not None and b.get(k) is not None and r[k] == r[k] and b[k] == b[k]]
                if method != "standard" and diffs:
                    e["diff"] = float(np.mean(diffs))
                    e["diff_ci"] = bootstrap_ci(diffs)
                if k == "train_seconds" and method != "standard":
                    ratios = [r[k] / b[k] for r, b in zip(mine, base) if b is not None and b.get(k)]
                    e["ratio_to_standard"] = float(np.median(ratios)) if ratios else None
                entry[k] = e
            out[g][method] = entry
    return out


def verdict(e: dict) -> str:
    """'+2.1 [+0.8, +3.5]' in points, or 'no difference' when the interval holds 0."""
    ci = e.get("diff_ci")
    d = 100 * e["diff"]
    if ci is None:
        return f"{d:+.1f} (1 seed)"
    lo, hi = 100 * ci[0], 100 * ci[1]
    text = f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]"
    return text if lo > 0 or hi < 0 else f"{text} n.s."


def summarise(rows: list[dict], stats: dict | None = None, cfg: BenchConfig | None = None) -> str:
    """Markdown: per group, a table of means ± std over seeds, then the paired differences to standard."""
    stats = stats if stats is not None else statistics(rows)
    lines = []
    fmt = lambda e, k: "–" if k not in e else f"{100 * e[k]['mean']:.1f} ± {100 * e[k]['std']:.1f}"  # noqa: E731
    for g, methods in stats.items():
        lines += [f"**{g}**, accuracy in % (mean ± std over {max(m['n_runs'] for m in methods.values())} runs)", "",
                  "| method | " + " | ".join(label for _, label in METRICS) + " | SFD | cue share | ESS / n | step time |",
                  "|---|" + "---:|" * (len(METRICS) + 4)]
        for method, e in methods.items():
            sfd = f"{e['sfd']['mean']:.1f}" if "sfd" in e else "–"
            share = f"{e['cue_share']['mean']:.3f}" if "cue_share" in e else "–"
            ess_ = f"{e['ess']['mean']:.2f}" if "ess" in e else "–"
            ratio = e.get("train_seconds", {}).get("ratio_to_standard")
            step = "1.00x" if method == "standard" else ("–" if ratio is None else f"{ratio:.2f}x")
            lines.append(f"| {method} | " + " | ".join(fmt(e, k) for k, _ in METRICS) + f" | {sfd} | {share} | {ess_} | {step} |")
        lines += ["", "paired difference to standard, points [bootstrap 95% interval over seeds]; n.s. = the interval "
                  "holds 0 (no difference)", "",
                  "| method | " + " | ".join(f"Δ {label}" for _, label in METRICS) + " |",
                  "|---|" + "---:|" * len(METRICS)]
        for method, e in methods.items():
            if method == "standard":
                continue
            lines.append(f"| {method} | " + " | ".join(verdict(e[k]) if k in e and "diff" in e[k] else "–"
                                                        for k, _ in METRICS) + " |")
        lines.append("")
    if cfg is not None:
        lines.append(f"{cfg.seeds} seed(s), {cfg.n_train} training pairs, {cfg.epochs} epochs, {cfg.n_test} test pairs "
                     f"per set, device {cfg.device}, {cfg.threads} thread(s) per training")
    return "\n".join(lines) + "\n"
