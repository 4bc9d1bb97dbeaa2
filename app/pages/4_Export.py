"""Export the current filter's pairs (or their weights) through the same function as the CLI."""

import time

import streamlit as st

from audit.config import EXPORT_FORMATS, EXPORT_MODES, ExportConfig
from audit.errors import AuditError
from audit.export import export
from audit.schemes import schemes_for, sfc_kind_of
from audit.sources.writers import safe_file_name
from common import count_of, open_audit, sidebar_filters

st.set_page_config(page_title="Export — shortcut-audit", layout="wide")
audit = open_audit()
f = sidebar_filters(audit)
n = count_of(audit, f)
st.title("Export")
st.write(f"The current filter holds **{n:,}** pairs; only their scored (`ok`) rows are exported.")
mode = st.selectbox("Mode", EXPORT_MODES, key="x_mode")
fmt = st.selectbox("Format", EXPORT_FORMATS, key="x_format")
scheme = st.selectbox("Scheme (blank = the audit's weights)", ["", *schemes_for(sfc_kind_of(audit.summary))],
                      key="x_scheme")
name = st.text_input("Folder name under AUDIT_DIR/app_exports/", time.strftime("export-%Y%m%d-%H%M%S"), key="x_name")
replace = st.checkbox("Replace an earlier export of that name (its files are deleted once this one is written)",
                      key="x_overwrite")
if st.button("Export", key="x_go", disabled=n == 0):
    safe = safe_file_name(name.strip() or "export")          # one plain folder name: never `..` or a path
    out = audit.dir / "app_exports" / safe
    ids = set(audit.filtered(f).select("pair_id").collect()["pair_id"].to_list())
    try:
        rep = export(ExportConfig(audit=audit.dir, out=out, mode=mode, format=fmt, scheme=scheme or None,
                                  overwrite=replace), only=ids)
    except AuditError as e:
        st.error(str(e))
        if "--overwrite" in str(e):
            st.info("Tick *Replace an earlier export of that name* above to replace it (the command line's `--overwrite`).")
    else:
        st.success(f"Wrote {rep['rows_out']:,} rows to `{rep['path']}`")
        if rep["weights"]["renormalised_from_mean"] is not None:
            st.info(f"The `weight` column is rescaled to mean 1 over these pairs (their audit weights averaged "
                    f"{rep['weights']['renormalised_from_mean']:.3f}), so a weighted trainer keeps its learning "
                    "rate; the audit's own weights are in `audit_weight`.")
        st.json(rep)
