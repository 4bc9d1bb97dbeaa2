"""Overview: the headline (text-only accuracy with its interval, what it means, what to do next), the
SFC and weight histograms, the shortcut map (a selection opens in Browse), the cue model, per-source
numbers, the slices of the data that carry the shortcut and the discovered phrases."""

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from common import PAGES, open_audit, overview_of, plural, selected_pairs, sidebar_filters

from audit.appdata import Filters
from audit.markup import md_code, md_message, md_text
from audit.reading import (SFC_HELP, SFD_HELP, SIGNAL_HELP, components_line, grouping_line, headline, interval,
                           level, mm_versus_text, pct, phrase_story, slice_label, threshold_label, verdict, where_line)

st.set_page_config(page_title="shortcut-audit", layout="wide")
audit = open_audit()
f = sidebar_filters(audit)
ov = overview_of(audit)
s = ov["summary"]
CHART = {"displaylogo": False}          # the shortcut map keeps plotly's toolbar (box / lasso); titles sit above it
STATIC = {"displayModeBar": False}      # histograms and the cue chart: no toolbar over the bars


def header() -> None:
    """The headline box, the key numbers, the top cue, rows by status, warnings and the grouping line."""
    st.title("Shortcut audit")
    st.caption(f"{audit.dir} — scheme `{s['scheme']}`, {s['config']['folds']} folds, text encoder "
               f"`{s['config']['text_encoder']}`, image encoder `{s['config']['image_encoder']}`")
    box = {"none": st.success, "weak": st.info, "moderate": st.warning, "strong": st.error}[level(s)]
    box(f"**{headline(s)}** " + (f"{md_text(where_line(s))} " if where_line(s) else "") + md_message(verdict(s)))

    headline_metrics()
    if components_line(s):
        st.caption("Text-only model: " + components_line(s) + " (each component's own out-of-fold accuracy; which model "
                   "family reads the shortcut is information too)")
    standing = [c for c in s["cues"] if c.get("stands_out")]
    st.write("**Top cue:** " + (", ".join(f"`{c['name']}` (coefficient {c['coefficient']:+.2f}, 95% interval "
                                          f"[{c['ci_low']:+.2f}, {c['ci_high']:+.2f}])" for c in standing[:3])
                                or "no cue stands out (every coefficient's 95% interval includes 0)"))
    st.write("Rows by status: " + ", ".join(f"{md_code(k)} {v:,}" for k, v in ov["status"].items()))
    for w in s.get("warnings", []):       # plain text that can quote the data (a group's prompt): shown as text
        st.warning(md_message(w[0].upper() + w[1:] + "."))
    grouping = grouping_line(s)
    if grouping:
        st.caption(grouping[0].upper() + grouping[1:] + ".")


def headline_metrics() -> None:
    """The key numbers, three to a row: six in one row are cut to "Text-on..." / "90...." in a 1,024-px
    window; labels stay short and the help says what each is."""
    ci = interval(s.get("text_acc_ci"))
    row = st.columns(3)
    row[0].metric("Pairs", f"{s['n_rows']:,}", help="rows of the audited table (every status)")
    row[1].metric("Text-only acc.", pct(s["text_acc"]),
                  None if s["text_acc"] is None else f"{100 * (s['text_acc'] - 0.5):+.1f} pts vs chance",
                  delta_color="off",
                  help="out-of-fold accuracy of a model that never sees the image" + (f"; {ci}" if ci else ""))
    row[2].metric("Text signal", pct(s.get("text_signal_share"), 0), help="pairs with a text signal. " + SIGNAL_HELP)
    row = st.columns(3)
    diff_ci = s.get("mm_minus_text_ci")
    row[0].metric("Multimodal acc.", pct(s["mm_acc"]), mm_versus_text(s), delta_color="off",
                  help="out-of-fold accuracy of the probe that sees the image; the delta: multimodal minus text-only "
                       "accuracy on the same pairs" + (f", 95% interval {100 * diff_ci[0]:+.1f} to {100 * diff_ci[1]:+.1f} "
                                                       "points (paired, over the cross-fitting groups)" if diff_ci else ""))
    row[1].metric(threshold_label(s), pct(s["shortcut_rate"]),
                  help="share of the pairs a text-only model is confident about (`--threshold`); the 'shortcut pairs' "
                       "filter and `export --mode prune` use this cut")
    row[2].metric("SFD", "n/a" if s.get("sfd") is None else f"{s['sfd']:.1f}", help=SFD_HELP)


RANGE_PARAMS = {"sfc": ("sfc_min", "sfc_max"), "weight": ("w_min", "w_max")}


def histogram(name: str, label: str, help: str) -> None:
    """A histogram whose bars can be selected (drag a box): the selected range opens in Browse."""
    h = ov["hist"][name]
    edges = h["edges"]
    width = edges[1] - edges[0]
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    fig = go.Figure(go.Bar(x=centers, y=h["counts"], width=width,
                           hovertemplate=f"{label} %{{x:.3f}}: %{{y}} pairs<extra></extra>"))
    pad = (edges[-1] - edges[0]) * 0.02          # every bar whole, the last one included
    fig.update_layout(height=300, margin=dict(t=10, b=40, l=40, r=10), xaxis_title=label, yaxis_title="pairs",
                      xaxis_range=[edges[0] - pad, edges[-1] + pad], bargap=0.05, dragmode="select")
    st.markdown(f"**{label}**", help=help + ". Drag across bars to open that range in Browse")
    event = st.plotly_chart(fig, key=f"hist_{name}", config=STATIC, on_select="rerun", selection_mode=("box",))
    xs = [p["x"] for p in (getattr(event, "selection", None) or {}).get("points", []) if "x" in p] if event else []
    if xs:
        lo, hi = round(max(min(xs) - width / 2, 0.0), 3), round(max(xs) + width / 2, 3)
        a, b = RANGE_PARAMS[name]
        top = 1.0 if name == "sfc" else float("inf")
        target = Filters(**{**f.__dict__, a: lo, b: min(hi, top) if name == "sfc" else hi})
        st.page_link(PAGES[1][0], label=f"Browse the pairs with {name} {lo:g}-{hi:g}",
                     query_params=target.to_params(), icon=":material/open_in_new:")


def shortcut_map() -> None:
    """text_prob against mm_prob; a box, lasso or clicked points open in Browse."""
    sc = ov["scatter"]
    thr = s.get("threshold", 0.8)
    above, below = f"text_prob >= {thr:.2f}", f"text_prob < {thr:.2f}"
    colours = {above: "#d62728", below: "#1f77b4"}         # the same meaning and colour in every audit
    fig = go.Figure()
    for name, part in ((below, sc.filter(~pl.col("is_shortcut"))), (above, sc.filter(pl.col("is_shortcut")))):
        fig.add_trace(go.Scattergl(x=part["text_prob"].to_list(), y=part["mm_prob"].to_list(), mode="markers",
                                   name=name, marker=dict(color=colours[name], size=5, opacity=0.5),
                                   customdata=part["pair_id"].to_list(),
                                   hovertemplate="text_prob %{x:.3f}, mm_prob %{y:.3f}<br>%{customdata}"
                                                 "<extra></extra>"))
    fig.update_layout(height=440, margin=dict(t=10, b=40, l=40, r=10), dragmode="select",
                      xaxis=dict(title="text_prob (text-only model, chosen preferred)", range=[-0.02, 1.02]),
                      yaxis=dict(title="mm_prob (multimodal model)", range=[-0.02, 1.02]),
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0))
    st.markdown("**Shortcut map**: drag a box (or switch to lasso in the chart's toolbar) to open those pairs in "
                "Browse.", help="right: the text alone predicts the preference; top: the multimodal model does. "
                                "Bottom right: pairs a model can get right without looking, and gets wrong by looking")
    n_shown = sc.height
    if n_shown < (ov["status"].get("ok") or 0):
        st.caption(f"{n_shown:,} of {ov['status']['ok']:,} scored pairs drawn (an even sample); a box selection "
                   "filters every pair in the box.")
    event = st.plotly_chart(fig, key="shortcut_map", on_select="rerun", selection_mode=("box", "lasso", "points"),
                            config=CHART)
    sel = getattr(event, "selection", None) if event else None
    if sel:
        boxes = sel.get("box") or []
        points = selected_pairs(event)
        if boxes and len(boxes[0].get("x", [])) == 2 and len(boxes[0].get("y", [])) == 2:
            x0, x1 = sorted(boxes[0]["x"])
            y0, y1 = sorted(boxes[0]["y"])
            clip = lambda v: min(max(round(v, 3), 0.0), 1.0)   # noqa: E731
            target = Filters(**{**f.__dict__, "tp_min": clip(x0), "tp_max": clip(x1), "mm_min": clip(y0),
                                "mm_max": clip(y1), "sel": ""})
            what = f"the box text_prob {clip(x0):.2f}-{clip(x1):.2f}, mm_prob {clip(y0):.2f}-{clip(y1):.2f}"
        elif points:
            target = Filters(**{**f.__dict__, "sel": audit.save_selection(points)})
            what = f"the {plural(len(points), 'selected pair')}"
        else:
            target = None
        if target is not None:
            st.page_link(PAGES[1][0], label=f"Browse {what}", query_params=target.to_params(),
                         icon=":material/open_in_new:")


def charts() -> None:
    """The SFC and weight histograms and the shortcut map (a note instead in a text-only audit)."""
    if s.get("text_only"):
        st.info("A text-only audit (`score --text-only`): the pictures were not used, so there is no multimodal side, "
                "no SFC and no shortcut map; the weights come from the text-only scheme "
                f"`{s['scheme']}`. {s.get('scored_without_image') or 0:,} pairs were scored without their image.")
    else:
        left, right = st.columns(2)
        with left:
            histogram("sfc", "SFC = L_text / (L_mm + L_text)", SFC_HELP)
        with right:
            histogram("weight", f"weight ({s['scheme']})",
                      "the training weight of each pair; mean 1 over the scored pairs")

        shortcut_map()


def cues_and_sources() -> None:
    """The cue model's coefficients with their intervals, and the per-source table."""
    c1, c2 = st.columns(2)
    with c1:
        cues = pl.DataFrame(s["cues"])
        st.markdown("**Cue model**: standardised coefficient with its 95% interval",
                    help="a logistic model on hand-written cues (chosen - rejected); the interval is a bootstrap over "
                         "the cross-fitting groups. A cue whose interval includes 0 does not stand out")
        err = None
        if "ci_low" in cues.columns:
            err = dict(type="data", symmetric=False, array=(cues["ci_high"] - cues["coefficient"]).to_list(),
                       arrayminus=(cues["coefficient"] - cues["ci_low"]).to_list())
        fig = go.Figure(go.Bar(x=cues["coefficient"].to_list(), y=cues["name"].to_list(), orientation="h",
                               error_x=err, customdata=cues["association"].to_list(),
                               hovertemplate="%{y}: coefficient %{x:.2f}, association %{customdata:+.2f}"
                                             "<extra></extra>"))
        fig.update_layout(height=max(260, 26 * cues.height + 60), margin=dict(t=10, b=40, l=10, r=10),
                          yaxis=dict(autorange="reversed", automargin=True), xaxis_title="coefficient (standardised)")
        st.plotly_chart(fig, key="cues", config=STATIC)
    with c2:
        st.markdown("**Per source**")
        per = pl.DataFrame(s["per_source"])
        shares = ("text_acc", "mm_acc", "cue_acc", "shortcut_rate")
        if per.height:
            per = per.with_columns([(pl.col(c) * 100).alias(c) for c in shares
                                    if c in per.columns and per[c].dtype != pl.Null])
            st.dataframe(per, hide_index=True, column_config={
                c: st.column_config.NumberColumn(c, format="%.1f%%") for c in shares})


def slices() -> None:
    """Which slices of the data (its own columns, its image folders) carry the shortcut, each a link to Browse."""
    sl = s.get("slices") or {}
    if not sl.get("examined"):
        return
    st.subheader("Where the shortcut lives")
    st.markdown(md_text(where_line(s)))
    rows = sl["slices"]
    table = pl.DataFrame([{"slice": slice_label(r), "pairs": r["n"], "text-only acc.": 100 * r["text_acc"],
                           "95% interval": "n/a" if not r.get("text_acc_ci") else
                           f"{pct(r['text_acc_ci'][0])}-{pct(r['text_acc_ci'][1])}",
                           "the rest": 100 * r["rest_acc"], "p (Holm)": r["p_adjusted"],
                           "differs": r["differs"]} for r in sorted(rows, key=lambda r: -r["text_acc"])])
    st.dataframe(table, hide_index=True, column_config={
        "text-only acc.": st.column_config.NumberColumn(format="%.1f%%"),
        "the rest": st.column_config.NumberColumn(format="%.1f%%"),
        "p (Holm)": st.column_config.NumberColumn(format="%.1e")})
    st.caption(f"{sl['examined']} slices of at least {sl['min_size']} pairs examined; a slice differs when a "
               "two-proportion test against the rest stays below 0.05 after Holm's correction.")
    for r in sl.get("carriers", []) + sl.get("below", []):
        st.page_link(PAGES[1][0], label=md_text(f"pairs of {slice_label(r)} ({pct(r['text_acc'])} text-only)", inline=True),
                     query_params={**f.to_params(), "meta_col": r["column"], "meta_val": r["value"]})


def phrases() -> None:
    """The prompt-blind reading and the discovered phrases, each significant one a link to Browse."""
    st.subheader("Discovered phrases")
    if s.get("prompt_blind_acc") is not None:
        st.write(f"Text-only accuracy with the prompt {pct(s['text_acc'])}, from the responses alone (prompt-blind) "
                 f"{pct(s['prompt_blind_acc'])}: " + phrase_story(s))
    found = s.get("phrases") or []
    if not found:
        st.info("No phrase list in this audit (audited with `--no-phrases`, or by an older version).")
    elif not any(p.get("significant") for p in found):
        st.write("No phrase stands out: none is on one side more often than the answers' lengths explain (exact "
                 "test, corrected for the phrases examined).")
    if found:
        st.dataframe(_phrase_table(found), hide_index=True, column_config={
            "z": st.column_config.NumberColumn(format="%+.1f", help="length-adjusted sign test"),
            "precision": st.column_config.NumberColumn(format="percent", help="share on its side"),
            "p_value": st.column_config.NumberColumn("p (corrected)", format="%.1e")})
        for p in [p for p in found if p.get("significant")][:8]:
            st.page_link(PAGES[1][0], label=md_text(f"pairs with \"{p['phrase']}\" on one side", inline=True),
                         query_params={**f.to_params(), "phrase": p["phrase"]})
    words = s.get("function_words") or []
    if words:
        st.markdown("**Function words** (length and style proxies, listed apart)")
        st.dataframe(_phrase_table(words), hide_index=True)
    for sp in s.get("slice_phrases") or []:
        if sp["phrases"]:
            st.markdown(f"**Inside {md_text(slice_label(sp), inline=True)}** ({sp['n']:,} pairs)")
            st.dataframe(pl.DataFrame([{k: p.get(k) for k in ("phrase", "n_chosen", "n_rejected", "z", "significant")}
                                       for p in sp["phrases"]]), hide_index=True)


def _phrase_table(found: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([{"phrase": p["phrase"], "n_chosen": p["n_chosen"], "n_rejected": p["n_rejected"],
                          "precision": p.get("precision"), "z": p.get("z"), "p_value": p.get("p_value"),
                          "significant": p.get("significant"),
                          "where": slice_label(p["concentrates"]) if p.get("concentrates") else ""} for p in found])

header()
slices()
charts()
cues_and_sources()
phrases()
