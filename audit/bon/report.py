"""Tables and the figure of Best-of-N: `bench`'s synthetic experiment (per method, paired with
`standard`) and `eval --best-of-n` on a candidates file (per scorer, paired with the first)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from audit.config import BON_REGIMES

log = logging.getLogger(__name__)

# bench: the adverse regime's columns, then gold@64 in the other regimes
_ADVERSE = (("gold1", "gold@1"), ("gold8", "gold@8"), ("gold64", "gold@64"), ("peak", "peak"), ("drop", "drop"),
            ("auc", "AUC n≤64"), ("lure64", "lure@64"))
_OTHERS = tuple(r for r in BON_REGIMES if r != "adverse")
STYLE_SHOWN = ("length", "lead_in", "closing", "list_items")   # the cue features `eval --best-of-n` tabulates
PRIMARY = ("weighted-debias", "ess-matched", "subsample", "shortcut-aware", "oracle")


def _pct(e: dict | None) -> str:
    return "–" if not e else f"{100 * e['mean']:.1f} ± {100 * e['std']:.1f}"


def _methods_table(g: str, methods: dict) -> list[str]:
    runs = max(m["n_runs"] for m in methods.values())
    lines = [f"**Best-of-N, {g}**: gold accuracy of the pick in % (mean ± std over {runs} runs); adverse regime "
             "unless named; drop = peak over n ≤ 64 minus gold@64; lure = the pick is wrong and carries the cue; "
             "KL = exact KL of the pick distribution to the policy (nats)", "",
             "| method | " + " | ".join(label for _, label in _ADVERSE) + " | KL@64 | "
             + " | ".join(f"{r} gold@64" for r in _OTHERS) + " |",
             "|---|" + "---:|" * (len(_ADVERSE) + 1 + len(_OTHERS))]
    for method, e in methods.items():
        kl = e.get("bon_adverse_kl64")
        cells = [_pct(e.get(f"bon_adverse_{k}")) for k, _ in _ADVERSE]
        peak_n = e.get("bon_adverse_peak_n")
        if peak_n and cells[3] != "–":
            cells[3] += f" (n≈{peak_n['mean']:.0f})"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {'–' if not kl else format(kl['mean'], '.2f')} | "
                     + " | ".join(_pct(e.get(f"bon_{r}_gold64")) for r in _OTHERS) + " |")
    return lines


def _diff_table(methods: dict) -> list[str]:
    from audit.bench import verdict

    cols = [("adverse", "gold64"), ("adverse", "drop"), ("adverse", "lure64"), ("adverse", "auc")] + \
           [(r, "gold64") for r in _OTHERS]
    lines = ["", "paired difference to standard, points [bootstrap 95% interval over runs]; n.s. = the interval "
             "holds 0 (no difference)", "",
             "| method | " + " | ".join(f"Δ {r} {k}" for r, k in cols) + " |", "|---|" + "---:|" * len(cols)]
    for method, e in methods.items():
        if method == "standard":
            continue
        lines.append(f"| {method} | " + " | ".join(
            verdict(e[f"bon_{r}_{k}"]) if "diff" in e.get(f"bon_{r}_{k}", {}) else "–" for r, k in cols) + " |")
    return lines


def answer(methods: dict) -> str:
    """One sentence: does each primary method pick better answers than standard at n = 64 in the
    adverse regime (its paired difference and interval)?"""
    from audit.bench import verdict

    parts = []
    for m in PRIMARY:
        e = methods.get(m, {}).get("bon_adverse_gold64")
        if e and "diff" in e:
            v = verdict(e)
            if e.get("diff_ci") is None:
                word = "one run: no interval, no verdict"
            elif "n.s." in v:
                word = "no difference"
            else:
                word = "better" if e["diff"] > 0 else "worse"
            parts.append(f"`{m}` {v} ({word})")
    return ("Adverse regime, gold@64 against `standard`: " + "; ".join(parts) + ".") if parts else ""


def bench_table(stats: dict, reference: dict, figure: Path | None) -> str:
    """Markdown: per group with Best-of-N numbers, the methods' table and their paired differences."""
    lines = ["", "## Best-of-N (exact, per regime)", ""]
    for g, methods in stats.items():
        if not any("bon_adverse_gold64" in e for e in methods.values()):
            continue
        lines += _methods_table(g, methods) + _diff_table(methods) + ["", answer(methods), ""]
    gold = reference["gold"]["adverse"]
    at64 = gold["n"].index(64)
    lines.append(f"Reference pickers: a perfect judge {100 * gold['gold'][at64]:.1f}% at n = 64; a random pick "
                 f"{100 * reference['random']['adverse']['gold'][0]:.1f}% at every n.")
    if figure is not None:
        lines.append(f"Figure: `{figure.name}` (gold of the pick against n and against KL, one line per method, band = "
                     "bootstrap 95% interval of the mean over runs).")
    return "\n".join(lines) + "\n"


def _band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs and its bootstrap 95% interval per column (the mean itself with one run)."""
    from audit.bench import bootstrap_ci

    mean = values.mean(axis=0)
    cis = [bootstrap_ci(list(values[:, j])) for j in range(values.shape[1])]
    lo = np.array([c[0] if c else m for c, m in zip(cis, mean)])
    hi = np.array([c[1] if c else m for c, m in zip(cis, mean)])
    return mean, lo, hi


def bench_figure(rows: list[dict], title: str, reference: dict, stem: Path) -> Path | None:
    """Gold of the pick against n (top) and against the exact KL (bottom), one panel per regime, one
    line per method with its band over runs, the perfect judge and the random pick dashed. PNG through
    kaleido when a browser engine is there, else a self-contained HTML file; None when neither works."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    methods = list(dict.fromkeys(r["method"] for r in rows if "bon" in r))
    if not methods:
        return None
    fig = make_subplots(rows=2, cols=len(BON_REGIMES), subplot_titles=[f"{r}" for r in BON_REGIMES],
                        vertical_spacing=0.12, horizontal_spacing=0.05)
    for j, regime in enumerate(BON_REGIMES, start=1):
        for k, method in enumerate(methods):
            mine = [r["bon"][regime] for r in rows if r["method"] == method and "bon" in r]
            ns = np.array(mine[0]["n"], dtype=float)
            mean, lo, hi = _band(np.array([c["gold"] for c in mine]))
            kl = np.mean([c["kl"] for c in mine], axis=0)
            color = qualitative.D3[k % len(qualitative.D3)]
            for row, x in ((1, ns), (2, kl)):
                band = go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([hi, lo[::-1]]), fill="toself",
                                  mode="lines", line={"width": 0}, fillcolor=color, opacity=0.15, hoverinfo="skip",
                                  showlegend=False)
                fig.add_trace(band, row=row, col=j)
                fig.add_trace(go.Scatter(x=x, y=mean, mode="lines+markers", line={"color": color}, name=method,
                                         legendgroup=method, showlegend=(j == 1 and row == 1)), row=row, col=j)
        for name, dash in (("gold", "dash"), ("random", "dot")):
            c = reference[name][regime]
            fig.add_trace(go.Scatter(x=c["n"], y=c["gold"], mode="lines", line={"color": "grey", "dash": dash},
                                     name=f"{name} picker", legendgroup=name, showlegend=j == 1), row=1, col=j)
        fig.update_xaxes(type="log", tickvals=list(ns), ticktext=[f"{int(n)}" for n in ns], title_text="n",
                         row=1, col=j)
        fig.update_xaxes(title_text="exact KL (nats)", row=2, col=j)
    fig.update_yaxes(title_text="gold accuracy of the pick", col=1)
    fig.update_layout(title=f"Best-of-n: {title}", width=1600, height=800, template="plotly_white")
    return _save(fig, stem)


def _save(fig, stem: Path) -> Path | None:
    from audit.io import atomic_path

    stem.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(stem.with_suffix(".png")) as tmp:
            fig.write_image(str(tmp), format="png")
        return stem.with_suffix(".png")
    except Exception as e:   # noqa: BLE001 - kaleido or its browser engine missing: an HTML figure instead
        log.warning("Best-of-N figure as HTML: PNG export failed (%s: %s)", type(e).__name__, str(e)[:200])
    try:
        with atomic_path(stem.with_suffix(".html")) as tmp:
            fig.write_html(str(tmp), include_plotlyjs="directory")     # plotly.min.js beside it: offline
        return stem.with_suffix(".html")
    except OSError as e:
        log.warning("Best-of-N figure not written: %s", e)
        return None


def _cell(e: dict | None, j: int, fmt: str = "pct") -> str:
    """`e`'s mean at position j with its interval: `pct` (percent), `diff` (signed points), `raw` (signed)."""
    if not e:
        return "–"
    scale, spec = {"pct": (100, ".1f"), "diff": (100, "+.1f"), "raw": (1, "+.3f")}[fmt]
    text = format(scale * e["mean"][j], spec)
    if e.get("ci"):
        lo, hi = e["ci"][j]
        text += f" [{format(scale * lo, spec)}, {format(scale * hi, spec)}]"
    return text


def _gold_lines(res: dict) -> list[str]:
    b = res["best_of_n"]
    lines = ["| scorer | n | selected | random | oracle | regret | gap closed | win best | win random | KL ≤ | "
             "short |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, e in res["scorers"].items():
        for j, n in enumerate(b["n"]):
            gc = e["gap_closed"][j]
            lines.append(f"| {name} | {n} | {_cell(e['selected'], j)} | {100 * e['random']['mean'][j]:.1f} | "
                         f"{100 * e['oracle']['mean'][j]:.1f} | {_cell(e['regret'], j)} | "
                         f"{'–' if gc != gc else format(gc, '.2f')} | {_cell(e['win_best'], j)} | "
                         f"{_cell(e['win_random'], j)} | {b['kl_bon_upper_bound'][j]:.2f} | {b['short_groups'][j]} |")
    for name, p in res["paired"].items():
        lines += ["", f"`{name}` minus `{b['baseline']}`, selected (points, paired over the same groups): "
                  + "; ".join(f"n={n}: {_cell(p['selected_diff'], j, 'diff')}" for j, n in enumerate(b["n"]))]
    return lines


def _style_lines(res: dict) -> list[str]:
    blind = any("blind_agreement" in e for e in res["scorers"].values())
    note = "; blind = the pick stays the same with a blank picture, %" if blind else ""
    lines = ["Style of the pick minus the pool's mean (cue features: length = log(1 + characters), the others counts "
             f"or 0/1), mean over groups{note}",
             "", "| scorer | n | " + " | ".join(STYLE_SHOWN) + " | blind | blind selected |",
             "|---|---:|" + "---:|" * (len(STYLE_SHOWN) + 2)]
    for name, e in res["scorers"].items():
        for j, n in enumerate(res["best_of_n"]["n"]):
            drift = " | ".join(_cell(e["style"]["drift"][c], j, "raw") for c in STYLE_SHOWN)
            lines.append(f"| {name} | {n} | {drift} | {_cell(e.get('blind_agreement'), j)} | "
                         f"{_cell(e.get('blind_selected'), j)} |")
    return lines


def eval_markdown(res: dict) -> str:
    """`eval --best-of-n`'s table: per scorer and n, the pick's gold against the reference pickers, the
    paired differences to the first scorer, and the style drift of the pick."""
    from audit.config import BON_TABLE_HEADER

    b = res["best_of_n"]
    cpg = b["candidates_per_group"]
    counts = ", ".join(f"{k} {v}" for k, v in b["status_counts"].items())
    lines = [BON_TABLE_HEADER, "",
             f"{b['groups']} groups of {cpg['min']}–{cpg['max']} candidates from `{b['candidates']}` ({b['rows_in']} "
             f"rows: {counts}); gold: " + (f"`{b['gold']}`" if b["gold"] else "none") + ". A group with fewer than n "
             "candidates uses all of them (`short`). In % with grouped bootstrap 95% intervals; KL ≤ log n - (n-1)/n "
             "is an upper bound.", ""]
    if b["gold"]:
        lines += _gold_lines(res) + [""]
    return "\n".join(lines + _style_lines(res)) + "\n"
