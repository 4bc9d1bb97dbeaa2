"""What links two pairs beyond their exact bytes: the same picture re-encoded or resized, or the same
answers. Used to group pairs for cross-fitting (`audit.folds`), to mark duplicates at ingest and to
find train / eval overlap (`shortcut-audit overlap`).

Pictures, two signals from the one decode at ingest:
- a 256-bit perceptual hash (`imagehash.phash` with hash_size=16: the low-frequency DCT of a 64x64
  greyscale copy, thresholded at its median), stored per row as `image_phash` (64 hex digits). Two
  pictures are near-identical when their hashes differ in at most NEAR_DISTANCE bits. Measured
  (benchmarks/RESULTS.md, "Perceptual image links"): re-encoded (JPEG quality 30-75), halved and
  doubled copies of photo-like pictures and of the synthetic scenes sit at a median of a few bits;
  unrelated photo-like images never come closer than ~90 bits; unrelated synthetic scenes fall within
  32 bits at a rate below 1e-4 per pair.
- a thumbnail, for smooth pictures only (gradients, smooth fields, renders: little detail below the
  scale of an 8x8 grid, SMOOTH_DETAIL), stored as `image_thumb` (8x8 RGB cell means, 384 hex digits).
  On such pictures most of the 256 DCT coefficients are close to their median, so a resized or
  re-compressed copy flips many hash bits (a linear gradient's copy lands at ~100 of 256, as far as an
  unrelated picture), while the cell means barely move: two smooth pictures whose thumbnails differ
  by at most THUMB_RMS (root mean square, grey levels) are the same picture. The thumbnail only adds
  links: pictures whose hashes are close stay one picture. A textured picture has no thumbnail: the
  hash is reliable there, and unrelated textured pictures of one layout (pages of text) have close
  thumbnails.

Finding near pairs among 10^6 pictures without comparing all pairs: a multi-index. The 256 hash bits
are cut into BANDS bands of 16 bits; two hashes at most BANDS - 1 bits apart agree exactly on at
least one band (pigeonhole), so every such pair is found; pairs further apart (up to NEAR_DISTANCE)
agree on a band with high probability (about 99% at 20 bits, 87% at 32 on independent bits). The
thumbnails add GRIDS keys: the mean colour of each quarter of the picture (12 numbers) binned on a
grid of GRID_STEP levels, shifted at random per key; a copy's quarter means move by a level or two,
so it shares at least one key with its original (99.98% with 12 grids, simulated from the shifts
measured on copies; the benchmark finds every copy of its smooth pictures). Candidates are the
pictures that share a key value; each candidate pair is then checked (`Pictures.near`). A key value
shared by more than MAX_BUCKET distinct pictures (a near-blank band that many pictures have) is
skipped, so the work stays near linear; the other keys still find copies.

Texts: a pair's answers are normalised (Unicode NFKC, case-folded, whitespace collapsed) before they
are compared, so "Yes,  a dog." and "yes, a dog." are the same answer; past NORMALISED_CHARS
characters a text is compared as it is (its digest), so a huge answer costs no more memory than that.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterator

import numpy as np

HASH_SIZE = 16                 # imagehash hash_size: 16 x 16 = 256 bits
HASH_BITS = HASH_SIZE * HASH_SIZE
NEAR_DISTANCE = 32             # at most this many of the 256 bits differ: the same picture
BANDS = 16                     # the multi-index: 16 bands of 16 bits
MAX_BUCKET = 512               # a key value shared by more distinct pictures than this says nothing: skipped
MIN_CONTRAST = 2.0             # grey-level standard deviation (0-255) below which a picture is too plain to hash
QUERY_CHUNK = 4096             # hashes looked up at a time (bounds the candidate arrays)
THUMB_SIDE = 8                 # the thumbnail: 8 x 8 cells, each the mean RGB colour of its area
THUMB_BYTES = THUMB_SIDE * THUMB_SIDE * 3
SMOOTH_DETAIL = 20.0           # RMS (grey levels) of the 64x64 grey copy around its 8x8 cell means: a smooth picture
THUMB_RMS = 4.0                # two smooth pictures whose thumbnails differ by at most this RMS: the same picture
GRIDS, GRID_STEP = 12, 32      # candidate keys of the thumbnails: quarter means on 12 shifted grids of 32 levels
_GRID_SHIFT = np.random.default_rng(20250303).uniform(0, GRID_STEP, (GRIDS, 12))   # fixed: keys comparable across runs
_GRID_MIX = np.random.default_rng(20250304).integers(1, 2**63, (GRIDS, 12), dtype=np.uint64) | np.uint64(1)
_WS = re.compile(r"\s+")


def _grey64(im):
    from PIL import Image

    return im.convert("L").resize((HASH_SIZE * 4, HASH_SIZE * 4), Image.Resampling.LANCZOS)


def image_phash(im, grey=None) -> str | None:
    """The perceptual hash of a PIL image, as 64 hex digits; None for a picture too plain to hash (a
    flat colour: its hash would be the same as every other flat picture's, whatever the colour)."""
    import imagehash

    grey = _grey64(im) if grey is None else grey
    if float(np.asarray(grey, dtype=np.float32).std()) < MIN_CONTRAST:
        return None
    return str(imagehash.phash(grey, hash_size=HASH_SIZE))


def image_thumb(im, grey=None) -> str | None:
    """The thumbnail of a smooth PIL image (8x8 cell means in RGB, 384 hex digits); None for a picture
    with detail below the cell scale (SMOOTH_DETAIL: its hash is reliable) or of one flat colour."""
    from PIL import Image

    g = np.asarray(_grey64(im) if grey is None else grey, dtype=np.float64)
    cell = HASH_SIZE * 4 // THUMB_SIDE
    means = g.reshape(THUMB_SIDE, cell, THUMB_SIDE, cell).mean(axis=(1, 3))
    if (g * g).mean() - (means * means).mean() > SMOOTH_DETAIL ** 2:     # the variance around the cell means
        return None
    thumb = np.asarray((im if im.mode == "RGB" else im.convert("RGB")).resize((THUMB_SIDE, THUMB_SIDE),
                                                                             Image.Resampling.BOX), dtype=np.uint8)
    if float(thumb.reshape(-1, 3).std(axis=0).max()) < MIN_CONTRAST:
        return None
    return thumb.tobytes().hex()


def image_signature(im) -> tuple[str | None, str | None]:
    """(`image_phash`, `image_thumb`) of a PIL image: what ingest stores per picture."""
    grey = _grey64(im)
    return image_phash(im, grey), image_thumb(im, grey)


def _hex_rows(hexes, n_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """(k, n_bytes) uint8 of the valid values among `hexes` (a list or polars Series of hex strings of
    n_bytes bytes, or None) and the positions they came from."""
    import polars as pl

    s = hexes if isinstance(hexes, pl.Series) else pl.Series(list(hexes), dtype=pl.String)
    valid = (s.str.len_bytes() == 2 * n_bytes) & s.str.contains(r"^[0-9a-f]+$")
    pos = np.flatnonzero(valid.fill_null(False).to_numpy())
    if pos.size == 0:
        return np.zeros((0, n_bytes), dtype=np.uint8), pos
    raw = b"".join(bytes.fromhex(h) for h in s.gather(pos).to_list())
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, n_bytes), pos


def hash_words(hexes) -> tuple[np.ndarray, np.ndarray]:
    """(k, 4) uint64 words of the valid hashes among `hexes` (a list or polars Series of 64-hex-digit
    strings or None) and the positions they came from."""
    raw, pos = _hex_rows(hexes, HASH_BITS // 8)
    return raw.view(">u8").astype(np.uint64).reshape(-1, 4), pos


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between rows of two (k, 4) uint64 arrays (row by row)."""
    return np.bitwise_count(a ^ b).sum(axis=1, dtype=np.int64)


def _bands(words: np.ndarray) -> np.ndarray:
    """(k, BANDS) uint16: the 16-bit bands of each hash."""
    return words.astype(">u8").view(">u2").astype(np.uint16).reshape(len(words), BANDS)


@dataclass
class Pictures:
    """Pictures in comparable form: per picture its hash (`words`, zeros where `hashed` is False) and
    its thumbnail, if it has one (`thumbs[thumb_of[i]]`; `thumb_of[i]` = -1 without one)."""

    words: np.ndarray       # (k, 4) uint64
    hashed: np.ndarray      # (k,) bool
    thumbs: np.ndarray      # (t, THUMB_BYTES) uint8
    thumb_of: np.ndarray    # (k,) int64

    @classmethod
    def of(cls, phashes, thumbs=None) -> tuple["Pictures", np.ndarray]:
        """The pictures of the rows that have a hash or a thumbnail (hex columns, None where absent),
        and the positions of those rows."""
        n = len(phashes)
        words, hpos = hash_words(phashes)
        t, tpos = _hex_rows(thumbs if thumbs is not None else [None] * n, THUMB_BYTES)
        pos = np.union1d(hpos, tpos)
        w = np.zeros((pos.size, 4), dtype=np.uint64)
        w[np.searchsorted(pos, hpos)] = words
        hashed = np.isin(pos, hpos)
        thumb_of = np.full(pos.size, -1, dtype=np.int64)
        thumb_of[np.searchsorted(pos, tpos)] = np.arange(tpos.size)
        return cls(w, hashed, t, thumb_of), pos

    @classmethod
    def from_words(cls, words: np.ndarray) -> "Pictures":
        return cls(words, np.ones(len(words), dtype=bool), np.zeros((0, THUMB_BYTES), dtype=np.uint8),
                   np.full(len(words), -1, dtype=np.int64))

    @classmethod
    def one(cls, phash: str | None, thumb: str | None) -> "Pictures":
        """One picture from its stored hash and thumbnail (as `image_signature` makes them)."""
        words = np.frombuffer(bytes.fromhex(phash), dtype=">u8").astype(np.uint64)[None] if phash else \
            np.zeros((1, 4), dtype=np.uint64)
        thumbs = np.frombuffer(bytes.fromhex(thumb), dtype=np.uint8)[None] if thumb else \
            np.zeros((0, THUMB_BYTES), dtype=np.uint8)
        return cls(words, np.array([bool(phash)]), thumbs, np.array([0 if thumb else -1], dtype=np.int64))

    @classmethod
    def concat(cls, parts: list["Pictures"]) -> "Pictures":
        parts = [p for p in parts if len(p)] or [cls.from_words(np.zeros((0, 4), dtype=np.uint64))]
        offsets = np.cumsum([0] + [len(p.thumbs) for p in parts[:-1]])
        return cls(np.concatenate([p.words for p in parts]), np.concatenate([p.hashed for p in parts]),
                   np.concatenate([p.thumbs for p in parts]),
                   np.concatenate([np.where(p.thumb_of >= 0, p.thumb_of + o, -1) for p, o in zip(parts, offsets)]))

    def __len__(self) -> int:
        return len(self.words)

    def take(self, idx: np.ndarray) -> "Pictures":
        """The pictures `idx`, with only their own thumbnails."""
        t = self.thumb_of[idx]
        has = t >= 0
        thumb_of = np.full(len(t), -1, dtype=np.int64)
        thumb_of[has] = np.arange(int(has.sum()))
        return Pictures(self.words[idx], self.hashed[idx], self.thumbs[t[has]], thumb_of)

    def unique(self) -> tuple["Pictures", np.ndarray]:
        """The distinct pictures (same hash, same thumbnail) and, per picture, its distinct one."""
        tid = np.full(len(self), -1, dtype=np.int64)
        if len(self.thumbs):
            tinv = np.unique(self.thumbs, axis=0, return_inverse=True)[1].ravel()
            has = self.thumb_of >= 0
            tid[has] = tinv[self.thumb_of[has]]
        key = np.column_stack([np.ascontiguousarray(self.words).view(np.int64), self.hashed, tid])
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        return self.take(first), inverse.ravel()

    def keys(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The multi-index keys, one (values, valid) per key: BANDS hash bands, then GRIDS thumbnail grids."""
        bands = _bands(self.words)
        for b in range(BANDS):
            yield bands[:, b], self.hashed
        has = self.thumb_of >= 0
        quarters = self.thumbs.reshape(-1, 2, THUMB_SIDE // 2, 2, THUMB_SIDE // 2, 3).mean(axis=(2, 4)).reshape(-1, 12)
        for g in range(GRIDS):
            cells = np.floor((quarters + _GRID_SHIFT[g]) / GRID_STEP).astype(np.uint64)
            per_thumb = (cells * _GRID_MIX[g]).sum(axis=1, dtype=np.uint64)
            yield np.where(has, per_thumb[np.maximum(self.thumb_of, 0)] if len(self.thumbs) else 0, 0), has

    def near(self, i: np.ndarray, other: "Pictures", j: np.ndarray,
             max_distance: int = NEAR_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
        """For each pair (self[i], other[j]): whether they are one picture (hashes at most `max_distance`
        bits apart, or thumbnails at most THUMB_RMS apart), and the hash distance (-1 without both hashes)."""
        d = np.where(self.hashed[i] & other.hashed[j], distance(self.words[i], other.words[j]), -1)
        keep = (d >= 0) & (d <= max_distance)
        ti, tj = self.thumb_of[i], other.thumb_of[j]
        both = np.flatnonzero((ti >= 0) & (tj >= 0))
        for s in range(0, both.size, QUERY_CHUNK):      # (chunk, 192) differences at a time
            b = both[s:s + QUERY_CHUNK]
            diff = self.thumbs[ti[b]].astype(np.int32) - other.thumbs[tj[b]]
            keep[b] |= (diff * diff).mean(axis=1) <= THUMB_RMS ** 2
        return keep, d


def _pictures(x) -> Pictures:
    return x if isinstance(x, Pictures) else Pictures.from_words(x)


def _run_pairs(order: np.ndarray, key: np.ndarray, cap: int = MAX_BUCKET) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All pairs (i, j), i before j, of positions whose `key` is equal, as arrays, step by step: step k
    pairs each sorted position with the one k places later in the same run, so the work is the number
    of pairs, never a dense matrix. Runs longer than `cap` are skipped."""
    k_sorted = key[order]
    n = len(order)
    if n < 2:
        return
    starts = np.r_[0, np.flatnonzero(k_sorted[1:] != k_sorted[:-1]) + 1]
    ends = np.r_[starts[1:], n]
    run_end = np.repeat(ends, ends - starts)
    run_len = np.repeat(ends - starts, ends - starts)
    active = np.flatnonzero((np.arange(n) + 1 < run_end) & (run_len <= cap))
    step = 1
    while active.size:
        yield order[active], order[active + step]
        step += 1
        active = active[active + step < run_end[active]]


def _no_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e = np.zeros(0, dtype=np.int64)
    return e, e, e


def near_pairs(pictures, max_distance: int = NEAR_DISTANCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j, hash distance) of distinct pictures that are one picture (`Pictures.near`; each
    pair once, i < j). `pictures`: a `Pictures`, or (k, 4) hash words. Equal hashes are pairs at 0."""
    pics = _pictures(pictures)
    n, codes = len(pics), []
    for key, valid in pics.keys():
        pos = np.flatnonzero(valid)
        for i, j in _run_pairs(pos[np.argsort(key[pos], kind="stable")], key):
            keep, _ = pics.near(i, pics, j, max_distance)
            if keep.any():
                lo, hi = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
                codes.append(np.unique(lo.astype(np.int64) * n + hi))
    if not codes:
        return _no_pairs()
    code = np.unique(np.concatenate(codes))
    i, j = code // n, code % n
    return i, j, pics.near(i, pics, j, max_distance)[1]


class BandIndex:
    """The multi-index of one set of pictures (say, an eval set), to look up another set's pictures
    batch by batch (`overlap`): per key (`Pictures.keys`), the set's values sorted, with their positions."""

    def __init__(self, pictures) -> None:
        self.pictures = _pictures(pictures)
        self.order, self.sorted = [], []
        small = np.int32 if len(self.pictures) < 2**31 else np.int64      # positions: 4 bytes where they fit
        for key, valid in self.pictures.keys():
            pos = np.flatnonzero(valid)
            self.order.append(pos[np.argsort(key[pos], kind="stable")].astype(small))
            self.sorted.append(key[self.order[-1]])

    def query(self, pictures, max_distance: int = NEAR_DISTANCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query row, indexed row, hash distance) of every pair that is one picture."""
        pics = _pictures(pictures)
        if len(pics) > QUERY_CHUNK:
            parts = [self.query(pics.take(np.arange(s, min(s + QUERY_CHUNK, len(pics)))), max_distance)
                     for s in range(0, len(pics), QUERY_CHUNK)]
            return (np.concatenate([p[0] + s for p, s in zip(parts, range(0, len(pics), QUERY_CHUNK))]),
                    np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))
        if len(self.pictures) == 0 or len(pics) == 0:
            return _no_pairs()
        qs, xs = [], []
        for (key, valid), order, ordered in zip(pics.keys(), self.order, self.sorted):
            rows = np.flatnonzero(valid)
            lo = np.searchsorted(ordered, key[rows], side="left")
            hi = np.searchsorted(ordered, key[rows], side="right")
            count = np.where(hi - lo <= MAX_BUCKET, hi - lo, 0)
            q = np.repeat(rows, count)
            if q.size == 0:
                continue
            offs = np.arange(q.size) - np.repeat(np.cumsum(count) - count, count)
            x = order[np.repeat(lo, count) + offs]
            keep, _ = pics.near(q, self.pictures, x, max_distance)
            qs.append(q[keep]), xs.append(x[keep])
        if not qs:
            return _no_pairs()
        n = len(self.pictures)
        code = np.unique(np.concatenate(qs).astype(np.int64) * n + np.concatenate(xs))
        q, x = code // n, code % n
        return q, x, pics.near(q, self.pictures, x, max_distance)[1]


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label (0..) of each of n nodes under the edges (i, j)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(g, directed=False)[1].astype(np.int64)


def image_clusters(hexes, thumbs=None, max_distance: int = NEAR_DISTANCE) -> np.ndarray:
    """Per row: the cluster of near-identical pictures it belongs to (-1 without a hash or a thumbnail).
    Rows that are one picture (`Pictures.near`), directly or through a chain, share a cluster."""
    out = np.full(len(hexes), -1, dtype=np.int64)
    pics, pos = Pictures.of(hexes, thumbs)
    if pos.size == 0:
        return out
    uniq, inverse = pics.unique()
    i, j, _ = near_pairs(uniq, max_distance)
    out[pos] = components(len(uniq), i, j)[inverse]
    return out


NORMALISED_CHARS = 1 << 16     # of a text, the head compared in normalised form; the rest is compared as it is


def normalise(text: str | None) -> str:
    """The comparable form of a text: NFKC, case-folded, whitespace collapsed, trimmed."""
    if not isinstance(text, str):
        return ""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def comparable(text: str | None) -> tuple[str, bytes]:
    """(normalised head, digest of the rest as it is): the form texts are compared and keyed in, in memory
    bounded by NORMALISED_CHARS whatever the text's length (a 200 MB answer is read once, never copied
    whole). A text no longer than that has the key it always had."""
    if not isinstance(text, str) or len(text) <= NORMALISED_CHARS:
        return normalise(text), b""
    h = hashlib.blake2b(digest_size=16)
    for i in range(NORMALISED_CHARS, len(text), NORMALISED_CHARS):
        h.update(text[i:i + NORMALISED_CHARS].encode("utf-8", "surrogatepass"))
    return normalise(text[:NORMALISED_CHARS]), h.digest()


def text_key(*texts: str | tuple[str, bytes] | None) -> str:
    """A 64-bit hex key of normalised texts (or `comparable` forms), in order."""
    h = hashlib.blake2b(digest_size=8)
    for t in texts:
        head, rest = (normalise(t[0]), t[1]) if isinstance(t, tuple) else comparable(t)
        h.update(head.encode("utf-8", "surrogatepass"))
        if rest:
            h.update(b"\x01" + rest)
        h.update(b"\x00")
    return h.hexdigest()


def answers_key(chosen: str | None, rejected: str | None) -> str:
    """The key of a pair's two answers, whichever side each is on: the same two answers under another
    picture (or with the preference swapped) are the same pair of texts."""
    a, b = sorted((comparable(chosen), comparable(rejected)))
    return text_key(a, b)
