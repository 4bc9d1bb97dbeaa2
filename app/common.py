"""Shared helpers of the app pages: the audit folder given on the command line (never from the URL),
cached loaders keyed on the file's modification time, and the filter widgets synced with the URL."""

from __future__ import annotations

import io
import os
from pathlib import Path

import streamlit as st

from audit.appdata import CUE_SIDES, SORTABLE, TAG_FILTERS, Audit, Filters
from audit.errors import AuditError
from audit.markup import md_code

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


PAGES = (("Home.py", "Overview"), ("pages/1_Browse.py", "Browse"), ("pages/2_Pair.py", "Pair view"),
         ("pages/5_Map.py", "Map"), ("pages/3_Compare.py", "Compare"), ("pages/6_Swaps.py", "Likely label swaps"),
         ("pages/4_Export.py", "Export"))
_LAST = "last_filters"          # session copy of the filters: a page reached without them in its URL gets them


def _filter_params(params: dict) -> dict:
    names = set(Filters().__dataclass_fields__)
    return {k: v for k, v in params.items() if k in names}


def current_filters() -> Filters:
    """The filters of this view: the URL's when it has any, else the ones last used in this browser
    session (a page opened from the sidebar or typed by hand keeps them), else the defaults."""
    params = _filter_params(st.query_params.to_dict())
    if params:
        f = Filters.from_params(params)
    else:
        f = Filters.from_params(st.session_state.get(_LAST, {}))
    st.session_state[_LAST] = f.to_params()
    return f


def write_filters(f: Filters, **extra: str) -> None:
    """Put the filters (and e.g. `page`, `pair`) in the URL, so the view can be shared and reloaded."""
    st.session_state[_LAST] = f.to_params()
    keep = {k: v for k, v in st.query_params.to_dict().items() if k in extra or k in ("pair", "page")}
    keep.update({k: str(v) for k, v in extra.items() if v is not None})
    keep = {k: v for k, v in keep.items() if not (k in extra and extra[k] is None)}
    st.query_params.from_dict({**f.to_params(), **keep})


def navigation(f: Filters, pair: str | None = None, into=None) -> None:
    """The app's own page links (Streamlit's list is hidden): each carries the filters `f`, so they follow
    the user from page to page. `into`: a sidebar container reserved before the filter widgets, so the
    links sit at the top yet are drawn with the filters those widgets produced in this run."""
    into = into if into is not None else st.sidebar.container()
    params = f.to_params()
    for page, label in PAGES:
        q = {**params, "pair": pair} if page == "pages/2_Pair.py" and pair else params
        into.page_link(page, label=label, query_params=q)
    if f.active():
        into.caption("Active filters: " + ", ".join(md_code(a) for a in f.active()))
        into.page_link(PAGES[1][0], label="Clear all filters", query_params={"clear": "1"})


def _any(option: str) -> str:
    return "(any)" if option == "" else option


def _watched(names: tuple[str, ...] | None) -> dict:
    """The URL parameters a set of widgets shows, and the page: a widget's state does not survive a page
    change (its id includes the page), so arriving on a page resets them from the URL too."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    params = st.query_params.to_dict()
    ctx = get_script_run_ctx()
    watched = _filter_params(params) if names is None else {k: v for k, v in params.items() if k in names}
    return {**watched, "__page__": ctx.page_script_hash if ctx else ""}


def sync_widgets(source: str, values: dict, names: tuple[str, ...] | None = None) -> None:
    """Drive keyed widgets from the URL: when the URL parameters they show (`names`; default: the
    filters) changed from outside (a link, a pasted address, back/forward), set their state to `values`
    before they are drawn; otherwise leave the user's input alone."""
    marker = f"_synced_{source}"
    if st.session_state.get(marker) != _watched(names) or any(k not in st.session_state for k in values):
        for k, v in values.items():
            st.session_state[k] = v


def mark_synced(source: str, names: tuple[str, ...] | None = None) -> None:
    """Remember the URL parameters the widgets of `source` now show (call after writing the URL)."""
    st.session_state[f"_synced_{source}"] = _watched(names)


def sidebar_filters(audit: Audit, pair: str | None = None) -> Filters:
    """Navigation and the filter widgets in the sidebar, initialised from the URL (or the session) and
    written back to the URL."""
    from audit.tags import TAGS

    if st.query_params.get("clear"):
        st.session_state[_LAST] = {}
        st.query_params.clear()
    f = current_filters()
    nav = st.sidebar.container()      # filled last: the links carry the filters the widgets below produce
    sources = [""] + sorted(p["source"] for p in audit.summary.get("per_source", []))
    statuses = [""] + sorted(audit.summary.get("status_counts", {}))
    cues = [""] + audit.cues
    phrases = [""] + [p["phrase"] for p in audit.summary.get("phrases") or []]
    if f.phrase and f.phrase not in phrases:
        phrases.append(f.phrase)
    tag_opts = ["", *TAGS, *TAG_FILTERS]
    metas = ["", *audit.meta_columns]
    values = audit.meta_values(f.meta_col) if f.meta_col in metas and f.meta_col else []
    if f.meta_val and f.meta_val not in values:
        values.append(f.meta_val)
    w_top = max(float(((audit.summary.get("weights") or {}).get("max")) or 1.0), f.w_min, 0.01)
    w_hi = min(f.w_max, w_top)
    sync_widgets("filters", {
        "f_sfc": (f.sfc_min, f.sfc_max), "f_shortcut": f.shortcut, "f_cue": f.cue if f.cue in cues else "",
        "f_cue_side": f.cue_side, "f_phrase": f.phrase, "f_q": f.q, "f_tp": (f.tp_min, f.tp_max),
        "f_mm": (f.mm_min, f.mm_max), "f_w": (min(f.w_min, w_hi), w_hi), "f_tag": f.tag if f.tag in tag_opts else "",
        "f_source": f.source if f.source in sources else "", "f_status": f.status if f.status in statuses else "",
        "f_meta_col": f.meta_col if f.meta_col in metas else "", "f_meta_val": f.meta_val if values else "",
        "f_sel": bool(f.sel), "f_sort": f.sort, "f_desc": f.desc})
    thr = audit.summary.get("threshold", 0.8)
    sb = st.sidebar
    sb.header("Filters")
    lo, hi = sb.slider("SFC range", 0.0, 1.0, step=0.01, key="f_sfc")
    shortcut = sb.radio(f"Shortcut pairs (text_prob >= {thr:.2f})", ["any", "yes", "no"], key="f_shortcut",
                        horizontal=True)
    cue = sb.selectbox("Cue differs between chosen and rejected", cues, format_func=_any, key="f_cue")
    side = sb.radio("Where the cue sits", CUE_SIDES, key="f_cue_side", horizontal=True, disabled=not cue,
                    format_func={"any": "either side", "chosen": "chosen", "rejected": "rejected (cue-against)"}.get,
                    help="`rejected`: the cue points to the wrong answer, where a model that learnt it fails")
    phrase = sb.selectbox("Discovered phrase on one side only", phrases, format_func=_any, key="f_phrase",
                          help="phrases the lexical probe found predictive (Overview, \"Discovered phrases\")")
    q = sb.text_input("Search prompt and responses", key="f_q")
    more = any((f.tp_min, f.tp_max < 1, f.mm_min, f.mm_max < 1, f.w_min, f.w_max < float("inf"), f.tag, f.source,
                f.status, f.meta_col, f.sel))
    with sb.expander("More filters", expanded=more):
        tp = st.slider("text_prob range", 0.0, 1.0, step=0.01, key="f_tp")
        mm = st.slider("mm_prob range", 0.0, 1.0, step=0.01, key="f_mm", disabled=bool(audit.summary.get("text_only")))
        w = st.slider("weight range", 0.0, w_top, step=w_top / 100, key="f_w")
        tag = st.selectbox("Tag", tag_opts, format_func=_any, key="f_tag")
        source = st.selectbox("Source format", sources, format_func=_any, key="f_source")
        status = st.selectbox("Status", statuses, format_func=_any, key="f_status")
        meta_col = st.selectbox("Your column", metas, format_func=_any, key="f_meta_col",
                                help="a column of your dataset outside the pairs table (annotator, task, ...)")
        if meta_col != f.meta_col:
            values = audit.meta_values(meta_col) if meta_col else []
            st.session_state["f_meta_val"] = values[0] if values else ""
        if st.session_state.get("f_meta_val") not in (values or [""]):
            st.session_state["f_meta_val"] = (values or [""])[0]
        meta_val = st.selectbox("equal to", values or [""], disabled=not meta_col, key="f_meta_val")
        keep_sel = bool(f.sel) and st.checkbox(f"Only the {len(audit.selection(f.sel)):,} pairs of a chart "
                                               f"selection ({md_code(f.sel)})", key="f_sel")
    sort = sb.selectbox("Sort by", SORTABLE, key="f_sort")
    desc = sb.checkbox("Descending", key="f_desc")
    w_max = float("inf") if w[1] >= w_top else w[1]          # the slider's top means no upper bound
    new = Filters(sfc_min=lo, sfc_max=hi, shortcut=shortcut, cue=cue, cue_side=side if cue else "any",
                  source=source, status=status, q=q, phrase=phrase, tp_min=tp[0], tp_max=tp[1], mm_min=mm[0],
                  mm_max=mm[1], w_min=w[0], w_max=w_max, tag=tag, sel=f.sel if keep_sel else "", meta_col=meta_col,
                  meta_val=meta_val if meta_col else "", sort=sort, desc=desc)
    if new != f and "page" in st.query_params:
        del st.query_params["page"]   # a new filter starts on its first page
    write_filters(new)
    mark_synced("filters")
    navigation(new, pair, into=nav)
    return new


def thumbnail_bytes(data: bytes | None, size: int) -> bytes | None:
    """A JPEG of an image at most `size` pixels on a side (None for no image or one that does not decode)."""
    if not data:
        return None
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
        im.draft("RGB", (size, size))            # JPEG: decode at a reduced scale, far faster on photos
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    except Exception:
        return None
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=2000)
def _thumbnail(path: str, mtime: float, image_path: str, size: int) -> bytes | None:
    return thumbnail_bytes(_open(path, mtime).image_bytes(image_path), size)


def thumbnail(audit: Audit, image_path: str | None, size: int) -> bytes | None:
    """A row's picture scaled down for a list or a gallery, decoded once per audit, path and size."""
    if not image_path:
        return None
    return _thumbnail(str(audit.dir.resolve()), (audit.dir / "audited.parquet").stat().st_mtime, image_path, size)


def selected_pairs(event) -> list[str]:
    """The pair ids of the points selected on a chart whose points carry their `pair_id` as customdata."""
    sel = getattr(event, "selection", None) if event else None
    ids = [p["customdata"] if isinstance(p.get("customdata"), str) else (p.get("customdata") or [None])[0]
           for p in (sel.get("points", []) if sel else [])]
    return [p for p in ids if p]


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
