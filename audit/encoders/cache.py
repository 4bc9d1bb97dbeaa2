"""On-disk embedding cache keyed by (encoder fingerprint, content hash).

Layout: `CACHE/<fingerprint>/part-<n>-<pid>.emb.npy` (float32 rows) and `.keys.npy` (16-byte content
hashes). The embeddings file is written first and the keys file last, each atomically, so a part
counts only once complete. Parts are only ever added, so an interrupted run keeps what it finished and a
re-run encodes only what is missing. Embeddings are memory-mapped, not read into memory: `locate` +
`gather` fetch the rows a chunk needs, so holding a large cache open costs the index only: 28 bytes a
key in sorted numpy runs (not a Python dict), and at most `OPEN_PARTS` mapped files at a time. (Parts
written as `part-*.npz` by earlier versions are still read.)
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from audit.io import atomic_path

KEY = np.dtype("S16")     # a content hash as a fixed-width numpy bytes value (orders as the 16 raw bytes)
OPEN_PARTS = 64           # memory-mapped part files held open at once (each holds a file descriptor)


def content_key(data: str | bytes) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).digest()


def as_keys(keys) -> np.ndarray:
    """Content keys (a list of 16-byte `bytes`, an (n, 16) uint8 array or an S16 array) as an S16 array."""
    if isinstance(keys, np.ndarray):
        if keys.dtype == KEY:
            return keys
        return np.ascontiguousarray(keys, dtype=np.uint8).reshape(-1, 16).view(KEY).ravel()
    keys = list(keys)
    if not keys:
        return np.zeros(0, KEY)
    return np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 16).view(KEY).ravel()


def key_bytes(keys: np.ndarray) -> np.ndarray:
    """S16 keys as an (n, 16) uint8 array (the on-disk form; keeps trailing zero bytes)."""
    return np.ascontiguousarray(keys).view(np.uint8).reshape(-1, 16)


def _release(arr: np.ndarray) -> None:
    """Drop a memory-mapped part's pages from this process (they stay in the page cache, so the next
    gather is still fast): reading a large cache chunk by chunk then leaves resident memory flat."""
    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


class KeyIndex:
    """key -> (part, row), for tens of millions of keys: sorted runs of (key, part, row) arrays, merged
    when a run grows to half the size of the one before it (so there are O(log n) runs). The first
    position added for a key wins, as with `dict.setdefault`."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(r[0]) for r in self.runs)

    @staticmethod
    def _sorted(keys: np.ndarray, part: np.ndarray, row: np.ndarray):
        order = np.argsort(keys, kind="stable")
        keys, part, row = keys[order], part[order], row[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]          # stable sort: the earliest added comes first
        return keys[first], part[first], row[first]

    def add(self, keys: np.ndarray, part: int, rows: np.ndarray | None = None) -> None:
        keys = as_keys(keys)
        if not len(keys):
            return
        rows = np.arange(len(keys), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        self.runs.append(self._sorted(keys, np.full(len(keys), part, dtype=np.int32), rows))
        while len(self.runs) > 1 and 2 * len(self.runs[-1][0]) >= len(self.runs[-2][0]):
            new, old = self.runs.pop(), self.runs.pop()
            self.runs.append(self._sorted(*(np.concatenate([a, b]) for a, b in zip(old, new))))

    def lookup(self, keys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found, part, row) per key; part and row are -1 where not found."""
        keys = as_keys(keys)
        part = np.full(len(keys), -1, dtype=np.int32)
        row = np.full(len(keys), -1, dtype=np.int64)
        found = np.zeros(len(keys), dtype=bool)
        for rk, rp, rr in self.runs:               # oldest run first: the first position added wins
            todo = np.flatnonzero(~found)
            if not len(todo):
                break
            pos = np.searchsorted(rk, keys[todo])
            pos_ok = np.minimum(pos, len(rk) - 1)
            hit = (pos < len(rk)) & (rk[pos_ok] == keys[todo])
            at, pos = todo[hit], pos_ok[hit]
            found[at], part[at], row[at] = True, rp[pos], rr[pos]
        return found, part, row


class EmbeddingCache:
    def __init__(self, root: Path | None, fingerprint: str) -> None:
        self.dir = Path(root) / fingerprint if root is not None else None
        self.index = KeyIndex()
        self._sources: list[Path | np.ndarray] = []      # per part: its .emb.npy (or the array in memory)
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()
        self._files: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        """Load part files written since (by another rank of a data-parallel run, say)."""
        if self.dir is not None and self.dir.is_dir():
            for f in sorted([*self.dir.glob("part-*.npz"), *self.dir.glob("part-*.keys.npy")]):
                if f.name not in self._files:
                    self._files.add(f.name)
                    self._load(f)

    def _load(self, f: Path) -> None:
        if f.suffix == ".npz":
            with np.load(f) as z:
                keys, emb = z["keys"], np.asarray(z["emb"], dtype=np.float32)
            self._append(keys, emb)
        else:
            self._append(np.load(f), f.with_name(f.name[:-len(".keys.npy")] + ".emb.npy"))

    def _append(self, keys, source: Path | np.ndarray) -> None:
        self.index.add(as_keys(keys), len(self._sources))
        self._sources.append(source)

    def _part(self, p: int) -> np.ndarray:
        src = self._sources[p]
        if isinstance(src, np.ndarray):
            return src
        arr = self._open.get(p)
        if arr is None:
            arr = self._open[p] = np.load(src, mmap_mode="r")
            while len(self._open) > OPEN_PARTS:
                self._open.popitem(last=False)
        self._open.move_to_end(p)
        return arr

    def __contains__(self, key: bytes) -> bool:
        return bool(self.index.lookup([key])[0][0])

    def has(self, keys) -> np.ndarray:
        """Per key: is it cached?"""
        return self.index.lookup(keys)[0]

    def get(self, keys) -> np.ndarray:
        return self.gather(*self.locate(keys))

    def locate(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """(part, row) of each key: 12 bytes per key, to `gather` rows from later without holding them."""
        found, part, row = self.index.lookup(keys)
        if not found.all():
            raise KeyError(f"{int((~found).sum())} key(s) are not in the cache {self.dir}")
        return part, row

    def gather(self, part: np.ndarray, row: np.ndarray) -> np.ndarray:
        """float32 rows at (part, row) positions (from `locate`), in that order."""
        width = self._part(int(part[0])).shape[1] if len(part) else 0
        out = np.empty((len(part), width), dtype=np.float32)
        for p in np.unique(part):
            sel = np.flatnonzero(part == p)
            src = self._part(int(p))
            out[sel] = src[row[sel]]
            _release(src)
        return out

    def add(self, keys, emb: np.ndarray) -> None:
        keys = as_keys(keys)
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if self.dir is None or not len(keys):
            self._append(keys, emb)
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        n = len(list(self.dir.glob("part-*.npz"))) + len(list(self.dir.glob("part-*.keys.npy")))
        stem = f"part-{n:06d}-{os.getpid()}"
        for suffix, arr in ((".emb.npy", emb), (".keys.npy", key_bytes(keys))):   # keys last: the part is complete
            buf = io.BytesIO()
            np.save(buf, arr)
            with atomic_path(self.dir / (stem + suffix)) as tmp:
                tmp.write_bytes(buf.getvalue())
        self._files.add(stem + ".keys.npy")
        self._append(keys, self.dir / (stem + ".emb.npy"))    # read back memory-mapped: the rows go

    def fill(self, items: Sequence, keys, encode: Callable[[list], np.ndarray], chunk: int = 2048,
             size: Callable = len, shard: tuple[int, int] = (0, 1), offset: int = 0) -> int:
        """Encode what is missing. Unique keys are put in a canonical order (by size, then key) and cut
        into fixed chunks; a chunk is encoded whole or not at all and saved before the next starts. So
        a crash loses at most one chunk, and a resumed run encodes exactly the batches an uninterrupted
        run would have: the same bytes come out. `shard=(rank, world)`: this process encodes chunks
        rank, rank + world, ... (data-parallel; the others' parts arrive through `refresh`), counting
        from `offset` (the chunks of earlier calls of a streamed fill). Returns the number of chunks."""
        rank, world = shard
        keys = as_keys(keys)
        if not len(keys):
            return 0
        uniq, first = np.unique(keys, return_index=True)           # first item of each key
        sizes = np.fromiter((size(items[i]) for i in first), dtype=np.float64, count=len(first))
        order = np.lexsort((uniq, sizes))
        uniq, first = uniq[order], first[order]
        have = self.has(uniq)
        n_chunks = -(-len(uniq) // chunk)
        for j in range(n_chunks):
            sel = slice(j * chunk, (j + 1) * chunk)
            if (offset + j) % world != rank or have[sel].all():
                continue
            vecs = encode([items[i] for i in first[sel]])
            if not np.isfinite(vecs).all():   # never cache what would poison every later run
                from audit.errors import EncodeError

                raise EncodeError(f"the encoder returned non-finite values for {int((~np.isfinite(vecs)).any(-1).sum())} "
                                  f"items; nothing of this chunk was cached (cache: {self.dir})")
            self.add(uniq[sel], vecs)
        return n_chunks

    def embed(self, items: Sequence, keys, encode: Callable[[list], np.ndarray],
              chunk: int = 2048, size: Callable = len) -> np.ndarray:
        """Embeddings for all `items` (one per key), encoding what the cache lacks (see `fill`)."""
        self.fill(items, keys, encode, chunk=chunk, size=size)
        return self.get(keys) if len(keys) else np.zeros((0, 0), np.float32)
