"""Shared helpers of the app pages: the audit folder given on the command line (never from the URL),
cached loaders keyed on the file's modification time, and the filter widgets synced with the URL."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import streamlit as st

from audit.appdata import SORTABLE, Audit, Filters
from audit.errors import AuditError

ENV_AUDIT = "SHORTCUT_AUDIT_DIR"
ENV_COMPARE = "SHORTCUT_AUDIT_COMPARE"


@st.cache_resource(show_spinner=False, max_entries=4)
def _open(path: str, mtime: float) -> Audit:
    return Audit(Path(path))


def open_audit(env: str = ENV_AUDIT, required: bool = True) -> Audit | None:
    """The audit the app was started on; a missing or broken folder ends the page with a clear message."""
    path = os.environ.get(env)
    if not path:
        if required:
            st.error("No audit folder given. Start the app with `shortcut-audit app AUDIT_DIR`.")
            st.stop()
        return None
    table = Path(path) / "audited.parquet"
    try:
        return _open(str(Path(path).resolve()), table.stat().st_mtime if table.exists() else 0.0)
    except AuditError as e:
        st.error(str(e))
        st.stop()


@st.cache_data(show_spinner=False, max_entries=4)
def overview(path: str, mtime: float) -> dict:
    return _open(path, mtime).overview()


def overview_of(audit: Audit) -> dict:
    return overview(str(audit.dir.resolve()), (audit.dir / "audited.parquet").stat().st_mtime)


@st.cache_data(show_spinner=False, max_entries=64)
def count(path: str, mtime: float, params: tuple) -> int:
    return _open(path, mtime).count(Filters.from_params(dict(params)))


def count_of(audit: Audit, f: Filters) -> int:
    return count(str(audit.dir.resolve()), (audit.dir / "audited.parquet").stat().st_mtime,
                 tuple(sorted(f.to_params().items())))


def current_filters() -> Filters:
    return Filters.from_params(st.query_params.to_dict())


def write_filters(f: Filters, **extra: str) -> None:
    """Put the filters (and e.g. `page`, `pair`) in the URL, so the view can be shared."""
    keep = {k: v for k, v in st.query_params.to_dict().items() if k in extra or k in ("pair", "page")}
    keep.update({k: str(v) for k, v in extra.items() if v is not None})
    st.query_params.from_dict({**f.to_params(), **keep})


def sidebar_filters(audit: Audit) -> Filters:
    """Filter widgets in the sidebar, initialised from the URL and written back to it."""
    f = current_filters()
    sources = [""] + sorted(p["source"] for p in audit.summary.get("per_source", []))
    statuses = [""] + sorted(audit.summary.get("status_counts", {}))
    cues = [""] + audit.cues
    sb = st.sidebar
    sb.header("Filters")
    lo, hi = sb.slider("SFC range", 0.0, 1.0, (f.sfc_min, f.sfc_max), 0.01, key="f_sfc")
    shortcut = sb.radio("Shortcut pairs (text_prob >= threshold)", ["any", "yes", "no"],
                        index=["any", "yes", "no"].index(f.shortcut), key="f_shortcut", horizontal=True)
    cue = sb.selectbox("Cue differs between chosen and rejected", cues,
                       index=cues.index(f.cue) if f.cue in cues else 0, key="f_cue")
    source = sb.selectbox("Source", sources, index=sources.index(f.source) if f.source in sources else 0, key="f_source")
    status = sb.selectbox("Status", statuses, index=statuses.index(f.status) if f.status in statuses else 0,
                          key="f_status")
    phrases = [""] + [p["phrase"] for p in audit.summary.get("phrases") or []]
    if f.phrase and f.phrase not in phrases:
        phrases.append(f.phrase)
    phrase = sb.selectbox("Pairs with this discovered phrase on one side", phrases,
                          index=phrases.index(f.phrase) if f.phrase in phrases else 0, key="f_phrase",
                          help="phrases the lexical probe found predictive (Overview, \"Discovered phrases\")")
    q = sb.text_input("Search prompt and responses", f.q, key="f_q")
    sort = sb.selectbox("Sort by", SORTABLE, index=SORTABLE.index(f.sort), key="f_sort")
    desc = sb.checkbox("Descending", f.desc, key="f_desc")
    new = Filters(lo, hi, shortcut, cue, source, status, q, phrase, sort, desc)
    if new != f and "page" in st.query_params:
        del st.query_params["page"]   # a new filter starts on its first page
    write_filters(new)
    return new


def thumbnail_uri(data: bytes | None, size: int = 96) -> str | None:
    """A small PNG data URI of an image (decoded only for rows on screen)."""
    if not data:
        return None
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
        im.draft("RGB", (size, size))
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    except Exception:
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def pct(x) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"
