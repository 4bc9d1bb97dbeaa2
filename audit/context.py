"""The first stage of `score`: open the pairs table, find its scorable rows, group and fold them.

`ScoreContext` is what every later stage and every probe reads: the config, the scored rows (`idx`
into the table, `rows` to stream their texts window by window), the groups and folds, and, once the
inputs stage has run, the cue features and the cached inputs the probes asked for. Only numbers per
pair are held; texts and image paths stay on disk (`audit.stream`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit import schema
from audit.config import IngestConfig, ScoreConfig
from audit.errors import FormatError
from audit.folds import assign_folds, codes, group_keys, link_groups, link_summary
from audit.links import image_clusters
from audit.stream import PairRows

log = logging.getLogger(__name__)


@dataclass
class ScoreContext:
    cfg: ScoreConfig
    pairs_dir: Path
    names: list[str]                 # the pairs table's columns
    n: int                           # rows in the table
    idx: np.ndarray                  # the scored (`ok`) rows, ascending
    rows: PairRows                   # their texts and paths, read window by window
    status_counts: dict[str, int]
    groups: np.ndarray               # per scored row: its group (shared picture, source row, prompt or answers)
    folds: np.ndarray                # per scored row: its fold (whole groups per fold)
    sub: Any                         # polars frame of what the summary reads per row: source, cue_on_chosen
    device: str = "cpu"
    cue_diff: np.ndarray | None = None               # (m, cues), from the inputs stage
    text_keys: np.ndarray | None = None              # (3, m) content keys of prompt, chosen, rejected
    inputs: dict[str, Any] = field(default_factory=dict)   # cached inputs by kind, located for the probes
    links: dict = field(default_factory=dict)        # what linked rows into groups (audit.folds.link_summary)
    restatus: tuple | None = None    # (table rows, status, detail): `ok` rows that `score` found unscorable
    _roots: list | None = None

    @property
    def m(self) -> int:
        return int(self.idx.size)

    @property
    def pairs_file(self) -> Path:
        return self.pairs_dir / schema.PAIRS_FILE

    @property
    def cache_root(self) -> Path:
        return self.cfg.cache_dir or (self.cfg.out / "cache")

    def resolve(self, path: str) -> Path:
        """An image path of the pairs table, checked against the recorded image roots."""
        from audit.images import image_roots, resolve_image

        if self._roots is None:
            self._roots = image_roots(self.pairs_dir)
        return resolve_image(self.pairs_dir, path, allowed_roots=self._roots)

    def load_image(self, ref: str):
        from audit.probes.reward_model import item_image
        from audit.vlm import open_image

        return item_image(ref, lambda path: open_image(self.resolve(path).read_bytes()))

    def with_status(self, part, start: int):
        """A batch of the pairs table (rows from `start`) with the statuses `score` set (`restatus`):
        the audited table says why those rows have no scores."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.restatus is None:
            return part
        rows, status, detail = self.restatus
        hit = np.zeros(part.num_rows, dtype=bool)
        hit[rows[(rows >= start) & (rows < start + part.num_rows)] - start] = True
        if not hit.any():
            return part
        for name, value in (("status", status), ("status_detail", detail)):
            i = part.schema.get_field_index(name)
            part = part.set_column(i, part.schema.field(i), pc.if_else(pa.array(hit), pa.scalar(value, pa.string()),
                                                                         part.column(i)))
        return part

    def image_size(self, path: str) -> tuple[int, int]:
        from PIL import Image

        with Image.open(self.resolve(path)) as im:
            return im.size


def pairs_dir_for(cfg: ScoreConfig, rank: int = 0) -> Path:
    """The pairs folder to score: SOURCE itself, or SOURCE ingested into AUDIT_DIR/pairs (by rank 0;
    the other ranks of a data-parallel run wait for it)."""
    from audit.dist import barrier

    if is_pairs_folder(cfg.source):
        return cfg.source
    if rank == 0:
        from audit.ingest import ingest

        ingest(ingest_config(cfg))
    barrier()
    return cfg.out / "pairs"


def is_pairs_folder(path: Path) -> bool:
    return (path / schema.PAIRS_FILE).is_file() and (path / schema.REPORT_FILE).is_file()


def ingest_config(cfg: ScoreConfig) -> IngestConfig:
    """How `score` ingests a raw SOURCE on the way (into AUDIT_DIR/pairs); a pairs folder takes no
    `--columns` (its columns were mapped when it was ingested)."""
    from audit.errors import ConfigError

    if is_pairs_folder(cfg.source) and cfg.columns:
        raise ConfigError(f"`--columns` maps the columns of a raw source, and `{cfg.source}` is a pairs folder, "
                          "ingested already: drop `--columns`, or score the raw source with it")
    return IngestConfig(source=cfg.source, out=cfg.out / "pairs", format=cfg.format, image_root=cfg.image_root,
                        columns=cfg.columns, overwrite=True)


def _columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path).names
    except (OSError, ValueError) as e:
        raise FormatError(f"cannot read `{path}` as Parquet ({e}); run `shortcut-audit ingest` first") from None


def open_pairs(cfg: ScoreConfig, pairs_dir: Path, device: str) -> ScoreContext:
    """Read the status column, keep the `ok` rows, and fold them so that no pair is scored by a head
    that saw it or a sibling (same picture, source row, specific prompt or answers: `audit.folds`)."""
    import polars as pl

    pairs_file = pairs_dir / schema.PAIRS_FILE
    names = _columns(pairs_file)
    missing = [c for c in schema.REQUIRED_COLUMNS if c not in names]
    if missing:
        raise FormatError(f"`{pairs_file}` lacks column(s) {', '.join(missing)}: "
                          "it is not a pairs table; run `shortcut-audit ingest` first")
    status, restatus = _score_statuses(cfg, pairs_file, pl.read_parquet(pairs_file, columns=["status"])["status"])
    scored_statuses = [schema.OK, *(schema.IMAGE_STATUSES if cfg.text_only else ())]
    ok = status.is_in(scored_statuses).to_numpy()
    status_counts = dict(status.value_counts().sort("status").iter_rows())
    idx = np.where(ok)[0]
    m = idx.size
    if m < 2 * cfg.folds:
        raise FormatError(f"only {m} scorable ({', '.join(f'`{x}`' for x in scored_statuses)}) pairs in `{pairs_dir}`; cross-fitting with "
                          f"{cfg.folds} folds needs at least {2 * cfg.folds} (see the status column)")

    def scored(name: str) -> pl.Series:      # one column at a time, as integer codes where it is an id
        return pl.read_parquet(pairs_file, columns=[name])[name].gather(idx)

    rows = PairRows(pairs_file, idx)
    thumbs = scored("image_thumb") if "image_thumb" in names else None
    keys = group_keys(codes(scored("image_id")), codes(scored("sample_id")), codes(scored("prompt_id")),
                      image_clusters(scored("image_phash"), thumbs) if "image_phash" in names else None,
                      answers_codes(rows))
    groups = link_groups(keys)
    links = link_summary(keys, groups)
    big = links["largest_group"]
    big["example"] = {k: v[0] for k, v in rows.take(np.array([big["example_row"]]),
                                                    ["sample_id", "prompt", "chosen", "rejected"]).items()}
    n_groups = int(groups.max()) + 1
    if n_groups < cfg.folds:
        raise FormatError(f"the {m} scorable pairs form only {n_groups} group(s) (pairs sharing a picture, a source "
                          f"row, a specific prompt or their answers stay together; most are linked by their "
                          f"{KEY_WORDS[big['key']]}, e.g. row `{big['example']['sample_id']}`); cross-fitting needs "
                          f"at least `--folds` {cfg.folds} groups: lower `--folds` or add data")
    folds = assign_folds(groups, cfg.folds, cfg.seed)
    sub = pl.DataFrame([scored("source").cast(pl.Categorical),
                        *[scored(c) for c in ("cue_on_chosen",) if c in names]])
    return ScoreContext(cfg=cfg, pairs_dir=pairs_dir, names=names, n=len(status), idx=idx,
                        rows=rows, status_counts=status_counts, groups=groups, folds=folds,
                        sub=sub, device=device, links=links, restatus=restatus)


def _score_statuses(cfg: ScoreConfig, pairs_file: Path, status):
    """The table's statuses with the `ok` rows that cannot be scored under this config marked: a
    `--mm-scores` reward that is NaN, infinite or missing (`score_not_finite`). Returns the statuses and
    `ScoreContext.restatus` (None when no row changed)."""
    if not cfg.mm_scores:
        return status, None
    from audit.probes.external import not_finite_detail, not_finite_rows

    rows = np.flatnonzero(not_finite_rows(pairs_file, cfg.mm_scores) & (status == schema.OK).to_numpy())
    if rows.size == 0:
        return status, None
    log.warning("%d pair(s) have a NaN, infinite or missing `--mm-scores` reward: status `%s`, not scored",
                rows.size, schema.SCORE_NOT_FINITE)
    return (status.scatter(rows, schema.SCORE_NOT_FINITE),
            (rows, schema.SCORE_NOT_FINITE, not_finite_detail(cfg.mm_scores)))


KEY_WORDS = {"image": "image (the same bytes)", "picture": "picture (re-encoded or resized copies)",
             "sample": "source row", "prompt": "prompt", "answers": "two answers"}


def answers_codes(rows: PairRows) -> np.ndarray:
    """Per scored row: an integer code of its two normalised answers (either side), read window by window."""
    from audit.links import answers_key

    out = np.zeros(rows.m, dtype=np.uint64)
    for pos, cols in rows.windows(["chosen", "rejected"]):
        out[pos] = [int(answers_key(c, r), 16) for c, r in zip(cols["chosen"], cols["rejected"])]
    return np.unique(out, return_inverse=True)[1].astype(np.int64).ravel()
