"""On-disk embedding cache keyed by (encoder fingerprint, content hash).

Layout: `CACHE/<fingerprint>/part-<n>-<pid>.emb.npy` (float32 rows) and `.keys.npy` (16-byte content
hashes). The embeddings file is written first and the keys file last, each atomically, so a part
counts only once complete. Parts are only ever added, so an interrupted run keeps what it finished and a
re-run encodes only what is missing. Embeddings are memory-mapped, not read into memory: `locate` +
`gather` fetch the rows a chunk needs, so holding a large cache open costs the index only. (Parts
written as `part-*.npz` by earlier versions are still read.)
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from audit.io import atomic_path


def content_key(data: str | bytes) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).digest()


def _release(arr: np.ndarray) -> None:
    """Drop a memory-mapped part's pages from this process (they stay in the page cache, so the next
    gather is still fast): reading a large cache chunk by chunk then leaves resident memory flat."""
    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


class EmbeddingCache:
    def __init__(self, root: Path | None, fingerprint: str) -> None:
        self.dir = Path(root) / fingerprint if root is not None else None
        self._index: dict[bytes, tuple[int, int]] = {}
        self._parts: list[np.ndarray] = []
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
                keys, emb = z["keys"], z["emb"]
        else:
            keys = np.load(f)
            emb = np.load(f.with_name(f.name[:-len(".keys.npy")] + ".emb.npy"), mmap_mode="r")
        self._append(keys, emb)

    def _append(self, keys, emb: np.ndarray) -> None:
        part = len(self._parts)
        self._parts.append(emb)
        for row, k in enumerate(keys):
            self._index.setdefault(bytes(k), (part, row))

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    def get(self, keys: Sequence[bytes]) -> np.ndarray:
        return np.stack([self._parts[p][r] for p, r in (self._index[k] for k in keys)])

    def locate(self, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(part, row) of each key: 12 bytes per key, to `gather` rows from later without holding them."""
        part = np.empty(len(keys), dtype=np.int32)
        row = np.empty(len(keys), dtype=np.int64)
        for i, k in enumerate(keys):
            part[i], row[i] = self._index[k]
        return part, row

    def gather(self, part: np.ndarray, row: np.ndarray) -> np.ndarray:
        """float32 rows at (part, row) positions (from `locate`), in that order."""
        width = self._parts[int(part[0])].shape[1] if len(part) else 0
        out = np.empty((len(part), width), dtype=np.float32)
        for p in np.unique(part):
            sel = np.flatnonzero(part == p)
            src = self._parts[int(p)]
            out[sel] = src[row[sel]]
            _release(src)
        return out

    def add(self, keys: Sequence[bytes], emb: np.ndarray) -> None:
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        keys_arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 16) if keys else np.zeros((0, 16), np.uint8)
        self._append(list(keys), emb)
        if self.dir is not None and len(keys):
            self.dir.mkdir(parents=True, exist_ok=True)
            n = len(list(self.dir.glob("part-*.npz"))) + len(list(self.dir.glob("part-*.keys.npy")))
            stem = f"part-{n:06d}-{os.getpid()}"
            for suffix, arr in ((".emb.npy", emb), (".keys.npy", keys_arr)):   # keys last: the part is complete
                buf = io.BytesIO()
                np.save(buf, arr)
                with atomic_path(self.dir / (stem + suffix)) as tmp:
                    tmp.write_bytes(buf.getvalue())
            self._files.add(stem + ".keys.npy")
            self._parts[-1] = np.load(self.dir / (stem + ".emb.npy"), mmap_mode="r")   # let the rows go

    def fill(self, items: Sequence, keys: Sequence[bytes], encode: Callable[[list], np.ndarray],
             chunk: int = 2048, size: Callable = len, shard: tuple[int, int] = (0, 1)) -> None:
        """Encode what is missing. Unique keys are put in a canonical order (by size, then key) and cut
        into fixed chunks; a chunk is encoded whole or not at all and saved before the next starts. So
        a crash loses at most one chunk, and a resumed run encodes exactly the batches an uninterrupted
        run would have: the same bytes come out. `shard=(rank, world)`: this process encodes chunks
        rank, rank + world, ... (data-parallel; the others' parts arrive through `refresh`)."""
        rank, world = shard
        unique: dict[bytes, object] = {}
        for item, k in zip(items, keys):
            unique.setdefault(k, item)
        canonical = sorted(unique, key=lambda k: (size(unique[k]), k))
        for j, start in enumerate(range(0, len(canonical), chunk)):
            part = canonical[start:start + chunk]
            if j % world != rank or all(k in self._index for k in part):
                continue
            self.add(part, encode([unique[k] for k in part]))

    def embed(self, items: Sequence, keys: Sequence[bytes], encode: Callable[[list], np.ndarray],
              chunk: int = 2048, size: Callable = len) -> np.ndarray:
        """Embeddings for all `items` (one per key), encoding what the cache lacks (see `fill`)."""
        self.fill(items, keys, encode, chunk=chunk, size=size)
        return self.get(keys) if len(keys) else np.zeros((0, 0), np.float32)
