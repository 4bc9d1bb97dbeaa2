"""Data access for the audit app: filters, pages, aggregates, one pair, safe image reads, the word
diff of a pair, and the comparison of two audits. It reads precomputed audits lazily (polars scans);
it never scores."""

from __future__ import annotations

import difflib
import html
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from audit import schema
from audit.errors import SourceError
from audit.images import image_roots, resolve_image

SORTABLE = ("text_prob", "mm_prob", "sfc", "weight", "text_margin", "mm_margin", "cue_margin", "text_loss", "mm_loss")
TABLE_COLUMNS = ("pair_id", "source", "status", "prompt", "chosen", "rejected", "text_prob", "mm_prob", "sfc", "weight",
                 "is_shortcut", "image_path")


@dataclass
class Filters:
    """The browse filters; they round-trip through the URL's query parameters."""

    sfc_min: float = 0.0
    sfc_max: float = 1.0
    shortcut: str = "any"      # any | yes | no
    cue: str = ""              # pairs where this cue differs between chosen and rejected
    source: str = ""
    status: str = ""
    q: str = ""                # text search over prompt and responses (case-insensitive, literal)
    phrase: str = ""           # pairs with this discovered phrase on one side only (summary.json `phrases`)
    sort: str = "text_prob"
    desc: bool = True

    def to_params(self) -> dict[str, str]:
        d = asdict(self)
        default = asdict(Filters())
        return {k: (str(int(v)) if isinstance(v, bool) else str(v)) for k, v in d.items() if v != default[k]}

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
                    if not 0.0 <= val <= 1.0:
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
        if f.sort not in SORTABLE:
            f.sort = "text_prob"
        return f


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
            from audit.probes.lexical import phrase_regex

            rx = phrase_regex(f.phrase)
            lf = lf.filter(pl.col("chosen").str.contains(rx).fill_null(False)
                           != pl.col("rejected").str.contains(rx).fill_null(False))
        if f.q:
            needle = f.q.lower()
            lf = lf.filter(pl.any_horizontal(pl.col(c).str.to_lowercase().str.contains(needle, literal=True)
                                             for c in ("prompt", "chosen", "rejected")))
        return lf.sort([f.sort, "pair_id"], descending=[f.desc, False], nulls_last=True)

    def count(self, f: Filters) -> int:
        import polars as pl

        return int(self.filtered(f).select(pl.len()).collect().item())

    def page(self, f: Filters, page: int, size: int):
        cols = [c for c in TABLE_COLUMNS if c in self.schema]
        return self.filtered(f).select(cols).slice(page * size, size).collect()

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
    from audit.probes.lexical import phrase_regex

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
        return "".join(f'<mark style="background:#ffe066">{html.escape(t)}</mark>' if m else html.escape(t)
                       for t, m in zip(tokens, marks))

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


def compare(a: Audit, b: Audit):
    """Headline deltas (b - a) and the pairs whose verdict (`is_shortcut`, or the text model's pick) changed."""
    import polars as pl

    keys = ("text_acc", "mm_acc", "cue_acc", "shortcut_rate", "sfd", "sfc_mean")
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
