"""Likely label swaps, the way cleanlab lists likely label issues: the pairs of the current filter whose
multimodal side confidently prefers the rejected answer, most confident first, with the texts, both
sides' scores, a link to the Pair view and buttons to tag each pair `swap`, `exclude` or `keep`."""

import streamlit as st

from common import open_audit, plural, sidebar_filters, thumbnail

from audit.markup import md_code, md_message, md_text
from audit.reading import mm_weakness
from audit.swaps import SWAP_THRESHOLD, has_mm_side, ranked
from audit.tags import TAG_HELP

st.set_page_config(page_title="Likely label swaps — shortcut-audit", layout="wide")
audit = open_audit()
f = sidebar_filters(audit)
PAGE = 20
TEXT_CHARS = 600          # longer texts are cut here; the Pair view shows them whole
BUTTONS = ("swap", "exclude", "keep")

st.title("Likely label swaps")
st.caption("Pairs whose multimodal side (the model that sees the picture, scored out of fold) prefers the "
           "rejected answer with high confidence: the label may be wrong, or the answer marked better may "
           "contradict the picture. Read each, then tag it: `swap` writes it reversed, `exclude` leaves it out "
           "(`export --tags`). `export --flag-swaps` marks them in an export.")
if not has_mm_side(audit.summary):
    st.info("This is a text-only audit (`score --text-only`): there is no multimodal side, so no pair can be "
            "flagged as a likely swap. Score again without `--text-only`, once the pictures are in place, or "
            "with your reward model (`--rm`) or its scores (`--mm-scores`).")
    st.stop()
weak = mm_weakness(audit.summary)
if weak:
    st.warning(md_message("Read this list with care: " + weak + ". A weak multimodal side flags pairs by chance; "
                          "audit with a stronger one (`--rm`, `--mm-scores` or `--image-encoder`) first."))

threshold = st.slider("Multimodal p(rejected) at least", 0.5, 0.99, SWAP_THRESHOLD, 0.01, key="swap_threshold",
                      help="a pair is listed when 1 - mm_prob reaches this (`export --flag-swaps --swap-threshold`)")
swaps = ranked(audit.filtered(f), threshold).select(
    "pair_id", "prompt", "chosen", "rejected", "image_path", "mm_prob", "text_prob").collect()
whole = ranked(audit.scan, threshold).select("pair_id").collect().height
st.markdown(f"**{plural(swaps.height, 'likely swap')}** in the current filter"
            + (" (" + ", ".join(md_code(a) for a in f.active()) + f"; {whole:,} in the whole audit)" if f.active() else "")
            + f", most confident first: p(rejected) = 1 - mm_prob >= {threshold:.2f}.")
if swaps.height == 0:
    st.stop()
pages = (swaps.height + PAGE - 1) // PAGE
if st.session_state.get("swap_page", 1) > pages:      # a higher threshold left fewer pages
    st.session_state["swap_page"] = 1
page = st.number_input(f"Page (of {pages:,})", 1, pages, 1, key="swap_page") if pages > 1 else 1
tags = audit.tags()


def text(value) -> str:
    s = value or ""
    return md_text(s[:TEXT_CHARS] + (" …" if len(s) > TEXT_CHARS else ""))


def evidence(mm: float, tp: float | None) -> str:
    line = f"multimodal p(rejected) **{1 - mm:.2f}**"
    if tp is None or tp != tp:
        return line + "; no text-only score"
    if tp < 0.5:
        return line + f"; the text-only model agrees, p(rejected) {1 - tp:.2f} (stronger evidence)"
    return line + f"; the text-only model prefers the chosen one, p(chosen) {tp:.2f}"


def show(rank: int, row: dict) -> None:
    pid, current = row["pair_id"], tags.get(row["pair_id"])
    with st.container(border=True):
        head = st.columns([5, 2] + [1] * len(BUTTONS))
        head[0].markdown(f"**{rank}.** {md_code(pid)} — {evidence(row['mm_prob'], row['text_prob'])}"
                         + (f" — tag {md_code(current)}" if current else ""))
        head[1].page_link("pages/2_Pair.py", label="Open in Pair view", icon=":material/open_in_new:",
                          query_params={**f.to_params(), "pair": pid})
        for col, tag in zip(head[2:], BUTTONS):
            col.button(tag, key=f"swap_{tag}_{pid}", on_click=audit.set_tags, args=([pid], tag),
                       type="primary" if tag == current else "secondary", help=TAG_HELP[tag])
        img, prompt, chosen, rejected = st.columns([1, 2, 3, 3])
        picture = thumbnail(audit, row.get("image_path"), 160)
        if picture:
            img.image(picture, width=160)
        prompt.markdown("**Prompt**  \n" + text(row["prompt"]))
        chosen.markdown("**Chosen** (as labelled)  \n" + text(row["chosen"]))
        rejected.markdown("**Rejected** (as labelled; the multimodal side prefers it)  \n" + text(row["rejected"]))


for i, row in enumerate(swaps.slice((page - 1) * PAGE, PAGE).iter_rows(named=True), start=(page - 1) * PAGE + 1):
    show(i, row)
