"""Pair view: the image large, the prompt, chosen and rejected side by side with a word diff, every
score and cue value, and previous / next within the current filter."""

import streamlit as st

from audit.appdata import word_diff_html
from common import current_filters, open_audit, write_filters

st.set_page_config(page_title="Pair — shortcut-audit", layout="wide")
audit = open_audit()
f = current_filters()
pid = st.query_params.get("pair")
if not pid:
    first = audit.page(f, 0, 1)
    if first.height == 0:
        st.info("No pair matches the current filters.")
        st.stop()
    pid = first["pair_id"][0]
row = audit.pair(pid)
if row is None:
    st.error(f"Pair `{pid}` is not in this audit.")
    st.stop()
prev_id, next_id, pos, total = audit.neighbours(f, pid)

st.title("Pair view")
nav = st.columns([1, 1, 4])
# Callbacks run before the next script run, so the page re-renders on the new pair in one step.
nav[0].button("← previous", disabled=prev_id is None, key="prev", on_click=write_filters, args=(f,),
              kwargs={"pair": prev_id})
nav[1].button("next →", disabled=next_id is None, key="next", on_click=write_filters, args=(f,),
              kwargs={"pair": next_id})
nav[2].write(f"pair `{pid}` — {'' if pos is None else f'{pos + 1:,} of '}{total:,} in the current filter")
write_filters(f, pair=pid)

img_col, text_col = st.columns([2, 3])
data = audit.image_bytes(row.get("image_path"))
if data:
    img_col.image(data, width="stretch")
else:
    img_col.warning(f"No image to show (status `{row.get('status')}`).")
text_col.markdown("**Prompt**")
text_col.write(row.get("prompt") or "")
shown = [f.phrase] if f.phrase else [p["phrase"] for p in audit.summary.get("phrases") or [] if p.get("significant")]
rej_html, cho_html = word_diff_html(row.get("rejected") or "", row.get("chosen") or "", highlight=shown)
c1, c2 = st.columns(2)
c1.markdown("**Chosen** (words not in rejected in green)")
c1.markdown(f'<div class="pair-chosen">{cho_html}</div>', unsafe_allow_html=True)
c2.markdown("**Rejected** (words not in chosen struck out)")
c2.markdown(f'<div class="pair-rejected">{rej_html}</div>', unsafe_allow_html=True)
if shown:
    st.caption("Marked in yellow: " + ("the phrase of the current filter" if f.phrase else
                                       "the discovered phrases that predict the preferred response (Overview)"))

scores = {k: row.get(k) for k in ("status", "text_prob", "mm_prob", "sfc", "weight", "is_shortcut", "text_margin",
                                   "mm_margin", "cue_margin", "fold", "source", "sample_id") if k in row}
cue_vals = {name: row.get(f"cue_{name}") for name in audit.cues}
s1, s2 = st.columns(2)
s1.subheader("Scores")
s1.json(scores)
s2.subheader("Cue values (chosen - rejected)")
s2.json(cue_vals)
