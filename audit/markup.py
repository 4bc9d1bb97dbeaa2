"""Data shown as text where it reaches Markdown or HTML (the app's pages, the data card): a prompt, an
answer, a column name or a URL parameter can hold a link, an image, a heading or raw HTML that a
renderer would act on (an image link alone makes the browser fetch a URL of the data's choosing).

`md_text` for running text and table cells, `md_code` for a value in a code span, `md_message` for a
message of ours that quotes data (a warning, an error), `md_fence` for a block in a code fence,
`html_text` (the standard library's `html.escape`) inside HTML."""

from __future__ import annotations

import html
import re

# CommonMark (section 2.4) lets every ASCII punctuation character be backslash-escaped, and an escaped
# character is always literal text: escaping all of them leaves no link, image, heading, list, table
# cell, emphasis, code span, HTML tag or entity to form, nor Streamlit's own syntax (`:red[...]`,
# `$...$` maths). GFM's bare links (`http://...`, `www.host`, `name@host.org`) are found in the text
# after its escapes are read (remark-gfm does so), so a word joiner (U+2060, zero width) breaks each.
_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")
_BARE_LINK = re.compile(r"(?i)(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)")
_LONGEST_TICKS = re.compile(r"`+")
_INDENT = re.compile(r"^[ \t]+")


def _escape(s: str) -> str:
    return _PUNCT.sub(r"\\\1", _BARE_LINK.sub("\u2060", s))


def md_text(text, inline: bool = False) -> str:
    """`text` as literal Markdown text. Line breaks stay line breaks (hard breaks) and a line's indent
    stays (as no-break spaces, which never start a code block); `inline` puts it on one line instead
    (whitespace collapsed), as a table cell or a list item needs."""
    s = "" if text is None else str(text)
    if inline:
        return _escape(" ".join(s.split()))
    lines = s.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "  \n".join(_INDENT.sub(lambda m: "\u00a0" * len(m.group().expandtabs(4)), _escape(line))
                       for line in lines)


def md_message(text) -> str:
    """A message of ours that may quote data (a warning, an error), on one line: its code spans (`--rm`)
    stay code spans, whose content Markdown shows literally, and everything else is literal text. The
    spans are found as CommonMark finds them (a backtick run closed by the next run of the same length);
    a run that no run closes is escaped like any other character."""
    s = " ".join(str(text).split())
    runs = list(_LONGEST_TICKS.finditer(s))
    out, at, i = [], 0, 0
    while i < len(runs):
        n = len(runs[i].group())
        close = next((k for k in range(i + 1, len(runs)) if len(runs[k].group()) == n), None)
        if close is None:
            i += 1
            continue
        out += [_escape(s[at:runs[i].start()]), s[runs[i].start():runs[close].end()]]
        at, i = runs[close].end(), close + 1
    return "".join(out) + _escape(s[at:])


def md_code(text, table: bool = False) -> str:
    """`text` as one inline code span that it cannot close: delimited by more backticks than its longest
    run, on one line (a blank line would end the paragraph and the span). `table`: in a GFM table cell,
    where `|` must be escaped even inside code."""
    s = " ".join(str(text).split()) or " "
    ticks = "`" * (max((len(m) for m in _LONGEST_TICKS.findall(s)), default=0) + 1)
    pad = " " if s[0] == "`" or s[-1] == "`" else ""
    out = f"{ticks}{pad}{s}{pad}{ticks}"
    return out.replace("|", "\\|") if table else out


def md_fence(body: str, lang: str = "") -> list[str]:
    """A fenced code block around `body`, fenced with more backticks than any run inside it, so no line
    of `body` can close it."""
    ticks = "`" * max(3, max((len(m) for m in _LONGEST_TICKS.findall(body)), default=0) + 1)
    return [ticks + lang, *body.replace("\r\n", "\n").replace("\r", "\n").split("\n"), ticks]


def html_text(text, breaks: bool = False) -> str:
    """`text` as literal HTML text (`&`, `<`, `>` and quotes escaped). `breaks`: its line breaks become
    `<br>`, so the HTML holds no line break at all: inside Markdown a blank line ends an HTML block, and
    what follows it would be read as Markdown (an image link there is fetched)."""
    s = html.escape("" if text is None else str(text), quote=True)
    return s.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>") if breaks else s
