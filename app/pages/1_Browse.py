"""Browse: the filtered pairs, paginated and sorted (sidebar). Each pair shows its picture, its texts
(prompt, chosen, rejected: wrapped, escaped, the filter's phrase and search marked, long answers folded)
and then its scores; a gallery of big pictures where the pictures matter; statistics of the slice; tags
for the selected pairs or the whole filter. A pair is one `st.html` card (the data escaped, then
sanitised again by Streamlit) with a select box and a link: a few elements per pair keep 50 pairs fast."""

import base64

import streamlit as st

from common import (count_of, mark_synced, open_audit, plural, sidebar_filters, sync_widgets, thumbnail,
                    write_filters)

from audit.appdata import marked_html
from audit.markup import html_text, md_code, md_text
from audit.reading import pct
from audit.tags import TAG_HELP, TAGS

st.set_page_config(page_title="Browse — shortcut-audit", layout="wide")
audit = open_audit()
f = sidebar_filters(audit)
PAGE = 50
CLIP = 600                  # characters of an answer shown before the rest folds (the Pair view shows all)
THUMB, BIG = 240, 480       # picture sizes of the list and of the gallery (pixels, before the browser scales)
GRID = 4                    # gallery pictures per line
MARKS = {"phrases": [f.phrase] if f.phrase else [], "needles": [f.q] if f.q else []}


def header(total: int) -> None:
    """The title, the count of the filter and the statistics of its scored pairs."""
    st.title("Browse pairs")
    st.markdown(f"**{total:,}** {'pair matches' if total == 1 else 'pairs match'} (sorted by {md_code(f.sort)}, "
                f"{'descending' if f.desc else 'ascending'})."
                + (" Filters: " + ", ".join(md_code(a) for a in f.active()) if f.active() else ""))
    if not total:
        return
    stats = audit.slice_stats(f)
    cols = st.columns(5)
    cols[0].metric("Scored pairs here", f"{stats['n']:,}")
    cols[1].metric("Text-only accuracy here", pct(stats.get("text_acc")))
    cols[2].metric("Multimodal accuracy here", pct(stats.get("mm_acc")))
    cols[3].metric("Mean SFC", _num(stats.get("sfc_mean")))
    cols[4].metric("Mean weight", _num(stats.get("weight_mean")))


def _num(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.3f}"


def _select(ids: list[str], value: bool) -> None:
    for pid in ids:
        st.session_state[f"pick_{pid}"] = value


def selection_buttons(cols, ids: list[str]) -> None:
    cols[0].button("Select page", key="sel_all", on_click=_select, args=(ids, True), help="select every pair shown")
    cols[1].button("Clear", key="sel_none", on_click=_select, args=(ids, False), help="select none")


def tag_bar(picked: list[str]) -> None:
    """Tag the selected pairs; open the first of them."""
    st.markdown("**Tag** " + (f"the {plural(len(picked), 'selected pair')}" if picked else
                              "the pairs you select (tick the box above a pair)"),
                help="; ".join(f"`{t}`: {h}" for t, h in TAG_HELP.items()))
    cols = st.columns(len(TAGS) + 2)
    for col, tag in zip(cols, (*TAGS, None)):
        if col.button(tag or "clear tag", key=f"tag_sel_{tag}", disabled=not picked,
                      help=TAG_HELP.get(tag, "remove the tag")):
            audit.set_tags(picked, tag)
            st.rerun()
    if picked:
        cols[-1].page_link("pages/2_Pair.py", label=f"Open pair {md_text(picked[0], inline=True)}",
                           query_params={**f.to_params(), "pair": picked[0]}, icon=":material/open_in_new:")


def texts_html(row: dict) -> str:
    """Prompt above, chosen beside rejected: every data string escaped (`marked_html`), long ones folded."""
    def side(name: str, colour: str, bg: str) -> str:
        return (f'<div style="padding:0.25rem 0.5rem;border-radius:0.4rem;background:{bg}">'
                f'<div style="font-weight:600;color:{colour}">{name.capitalize()}</div><div class="browse-{name}">'
                f'{marked_html(row.get(name), **MARKS, limit=CLIP)}</div></div>')

    return (f'<div class="browse-texts" style="flex:1;min-width:0"><div style="font-weight:600">Prompt</div>'
            f'<div class="browse-prompt">{marked_html(row.get("prompt"), **MARKS, limit=CLIP // 2)}</div>'
            f'<div style="display:grid;grid-template-columns:1fr 1fr;gap:0.6rem;margin-top:0.4rem">'
            f'{side("chosen", "#1a7f37", "#f0faf2")}{side("rejected", "#b42318", "#fdf3f2")}</div></div>')


def scores_html(row: dict) -> str:
    """The scores after the texts, one per line."""
    lines = [f"{k} <b>{_num(row.get(c))}</b>" for k, c in (("text_prob", "text_prob"), ("mm_prob", "mm_prob"),
                                                          ("SFC", "sfc"), ("weight", "weight"))]
    if row.get("is_shortcut"):
        lines.append("shortcut pair")
    if row.get("status") != "ok":
        lines.append(f"status <code>{html_text(row.get('status'))}</code>")
    if row.get("tag"):
        lines.append(f"tag <code>{html_text(row['tag'])}</code>")
    return f'<div class="browse-scores" style="flex:0 0 8.5rem">{"<br>".join(lines)}</div>'


def picture_html(row: dict, size: int, style: str) -> str:
    """The pair's picture, scaled down, inline: a data URI of the JPEG the app made from the decoded
    picture (no request and no element of its own per pair)."""
    data = thumbnail(audit, row.get("image_path"), size)
    if not data:
        status = row.get("status")
        return (f'<div style="{style};color:#888">no picture'
                + (f' (status <code>{html_text(status)}</code>)' if status != "ok" else "") + "</div>")
    uri = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    return f'<img src="{uri}" alt="" style="{style};height:auto;align-self:flex-start">'


def row_header(pid: str, n: int) -> None:
    """The pair's select box and the link to its Pair view, on one line."""
    line = st.container(horizontal=True, vertical_alignment="center", gap="medium")
    line.checkbox(f"#{n:,}", key=f"pick_{pid}")
    line.page_link("pages/2_Pair.py", label="Open pair", query_params={**f.to_params(), "pair": pid},
                   icon=":material/open_in_new:")


CARD = "display:flex;gap:0.8rem;border:1px solid rgba(49,51,63,0.2);border-radius:0.5rem;padding:0.6rem"


def list_row(row: dict, n: int) -> None:
    """One pair: select box and link, then its picture, its texts and its scores."""
    pid = row["pair_id"]
    with st.container(key=f"row_{pid}", gap="small"):
        row_header(pid, n)
        st.html(f'<div style="{CARD}">{picture_html(row, THUMB, "flex:0 0 160px;width:160px")}{texts_html(row)}'
                f'{scores_html(row)}</div>')


def gallery_cell(where, row: dict, n: int) -> None:
    """One pair as a big picture with a short caption."""
    pid = row["pair_id"]
    prompt = " ".join(str(row.get("prompt") or "").split())
    caption = (html_text(prompt[:90] + ("…" if len(prompt) > 90 else ""))
               + f" — text_prob {_num(row.get('text_prob'))}, SFC {_num(row.get('sfc'))}"
               + (f", tag <code>{html_text(row['tag'])}</code>" if row.get("tag") else ""))
    with where.container(key=f"cell_{pid}", gap="small"):
        row_header(pid, n)
        st.html(f'<div style="{CARD};flex-direction:column">{picture_html(row, BIG, "width:100%")}'
                f'<div class="browse-caption" style="font-size:0.875rem;color:#555">{caption}</div></div>')


def tag_everything(total: int) -> None:
    with st.expander(f"Tag every pair of this filter ({total:,})"):
        tag_all = st.selectbox("Tag", [*TAGS, "clear tag"], key="tag_all_which")
        if st.button(f"Tag all {total:,} as `{tag_all}`", key="tag_all_go", disabled=total == 0 or not f.active()):
            ids = audit.filtered(f).select("pair_id").collect()["pair_id"].to_list()
            audit.set_tags(ids, None if tag_all == "clear tag" else tag_all)
            st.rerun()
        if not f.active():
            st.caption("Set a filter first: tagging every pair of the audit at once is not offered.")


total = count_of(audit, f)
pages = max(1, (total + PAGE - 1) // PAGE)
try:
    page = min(max(int(st.query_params.get("page", "1")), 1), pages)
except ValueError:
    page = 1
header(total)
sync_widgets("browse", {"page_input": page}, names=("page",))
bar = st.columns([1.3, 1.3, 1.2, 1, 3], vertical_alignment="bottom")
page = int(bar[0].number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1, key="page_input"))
write_filters(f, page=str(page))
mark_synced("browse", names=("page",))
gallery = bar[1].toggle("Gallery", key="b_gallery", help="big pictures in a grid, a short caption each")
df = audit.page(f, page - 1, PAGE)
ids = df["pair_id"].to_list()
selection_buttons(bar[2:4], ids)
if df.height == 0:
    st.info("No pair matches these filters.")
    st.stop()
tag_bar([pid for pid in ids if st.session_state.get(f"pick_{pid}")])
rows = list(df.iter_rows(named=True))
first = (page - 1) * PAGE + 1
if gallery:
    for start in range(0, len(rows), GRID):
        for col, (i, row) in zip(st.columns(GRID), enumerate(rows[start:start + GRID], start)):
            gallery_cell(col, row, first + i)
else:
    for i, row in enumerate(rows):
        list_row(row, first + i)
tag_everything(total)
