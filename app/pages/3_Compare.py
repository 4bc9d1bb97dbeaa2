"""Compare two audits (e.g. two datasets, or before/after another encoder): headline deltas and the
pairs whose verdict changed. The second audit is given on the command line (`--compare`)."""

import streamlit as st

from audit.appdata import compare
from common import ENV_COMPARE, open_audit

st.set_page_config(page_title="Compare — shortcut-audit", layout="wide")
a = open_audit()
b = open_audit(ENV_COMPARE, required=False)
st.title("Compare audits")
if b is None:
    st.info("Start the app with `shortcut-audit app AUDIT_DIR --compare OTHER_AUDIT_DIR` to compare two audits.")
    st.stop()
deltas, changed, shared = compare(a, b)
st.write(f"A = `{a.dir}`  B = `{b.dir}`; {shared:,} scored pairs in both.")
cols = st.columns(len(deltas))
for col, (k, d) in zip(cols, deltas.items()):
    val = "n/a" if d["b"] is None else f"{d['b']:.3f}"
    delta = None if d["delta"] is None else f"{d['delta']:+.3f}"
    col.metric(k, val, delta)
st.subheader(f"{changed.height:,} pairs whose verdict changed")
st.dataframe(changed.head(500), hide_index=True)
