"""On-disk embedding cache keyed by (encoder fingerprint, content hash).

Layout: `CACHE/<fingerprint>/part-<n>.npz`, each holding `keys` (16-byte content hashes) and `emb`
(float32). Parts are written atomically and only ever added, so an interrupted run keeps what it
finished and a re-run encodes only what is missing.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from audit.io import atomic_path


def content_key(data: str | bytes) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).digest()


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
            for f in sorted(self.dir.glob("part-*.npz")):
                if f.name not in self._files:
                    self._files.add(f.name)
                    self._load(f)

    def _load(self, f: Path) -> None:
        with np.load(f) as z:
            keys, emb = z["keys"], z["emb"]
        part = len(self._parts)
        self._parts.append(emb)
        for row, k in enumerate(keys):
            self._index.setdefault(bytes(k), (part, row))

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    def get(self, keys: Sequence[bytes]) -> np.ndarray:
        return np.stack([self._parts[p][r] for p, r in (self._index[k] for k in keys)])

    def add(self, keys: Sequence[bytes], emb: np.ndarray) -> None:
        emb = np.asarray(emb, dtype=np.float32)
        keys_arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 16) if keys else np.zeros((0, 16), np.uint8)
        part = len(self._parts)
        self._parts.append(emb)
        for row, k in enumerate(keys):
            self._index.setdefault(k, (part, row))
        if self.dir is not None and len(keys):
            self.dir.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.savez(buf, keys=keys_arr, emb=emb)
            n = len(list(self.dir.glob("part-*.npz")))
            name = f"part-{n:06d}-{os.getpid()}.npz"
            with atomic_path(self.dir / name) as tmp:
                tmp.write_bytes(buf.getvalue())
            self._files.add(name)

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
