"""Pair view: the image large, the prompt, chosen and rejected side by side with a word diff (long answers
collapsed to their first part), the scores in words, every cue value with its meaning, the dataset's
own columns, tags (a tag moves on to the next pair of the filter), and previous / next within the
current filter (keys: J next, K previous; X exclude, A keep, V review, S swap, U clear)."""

import streamlit as st

from common import open_audit, sidebar_filters, write_filters

from audit.appdata import in_words, word_diff
from audit.markup import md_code, md_message, md_text
from audit.tags import TAG_HELP, TAGS

st.set_page_config(page_title="Pair — shortcut-audit", layout="wide")
audit = open_audit()
pid = st.query_params.get("pair")
f = sidebar_filters(audit, pair=pid)
if not pid:
    first = audit.page(f, 0, 1)
    if first.height == 0:
        st.info("No pair matches the current filters.")
        st.stop()
    pid = first["pair_id"][0]
row = audit.pair(pid)
if row is None:
    st.error(f"Pair {md_code(pid)} is not in this audit.")
    st.stop()
prev_id, next_id, pos, total = audit.neighbours(f, pid)
write_filters(f, pair=pid)
KEYS = {"exclude": "X", "keep": "A", "review": "V", "swap": "S", None: "U"}
SHOWN_CHARS = 1_500                  # of each answer before "show the whole answers"

st.title("Pair view")
nav = st.columns([1, 1, 4])
# Callbacks run before the next script run, so the page re-renders on the new pair in one step.
nav[0].button("← previous", disabled=prev_id is None, key="prev", on_click=write_filters, args=(f,),
              kwargs={"pair": prev_id}, shortcut="K", help="previous pair in the current filter (key K)")
nav[1].button("next →", disabled=next_id is None, key="next", on_click=write_filters, args=(f,),
              kwargs={"pair": next_id}, shortcut="J", help="next pair in the current filter (key J)")
where = f"{pos + 1:,} of {total:,} in the current filter" if pos is not None else \
    f"not in the current filter ({total:,} pairs)"
nav[2].markdown(f"pair {md_code(pid)} — {where}" + (" (filters: " + ", ".join(md_code(a) for a in f.active()) + ")"
                                                   if f.active() else ""))

current = audit.tags().get(pid)
_TAGGED = "pair_tagged"              # what the last tag did, said once on the page it led to


def tag(value: str | None) -> None:
    """Tag this pair; a tag (not a clear) moves on to the next pair of the filter, as in a labelling queue."""
    audit.set_tags([pid], value)
    moved = value is not None and next_id is not None
    st.session_state[_TAGGED] = (pid, value, "moved" if moved else "stay" if value is None
                                 else "outside" if pos is None else "last")
    if moved:
        write_filters(f, pair=next_id)


done = st.session_state.pop(_TAGGED, None)
if done:
    was, value, what = done
    st.info((f"Pair {md_code(was)} tagged {md_code(value)}" if value else f"Tag of pair {md_code(was)} cleared") + {
        "moved": "; on to the next pair of the filter (K goes back to it).",
        "last": ": the last pair of the current filter, so the view stays on it.",
        "outside": ": it is not in the current filter, so the view stays on it.", "stay": "."}[what])
tag_cols = st.columns([1.3] + [1] * (len(TAGS) + 1))
tag_cols[0].markdown(f"**Tag:** {md_code(current)}" if current else "**Tag:** none", help="; ".join(
    f"`{t}` (key {KEYS[t]}): {h}" for t, h in TAG_HELP.items()) + "; a tag moves on to the next pair of the filter")
for col, value in zip(tag_cols[1:], (*TAGS, None)):
    col.button(value or "clear", key=f"tag_{value}", on_click=tag, args=(value,), shortcut=KEYS[value],
               type="primary" if value is not None and value == current else "secondary",
               help=f"{TAG_HELP[value]}; then moves on to the next pair of the filter (key {KEYS[value]})"
               if value else f"remove the tag and stay on this pair (key {KEYS[value]})")

img_col, text_col = st.columns([2, 3])
data = audit.image_bytes(row.get("image_path"))
if data:
    img_col.image(data, width="stretch")
else:
    img_col.warning(f"No image to show (status {md_code(row.get('status'))}).")
text_col.markdown("**Prompt**")
text_col.markdown(md_text(row.get("prompt")))     # the data as text: no link, image or heading of its own
shown = [f.phrase] if f.phrase else [p["phrase"] for p in audit.summary.get("phrases") or [] if p.get("significant")]
rejected, chosen = row.get("rejected") or "", row.get("chosen") or ""
diff = word_diff(rejected, chosen, highlight=shown)
longest = max(len(rejected), len(chosen))


def answers(where, limit: int | None) -> None:
    rej_html, cho_html = diff.html(limit)
    c1, c2 = where.columns(2)
    c1.markdown("**Chosen** (words not in rejected in green)")
    c1.markdown(f'<div class="pair-chosen">{cho_html}</div>', unsafe_allow_html=True)
    c2.markdown("**Rejected** (words not in chosen struck out)")
    c2.markdown(f'<div class="pair-rejected">{rej_html}</div>', unsafe_allow_html=True)


answers(st, SHOWN_CHARS if longest > SHOWN_CHARS else None)
if longest > SHOWN_CHARS:
    with st.expander(f"Show the whole answers (chosen {len(chosen):,} characters, rejected {len(rejected):,})"):
        answers(st, None)
st.caption("Words are compared ignoring case and punctuation; text without spaces (Chinese, Japanese, Thai) "
           "character by character.")
if shown:
    st.caption("Marked in yellow: " + ("the phrase of the current filter" if f.phrase else
                                       "the discovered phrases that predict the preferred response (Overview)"))
if row.get("status") != "ok":
    st.warning(f"Status {md_code(row.get('status'))}: {md_message(row.get('status_detail') or 'not scored')}.")
st.markdown("**In words:** " + in_words(row.get("text_prob"), row.get("mm_prob"), row.get("sfc"), row.get("weight"),
                                         threshold=audit.summary.get("threshold", 0.8)))
scores = {k: (round(v, 4) if isinstance(v, float) else v) for k in (
    "status", "status_detail", "text_prob", "mm_prob", "sfc", "weight", "is_shortcut", "text_margin", "mm_margin",
    "cue_margin", "lexical_margin", "prompt_blind_margin", "fold", "source", "sample_id") if k in row
    for v in [row.get(k)]}
s1, s2, s3 = st.columns(3)
s1.markdown("**Scores**")
s1.json(scores)
s2.markdown("**Cue values** (chosen - rejected; hover for what each counts)")
helps = {c["name"]: c.get("help", "") for c in audit.summary.get("cues", [])}
for name in audit.cues:
    v = row.get(f"cue_{name}")
    s2.markdown(f"{md_code(name)} {'n/a' if v is None else f'{v:+.3g}'}", help=helps.get(name) or None)
s3.markdown("**Your columns**")
own = {c: row.get(c) for c in audit.meta_columns if row.get(c) is not None}
if own:
    s3.json(own)
else:
    s3.caption("none beyond the pairs table")
