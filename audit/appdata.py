"""Data access for the audit app: filters, pages, aggregates, one pair, safe image reads, the word
diff of a pair, and the comparison of two audits. It reads precomputed audits lazily (polars scans);
it never scores."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

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


def _marked(tokens: list[str], text: str, phrases: list[str]) -> list[bool]:
    """Which tokens of `text` fall inside an occurrence of one of `phrases`."""
    from audit.probes.phrases import phrase_regex

    spans = [m.span() for p in phrases if p for m in re.finditer(phrase_regex(p), text)]
    out, at = [], 0
    for tok in tokens:
        out.append(not tok.isspace() and any(s < at + len(tok) and at < e for s, e in spans))
        at += len(tok)
    return out


def word_diff_html(rejected: str, chosen: str, highlight: list[str] | None = None) -> tuple[str, str]:
    """Word-level diff: (rejected with removed words struck in red, chosen with added words in green);
    words inside an occurrence of a `highlight` phrase are marked (yellow)."""
    a, b = re.findall(r"\S+|\s+", rejected or ""), re.findall(r"\S+|\s+", chosen or "")
    ma, mb = _marked(a, rejected or "", highlight or []), _marked(b, chosen or "", highlight or [])

    def esc(tokens, marks):
        return "".join(f'<mark style="background:#ffe066">{html_text(t, breaks=True)}</mark>' if m else
                       html_text(t, breaks=True) for t, m in zip(tokens, marks))

    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    left, right = [], []
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        ta, tb = esc(a[i1:i2], ma[i1:i2]), esc(b[j1:j2], mb[j1:j2])
        if op == "equal":
            left.append(ta)
            right.append(tb)
        else:
            if ta:
                left.append(f'<del style="background:#fdd;text-decoration:line-through">{ta}</del>')
            if tb:
                right.append(f'<ins style="background:#dfd;text-decoration:none">{tb}</ins>')
    return "".join(left), "".join(right)


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


def compare(a: Audit, b: Audit):
    """Headline deltas (b - a) and the pairs whose verdict (`is_shortcut`, or the text model's pick) changed."""
    import polars as pl

    keys = COMPARE_KEYS
    deltas = {k: {"a": a.summary.get(k), "b": b.summary.get(k),
                  "delta": (None if a.summary.get(k) is None or b.summary.get(k) is None
                            else b.summary[k] - a.summary[k])} for k in keys}
    cols = ["pair_id", "prompt", "text_prob", "is_shortcut", "sfc", "weight"]
    ja = a.scan.filter(pl.col("status") == schema.OK).select(cols)
    jb = b.scan.filter(pl.col("status") == schema.OK).select(cols[:1] + cols[2:])
    joined = ja.join(jb, on="pair_id", suffix="_b")
    changed = joined.filter((pl.col("is_shortcut") != pl.col("is_shortcut_b"))
                            | ((pl.col("text_prob") > 0.5) != (pl.col("text_prob_b") > 0.5))).collect()
    shared = int(joined.select(pl.len()).collect().item())
    return deltas, changed, shared
