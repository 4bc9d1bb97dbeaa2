"""Tags a person puts on pairs while reading an audit: `exclude` (drop it from exports), `keep` (never
prune it), `review` (look again later) and `swap` (the label is wrong: the rejected answer is the
better one). They live beside the audit in `tags.parquet` (pair_id, tag, updated), survive a re-score
(`score --overwrite` carries the file over; pair ids are content hashes, so a tag follows its pair),
and `export --tags` honours them."""

from __future__ import annotations

import time
from pathlib import Path

TAGS_FILE = "tags.parquet"
PAIR_ID_DIGITS = 16      # `pair_id`: 8 bytes of hash, in hex
TAGS = ("exclude", "keep", "review", "swap")
TAG_HELP = {
    "exclude": "leave this pair out of every export (`export --tags`)",
    "keep": "never prune this pair (`export --mode prune --tags`), whatever its weight",
    "review": "look at it again later (exported unchanged, with its tag)",
    "swap": "the label is wrong: export it with chosen and rejected swapped",
}


def tags_path(audit_dir: Path) -> Path:
    return Path(audit_dir) / TAGS_FILE


def _read(audit_dir: Path) -> dict[str, tuple[str, str]]:
    """pair_id -> (tag, updated). A damaged file is an error that names it."""
    import polars as pl

    from audit.errors import SourceError

    path = tags_path(audit_dir)
    if not path.is_file():
        return {}
    try:
        df = pl.read_parquet(path, columns=["pair_id", "tag", "updated"])
    except Exception as e:
        raise SourceError(f"`{path}` cannot be read ({type(e).__name__}: {e}); delete it to start the tags afresh") from None
    kind = df.schema["pair_id"]
    if kind.is_integer():
        # A pair id is 16 hex digits; one of only decimal digits read as a number lost its leading zeros.
        df = df.with_columns(pl.col("pair_id").cast(pl.String).str.zfill(PAIR_ID_DIGITS))
    elif kind != pl.String:
        raise SourceError(f"`{path}`: column `pair_id` holds {kind}, expected text (the audit's pair ids, "
                          f"{PAIR_ID_DIGITS} hex digits); write it as strings, or delete the file to start the tags afresh")
    return {p: (t, u) for p, t, u in df.iter_rows() if t in TAGS and p}


def read_tags(audit_dir: Path) -> dict[str, str]:
    """pair_id -> tag; empty when the audit has no tags yet."""
    return {p: t for p, (t, _) in _read(audit_dir).items()}


def tag_column(tags: dict[str, str]):
    """A polars expression: each row's tag by its `pair_id` (null when untagged), named `tag`."""
    import polars as pl

    return pl.col("pair_id").replace_strict(tags, default=None, return_dtype=pl.String).alias("tag")


def set_tags(audit_dir: Path, pair_ids: list[str], tag: str | None) -> dict[str, str]:
    """Tag `pair_ids` with `tag` (None clears their tags); the file is rewritten atomically under a lock,
    so two browser tabs tagging at once do not lose each other's tags. Returns the new tags."""
    import polars as pl
    from filelock import FileLock

    from audit.errors import ConfigError
    from audit.io import atomic_path

    if tag is not None and tag not in TAGS:
        raise ConfigError(f"unknown tag `{tag}`; choose one of {', '.join(TAGS)}")
    path = tags_path(audit_dir)
    with FileLock(str(path) + ".lock"):
        rows = _read(audit_dir)
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for pid in map(str, pair_ids):
            if tag is None:
                rows.pop(pid, None)
            else:
                rows[pid] = (tag, now)
        df = pl.DataFrame([(p, t, u) for p, (t, u) in rows.items()], orient="row",
                          schema={"pair_id": pl.String, "tag": pl.String, "updated": pl.String}).sort("pair_id")
        with atomic_path(path) as tmp:
            df.write_parquet(tmp)
    return {p: t for p, (t, _) in rows.items()}


def tag_counts(tags: dict[str, str]) -> dict[str, int]:
    return {t: n for t in TAGS if (n := sum(1 for v in tags.values() if v == t))}


def swap_pairs(frame, flag, *, threshold: float, cue_columns: set[str]):
    """`frame` with the rows where `flag` is true swapped: chosen and rejected exchanged, and every column
    that depends on which side is chosen flipped, recomputed from the flipped margins, or dropped, by
    the column contract's rules (`audit.schema.swap_rule`). `threshold`: the audit's `is_shortcut` one."""
    import polars as pl

    from audit import schema
    from audit.sources import all_formats

    dropped = {c for f in all_formats() for c in f.oriented}
    cols = set(frame.columns)
    rules = {c: r for c in frame.columns if (r := schema.swap_rule(c, cols, cue_columns, dropped)) is not None}
    frame = frame.with_columns(pl.Series("_swap", flag, dtype=pl.Boolean).fill_null(False))

    def flipped(c: str, rule: tuple):
        col = pl.col(c)
        if rule[0] == "loss":           # -log sigma(-m) = softplus(m), stably
            m = pl.col(rule[1])
            return pl.max_horizontal(m, pl.lit(0.0)) + (-m.abs()).exp().log1p()
        return {"exchange": lambda: pl.col(rule[-1]), "negate": lambda: -col, "complement": lambda: 1.0 - col,
                "not": lambda: ~col, "drop": lambda: pl.lit(None)}[rule[0]]()

    def when(c: str, expr):
        return pl.when(pl.col("_swap")).then(expr).otherwise(pl.col(c)).cast(frame.schema[c]).alias(c)

    first = [when(c, flipped(c, r)) for c, r in rules.items() if r[0] not in ("sfc", "is_shortcut")]
    frame = frame.with_columns(first)
    second = []
    if "sfc" in rules and {"text_loss", "mm_loss"} <= cols:
        second.append(when("sfc", pl.col("text_loss") / (pl.col("mm_loss") + pl.col("text_loss"))))
    if "is_shortcut" in rules and "text_prob" in cols:
        second.append(when("is_shortcut", pl.col("text_prob") >= threshold))
    return frame.with_columns(second).drop("_swap")
