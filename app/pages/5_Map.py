"""Map of the data: the cached text (chosen - rejected) or image embeddings in 2-D (scikit-learn PCA or
t-SNE), coloured by text_prob, SFC, weight or a cue; a box or lasso selection opens in Browse."""

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from common import PAGES, open_audit, plural, selected_pairs, sidebar_filters

from audit.appdata import Filters
from audit.datamap import KINDS, METHODS, NoMap, data_map

st.set_page_config(page_title="Map — shortcut-audit", layout="wide")
audit = open_audit()
f = sidebar_filters(audit)
st.title("Map of the data")
st.caption("Each point is a pair, placed by the embeddings the probes used: nearby pairs look alike to the "
           "encoder. Clusters of one colour are groups of pairs the text model treats alike (a template, a "
           "phrase, a source). The map shows the pairs of the current filter.")


@st.cache_data(show_spinner="Projecting the embeddings ...", max_entries=8)
def cached_map(path: str, mtime: float, params: tuple, kind: str, method: str, sample: int, colour_cols: tuple):
    cols = ["pair_id", "status", "chosen", "rejected", "image_id", *colour_cols]
    frame = audit.filtered(Filters.from_params(dict(params))).select(
        [c for c in dict.fromkeys(cols) if c in audit.schema]).collect()
    try:
        return data_map(audit.dir, audit.summary, frame, kind, method, sample, seed=0)
    except NoMap as e:
        return None, str(e)


text_only = bool(audit.summary.get("text_only"))
colour_opts = ["text_prob", *([] if text_only else ["sfc", "mm_prob"]), "weight", *[f"cue_{c}" for c in audit.cues]]
c = st.columns(4)
kind = c[0].selectbox("Embeddings", KINDS, key="m_kind", disabled=text_only,
                      format_func={"text": "text (chosen - rejected)", "image": "image"}.get)
method = c[1].selectbox("Projection", METHODS, key="m_method",
                        format_func={"pca": "PCA (instant)", "tsne": "t-SNE (clusters; slower)"}.get)
colour = c[2].selectbox("Colour by", colour_opts, key="m_colour")
sample = c[3].number_input("Pairs drawn at most", 100, 20000, 5000 if method == "pca" else 2000, 100, key="m_sample")
mtime = (audit.dir / "audited.parquet").stat().st_mtime
pts, note = cached_map(str(audit.dir.resolve()), mtime, tuple(sorted(f.to_params().items())), kind, method,
                       int(sample), tuple(colour_opts))
if pts is None:
    st.info(note)
    st.stop()
st.caption(note[0].upper() + note[1:] + ".")
fig = go.Figure(go.Scattergl(
    x=pts["x"].to_list(), y=pts["y"].to_list(), mode="markers", customdata=pts["pair_id"].to_list(),
    marker=dict(size=6, opacity=0.7, color=pts[colour].to_list(), colorscale="RdBu_r" if colour.startswith("cue_") else "Viridis",
                colorbar=dict(title=colour)),
    hovertemplate=f"{colour} %{{marker.color:.3f}}<br>%{{customdata}}<extra></extra>"))
fig.update_layout(height=620, margin=dict(t=10, b=10, l=10, r=10), dragmode="lasso",
                  xaxis=dict(showticklabels=False, title=None), yaxis=dict(showticklabels=False, title=None))
event = st.plotly_chart(fig, key="data_map", on_select="rerun", selection_mode=("lasso", "box", "points"),
                        config={"displaylogo": False})
picked = selected_pairs(event)
if picked:
    sid = audit.save_selection(picked)
    st.page_link(PAGES[1][0], label=f"Browse the {plural(len(picked), 'selected pair')}",
                 query_params={**f.to_params(), "sel": sid}, icon=":material/open_in_new:")
    chosen = pts.filter(pl.col("pair_id").is_in(picked))
    st.write(f"Selected: mean {colour} {chosen[colour].mean():.3f} (all drawn: {pts[colour].mean():.3f}).")
else:
    st.caption("Drag a lasso (or a box) around a cluster to open its pairs in Browse.")
