"""Overview: headline numbers, SFC and weight histograms, the shortcut map, cue associations, sources."""

import plotly.express as px
import plotly.graph_objects as go
import polars as pl
import streamlit as st

from common import open_audit, overview_of, pct

from audit.score import grouping_line, phrase_story

st.set_page_config(page_title="shortcut-audit", layout="wide")
audit = open_audit()
ov = overview_of(audit)
s = ov["summary"]

st.title("Shortcut audit")
st.caption(f"{audit.dir} — scheme `{s['scheme']}`, {s['config']['folds']} folds, text encoder "
           f"`{s['config']['text_encoder']}`, image encoder `{s['config']['image_encoder']}`")
m = st.columns(6)
m[0].metric("Pairs", f"{s['n_rows']:,}", help="rows of the audited table")
m[1].metric("Text-only acc", pct(s["text_acc"]), help="out-of-fold accuracy of a model that never sees the image")
m[2].metric("Multimodal acc", pct(s["mm_acc"]))
m[3].metric("Shortcut rate", pct(s["shortcut_rate"]), help="text_prob >= threshold")
m[4].metric("SFD", "n/a" if s.get("sfd") is None else f"{s['sfd']:.1f}",
            help="100 x (mm accuracy where the text model is right - where it is wrong)")
m[5].metric("Top cue", s["top_cue"] or "none stands out",
            help="the first cue of the cue model's ranking whose 95% interval (bootstrap over groups) excludes 0")
st.write("Rows by status: " + ", ".join(f"`{k}` {v:,}" for k, v in ov["status"].items()))
for w in s.get("warnings", []):
    st.warning(w[0].upper() + w[1:] + ".")
grouping = grouping_line(s)
if grouping:
    st.caption(grouping[0].upper() + grouping[1:] + ".")

if s.get("text_only"):
    st.info("A text-only audit (`score --text-only`): the pictures were not used, so there is no multimodal side, "
            "no SFC and no shortcut map; the weights come from the text-only scheme "
            f"`{s['scheme']}`. {s.get('scored_without_image') or 0:,} pairs were scored without their image.")
else:
    left, right = st.columns(2)
    for col, name, label in ((left, "sfc", "SFC = L_text / (L_mm + L_text)"), (right, "weight", f"weight ({s['scheme']})")):
        h = ov["hist"][name]
        centers = [(a + b) / 2 for a, b in zip(h["edges"][:-1], h["edges"][1:])]
        fig = go.Figure(go.Bar(x=centers, y=h["counts"], width=h["edges"][1] - h["edges"][0]))
        fig.update_layout(title=f"{label} histogram", height=320, margin=dict(t=40, b=30), xaxis_title=label)
        col.plotly_chart(fig, key=f"hist_{name}")

    sc = ov["scatter"]
    fig = px.scatter(sc.to_pandas() if hasattr(sc, "to_pandas") else sc, x="text_prob", y="mm_prob", color="is_shortcut",
                     custom_data=["pair_id"], opacity=0.5, title="Shortcut map: select points to open their pairs")
    fig.update_layout(height=420, margin=dict(t=40, b=30))
    event = st.plotly_chart(fig, key="shortcut_map", on_select="rerun", selection_mode=("points", "box", "lasso"))
    picked = []
    if event and getattr(event, "selection", None):
        picked = [p["customdata"][0] for p in event.selection.get("points", []) if p.get("customdata")]
    if picked:
        st.subheader(f"{len(picked)} selected pairs")
        for pid in picked[:20]:
            st.page_link("pages/2_Pair.py", label=f"open pair {pid}", query_params={"pair": pid})

c1, c2 = st.columns(2)
cues = pl.DataFrame(s["cues"])
if "ci_low" in cues.columns:
    err = dict(type="data", symmetric=False, array=(cues["ci_high"] - cues["coefficient"]).to_list(),
               arrayminus=(cues["coefficient"] - cues["ci_low"]).to_list())
else:
    err = None
fig = go.Figure(go.Bar(x=cues["coefficient"].to_list(), y=cues["name"].to_list(), orientation="h", error_x=err,
                       customdata=cues["association"].to_list(),
                       hovertemplate="%{y}: coefficient %{x:.2f}, association %{customdata:+.2f}<extra></extra>"))
fig.update_layout(title="Cue model: standardised coefficient, 95% interval (bootstrap over groups)", height=420,
                  margin=dict(t=40, b=30), yaxis=dict(autorange="reversed"))
c1.plotly_chart(fig, key="cues")
c2.subheader("Per source")
c2.dataframe(pl.DataFrame(s["per_source"]), hide_index=True)

st.subheader("Discovered phrases")
if s.get("prompt_blind_acc") is not None:
    st.write(f"Text-only accuracy with the prompt {pct(s['text_acc'])}, from the responses alone (prompt-blind) "
             f"{pct(s['prompt_blind_acc'])}: " + phrase_story(s))
phrases = s.get("phrases") or []
if not phrases:
    st.info("No phrase list in this audit (audited with `--no-phrases`, or by an older version).")
elif not any(p.get("significant") for p in phrases):
    st.write("No phrase stands out: none is on one side more often than chance explains (sign test, corrected "
             "for the phrases examined).")
if phrases:
    table = pl.DataFrame([{k: p.get(k) for k in ("phrase", "coefficient", "n_chosen", "n_rejected", "share_decided",
                                                 "p_value", "significant")} for p in phrases])
    st.dataframe(table, hide_index=True)
    for p in [p for p in phrases if p.get("significant")][:8]:
        st.page_link("pages/1_Browse.py", label=f"pairs with \"{p['phrase']}\" on one side",
                     query_params={"phrase": p["phrase"]})
