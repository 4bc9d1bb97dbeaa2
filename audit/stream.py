"""The scorable rows of a pairs table, read in windows of a few columns: `score` never holds the
table's texts, only numeric arrays of a few bytes per pair.

A window is a fixed range of scorable positions (0..m-1, in table order), `WINDOW` rows long whatever
the file's row groups are, so work planned per window (the embedding cache's chunks) depends on the
data only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

WINDOW = 8192           # scorable rows per window
READ_ROWS = 8192        # rows per Parquet read batch


def read_batches(path: Path, columns: Sequence[str] | None = None) -> Iterator:
    """The file's rows as pyarrow tables of at most `READ_ROWS` rows, a row group at a time (pairs
    tables are written in row groups of `ingest --batch-rows`), handing freed Arrow memory back after
    each: `iter_batches` read-ahead and the allocator's caching otherwise hold several times a row
    group (measured: 120,000 long-text pairs, 292 MiB vs 106 MiB resident after one pass)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = pa.default_memory_pool()
    step = READ_ROWS
    with pq.ParquetFile(path) as pf:
        for g in range(pf.num_row_groups):
            tab = pf.read_row_group(g, columns=None if columns is None else list(columns))
            for start in range(0, tab.num_rows, step):
                yield tab.slice(start, step)
            del tab
            pool.release_unused()


class PairRows:
    """The rows `idx` (sorted table row numbers) of the Parquet file at `path`, as positions 0..m-1."""

    def __init__(self, path: Path, idx: np.ndarray, window: int | None = None) -> None:
        self.path, self.idx, self.window = Path(path), np.asarray(idx, dtype=np.int64), window or WINDOW
        self.m = len(self.idx)

    def _batches(self, columns: Sequence[str]) -> Iterator[tuple[np.ndarray, object]]:
        """(positions, pyarrow table of those rows) per read batch, scorable rows only."""
        import pyarrow as pa

        start = 0
        for tab in read_batches(self.path, columns):
            end = start + tab.num_rows
            lo, hi = np.searchsorted(self.idx, [start, end])
            if hi > lo:
                yield np.arange(lo, hi), tab.take(pa.array(self.idx[lo:hi] - start))
            start = end

    def windows(self, columns: Sequence[str], select: np.ndarray | None = None
                ) -> Iterator[tuple[np.ndarray, dict[str, list]]]:
        """(positions, {column: Python list}) per window; with `select` (a bool mask over positions) only
        the selected rows are materialised (windows stay the same ranges)."""
        import pyarrow as pa

        pend_pos: list[np.ndarray] = []
        pend: list = []
        have = 0
        w = 0

        def emit(upto: int):
            nonlocal pend_pos, pend, have
            pos = np.concatenate(pend_pos)
            tab = pa.concat_tables(pend)
            cut = int(np.searchsorted(pos, upto))
            head_pos, head = pos[:cut], tab.slice(0, cut)
            pend_pos, pend = [pos[cut:]], [tab.slice(cut)]
            have = len(pos) - cut
            if select is not None:
                keep = select[head_pos]
                head_pos, head = head_pos[keep], head.filter(pa.array(keep))
            return head_pos, {c: head.column(c).to_pylist() for c in columns}

        for pos, tab in self._batches(columns):
            pend_pos.append(pos)
            pend.append(tab)
            have += len(pos)
            while have and pend_pos[-1][-1] >= (w + 1) * self.window:   # a full window is buffered
                w += 1
                yield emit(w * self.window)
        if have:
            yield emit(self.m)

    def take(self, positions: np.ndarray, columns: Sequence[str]) -> dict[str, list]:
        """{column: list} for `positions` (any order), reading only those rows' values."""
        positions = np.asarray(positions, dtype=np.int64)
        select = np.zeros(self.m, dtype=bool)
        select[positions] = True
        got_pos, got = [], {c: [] for c in columns}
        for pos, cols in self.windows(columns, select):
            got_pos.append(pos)
            for c in columns:
                got[c] += cols[c]
        where = np.searchsorted(np.concatenate(got_pos) if got_pos else np.zeros(0, np.int64), positions)
        return {c: [got[c][i] for i in where] for c in columns}

    def column(self, name: str) -> np.ndarray:
        """One column of the scorable rows as a numpy array (numeric columns)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        col = pq.read_table(self.path, columns=[name]).column(name)
        return col.take(pa.array(self.idx)).to_numpy(zero_copy_only=False)
