"""Overview: headline numbers, SFC and weight histograms, the shortcut map, cue associations, sources."""

import plotly.express as px
import plotly.graph_objects as go
import polars as pl
import streamlit as st

from common import open_audit, overview_of, pct

from audit.score import grouping_line

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
m[5].metric("Top cue", s["top_cue"])
st.write("Rows by status: " + ", ".join(f"`{k}` {v:,}" for k, v in ov["status"].items()))
for w in s.get("warnings", []):
    st.warning(w[0].upper() + w[1:] + ".")
grouping = grouping_line(s)
if grouping:
    st.caption(grouping[0].upper() + grouping[1:] + ".")

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
fig = go.Figure(go.Bar(x=cues["association"].to_list(), y=cues["name"].to_list(), orientation="h"))
fig.update_layout(title="Cue association with the label: P(chosen has more) - P(rejected has more)", height=420,
                  margin=dict(t=40, b=30))
c1.plotly_chart(fig, key="cues")
c2.subheader("Per source")
c2.dataframe(pl.DataFrame(s["per_source"]), hide_index=True)
