"""The `shortcut-audit` command: parse options, call the library, print results.

Thin by design: every option comes from a config dataclass (`audit.config`), heavy libraries are
imported inside the handlers (so `--help` is instant), and domain errors become one `Error:` line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from audit.config import (AppConfig, BenchConfig, CardConfig, EvalConfig, TrainConfig, DemoConfig, ExportConfig, IngestConfig,
                          OverlapConfig, ScoreConfig, SynthConfig, add_arguments, from_args)
from audit.errors import AuditError


def _cmd_synth(args: argparse.Namespace) -> int:
    from audit.synth import ENVIRONMENTS, synth

    if args.list:
        from audit.synth.envs import AUDIT_CUE

        print(f"{'environment':<18} {'audit cue':<12} {'p':>4}  description")
        for env in ENVIRONMENTS.values():
            print(f"{env.name:<18} {AUDIT_CUE.get(env.cue, '-'):<12} {env.p:>4.2f}  {env.description}")
        print("audit cue: the name `score` gives the planted cue (its cue model and the app use it); p: the share of "
              "pairs with the cue on the chosen side")
        return 0
    cfg = from_args(SynthConfig, args)
    path = synth(cfg)
    if cfg.candidates:
        print(f"wrote {cfg.n} prompts with {cfg.candidates} candidate responses each (`{cfg.env}`, regime "
              f"`{cfg.regime}`): {path}")
        return 0
    print(f"wrote {cfg.n} pairs of `{cfg.env}` in format `{cfg.format}`: {path}")
    if cfg.holdout:
        print(f"wrote {cfg.holdout} held-out pairs of the same distribution: {cfg.out / 'heldout'}")
    return 0


def _print_report(rep: dict, out: Path) -> None:
    print(f"format: {rep['format']}   records in: {rep['records_in']}   rows out: {rep['rows_out']}   "
          f"ok: {rep['pairs_ok']}")
    print("status: " + ", ".join(f"{k}={v}" for k, v in rep["status_counts"].items()))
    if rep["not_paired"]:
        print("comparisons that made no pair: " + ", ".join(f"{k}={v}" for k, v in rep["not_paired"].items()))
    print(f"images checked: {rep['images']['checked']}   newly stored: {rep['images']['stored_new']}   "
          f"{rep['pairs_per_s']} rows/s")
    print(f"pairs table: {out / 'pairs.parquet'}   report: {out / 'ingest_report.json'}")


def _cmd_ingest(args: argparse.Namespace) -> int:
    from audit.ingest import ingest

    cfg = from_args(IngestConfig, args)
    rep = ingest(cfg)
    _print_report(rep, cfg.out)
    return 0


def _num(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:.1f}"   # SFD is undefined when the text model is never wrong


def _print_summary(s: dict, out: Path) -> None:
    from audit.reading import (components_line, grouping_line, headline, interval, mm_versus_text, pct, phrase_story,
                               shortcut_rate_line, verdict, where_line)

    print(f"scored {s['n_scored']} of {s['n_rows']} pairs   status: "
          + ", ".join(f"{k}={v}" for k, v in s["status_counts"].items()))
    if s.get("text_only"):
        print(f"text-only audit: no multimodal side (mm_* and SFC null); {s.get('scored_without_image', 0)} pairs scored "
              f"without their image; weights from `{s['scheme']}`")
    print(headline(s))
    if where_line(s):
        print(where_line(s))
    print(verdict(s))
    ci = interval(s.get("text_acc_ci"))
    vs, vs_ci = mm_versus_text(s), s.get("mm_minus_text_ci")
    vs = f" ({vs}, 95% CI {100 * vs_ci[0]:+.1f} to {100 * vs_ci[1]:+.1f})" if vs and vs_ci else ""
    print(f"text-only acc {pct(s['text_acc'])}{f' ({ci})' if ci else ''}   multimodal acc {pct(s['mm_acc'])}{vs}   "
          f"cue-model acc {pct(s['cue_acc'])}   SFD {_num(s['sfd'])} (see README, \"Reading the results\")")
    if components_line(s):
        print(f"text-only model: {components_line(s)}")
    print(shortcut_rate_line(s))
    standing = [c for c in s["cues"] if c.get("stands_out", True)]
    print("top cues: " + (", ".join(f"{c['name']} (coef {c['coefficient']:+.2f}"
                                    + (f" [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]" if "ci_low" in c else "")
                                    + f", assoc {c['association']:+.2f})" for c in standing[:3])
                          or "no cue stands out (every coefficient's 95% interval includes 0)"))
    if s.get("cue_share"):
        print("cue share (planted cue on the chosen side, by weight): "
              + ", ".join(f"{k}={v:.3f}" for k, v in s["cue_share"].items()))
    if s.get("rm"):
        r = s["rm"]
        print(f"reward model {r['model']}: acc {pct(r['acc'])} with the image, {pct(r['blank_acc'])} with a blank "
              f"image; flip rate {pct(r['flip_rate'])}; SFD vs text probe {_num(r['sfd_vs_text'])}")
    if s.get("prompt_blind_acc") is not None:
        print(f"prompt-blind acc {pct(s['prompt_blind_acc'])} (responses alone): {phrase_story(s)}")
    _print_slices_and_phrases(s)
    if grouping_line(s):
        print("grouping: " + grouping_line(s))
    for w in s.get("warnings", []):
        print(f"warning: {w}")
    print(f"audited table: {out / 'audited.parquet'}   summary: {out / 'summary.json'}")


def _print_slices_and_phrases(s: dict) -> None:
    from audit.reading import pct, phrase_text, slice_label

    sl = s.get("slices") or {}
    for c in sl.get("carriers") or []:
        ci = c.get("text_acc_ci") or [None, None]
        print(f"slice {slice_label(c)}: text-only {pct(c['text_acc'])} [{pct(ci[0])}, {pct(ci[1])}] on {c['n']:,} pairs, "
              f"the rest {pct(c['rest_acc'])} (Holm p {c['p_adjusted']:.2g})"
              + ("; explains " + ", ".join(slice_label(e) for e in c["explains"]) if c.get("explains") else ""))
    for c in sl.get("below") or []:
        print(f"slice {slice_label(c)}: text-only {pct(c['text_acc'])} on {c['n']:,} pairs, below the rest "
              f"({pct(c['rest_acc'])}): the text says least there")
    sig = [p for p in s.get("phrases") or [] if p.get("significant")]
    if s.get("phrases") is not None and s.get("phrases") != []:
        print("phrases: " + (", ".join(phrase_text(p) for p in sig[:5]) if sig else "no phrase stands out"))
    for sp in s.get("slice_phrases") or []:
        inside = [p for p in sp["phrases"] if p.get("significant")]
        if inside:
            print(f"  in {slice_label(sp)}: " + ", ".join(phrase_text(p, slices=False) for p in inside[:4]))
    words = [p for p in s.get("function_words") or [] if p.get("significant")]
    if words:
        print("function words (length and style proxies, listed apart): "
              + ", ".join(f"\"{p['phrase']}\" ({p['n_chosen']}/{p['n_rejected']})" for p in words[:5]))


def _cmd_score(args: argparse.Namespace) -> int:
    from audit.score import score

    cfg = from_args(ScoreConfig, args)
    summary = score(cfg)
    if "rank" in summary:      # a non-zero rank of a data-parallel run: rank 0 reports
        return 0
    _print_summary(summary, cfg.out)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from audit.export import export

    cfg = from_args(ExportConfig, args)
    rep = export(cfg)
    print(f"{rep['mode']} export as {rep['written_as']}: {rep['rows_out']} rows ({rep['distinct_pairs']} distinct pairs) "
          f"from {rep['scored']} scored of {rep['rows_in']}; scheme {rep['scheme']}")
    if rep["excluded_unscored"]:
        print("not exported (unscored): " + ", ".join(f"{k}={v}" for k, v in rep["excluded_unscored"].items()))
    if rep.get("tags") is not None:
        t = rep["tags"]
        print(f"tags ({t['in_file']} in the audit's tags.parquet): {t['excluded']} excluded, {t['swapped']} written "
              f"with chosen and rejected swapped, {t['kept']} kept from pruning, {t['review']} marked for review")
    if rep.get("likely_swaps"):
        sw = rep["likely_swaps"]
        print(f"likely label swaps ({sw['rule']}): {sw['rows_flagged']} of the {rep['rows_out']} rows written are "
              f"flagged in `{sw['column']}`")
    if rep["weights"]["renormalised_from_mean"] is not None:
        print(f"weights rescaled to mean 1 over the exported pairs (their audit weights averaged "
              f"{rep['weights']['renormalised_from_mean']:.3f}); the audit's own are in `audit_weight`")
    print(f"written: {rep['path']}   report: {cfg.out / 'export_report.json'}")
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from audit.card import card

    path = card(from_args(CardConfig, args))
    print(f"dataset card: {path}")
    return 0


def app_command(cfg: AppConfig) -> tuple[list[str], dict]:
    """The `streamlit run` command line and environment that serve the app on `cfg`."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("shortcut_audit_app")     # the `app/` folder, installed under a unique name
    home = Path(spec.origin).parent / "Home.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(home), "--server.address", cfg.host,
           "--server.port", str(cfg.port), "--browser.gatherUsageStats", "false",
           "--server.headless", "false" if cfg.open else "true",   # headless: Streamlit never prompts
           "--client.showSidebarNavigation", "false",   # the app draws its own links, which carry the filters
           "--client.toolbarMode", "viewer"]            # no "Deploy" button
    env = {**os.environ, "SHORTCUT_AUDIT_DIR": str(cfg.audit.resolve())}
    if cfg.compare is not None:
        env["SHORTCUT_AUDIT_COMPARE"] = str(cfg.compare.resolve())
    return cmd, env


def _check_port(host: str, port: int) -> None:
    """Refuse a busy port before saying "serving" (Streamlit would otherwise move to another port or fail)."""
    import socket

    from audit.errors import ConfigError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the server will: TIME_WAIT is not busy
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(f"port {port} on {host} is busy or not available ({e.strerror}): another app may be "
                              "serving there; pass another `--port`") from None


def _cmd_app(args: argparse.Namespace) -> int:
    import os

    cfg = from_args(AppConfig, args)
    cmd, env = app_command(cfg)
    _check_port(cfg.host, cfg.port)
    print(f"serving {cfg.audit} on http://{cfg.host}:{cfg.port}  (Ctrl-C stops)", flush=True)
    os.execve(cmd[0], cmd, env)   # the server takes this process's PID: stopping that PID stops the server


def _cmd_train(args: argparse.Namespace) -> int:
    from audit.train.loop import train

    cfg = from_args(TrainConfig, args)
    if cfg.trainer == "trl":
        return _train_trl(cfg)
    s = train(cfg)
    last = s["history"][-1]
    done = (f"trained `{cfg.method}` on {s['n_pairs']} pairs for {cfg.epochs} epochs in {s['seconds']}s"
            if s["epochs_run"] == cfg.epochs else
            f"`{cfg.out}` already held this run trained for {cfg.epochs} epochs: nothing left to train (`--overwrite` "
            "trains it again)" if s["epochs_run"] == 0 else
            f"resumed `{cfg.method}` on {s['n_pairs']} pairs: trained epochs {cfg.epochs - s['epochs_run'] + 1}-"
            f"{cfg.epochs} of {cfg.epochs} in {s['seconds']}s")
    print(f"{done}: loss {last['loss']:.4f}, train accuracy {100 * last['train_acc']:.1f}%"
          + (f", cue share {last['cue_share']:.3f}" if "cue_share" in last else ""))
    from audit.train.loop import checkpoint

    print(f"checkpoint: {checkpoint(cfg.out)}   metrics: {cfg.out / 'metrics.jsonl'}")
    return 0


def _train_trl(cfg: TrainConfig) -> int:
    from audit.train.trl_run import MODEL, train_trl

    if not logging.getLogger().isEnabledFor(logging.INFO):   # no progress bars unless -v
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    s = train_trl(cfg)
    last = s["history"][-1] if s["history"] else {}
    what = f"{s['trl_trainer']} (`{cfg.method}`) on {s['n_pairs']} pairs, {s['steps']} steps in {s['seconds']}s"
    print(("resumed " if s["resumed_from"] else "trained ") + what
          + (f": last loss {last['loss']:.4f}" if "loss" in last else ""))
    print(f"model: {cfg.out / MODEL}   metrics: {cfg.out / 'metrics.jsonl'}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from audit.eval import eval_run

    cfg = from_args(EvalConfig, args)
    if cfg.best_of_n is not None:
        from audit.bon.evaluate import eval_best_of_n

        res = eval_best_of_n(cfg)
        print(res["table"], end="")
        for name, path in (res.get("picks") or {}).items():
            print(f"picks of {name}: {path}")
        if cfg.out:
            print(f"results: {cfg.out}   table: {cfg.out.with_suffix('.md')}")
        return 0
    res = eval_run(cfg)
    for name, r in res["datasets"].items():
        extra = "".join(f"   {k} {100 * r[k]:.1f}%" for k in ("acc_cue_aligned", "acc_cue_against", "acc_text_right",
                                                             "acc_text_wrong") if r.get(k) is not None)
        split = f" ({r['split']})" if r.get("split") else ""
        seen = (f"   ({r['seen_in_training']} pairs seen in training: not a held-out score)"
                if r.get("seen_in_training") else "")
        skipped = (f"   ({r['n_not_finite']} pairs left out: NaN, infinite or missing reward)"
                   if r.get("n_not_finite") else "")
        print(f"{name}{split}: accuracy {100 * r['accuracy']:.1f}% on {r['n']} pairs{extra}{seen}{skipped}")
    if res.get("mean_ood") is not None:
        print(f"i.i.d. {100 * res['iid']['accuracy']:.1f}%, mean o.o.d. {100 * res['mean_ood']:.1f}%, "
              f"gap {100 * res['gap']:+.1f} points")
    if cfg.out:
        print(f"results: {cfg.out}   table: {cfg.out.with_suffix('.md')}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from audit.bench import bench

    cfg = from_args(BenchConfig, args)
    res = bench(cfg)
    print(res["table"])
    print(f"results: {cfg.out / 'results.json'}   table: {cfg.out / 'results.md'}")
    return 0


def _cmd_overlap(args: argparse.Namespace) -> int:
    from audit.overlap import KINDS, OVERLAP_JSON, OVERLAP_PARQUET, overlap

    cfg = from_args(OverlapConfig, args)
    rep = overlap(cfg)
    print(f"A: {rep['a_rows']} rows   B: {rep['b_rows']} rows ({rep['b_compared']} compared)")
    print(f"{'kind':<14} {'matches':>8} {'B rows':>8} {'A rows':>8}")
    for k in KINDS:
        c = rep["kinds"][k]
        print(f"{k:<14} {c['matches']:>8} {c['b_rows']:>8} {c['a_rows']:>8}")
    con = rep["contaminated"]
    print(f"contaminated B rows ({', '.join(con['kinds'])}): {con['b_rows']} ({100 * con['b_share']:.1f}% of B)")
    if rep["excluded"]:
        ex = rep["excluded"]
        print(f"B without them ({ex['rows_out']} of {ex['rows_in']} rows, format `{ex['format']}`): {ex['path']}")
    print(f"matches: {cfg.out / OVERLAP_PARQUET}   report: {cfg.out / OVERLAP_JSON}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from audit.demo import demo

    cfg = from_args(DemoConfig, args)
    for line in demo(cfg):
        print(line)
    return 0


def installed_version() -> str:
    """The version of the installed package (its metadata), or the source tree's when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("shortcut-audit")
    except metadata.PackageNotFoundError:
        from audit import __version__

        return f"{__version__} (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shortcut-audit",
        description="Audit multimodal preference data for text-only shortcuts (Shortcut-Failure Coefficient).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and details to stderr")
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}",
                        help="print the installed version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    commands = [
        ("synth", "write a built-in synthetic environment with a planted text cue", SynthConfig, _cmd_synth),
        ("ingest", "read any supported source into the canonical pairs table", IngestConfig, _cmd_ingest),
        ("score", "fit text-only shortcut models out-of-fold; write SFC, weights, cues", ScoreConfig, _cmd_score),
        ("export", "write a reweighted, pruned or resampled dataset for a trainer", ExportConfig, _cmd_export),
        ("app", "open an audit in the Streamlit audit app", AppConfig, _cmd_app),
        ("card", "write a Hugging Face dataset card from an audit", CardConfig, _cmd_card),
        ("train", "train a reward model: standard, weighted or shortcut-aware", TrainConfig, _cmd_train),
        ("eval", "pairwise accuracy of a trained reward model on datasets, or Best-of-N on candidate sets", EvalConfig,
         _cmd_eval),
        ("overlap", "what two datasets share: pictures, prompts, answers, pairs (train vs eval)", OverlapConfig,
         _cmd_overlap),
        ("bench", "the cross-distribution experiment on the synthetic environments", BenchConfig, _cmd_bench),
        ("demo", "run the pipeline on built-in synthetic data, offline", DemoConfig, _cmd_demo),
    ]
    for name, help, cfg_cls, func in commands:
        p = sub.add_parser(name, help=help, description=cfg_cls.__doc__)
        if name == "synth":
            p.add_argument("--list", action="store_true", help="list the built-in environments and exit")
        add_arguments(p, cfg_cls)
        # `-v` also after the command (`shortcut-audit score ... -v`); SUPPRESS keeps the one given before it
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="log progress and details to stderr")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:   # no weight-loading progress bars on stderr unless asked (read when transformers loads)
        import os

        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:              # `shortcut-audit synth --list | head`: the reader left, not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except AuditError as e:
        print("Error: " + " ".join(str(e).split()), file=sys.stderr)   # one line, even when a library's message is not
        return 1
    except KeyboardInterrupt:
        print("Error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
