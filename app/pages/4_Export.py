"""Export the current filter's pairs (or their weights) through the same function as the CLI, honouring
the tags when asked, and offer the written files as a download."""

import io
import time
import zipfile

import streamlit as st

from common import count_of, open_audit, plural, sidebar_filters

from audit.config import EXPORT_FORMATS, EXPORT_MODES, ExportConfig
from audit.errors import AuditError
from audit.export import export
from audit.markup import md_code
from audit.schemes import schemes_for, sfc_kind_of
from audit.sources.writers import safe_file_name
from audit.swaps import SWAP_THRESHOLD, has_mm_side
from audit.tags import tag_counts

MAX_DOWNLOAD = 200 * 1024 * 1024       # larger exports are only offered as a folder on the server

st.set_page_config(page_title="Export — shortcut-audit", layout="wide")
audit = open_audit()
f = sidebar_filters(audit)
n = count_of(audit, f)
st.title("Export")
st.write(f"The current filter holds **{plural(n, 'pair')}**"
         + (" (" + ", ".join(f"`{a}`" for a in f.active()) + ")" if f.active() else " (no filter: every pair)")
         + "; only their scored (`ok`) rows are exported. In `weight` mode the weights are rescaled to mean 1 over "
           "what is exported, so a weighted trainer keeps its learning rate.")
mode = st.selectbox("Mode", EXPORT_MODES, key="x_mode",
                    help="`weight`: every pair with its weight; `prune`: drop the shortcut pairs "
                         f"(text_prob >= {audit.summary.get('threshold', 0.8):.2f}); `resample`: draw pairs with "
                         "probability proportional to weight")
fmt = st.selectbox("Format", EXPORT_FORMATS, key="x_format")
scheme = st.selectbox("Scheme", ["", *schemes_for(sfc_kind_of(audit.summary))], key="x_scheme",
                      format_func=lambda v: v or f"the audit's weights ({audit.summary.get('scheme')})")
counts = tag_counts(audit.tags())
use_tags = st.checkbox("Honour the tags (" + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none set yet")
                       + ")", value=bool(counts), key="x_tags", disabled=not counts,
                       help="`exclude` pairs are left out, `keep` pairs never pruned, `swap` pairs written with "
                            "chosen and rejected swapped (the command line's `--tags`)")
mm_side = has_mm_side(audit.summary)
flag_swaps = st.checkbox(f"Flag likely label swaps (a `likely_swap` column: the multimodal side prefers the rejected "
                         f"answer with p >= {SWAP_THRESHOLD:.2f})", key="x_swaps", disabled=not mm_side,
                         help="the command line's `--flag-swaps`; the pairs it flags are listed on *Likely label "
                              "swaps*" if mm_side else "needs a multimodal side: this audit has none")
name = st.text_input("Folder name under AUDIT_DIR/app_exports/", time.strftime("export-%Y%m%d-%H%M%S"), key="x_name")
replace = st.checkbox("Replace an earlier export of that name (its files are deleted once this one is written)",
                      key="x_overwrite")


def zipped(folder) -> bytes | None:
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".shortcut-audit")]
    if sum(p.stat().st_size for p in files) > MAX_DOWNLOAD:
        return None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for p in files:
            z.write(p, p.relative_to(folder).as_posix())
    return buf.getvalue()


if st.button("Export", key="x_go", disabled=n == 0, type="primary"):
    safe = safe_file_name(name.strip() or "export")          # one plain folder name: never `..` or a path
    out = audit.dir / "app_exports" / safe
    ids = set(audit.filtered(f).select("pair_id").collect()["pair_id"].to_list())
    try:
        rep = export(ExportConfig(audit=audit.dir, out=out, mode=mode, format=fmt, scheme=scheme or None,
                                  overwrite=replace, tags=use_tags, flag_swaps=flag_swaps), only=ids)
    except AuditError as e:
        st.error(str(e))
        if "--overwrite" in str(e):
            st.info("Tick *Replace an earlier export of that name* above to replace it (the command line's `--overwrite`).")
    else:
        st.session_state["x_last"] = {"rep": rep, "out": str(out)}
last = st.session_state.get("x_last")
if last:
    rep = last["rep"]
    st.success(f"Wrote {plural(rep['rows_out'], 'row')} to {md_code(rep['path'])}")
    if rep["weights"]["renormalised_from_mean"] is not None:
        st.info(f"The `weight` column is rescaled to mean 1 over these pairs (their audit weights averaged "
                f"{rep['weights']['renormalised_from_mean']:.3f}), so a weighted trainer keeps its learning "
                "rate; the audit's own weights are in `audit_weight`.")
    if rep.get("tags"):
        t = rep["tags"]
        st.info(f"Tags honoured: {t['excluded']} excluded, {t['swapped']} swapped, {t['kept']} kept from pruning.")
    if rep.get("likely_swaps"):
        sw = rep["likely_swaps"]
        st.info(f"`{sw['column']}` marks {plural(sw['pairs_flagged'], 'exported pair')} ({sw['rule']}).")
    from pathlib import Path

    data = zipped(Path(last["out"]))
    if data is None:
        st.caption(f"Larger than {MAX_DOWNLOAD // 2**20} MiB: copy it from {md_code(last['out'])} on the server.")
    else:
        st.download_button(f"Download ({len(data) / 2**20:.1f} MiB zip)", data, file_name=f"{Path(last['out']).name}.zip",
                           mime="application/zip", key="x_download")
    with st.expander("Export report"):
        st.json(rep)
