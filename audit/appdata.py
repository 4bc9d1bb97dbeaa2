"""Data access for the audit app: filters, pages, aggregates, one pair, safe image reads, the word
diff of a pair, and the comparison of two audits. It reads precomputed audits lazily (polars scans);
it never scores."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import regex

from audit import schema
from audit.errors import SourceError
from audit.images import image_roots, resolve_image
from audit.markup import html_text

SORTABLE = ("text_prob", "mm_prob", "sfc", "weight", "text_margin", "mm_margin", "cue_margin", "text_loss", "mm_loss")
# Scores first: they stay on screen however long the texts are.
TABLE_COLUMNS = ("pair_id", "text_prob", "mm_prob", "sfc", "weight", "is_shortcut", "status", "source", "prompt",
                 "chosen", "rejected", "image_path")


# Query parameters whose value is a number, with the range a value must fall in (anything else falls
# back to the default: a hand-edited URL never breaks a page).
_BOUNDS = {"w_min": (0.0, float("inf")), "w_max": (0.0, float("inf"))}
CUE_SIDES = ("any", "chosen", "rejected")
TAG_FILTERS = ("tagged", "untagged")          # besides the tags themselves (audit.tags.TAGS)
SELECTIONS = schema.APP_SELECTIONS           # AUDIT_DIR/app_selections/<id>.json: a chart selection's pair ids
_SEL_ID = re.compile(r"^[0-9a-f]{12}$")


@dataclass
class Filters:
    """The browse filters; they round-trip through the URL's query parameters (only the ones that differ
    from the default appear there, under these names)."""

    sfc_min: float = 0.0
    sfc_max: float = 1.0
    shortcut: str = "any"      # any | yes | no  (is_shortcut: text_prob >= the audit's threshold)
    cue: str = ""              # pairs where this cue differs between chosen and rejected
    cue_side: str = "any"      # with `cue`: the cue on the chosen side (value > 0) or on the rejected side (< 0)
    source: str = ""
    status: str = ""
    q: str = ""                # text search over prompt and responses (case-insensitive, literal)
    phrase: str = ""           # pairs with this discovered phrase on one side only (summary.json `phrases`)
    tp_min: float = 0.0        # text_prob range
    tp_max: float = 1.0
    mm_min: float = 0.0        # mm_prob range
    mm_max: float = 1.0
    w_min: float = 0.0         # weight range
    w_max: float = float("inf")
    tag: str = ""              # a tag (audit.tags.TAGS), `tagged` or `untagged`
    sel: str = ""              # a saved chart selection (SELECTIONS)
    meta_col: str = ""         # one of the dataset's own columns (annotator, task, ...; a slice of the audit) ...
    meta_val: str = ""         # ... equal to this value
    sort: str = "text_prob"
    desc: bool = True

    def to_params(self) -> dict[str, str]:
        d = asdict(self)
        default = asdict(Filters())
        return {k: (str(int(v)) if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v))
                for k, v in d.items() if v != default[k]}

    @classmethod
    def from_params(cls, params: dict) -> "Filters":
        """Parse query parameters; a malformed value falls back to its default (never an error page)."""
        f = cls()
        for fld in fields(cls):
            if fld.name not in params:
                continue
            raw = params[fld.name]
            raw = raw[0] if isinstance(raw, list) and raw else raw
            try:
                if fld.type in ("float", float):
                    val = float(raw)
                    lo, hi = _BOUNDS.get(fld.name, (0.0, 1.0))
                    if not lo <= val <= hi:
                        continue
                elif fld.type in ("bool", bool):
                    val = str(raw) in ("1", "true", "True")
                else:
                    val = str(raw)[:200]
            except (TypeError, ValueError):
                continue
            setattr(f, fld.name, val)
        if f.shortcut not in ("any", "yes", "no"):
            f.shortcut = "any"
        if f.cue_side not in CUE_SIDES:
            f.cue_side = "any"
        if f.sort not in SORTABLE:
            f.sort = "text_prob"
        if f.sel and not _SEL_ID.match(f.sel):
            f.sel = ""
        return f

    def active(self) -> list[str]:
        """The filters that differ from the default, as short readable phrases (sort order aside)."""
        d, default = self.to_params(), Filters().to_params()
        return [f"{k}={v}" for k, v in d.items() if k not in ("sort", "desc") and default.get(k) != v]


MARK = '<mark style="background:#ffe066">'        # the yellow of the Pair view's marked phrases


def match_spans(text: str, phrases=(), needles=()) -> list[tuple[int, int]]:
    """Where `phrases` (their words in order, as the phrase filter finds them) and `needles` (literal, any
    case, as the search filter finds them) occur in `text`: (start, end) spans, sorted, overlaps merged."""
    from audit.probes.phrases import phrase_regex

    found = sorted([m.span() for p in phrases if p for m in re.finditer(phrase_regex(p), text)]
                   + [m.span() for n in needles if n for m in re.finditer(re.escape(n), text, re.IGNORECASE)])
    spans: list[tuple[int, int]] = []
    for s, e in found:
        if spans and s <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], e))
        elif e > s:
            spans.append((s, e))
    return spans


def _marked_part(text: str, spans: list[tuple[int, int]], lo: int, hi: int) -> str:
    """`text[lo:hi]` as literal HTML, the parts of it inside `spans` marked."""
    out, at = [], lo
    for s, e in spans:
        s, e = max(s, lo), min(e, hi)
        if s < e:
            out += [html_text(text[at:s], breaks=True), MARK + html_text(text[s:e], breaks=True) + "</mark>"]
            at = e
    return "".join(out) + html_text(text[at:hi], breaks=True)


def _word_cut(text: str, at: int, reach: int = 40, forward: bool = False) -> int:
    """A place to cut `text` near `at` between words: the nearest space within `reach` characters before
    it (after it, `forward`), else `at` itself."""
    j = text.find(" ", at, at + reach) if forward else text.rfind(" ", max(at - reach, 0), at)
    return j if j > 0 else at


def marked_html(text, phrases=(), needles=(), limit: int | None = None, context: int = 80) -> str:
    """`text` as literal HTML (every character escaped, line breaks as `<br>`, no line break left) with
    the occurrences of `phrases` and `needles` marked. Past `limit` characters the rest is folded into a
    `<details>` that opens in place; a first mark inside the fold is also shown before it, with `context`
    characters either side, so a clipped answer still shows why it matched."""
    text = "" if text is None else str(text)
    spans = match_spans(text, phrases, needles)
    if not limit or len(text) <= limit:
        return _marked_part(text, spans, 0, len(text))
    cut = _word_cut(text, limit)
    out = _marked_part(text, spans, 0, cut)
    if spans and spans[0][0] >= cut:
        lo = max(_word_cut(text, max(spans[0][0] - context, cut)), cut)
        hi = min(_word_cut(text, spans[0][1] + context, forward=True), len(text))
        out += " … " + _marked_part(text, spans, lo, hi) + (" …" if hi < len(text) else "")
    return (f"{out}<details><summary>{len(text) - cut:,} more characters</summary>"
            f"{_marked_part(text, spans, cut, len(text))}</details>")


class Audit:
    """One audit folder, opened lazily."""

    def __init__(self, audit_dir: Path) -> None:
        import polars as pl

        self.dir = Path(audit_dir)
        table, summary = self.dir / "audited.parquet", self.dir / "summary.json"
        if not table.is_file() or not summary.is_file():
            raise SourceError(f"`{self.dir}` is not an audit folder (audited.parquet and summary.json are missing); "
                              "run `shortcut-audit score SOURCE -o AUDIT_DIR` first")
        try:
            self.summary = json.loads(summary.read_text(encoding="utf-8"))
            self.scan = pl.scan_parquet(table)
            self.schema = self.scan.collect_schema()
        except Exception as e:
            raise SourceError(f"`{self.dir}` cannot be read ({type(e).__name__}: {e}); re-run `score`") from None
        missing = [c for c in ("pair_id", "status", "text_prob", "sfc") if c not in self.schema]
        if missing:
            raise SourceError(f"`{table}` lacks {', '.join(missing)}: not an audited table")
        # The interpretable cues the audit computed (not ground-truth columns such as `cue_p`).
        self.cues = [c["name"] for c in self.summary.get("cues", []) if f"cue_{c['name']}" in self.schema]
        self.pairs_dir = schema.pairs_dir_of(self.dir, self.summary)
        self.roots = image_roots(self.pairs_dir)
        # The dataset's own columns (annotator, task, subset, ...: text, boolean or integer), neither the pairs
        # contract nor an audit output, and the image folder where the audit sliced by it (`audit.probes.slices`).
        from audit.probes.slices import FOLDER, _audit_column

        core = set(schema.PAIRS_COLUMNS) | {"extra_json", "src_image_path"}
        self.meta_columns = [c for c, t in self.schema.items()
                             if c not in core and not _audit_column(c) and c != "is_shortcut"
                             and (t == pl.String or t == pl.Boolean or t.is_integer())]
        if FOLDER in ((self.summary.get("slices") or {}).get("columns") or []):
            self.meta_columns.append(FOLDER)

    # ---- tags and selections (the only files the app writes into an audit folder) --------------
    def tags(self) -> dict[str, str]:
        from audit.tags import read_tags

        return read_tags(self.dir)

    def set_tags(self, pair_ids: list[str], tag: str | None) -> dict[str, str]:
        from audit.tags import set_tags

        return set_tags(self.dir, pair_ids, tag)

    def save_selection(self, pair_ids: list[str]) -> str:
        """Store a chart selection's pair ids; returns its id for the URL (`sel=`): the same pairs, the same id."""
        import hashlib

        from audit.io import write_json_atomic

        ids = sorted({str(p) for p in pair_ids})
        sid = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]
        path = self.dir / SELECTIONS / f"{sid}.json"
        if not path.is_file():
            write_json_atomic(path, {"pair_ids": ids})
        return sid

    def selection(self, sid: str) -> list[str]:
        if not _SEL_ID.match(sid or ""):
            return []
        try:
            return [str(p) for p in json.loads((self.dir / SELECTIONS / f"{sid}.json").read_text())["pair_ids"]]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def _meta(self, col: str):
        """A metadata column as text, a missing value as `(missing)` (as the slices name it); the image
        folder as each path's folder."""
        import polars as pl

        from audit.probes.slices import FOLDER, MISSING

        if col == FOLDER:
            path = "src_image_path" if "src_image_path" in self.schema else "image_path"
            return pl.col(path).str.replace(r"[\\/][^\\/]*$", "")
        return pl.col(col).cast(pl.String).fill_null(MISSING)

    def _meta_match(self, col: str, value: str):
        """Rows whose metadata `col` is `value`; an image folder matches as the slices name it (the end of
        the folder path, below the folders' common part)."""
        from audit.probes.slices import FOLDER

        e = self._meta(col)
        return (e == value) | e.str.ends_with("/" + value) if col == FOLDER else e == value

    def meta_values(self, col: str, limit: int = 200) -> list[str]:
        """The distinct values of a metadata column (the most common first), for a select box."""
        if col not in self.meta_columns:
            return []
        from audit.probes.slices import FOLDER, _folders

        df = (self.scan.select(self._meta(col).alias("v")).group_by("v").len()
              .sort(["len", "v"], descending=[True, False]).head(limit).collect())
        values = [v for v in df["v"].to_list() if v is not None]
        return [v for v in _folders([v + "/x" for v in values]) if v] if col == FOLDER else values

    def slice_stats(self, f: Filters) -> dict:
        """Per-slice statistics of the filtered pairs (scored rows): accuracies, mean SFC and weight."""
        import polars as pl

        lf = self.filtered(f).filter(pl.col("status") == schema.OK)
        cols = self.schema
        aggs = [pl.len().alias("n")]
        for name, col in (("text_acc", "text_margin"), ("mm_acc", "mm_margin")):
            if col in cols:
                aggs.append(((pl.col(col) > 0).cast(pl.Float64) + 0.5 * (pl.col(col) == 0).cast(pl.Float64))
                            .mean().alias(name))
        for name, col in (("sfc_mean", "sfc"), ("weight_mean", "weight"), ("text_prob_mean", "text_prob")):
            if col in cols:
                aggs.append(pl.col(col).mean().alias(name))
        if "is_shortcut" in cols:
            aggs.append(pl.col("is_shortcut").cast(pl.Float64).mean().alias("shortcut_rate"))
        return lf.select(aggs).collect().row(0, named=True)

    # ---- filtering -----------------------------------------------------------------------------
    def filtered(self, f: Filters):
        import polars as pl

        lf = self.scan
        if f.sfc_min > 0.0 or f.sfc_max < 1.0:
            lf = lf.filter(pl.col("sfc").is_between(f.sfc_min, f.sfc_max))
        if f.shortcut != "any":
            lf = lf.filter(pl.col("is_shortcut") == (f.shortcut == "yes"))
        if f.cue and f.cue in self.cues:
            lf = lf.filter(pl.col(f"cue_{f.cue}") != 0)
        if f.source:
            lf = lf.filter(pl.col("source") == f.source)
        if f.status:
            lf = lf.filter(pl.col("status") == f.status)
        if f.phrase:
            from audit.probes.phrases import phrase_regex

            rx = phrase_regex(f.phrase)
            lf = lf.filter(pl.col("chosen").str.contains(rx).fill_null(False)
                           != pl.col("rejected").str.contains(rx).fill_null(False))
        if f.cue and f.cue in self.cues and f.cue_side != "any":
            lf = lf.filter(pl.col(f"cue_{f.cue}") > 0 if f.cue_side == "chosen" else pl.col(f"cue_{f.cue}") < 0)
        for col, lo, hi, top in (("text_prob", f.tp_min, f.tp_max, 1.0), ("mm_prob", f.mm_min, f.mm_max, 1.0),
                                 ("weight", f.w_min, f.w_max, float("inf"))):
            if (lo > 0.0 or hi < top) and col in self.schema:
                lf = lf.filter(pl.col(col).is_between(lo, hi))
        if f.tag:
            from audit.tags import TAGS

            tags = self.tags()
            if f.tag in TAGS:
                lf = lf.filter(pl.col("pair_id").is_in([p for p, t in tags.items() if t == f.tag]))
            elif f.tag in TAG_FILTERS:
                inside = pl.col("pair_id").is_in(list(tags))
                lf = lf.filter(inside if f.tag == "tagged" else ~inside)
        if f.sel:
            lf = lf.filter(pl.col("pair_id").is_in(self.selection(f.sel)))
        if f.meta_col and f.meta_col in self.meta_columns:
            lf = lf.filter(self._meta_match(f.meta_col, f.meta_val))
        if f.q:
            needle = f.q.lower()
            lf = lf.filter(pl.any_horizontal(pl.col(c).str.to_lowercase().str.contains(needle, literal=True)
                                             for c in ("prompt", "chosen", "rejected")))
        return lf.sort([f.sort, "pair_id"], descending=[f.desc, False], nulls_last=True)

    def count(self, f: Filters) -> int:
        import polars as pl

        return int(self.filtered(f).select(pl.len()).collect().item())

    def page(self, f: Filters, page: int, size: int):
        """One page of the filtered pairs, with their tag (if any)."""
        from audit.tags import tag_column

        cols = [c for c in TABLE_COLUMNS if c in self.schema]
        df = self.filtered(f).select(cols).slice(page * size, size).collect()
        return df.with_columns(tag_column(self.tags()))

    def neighbours(self, f: Filters, pair_id: str) -> tuple[str | None, str | None, int | None, int]:
        """(previous id, next id, position, total) of `pair_id` within the filtered, sorted pairs."""
        import polars as pl

        ids = self.filtered(f).select("pair_id").with_row_index("i")
        total = self.count(f)
        hit = ids.filter(pl.col("pair_id") == pair_id).collect()
        if hit.height == 0:
            return None, None, None, total
        i = int(hit["i"][0])
        start = max(i - 1, 0)
        around = ids.slice(start, 3).collect()["pair_id"].to_list()
        at = i - start                                   # where `pair_id` sits in the window
        prev = around[at - 1] if at > 0 else None
        nxt = around[at + 1] if at + 1 < len(around) else None
        return prev, nxt, i, total

    def pair(self, pair_id: str) -> dict | None:
        import polars as pl

        df = self.scan.filter(pl.col("pair_id") == pair_id).head(1).collect()
        return df.row(0, named=True) if df.height else None

    def image_bytes(self, image_path: str | None) -> bytes | None:
        """The image of a row, or None: any path outside the pairs folder and its image roots is refused,
        and so is a file that is not an image (a crafted report could name `/` as a root)."""
        if not image_path:
            return None
        try:
            data = resolve_image(self.pairs_dir, image_path, allowed_roots=self.roots).read_bytes()
        except (PermissionError, OSError):
            return None
        from audit.images import check_image

        return data if check_image(data, 64_000_000, full=False)[0] == schema.OK else None

    # ---- aggregates ----------------------------------------------------------------------------
    def overview(self, bins: int = 40, sample: int = 20000) -> dict:
        import polars as pl

        ok = self.scan.filter(pl.col("status") == schema.OK)
        hist = {}
        for col in ("sfc", "weight"):
            vals = ok.select(col).collect()[col].drop_nulls().to_numpy()
            lo, hi = (0.0, 1.0) if col == "sfc" else (0.0, float(vals.max()) if vals.size else 1.0)
            counts, edges = np.histogram(vals, bins=bins, range=(lo, max(hi, lo + 1e-9)))
            hist[col] = {"counts": counts.tolist(), "edges": edges.tolist()}
        n_ok = int(ok.select(pl.len()).collect().item())
        step = max(1, n_ok // sample)
        scatter = (ok.select("pair_id", "text_prob", "mm_prob", "is_shortcut").gather_every(step).collect())
        status = dict(self.scan.group_by("status").len().sort("status").collect().iter_rows())
        return {"summary": self.summary, "hist": hist, "scatter": scatter, "status": status}


# A token: one character of a script written without spaces (Chinese, Japanese, Thai, ...: compared
# character by character rather than as one token per sentence), a run of other letters and digits
# (combining marks included: `regex` reads Unicode words, `re` splits Devanagari), a run of spaces, one
# punctuation mark, or any other single character (a symbol, an emoji), which is compared like a word.
_UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}"
_TOKEN = regex.compile(rf"[{_UNSPACED}]|[^\W{_UNSPACED}]+|\s+|\p{{P}}|.", regex.DOTALL)
_PUNCT = regex.compile(r"\p{P}")
_DEL = ('<del style="background:#fdd;text-decoration:line-through">', "</del>")
_INS = ('<ins style="background:#dfd;text-decoration:none">', "</ins>")


def _marked(tokens: list[str], text: str, phrases: list[str]) -> list[bool]:
    """Which tokens of `text` fall inside an occurrence of one of `phrases`."""
    spans = match_spans(text, phrases)
    out, at = [], 0
    for tok in tokens:
        out.append(not tok.isspace() and any(s < at + len(tok) and at < e for s, e in spans))
        at += len(tok)
    return out


@dataclass
class _Unit:
    """A word as the diff compares it (`key`: case-folded; "" for what precedes the first word) and as it
    is shown: the word with the punctuation after it (`body`: tokens and whether a phrase marks them),
    then its spaces (`tail`)."""

    key: str
    body: list = field(default_factory=list)
    tail: str = ""

    def html(self, tail: bool = True) -> str:
        body = "".join(f'<mark style="background:#ffe066">{html_text(t, breaks=True)}</mark>' if m else
                       html_text(t, breaks=True) for t, m in self.body)
        return body + (html_text(self.tail, breaks=True) if tail else "")

    def __len__(self) -> int:
        return sum(len(t) for t, _ in self.body) + len(self.tail)


def _units(text: str, phrases: list[str]) -> list[_Unit]:
    tokens = [m.group() for m in _TOKEN.finditer(text)]
    units: list[_Unit] = []
    for tok, mark in zip(tokens, _marked(tokens, text, phrases)):
        space, punct = tok.isspace(), bool(_PUNCT.fullmatch(tok))
        if not units or not (space or punct):
            units.append(_Unit("" if space or punct else tok.casefold()))
        u = units[-1]
        if space:
            u.tail += tok
        else:
            if u.tail:                        # punctuation after a space stays with the word before it
                u.body.append((u.tail, False))
                u.tail = ""
            u.body.append((tok, mark))
    return units


def _side_html(runs: list[tuple[bool, list[_Unit]]], tag: tuple[str, str], limit: int | None) -> str:
    """One side of the diff: unchanged runs as written, changed runs inside `tag` (their last spaces
    outside it); with `limit`, the words that start within the first `limit` characters, then `…`."""
    out, used = [], 0
    for changed, units in runs:
        shown = []
        for u in units:
            if limit is not None and used >= limit:
                break
            shown.append(u)
            used += len(u)
        if shown and changed:
            out.append(tag[0] + "".join(u.html() for u in shown[:-1]) + shown[-1].html(tail=False) + tag[1]
                       + html_text(shown[-1].tail, breaks=True))
        elif shown:
            out.append("".join(u.html() for u in shown))
        if len(shown) < len(units):
            return "".join(out) + "…"
    return "".join(out)


@dataclass
class WordDiff:
    """The word diff of a pair's two answers, computed once and shown whole or as its first part."""

    rejected: list[tuple[bool, list[_Unit]]]      # runs of words: (changed, words)
    chosen: list[tuple[bool, list[_Unit]]]

    def html(self, limit: int | None = None) -> tuple[str, str]:
        """(rejected with removed words struck in red, chosen with added words in green); `limit`: only
        the words that start within the first `limit` characters of each side, then `…`."""
        return _side_html(self.rejected, _DEL, limit), _side_html(self.chosen, _INS, limit)


def word_diff(rejected: str, chosen: str, highlight: list[str] | None = None) -> WordDiff:
    """Words are compared case- and punctuation-insensitively and shown as written; text without spaces
    (Chinese, Japanese, Thai) is compared character by character. Words inside an occurrence of a
    `highlight` phrase are marked (yellow)."""
    a, b = _units(rejected or "", highlight or []), _units(chosen or "", highlight or [])
    sm = difflib.SequenceMatcher(a=[u.key for u in a], b=[u.key for u in b], autojunk=False)
    ops = sm.get_opcodes()
    return WordDiff([(op != "equal", a[i1:i2]) for op, i1, i2, _, _ in ops],
                    [(op != "equal", b[j1:j2]) for op, _, _, j1, j2 in ops])


def word_diff_html(rejected: str, chosen: str, highlight: list[str] | None = None,
                   limit: int | None = None) -> tuple[str, str]:
    """`word_diff(...).html(limit)`: the diff of two answers as HTML, their text escaped."""
    return word_diff(rejected, chosen, highlight).html(limit)


def _prefers(p: float) -> str:
    """The answer a probability of `chosen` prefers, as the page shows it (two decimals)."""
    r = round(p, 2)
    return "chosen" if r > 0.5 else "rejected" if r < 0.5 else "neither"


def _said(p: float | None, who: str, name: str) -> str:
    if p is None:
        return f"no {who} score"
    side = _prefers(p)
    verb = "cannot tell the answers apart" if side == "neither" else f"prefers the {side} answer"
    return f"a {who} model {verb} ({name} = {p:.2f})"


# What the two sides' preferences make of a pair: (text side, multimodal side; None: no multimodal score).
_VERDICT = {
    ("chosen", "chosen"): "both sides get this pair right",
    ("rejected", "chosen"): "the text alone gets this pair wrong where the image gets it right: a pair that "
                            "teaches looking",
    ("chosen", "rejected"): "the text alone gets this pair right and the multimodal side gets it wrong",
    ("rejected", "rejected"): "both sides prefer the rejected answer: worth checking the label",
    ("chosen", None): "the text alone gets this pair right",
    ("rejected", None): "the text alone gets this pair wrong",
    ("neither", "chosen"): "the image gets it right where the text alone cannot tell",
    ("neither", "rejected"): "the multimodal side gets it wrong and the text alone cannot tell",
    ("chosen", "neither"): "the text alone gets this pair right and the multimodal side cannot tell",
    ("rejected", "neither"): "the text alone gets this pair wrong and the multimodal side cannot tell",
    ("neither", "neither"): "neither side can tell the answers apart",
}


def _sfc_words(sfc: float) -> str:
    # SFC = L_t / (L_mm + L_t) is above 1/2 exactly when mm_prob > text_prob: it compares the two sides.
    if sfc > 0.6:
        return "high: the multimodal side does better on this pair than the text alone"
    if sfc < 0.4:
        return "low: the text alone does better on this pair than the multimodal side"
    return "middling: both sides do about as well on this pair"


def in_words(text_prob: float | None, mm_prob: float | None, sfc: float | None = None,
             weight: float | None = None, threshold: float = 0.8) -> str:
    """The Pair view's reading of one pair's scores, worded from the probabilities themselves so that it
    never says what they deny: which answer each side prefers (as shown, two decimals), what that makes
    of the pair (a shortcut pair only when `text_prob >= threshold`), and SFC as the comparison of the
    two sides' losses that it is. A missing or NaN value (a text-only audit, an unscored row) is absent."""
    t, m, sfc, weight = (None if v is None or v != v else float(v) for v in (text_prob, mm_prob, sfc, weight))
    sides = f"{_said(t, 'text-only', 'text_prob')}; {_said(m, 'multimodal', 'mm_prob')}"
    verdict = _VERDICT.get((_prefers(t), None if m is None else _prefers(m))) if t is not None else None
    if verdict and t >= threshold:
        verdict = f"a shortcut pair (text_prob >= {threshold:.2f}): {verdict}"
    words = sides + "." + (f" {verdict[0].upper()}{verdict[1:]}." if verdict else "")
    if sfc is not None:
        words += f" SFC {sfc:.2f} ({_sfc_words(sfc)})" + (f", weight {weight:.2f}." if weight is not None else ".")
    return words


# Headline keys compared, and whether a rise is good news for the data: a lower text-only accuracy or
# shortcut rate means fewer text shortcuts; a higher multimodal accuracy, a model that looks.
COMPARE_KEYS = ("text_acc", "mm_acc", "cue_acc", "shortcut_rate", "sfd", "sfc_mean")
RISE_IS_GOOD = {"text_acc": False, "mm_acc": True, "cue_acc": False, "shortcut_rate": False, "sfd": False,
                "sfc_mean": True}


def config_diff(a: Audit, b: Audit) -> list[dict]:
    """The settings that differ between two audits (what can explain changed verdicts)."""
    ca, cb = a.summary.get("config") or {}, b.summary.get("config") or {}
    skip = {"out", "cache_dir"}
    return [{"setting": k, "A": str(ca.get(k)), "B": str(cb.get(k))} for k in sorted(set(ca) | set(cb))
            if k not in skip and ca.get(k) != cb.get(k)]


def compare_row(key: str, a: float | None, b: float | None) -> dict:
    """One headline number of two audits: both values and the change (b - a) as shown (percentages and
    their change in points; SFD and mean SFC as numbers), and whether the change is good news for the
    data (`RISE_IS_GOOD`): None when it rounds to zero as shown or a side lacks the number."""
    pct = key not in ("sfd", "sfc_mean")
    scale, digits, unit = (100, 1, " pts") if pct else (1, 3 if key == "sfc_mean" else 1, "")

    def shown(v):
        return "n/a" if v is None else f"{100 * v:.1f}%" if pct else f"{v:.{digits}f}"

    row = {"a": a, "b": b, "delta": None, "a_text": shown(a), "b_text": shown(b), "delta_text": None, "better": None}
    if a is None or b is None:
        return row
    row["delta"] = b - a
    change = round(scale * (b - a), digits)
    row["delta_text"] = f"{change:+.{digits}f}{unit}" if change else f"{0:.{digits}f}{unit}"
    row["better"] = None if not change else (change > 0) == RISE_IS_GOOD[key]
    return row


def compare(a: Audit, b: Audit):
    """Headline numbers of both audits (`compare_row`), and the pairs whose verdict (`is_shortcut`, or
    the text model's pick) changed, largest change of `text_prob` first, then by `pair_id`: the same
    order on every call, so a row picked on screen is the row read back."""
    import polars as pl

    deltas = {k: compare_row(k, a.summary.get(k), b.summary.get(k)) for k in COMPARE_KEYS}
    cols = ["pair_id", "prompt", "text_prob", "is_shortcut", "sfc", "weight"]
    ja = a.scan.filter(pl.col("status") == schema.OK).select(cols)
    jb = b.scan.filter(pl.col("status") == schema.OK).select(cols[:1] + cols[2:])
    joined = ja.join(jb, on="pair_id", suffix="_b")
    change = (pl.col("text_prob_b") - pl.col("text_prob")).alias("text_prob_change")
    changed = (joined.filter((pl.col("is_shortcut") != pl.col("is_shortcut_b"))
                             | ((pl.col("text_prob") > 0.5) != (pl.col("text_prob_b") > 0.5)))
               .with_columns(change).sort([change.abs(), "pair_id"], descending=[True, False])
               .select("pair_id", "prompt", "text_prob", "text_prob_b", "text_prob_change", "is_shortcut",
                       "is_shortcut_b", "sfc", "sfc_b", "weight", "weight_b").collect())
    shared = int(joined.select(pl.len()).collect().item())
    return deltas, changed, shared
