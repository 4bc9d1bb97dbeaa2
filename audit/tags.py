"""Tags a person puts on pairs while reading an audit: `exclude` (drop it from exports), `keep` (never
prune it), `review` (look again later) and `swap` (the label is wrong: the rejected answer is the
better one). They live beside the audit in `tags.parquet` (pair_id, tag, updated), survive a re-score
(`score --overwrite` carries the file over; pair ids are content hashes, so a tag follows its pair),
and `export --tags` honours them."""

from __future__ import annotations

import time
from pathlib import Path

TAGS_FILE = "tags.parquet"
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
