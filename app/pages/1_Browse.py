"""Browse: the filtered pairs, paginated and sorted (sidebar), with thumbnails, statistics of the
slice, and tags for the selected rows or the whole filter."""

import polars as pl
import streamlit as st

from common import (count_of, mark_synced, open_audit, plural, sidebar_filters, sync_widgets, thumbnail_uri,
                    write_filters)

from audit.markup import md_code, md_text
from audit.reading import pct
from audit.tags import TAG_HELP, TAGS

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
st.markdown(f"**{total:,}** {'pair matches' if total == 1 else 'pairs match'} (sorted by {md_code(f.sort)}, "
            f"{'descending' if f.desc else 'ascending'})." + (" Filters: " + ", ".join(md_code(a) for a in f.active())
                                                              if f.active() else ""))
if total:
    stats = audit.slice_stats(f)
    cols = st.columns(5)
    cols[0].metric("Scored pairs here", f"{stats['n']:,}")
    cols[1].metric("Text-only accuracy here", pct(stats.get("text_acc")))
    cols[2].metric("Multimodal accuracy here", pct(stats.get("mm_acc")))
    cols[3].metric("Mean SFC", "n/a" if stats.get("sfc_mean") is None else f"{stats['sfc_mean']:.3f}")
    cols[4].metric("Mean weight", "n/a" if stats.get("weight_mean") is None else f"{stats['weight_mean']:.3f}")
sync_widgets("browse", {"page_input": page}, names=("page",))
page = st.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1, key="page_input")
write_filters(f, page=str(page))
mark_synced("browse", names=("page",))

df = audit.page(f, page - 1, PAGE)
if df.height == 0:
    st.info("No pair matches these filters.")
    st.stop()
thumbs = [thumbnail_uri(audit.image_bytes(p)) for p in df["image_path"].to_list()]
show = df.drop("image_path").insert_column(1, pl.Series("image", thumbs))
event = st.dataframe(
    show, hide_index=True, key="table", on_select="rerun", selection_mode="multi-row",
    height=min(36 * (show.height + 1) + 2, 1200), row_height=34,
    column_config={"image": st.column_config.ImageColumn("image", width="small"),
                   "pair_id": st.column_config.TextColumn("pair_id", width="small"),
                   "prompt": st.column_config.TextColumn("prompt", width="medium"),
                   "chosen": st.column_config.TextColumn("chosen", width="medium"),
                   "rejected": st.column_config.TextColumn("rejected", width="medium"),
                   **{c: st.column_config.NumberColumn(c, format="%.3f", width="small")
                      for c in ("text_prob", "mm_prob", "sfc", "weight")}})
rows = event.selection.rows if event and getattr(event, "selection", None) else []
picked = [df["pair_id"][i] for i in rows]
if picked:
    st.page_link("pages/2_Pair.py", label=f"Open pair {md_text(picked[0], inline=True)}",
                 query_params={**f.to_params(), "pair": picked[0]},
                 icon=":material/open_in_new:")
st.markdown("**Tag** " + (f"the {plural(len(picked), 'selected pair')}" if picked else
                          "the pairs you select in the table (click the boxes on the left)"),
            help="; ".join(f"`{t}`: {h}" for t, h in TAG_HELP.items()))
tag_cols = st.columns(len(TAGS) + 1)
for col, tag in zip(tag_cols, (*TAGS, None)):
    if col.button(tag or "clear tag", key=f"tag_sel_{tag}", disabled=not picked, help=TAG_HELP.get(tag, "remove the tag")):
        audit.set_tags(picked, tag)
        st.rerun()
with st.expander(f"Tag every pair of this filter ({total:,})"):
    tag_all = st.selectbox("Tag", [*TAGS, "clear tag"], key="tag_all_which")
    if st.button(f"Tag all {total:,} as `{tag_all}`", key="tag_all_go", disabled=total == 0 or not f.active()):
        ids = audit.filtered(f).select("pair_id").collect()["pair_id"].to_list()
        audit.set_tags(ids, None if tag_all == "clear tag" else tag_all)
        st.rerun()
    if not f.active():
        st.caption("Set a filter first: tagging every pair of the audit at once is not offered.")
