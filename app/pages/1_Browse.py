"""Browse: the filtered pairs, paginated and sortable, with image thumbnails."""

import streamlit as st

from common import count_of, open_audit, sidebar_filters, thumbnail_uri, write_filters

st.set_page_config(page_title="Browse — shortcut-audit", layout="wide")
audit = open_audit()
f = sidebar_filters(audit)
PAGE = 50

total = count_of(audit, f)
pages = max(1, (total + PAGE - 1) // PAGE)
try:
    page = min(max(int(st.query_params.get("page", "1")), 1), pages)
except ValueError:
    page = 1
st.title("Browse pairs")
st.write(f"**{total:,}** pairs match (sorted by `{f.sort}`, {'descending' if f.desc else 'ascending'}).")
page = st.number_input("Page", min_value=1, max_value=pages, value=page, step=1, key="page_input")
write_filters(f, page=str(page))

df = audit.page(f, page - 1, PAGE)
if df.height == 0:
    st.info("No pair matches these filters.")
    st.stop()
thumbs = [thumbnail_uri(audit.image_bytes(p)) for p in df["image_path"].to_list()]
show = df.drop("image_path").insert_column(0, __import__("polars").Series("image", thumbs))
event = st.dataframe(
    show, hide_index=True, key="table", on_select="rerun", selection_mode="single-row",
    column_config={"image": st.column_config.ImageColumn("image", width="small"),
                   "text_prob": st.column_config.NumberColumn(format="%.3f"),
                   "mm_prob": st.column_config.NumberColumn(format="%.3f"),
                   "sfc": st.column_config.NumberColumn(format="%.3f"),
                   "weight": st.column_config.NumberColumn(format="%.3f")})
rows = event.selection.rows if event and getattr(event, "selection", None) else []
if rows:
    pid = df["pair_id"][rows[0]]
    st.page_link("pages/2_Pair.py", label=f"Open pair {pid}", query_params={**f.to_params(), "pair": pid})
