"""Compare two audits (e.g. two datasets, or before/after another encoder): both values and the change
of each headline number, the settings that differ, and the pairs whose verdict changed (openable).
The second audit is given on the command line (`--compare`)."""

import streamlit as st

from common import ENV_COMPARE, open_audit, plural, sidebar_filters

from audit.appdata import compare, config_diff
from audit.markup import md_code

st.set_page_config(page_title="Compare — shortcut-audit", layout="wide")
a = open_audit()
f = sidebar_filters(a)
b = open_audit(ENV_COMPARE, required=False)
st.title("Compare audits")
if b is None:
    st.info("Start the app with `shortcut-audit app AUDIT_DIR --compare OTHER_AUDIT_DIR` to compare two audits.")
    st.stop()
deltas, changed, shared = compare(a, b)
st.markdown(f"A = {md_code(a.dir)} (this app's audit), B = {md_code(b.dir)}.")
cols = st.columns(len(deltas))
for col, (k, d) in zip(cols, deltas.items()):
    # the colour says whether the change is good news for the data; a change that rounds to zero has none
    col.metric(f"{k} (B)", d["b_text"], d["delta_text"], delta_description=f"A: {d['a_text']}",
               delta_color={True: "green", False: "red"}.get(d["better"], "gray"),
               delta_arrow="auto" if d["better"] is not None else "off",
               help=f"A: {d['a_text']}, B: {d['b_text']}; green when the change is good news for the data (fewer text "
                    "shortcuts, a multimodal side that looks), red when it is bad news, grey when it rounds to zero")
diff = config_diff(a, b)
st.subheader("Settings that differ")
if diff:
    st.dataframe(diff, hide_index=True)
else:
    st.write("None: the two audits used the same settings, so differences come from the data.")
if shared == 0:
    st.warning("The two audits share no scored pair (no `pair_id` in common): they audit different data, so only "
               "the headline numbers above compare. Pair ids are content hashes: the same pair in two datasets "
               "gets the same id.")
    st.stop()
st.subheader(f"{plural(changed.height, 'pair')} of {shared:,} shared whose verdict changed")
st.caption("A verdict: whether the text-only model picks the chosen answer (text_prob > 0.5) and whether the pair "
           "is a shortcut pair (text_prob >= threshold). `_b` columns are B's; the largest change of text_prob first.")
table = changed.head(500)
event = st.dataframe(table, hide_index=True, key="changed", on_select="rerun", selection_mode="single-row")
rows = event.selection.rows if event and getattr(event, "selection", None) else []
if rows:
    pid = table["pair_id"][rows[0]]
    st.page_link("pages/2_Pair.py", label=f"Open pair {pid} (in A)", query_params={"pair": pid},
                 icon=":material/open_in_new:")
elif changed.height:
    st.caption("Select a row to open the pair.")
