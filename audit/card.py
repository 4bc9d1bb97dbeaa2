"""`card`: a Hugging Face dataset card generated from an audit: YAML header, how the data was audited,
headline numbers, the top cues with examples, the weight distribution, what was exported, known
limitations, and figures (PNG through plotly + kaleido when a browser engine is available, otherwise
clearly labelled interactive HTML charts)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path


from audit.config import CardConfig, settings_used
from audit.errors import SourceError
from audit.export import EXPORT_REPORT, load_audit
from audit.io import atomic_path
from audit.markup import md_code, md_fence, md_message, md_text

log = logging.getLogger(__name__)

HEADLINE = (("pairs (rows)", "n_rows"), ("scored pairs", "n_scored"), ("text-only accuracy", "text_acc"),
            ("pairs with a text signal (2 x accuracy - 1)", "text_signal_share"),
            ("multimodal accuracy", "mm_acc"), ("cue-model accuracy", "cue_acc"),
            ("shortcut rate (share with text_prob >= threshold)", "shortcut_rate"), ("threshold", "threshold"),
            ("SFD", "sfd"), ("mean SFC", "sfc_mean"))


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "n>10M"


def fmt(v) -> str:
    """Numbers as in summary.json, rounded to 4 decimals (the card test compares them)."""
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    if isinstance(v, bool) or isinstance(v, int):
        return str(v)
    return f"{v:.4f}"


def _clip(text: str, n: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _figures(df, summary: dict, out: Path, mode: str) -> tuple[list[tuple[str, str]], str | None]:
    """Write the figures; returns [(title, file)] and, when PNG was not possible, the reason."""
    import plotly.express as px
    import plotly.graph_objects as go

    ok = df.filter(df["text_prob"].is_not_null()) if "text_prob" in df.columns else df.filter(df["status"] == "ok")
    figs = [
        ("Weight distribution", "weights", px.histogram(x=ok["weight"].to_list(), nbins=50,
                                                        labels={"x": f"weight ({summary['scheme']})"})),
    ]
    if not summary.get("text_only"):      # a text-only audit has no multimodal side: no SFC, no shortcut map
        figs += [
            ("SFC distribution", "sfc", px.histogram(x=ok["sfc"].to_list(), nbins=50, labels={"x": "SFC"})),
            ("Shortcut map: text-only vs multimodal probability of the chosen response", "shortcut_map",
             px.scatter(x=ok["text_prob"].to_list()[:20000], y=ok["mm_prob"].to_list()[:20000], opacity=0.4,
                        labels={"x": "text_prob", "y": "mm_prob"})),
        ]
    figs.append(("Cue model: standardised coefficient with its 95% interval", "cues",
                 go.Figure(go.Bar(x=[c["coefficient"] for c in summary["cues"]], y=[c["name"] for c in summary["cues"]],
                                  orientation="h",
                                  error_x=None if "ci_low" not in summary["cues"][0] else dict(
                                      type="data", symmetric=False,
                                      array=[c["ci_high"] - c["coefficient"] for c in summary["cues"]],
                                      arrayminus=[c["coefficient"] - c["ci_low"] for c in summary["cues"]])))))
    written, reason = [], None
    for title, stem, fig in figs:
        fig.update_layout(title=title, width=760, height=420, template="plotly_white")
        if mode in ("auto", "png") and reason is None:
            try:
                fig.write_image(str(out / f"{stem}.png"))
                written.append((title, f"{stem}.png"))
                continue
            except Exception as e:   # kaleido missing, no browser engine, sandbox refusal, ...
                if mode == "png":
                    raise SourceError(f"PNG export failed ({type(e).__name__}: {str(e)[:200]}); install kaleido and "
                                      "Chromium, or use `--figures html`") from None
                reason = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}" if str(e) else type(e).__name__
        fig.write_html(str(out / f"{stem}.html"), include_plotlyjs="directory")   # plotly.min.js beside: offline
        written.append((title, f"{stem}.html"))
    if mode == "html":
        reason = "HTML requested with `--figures html`"
    return written, reason


def card(cfg: CardConfig) -> Path:
    """Write OUT/NAME/README.md (and its figures); an earlier card of that name is replaced whole."""
    from audit.io import claim_output
    from audit.sources.writers import safe_file_name

    df, summary = load_audit(cfg.audit)
    name = safe_file_name(cfg.name or cfg.audit.resolve().name)     # one plain folder name, never a path
    out = cfg.out / name
    with claim_output(out, "card", [cfg.audit, cfg.export], overwrite=cfg.overwrite, replace_own=True):
        return _card(cfg, df, summary, name, out)


def _card(cfg: CardConfig, df, summary: dict, name: str, out: Path) -> Path:
    figures, png_reason = _figures(df, summary, out, cfg.figures)
    sections = [_header(cfg, summary, name, df), _how_audited(summary), _headline(summary), _tags(cfg),
                _top_cues(cfg, df, summary), _weights(summary, figures, png_reason), _exported(cfg),
                _structure(cfg, df), _using(cfg, name), LIMITATIONS, CITATION]
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text("\n".join(line for section in sections for line in section), encoding="utf-8")
    return out / "README.md"


# The Hub ids of the formats that are one public dataset each (alignrm, trl and pairs are layouts, not datasets).
HUB_IDS = {"rlaif-v": "openbmb/RLAIF-V-Dataset", "rlhf-v": "openbmb/RLHF-V-Dataset", "vlfeedback": "MMInstruction/VLFeedback",
           "povid": "YiyangAiLab/POVID_preference_data_for_VLLMs", "vl-rewardbench": "MMInstruction/VL-RewardBench"}


def source_datasets(cfg: CardConfig, df, summary: dict) -> list[str]:
    """`source_datasets` of the card: the id given with `--source-dataset`; otherwise the public datasets
    the rows' formats stand for; `original` for synthetic data (rows that carry the synthetic truth
    columns) or formats that name no dataset."""
    if cfg.source_dataset:
        return [cfg.source_dataset]
    if "cue_on_chosen" in df.columns and "env" in df.columns:
        return ["original"]
    ids = sorted({HUB_IDS[p["source"]] for p in summary.get("per_source", []) if p["source"] in HUB_IDS})
    return ids or ["original"]


def _header(cfg: CardConfig, summary: dict, name: str, df) -> list[str]:
    """The YAML front matter the Hub reads, the title and the one-paragraph finding."""
    import yaml  # PyYAML comes with datasets/transformers

    from audit.reading import headline

    sources = sorted({p["source"] for p in summary.get("per_source", [])})
    header = {
        "license": cfg.license,
        "pretty_name": f"{name} (shortcut-audited)",
        "task_categories": ["image-text-to-text"],
        "tags": ["preference", "reward-modeling", "multimodal", "shortcut-audit"],
        "size_categories": [size_category(int(summary["n_rows"]))],
        "source_datasets": source_datasets(cfg, df, summary),
    }
    return ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
            f"# {md_text(name, inline=True)}: shortcut audit", "",
            f"{summary['n_rows']} preference pairs ({md_text(', '.join(sources), inline=True) or 'unknown'} format), "
            "audited with "
            f"shortcut-audit for text-only shortcuts. {headline(summary)} "
            + (f"(Multimodal probe: {100 * summary['mm_acc']:.1f}%.) " if summary.get("mm_acc") is not None else
               f"(A text-only audit: the pictures were not used{_without(summary)}.) ") + cue_sentence(summary), ""]


def _without(summary: dict) -> str:
    n = summary.get("scored_without_image") or 0
    return f"; {n} pairs were scored without their image" if n else ""


def public_path(value):
    """A path as a published card shows it: a relative path as given, an absolute one by its last part
    (`/home/alice/data/vlf` -> `vlf`), so that a card never carries a machine's folders."""
    if isinstance(value, str) and (value.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", value)):
        return re.split(r"[\\/]", value.rstrip("/\\"))[-1] or value
    return value


def _how_audited(summary: dict) -> list[str]:
    c = {k: public_path(v) for k, v in summary["config"].items()}
    command = (f"shortcut-audit score {c['source']} -o {c['out']} --scheme {c['scheme']} --folds {c['folds']} "
               f"--seed {c['seed']} --text-encoder {c['text_encoder']} --image-encoder {c['image_encoder']}"
               + (f" --text-probe {c['text_probe']}" if c.get("text_probe", "stack") != "stack" else "")
               + (f" --stack {c['stack']}" if c.get("text_probe", "stack") == "stack" and c.get("stack", "auto") != "auto" else "")
               + (f" --mm-scores {c['mm_scores']}" if c.get("mm_scores") else "")
               + (" --text-only" if c.get("text_only") else ""))
    L = ["## How it was audited", "", *md_fence(command, "bash"), "",
         "Every probability comes from a head that never saw the pair or its group (grouped K-fold cross-fitting); "
         "SFC = L_text / (L_mm + L_text) per pair (Li et al., ICML 2025).", "",
         "| setting | value |", "|---|---|"]
    L += [f"| {md_code(k, table=True)} | {md_code(v, table=True)} |" for k, v in settings_used(c).items()]
    return L + ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in summary.get("versions", {}).items()), ""]


def _headline(summary: dict) -> list[str]:
    L = ["## Headline numbers", ""]
    warnings = summary.get("warnings", [])
    L += [f"> **Warning:** {md_message(w)}." for w in warnings] + ([""] if warnings else [])
    L += ["| metric | key | value |", "|---|---|---:|"]
    L += [f"| {label} | `{key}` | {fmt(summary.get(key))} |" for label, key in HEADLINE]
    from audit.reading import SFD_HELP, interval, verdict

    ci = interval(summary.get("text_acc_ci"))
    L += ["", (f"Text-only accuracy {ci} (bootstrap over the cross-fitting groups). " if ci else "") + md_message(verdict(summary)),
          "", SFD_HELP]
    L += ["", "Rows by status: " + ", ".join(f"{md_text(k, inline=True)} {v}" for k, v in summary["status_counts"].items()),
          ""]
    from audit.reading import grouping_line

    grouping = grouping_line(summary)
    if grouping:
        L += [f"Grouping: {grouping}.", ""]
    L += _where(summary) + _phrases(summary)
    if summary.get("per_source") and len(summary["per_source"]) > 1:
        L += ["| source | pairs | text acc | mm acc | shortcut rate |", "|---|---:|---:|---:|---:|"]
        L += [f"| {md_text(p['source'], inline=True)} | {p['n']} | {fmt(p['text_acc'])} | {fmt(p['mm_acc'])} | "
              f"{fmt(p['shortcut_rate'])} |"
              for p in summary["per_source"]]
        L.append("")
    return L


def _phrases(summary: dict) -> list[str]:
    from audit.reading import phrase_story, slice_label

    L = []
    if summary.get("prompt_blind_acc") is not None:
        L += [f"From the responses alone (no prompt, no image) a text model picks the preferred response "
              f"{100 * summary['prompt_blind_acc']:.1f}% of the time: {phrase_story(summary)}.", ""]
    phrases = summary.get("phrases") or []
    sig = [p for p in phrases if p.get("significant")]
    if phrases and not sig:
        L += ["Discovered phrases: no phrase stands out (none sits on one side more often than the answers' lengths "
              "explain, after the correction for the phrases examined).", ""]
    elif sig:
        L += ["Phrases that sit on one side far more often than the answers' lengths explain (pairs with the phrase on "
              "one side only; z: length-adjusted sign test; where: the slice holding most of its pairs):", "",
              "| phrase | on chosen | on rejected | precision | z | where |", "|---|---:|---:|---:|---:|---|"]
        L += [f"| {md_text(_clip(p['phrase'], 80), inline=True)} | {p['n_chosen']} | {p['n_rejected']} | "
              f"{fmt(p['precision'])} | {p['z']:+.1f} | "
              f"{md_text(_clip(slice_label(p['concentrates']), 60), inline=True) if p.get('concentrates') else ''} |"
              for p in sig[:10]]
        L.append("")
    words = [p for p in summary.get("function_words") or [] if p.get("significant")]
    if words:
        L += [md_text("Function words that lean to one side (length and style proxies, listed apart): "
                      + ", ".join(f"\"{_clip(p['phrase'], 30)}\" ({p['n_chosen']} / {p['n_rejected']})" for p in words[:6])
                      + ".", inline=True), ""]
    return L


def _where(summary: dict) -> list[str]:
    """Which slices of the data carry the shortcut, and the text probe's components."""
    from audit.reading import components_line, slice_label, where_line

    L = []
    if components_line(summary):
        L += [f"Text-only model: {components_line(summary)}.", ""]
    sl = summary.get("slices") or {}
    if not where_line(summary):
        return L
    L += ["## Where the shortcut lives", "", md_text(where_line(summary)), ""]
    rows = sl.get("carriers", []) + sl.get("below", [])
    if rows:
        L += [f"Text-only accuracy per slice of the data's own columns (at least {sl['min_size']} pairs each; interval: "
              "bootstrap over groups; p: two-proportion test against the rest, Holm-corrected over the "
              f"{sl['examined']} slices examined):", "", "| slice | pairs | text-only acc | 95% interval | the rest | p |",
              "|---|---:|---:|---:|---:|---:|"]
        L += [f"| {md_text(_clip(slice_label(r), 80), inline=True)} | {r['n']} | {fmt(r['text_acc'])} | {_ci(r.get('text_acc_ci'))} | "
              f"{fmt(r['rest_acc'])} | {r['p_adjusted']:.2g} |" for r in rows]
        L.append("")
    for sp in summary.get("slice_phrases") or []:
        inside = [p for p in sp["phrases"] if p.get("significant")]
        if inside:
            L += [md_text(f"Phrases inside {_clip(slice_label(sp), 80)}: " + ", ".join(
                f"\"{_clip(p['phrase'], 40)}\" ({p['n_chosen']} / {p['n_rejected']})" for p in inside[:5]) + ".", inline=True), ""]
    return L


def _ci(ci: list | None) -> str:
    return "n/a" if not ci else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _interval(q: dict) -> str:
    return f"[{fmt(q['ci_low'])}, {fmt(q['ci_high'])}]" if q.get("ci_low") is not None else "n/a"


def cue_sentence(summary: dict) -> str:
    """The cue model's verdict in one sentence (card, app)."""
    if summary.get("top_cue"):
        return f"The strongest hand-written text cue is `{summary['top_cue']}`."
    if summary.get("cue_stands_out") is False:
        return "No hand-written text cue stands out (every cue's interval includes 0)."
    return ""


def _top_cues(cfg: CardConfig, df, summary: dict) -> list[str]:
    """The cue table and, per top cue, the pairs where it is most confidently the shortcut."""
    L = ["## Top cues", "", "Ranked by the standardised coefficient of the cue model, with its 95% interval (bootstrap "
         "over groups; a cue stands out when the interval excludes 0); association = P(chosen has more of it) - "
         "P(rejected has more).", "", "| cue | coefficient | 95% interval | stands out | association | pairs where it "
         "differs | what it measures |", "|---|---:|---:|:---:|---:|---:|---|"]
    L += [f"| `{q['name']}` | {fmt(q['coefficient'])} | {_interval(q)} | {'yes' if q.get('stands_out') else 'no'} | "
          f"{fmt(q['association'])} | {fmt(q['share_differs'])} | {q['help']} |" for q in summary["cues"][:5]]
    L.append("")
    import polars as pl

    ok = df.filter(df["status"] == "ok")
    top = [q for q in summary["cues"] if q.get("stands_out", True)][:3]
    used: set[str] = set()
    for q in top:
        col = f"cue_{q['name']}"
        if col not in ok.columns or cfg.examples == 0:
            continue
        sign = 1 if q["coefficient"] >= 0 else -1
        # its own example: the cue differs in its direction, the pair is not another cue's example, and
        # (where such pairs exist) the other top cues are equal on both sides, so this cue alone explains it
        cand = ok.filter(((pl.col(col) * sign) > 0) & ~pl.col("pair_id").is_in(list(used)))
        others = [f"cue_{o['name']}" for o in top if o is not q and f"cue_{o['name']}" in ok.columns]
        alone = cand.filter(pl.all_horizontal([pl.col(o) == 0 for o in others])) if others else cand
        ex = (alone if alone.height else cand).sort(["text_prob", "pair_id"], descending=[True, False]).head(cfg.examples)
        used.update(ex["pair_id"].to_list())
        for r in ex.iter_rows(named=True):
            L += [f"Example for {md_code(q['name'])} (text_prob {r['text_prob']:.3f}, "
                  f"pair {md_code(r['pair_id'])}):", "",
                  *(f"- {k}: {md_text(_clip(r[k]), inline=True)}" for k in ("prompt", "chosen", "rejected")), ""]
    return L


def _weights(summary: dict, figures: list, png_reason: str | None) -> list[str]:
    L = ["## Weight distribution", "", f"Scheme `{summary['scheme']}`; weights have mean 1 over scored pairs.", "",
         "| min | 5% | 25% | median | 75% | 95% | max |", "|---:|---:|---:|---:|---:|---:|---:|",
         "| " + " | ".join(fmt(summary["weights"][k]) if k in ("min", "max") else fmt(summary["weights"]["quantiles"][k])
                          for k in ("min", "0.05", "0.25", "0.5", "0.75", "0.95", "max")) + " |", ""]
    if summary.get("cue_share"):
        L += ["Cue share (fraction of total weight on pairs whose planted cue sits on the chosen side; 0.5 = "
              "neutralised):", "", "| " + " | ".join(summary["cue_share"]) + " |",
              "|" + "---:|" * len(summary["cue_share"]), "| " + " | ".join(fmt(v) for v in summary["cue_share"].values()) + " |", ""]
    if png_reason:
        L += [f"> Figures are interactive HTML charts, not PNG images: static export was not available here "
              f"({png_reason}).", ""]
    for title, file in figures:
        L += [f"![{title}]({file})" if file.endswith(".png") else f"- [{title}]({file}) (interactive HTML chart)", ""]
    return L


def _tags(cfg: CardConfig) -> list[str]:
    """The tags a person set in the app (AUDIT_DIR/tags.parquet), counted."""
    from audit.tags import TAG_HELP, read_tags, tag_counts

    counts = tag_counts(read_tags(cfg.audit))
    if not counts:
        return []
    return (["## Pairs tagged by hand", "", "| tag | pairs | meaning |", "|---|---:|---|"]
            + [f"| `{t}` | {n} | {TAG_HELP[t]} |" for t, n in counts.items()] + [""])


def _export_report(cfg: CardConfig) -> dict:
    """The described export's report (`--export`), or {} without one."""
    rep_file = (cfg.export / EXPORT_REPORT) if cfg.export else None
    return json.loads(rep_file.read_text(encoding="utf-8")) if rep_file and rep_file.is_file() else {}


def _exported(cfg: CardConfig) -> list[str]:
    L = ["## What was exported", ""]
    rep = _export_report(cfg)
    if rep:
        return L + [f"Mode `{rep['mode']}`, format `{rep['format']}` (written as `{rep['written_as']}`), scheme "
                    f"`{rep['scheme']}`: {rep['rows_out']} rows ({rep['distinct_pairs']} distinct pairs) from "
                    f"{rep['scored']} scored of {rep['rows_in']}."
                    + (" Not exported (unscored): " + ", ".join(f"{md_text(k, inline=True)} {v}"
                                                                for k, v in rep["excluded_unscored"].items())
                       if rep["excluded_unscored"] else "")
                    + (f" Tags honoured: {rep['tags']['excluded']} excluded, {rep['tags']['swapped']} swapped, "
                       f"{rep['tags']['kept']} kept from pruning." if rep.get("tags") else "")
                    + (_swaps_line(rep["likely_swaps"]) if rep.get("likely_swaps") else ""), ""]
    return L + ["Nothing yet: `shortcut-audit export AUDIT_DIR -o OUT` writes a reweighted, pruned or resampled "
                "dataset; pass `--export OUT` to this command to describe it here.", ""]


def _swaps_line(sw: dict) -> str:
    return (f" Likely label swaps flagged in `{sw['column']}`: {sw['rows_flagged']} of the exported rows, where the "
            f"multimodal side prefers the rejected answer ({sw['rule']}); read them before training.")


COLUMN_HELP = {
    "weight": "training weight of the pair (mean 1 over the exported pairs): multiply each pair's loss by it",
    "audit_weight": "the audit's own weight before the export rescaled it", "text_prob": "out-of-fold probability "
    "that a text-only model (no image) prefers the chosen response", "mm_prob": "the same for the multimodal probe",
    "sfc": "Shortcut-Failure Coefficient L_text / (L_mm + L_text): high = the text alone gets the pair wrong",
    "is_shortcut": "text_prob >= the audit's threshold", "tag": "a tag set by hand in the app (exclude / keep / "
    "review / swap)", "pair_id": "stable id of the pair (content hash)", "sample_id": "the source row's id",
    "prompt": "the question", "chosen": "the preferred response", "rejected": "the other response",
    "image": "the picture", "images": "the picture(s)", "source": "the source format", "status": "`ok` for scored pairs",
    "likely_swap": "a likely label swap: the multimodal side prefers the rejected answer (`export --flag-swaps`, "
    "threshold in export_report.json `likely_swaps`)",
}


def _structure(cfg: CardConfig, df) -> list[str]:
    """The columns a user gets: the export's when one is described, else the audited table's."""
    import pyarrow.parquet as pq

    table = None
    if cfg.export and cfg.export.is_dir():
        table = next(iter(sorted(cfg.export.glob("*.parquet"))), None)
    names_types = ([(f.name, str(f.type)) for f in pq.read_schema(table)] if table is not None
                   else [(c, str(t)) for c, t in df.schema.items()])
    where = f"`{table.name}` of the export" if table is not None else "`audited.parquet` of the audit"
    L = ["## Dataset structure", "", f"One row per preference pair; the columns of {where}:", "",
         "| column | type | meaning |", "|---|---|---|"]
    L += [f"| {md_code(n, table=True)} | {md_text(t[:40], inline=True)} | "
          f"{COLUMN_HELP.get(n, 'cue value, chosen - rejected' if n.startswith('cue_') else '')} |"
          for n, t in names_types if not n.startswith("__")]
    return L + [""]


def _using(cfg: CardConfig, name: str) -> list[str]:
    """How to load the data and use its weights."""
    rep = _export_report(cfg)
    files = {"pairs": "pairs.parquet", "trl": "*.parquet", "alignrm": "alignrm_pairs.jsonl"}
    loader = ('load_dataset("json", data_files="alignrm_pairs.jsonl", split="train")' if rep.get("written_as") == "alignrm"
              else f'load_dataset("parquet", data_files="{files.get(rep.get("written_as"), "pairs.parquet")}", split="train")')
    return ["## Using the data", "", "```python", "from datasets import load_dataset", "",
            f"ds = {loader}   # from the folder of this card's export", "```", "",
            "Use the `weight` column as a per-pair weight of the reward model's loss (it has mean 1, so the learning "
            "rate needs no change):", "", "```python", "import torch.nn.functional as F", "",
            "# r_chosen, r_rejected: rewards of the two responses; weight: the batch's `weight` column",
            "loss = (weight * -F.logsigmoid(r_chosen - r_rejected)).mean()", "```", "",
            "Trainers that take no per-example weight (TRL's `RewardTrainer`, `DPOTrainer`) drop the column: export "
            "with `--mode resample` or `--mode prune` to bake the weights into the rows instead.", ""]


CITATION = ["## Citation", "", "The Shortcut-Failure Coefficient comes from (PMLR volume 267; add the authors' given names "
            "from the proceedings page):", "", "```bibtex",
            "@inproceedings{li25cw,",
            "  title     = {The Devil Is in the Details: Tackling Unimodal Spurious Correlations for Generalizable "
            "Multimodal Reward Models},",
            "  author    = {Li and Wen and Lou and Ji and Lu and Han and Zhang and Sun},",
            "  booktitle = {Proceedings of the 42nd International Conference on Machine Learning},",
            "  series    = {Proceedings of Machine Learning Research},", "  volume    = {267},",
            "  pages     = {36281--36297},", "  year      = {2025},", "  note      = {arXiv:2503.03122}", "}", "```", ""]


LIMITATIONS = [
    "## Known limitations", "",
    "- The probes are only as good as their encoders. The offline image featuriser (`pixels`) sees colours "
    "and coarse layout, not objects or text, so the multimodal accuracy and SFC understate what a real "
    "vision-language model sees; audit with `--image-encoder` (CLIP, SigLIP) or your RM's scores "
    "(`--mm-scores`) for real data.",
    "- A text cue the text encoder cannot represent (e.g. exact whitespace or token counts) is invisible to "
    "the text probe; the cue probe covers a fixed, English-centric list of interpretable cues.",
    "- SFD here is 100 x (multimodal accuracy where the text model is right - where it is wrong), our "
    "definition; the paper's exact formula is not public.",
    "- Weights neutralise the measured text shortcut; whether a reward model trained with them generalises "
    "better must be checked by training and out-of-distribution evaluation.", ""]
