"""What links two pairs beyond their exact bytes: the same picture re-encoded or resized, or the same
answers. Used to group pairs for cross-fitting (`audit.folds`), to mark duplicates at ingest and to
find train / eval overlap (`shortcut-audit overlap`).

Pictures: a 256-bit perceptual hash (`imagehash.phash` with hash_size=16: the low-frequency DCT of a
64x64 greyscale copy, thresholded at its median), stored per row as `image_phash` (64 hex digits).
Two pictures are near-identical when their hashes differ in at most NEAR_DISTANCE bits. Measured on
the synthetic scenes (small flat shapes, the hard case) and on photo-like 1/f-noise images
(benchmarks/RESULTS.md, "Perceptual image links"): re-encoded (JPEG quality 30-75), halved and
doubled copies sit at a median of a few bits; unrelated photo-like images never come closer than ~90
bits; unrelated synthetic scenes fall within 32 bits at a rate below 1e-4 per pair.

Finding near pairs among 10^6 hashes without comparing all pairs: a multi-index hash. The 256 bits
are cut into BANDS bands of 16 bits; two hashes at most BANDS - 1 bits apart agree exactly on at
least one band (pigeonhole), so every such pair is found; pairs further apart (up to NEAR_DISTANCE)
agree on a band with high probability (about 99% at 20 bits, 87% at 32 on independent bits). Candidates
are the hashes that share a band value; each candidate pair is then checked on all 256 bits. A band
value shared by more than MAX_BUCKET distinct pictures (a near-blank band that many pictures have) is
skipped, so the work stays near linear; the other 15 bands still find copies.

Texts: a pair's answers are normalised (Unicode NFKC, case-folded, whitespace collapsed) before they
are compared, so "Yes,  a dog." and "yes, a dog." are the same answer; past NORMALISED_CHARS
characters a text is compared as it is (its digest), so a huge answer costs no more memory than that.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Iterator

import numpy as np

HASH_SIZE = 16                 # imagehash hash_size: 16 x 16 = 256 bits
HASH_BITS = HASH_SIZE * HASH_SIZE
NEAR_DISTANCE = 32             # at most this many of the 256 bits differ: the same picture
BANDS = 16                     # the multi-index: 16 bands of 16 bits
MAX_BUCKET = 512               # a band value shared by more distinct pictures than this says nothing: skipped
MIN_CONTRAST = 2.0             # grey-level standard deviation (0-255) below which a picture is too plain to hash
QUERY_CHUNK = 4096             # hashes looked up at a time (bounds the candidate arrays)
_WS = re.compile(r"\s+")


def image_phash(im) -> str | None:
    """The perceptual hash of a PIL image, as 64 hex digits; None for a picture too plain to hash (a
    flat colour: its hash would be the same as every other flat picture's, whatever the colour)."""
    import imagehash
    from PIL import Image

    grey = im.convert("L").resize((HASH_SIZE * 4, HASH_SIZE * 4), Image.Resampling.LANCZOS)
    if float(np.asarray(grey, dtype=np.float32).std()) < MIN_CONTRAST:
        return None
    return str(imagehash.phash(grey, hash_size=HASH_SIZE))


def hash_words(hexes) -> tuple[np.ndarray, np.ndarray]:
    """(k, 4) uint64 words of the valid hashes among `hexes` (a list or polars Series of 64-hex-digit
    strings or None) and the positions they came from."""
    import polars as pl

    s = hexes if isinstance(hexes, pl.Series) else pl.Series(list(hexes), dtype=pl.String)
    valid = (s.str.len_bytes() == HASH_BITS // 4) & s.str.contains(r"^[0-9a-f]+$")
    pos = np.flatnonzero(valid.fill_null(False).to_numpy())
    if pos.size == 0:
        return np.zeros((0, 4), dtype=np.uint64), pos
    raw = b"".join(bytes.fromhex(h) for h in s.gather(pos).to_list())
    words = np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, 4)
    return words, pos


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between rows of two (k, 4) uint64 arrays (row by row)."""
    return np.bitwise_count(a ^ b).sum(axis=1, dtype=np.int64)


def _bands(words: np.ndarray) -> np.ndarray:
    """(k, BANDS) uint16: the 16-bit bands of each hash."""
    return words.astype(">u8").view(">u2").astype(np.uint16).reshape(len(words), BANDS)


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


def near_pairs(words: np.ndarray, max_distance: int = NEAR_DISTANCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j, distance) of distinct rows of `words` at most `max_distance` bits apart (each once,
    i < j). Equal hashes are pairs at distance 0."""
    bands = _bands(words)
    codes = []
    for b in range(BANDS):
        key = bands[:, b]
        for i, j in _run_pairs(np.argsort(key, kind="stable"), key):
            keep = distance(words[i], words[j]) <= max_distance
            if keep.any():
                lo, hi = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
                codes.append(np.unique(lo.astype(np.int64) * len(words) + hi))
    if not codes:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e
    code = np.unique(np.concatenate(codes))
    i, j = code // len(words), code % len(words)
    return i, j, distance(words[i], words[j])


class BandIndex:
    """The multi-index of one set of hashes (say, an eval set), to look up another set's hashes batch
    by batch (`overlap`): per band, the set's band values sorted, with their row positions."""

    def __init__(self, words: np.ndarray) -> None:
        self.words = words
        bands = _bands(words)
        self.order = [np.argsort(bands[:, b], kind="stable") for b in range(BANDS)]
        self.sorted = [bands[o, b] for b, o in enumerate(self.order)]

    def query(self, words: np.ndarray, max_distance: int = NEAR_DISTANCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query row, indexed row, distance) of every pair at most `max_distance` bits apart."""
        if len(words) > QUERY_CHUNK:
            parts = [self.query(words[s:s + QUERY_CHUNK], max_distance) for s in range(0, len(words), QUERY_CHUNK)]
            return (np.concatenate([p[0] + s for p, s in zip(parts, range(0, len(words), QUERY_CHUNK))]),
                    np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))
        if len(self.words) == 0 or len(words) == 0:
            e = np.zeros(0, dtype=np.int64)
            return e, e, e
        bands = _bands(words)
        qs, xs = [], []
        for b in range(BANDS):
            lo = np.searchsorted(self.sorted[b], bands[:, b], side="left")
            hi = np.searchsorted(self.sorted[b], bands[:, b], side="right")
            count = np.where(hi - lo <= MAX_BUCKET, hi - lo, 0)
            q = np.repeat(np.arange(len(words)), count)
            if q.size == 0:
                continue
            offs = np.arange(q.size) - np.repeat(np.cumsum(count) - count, count)
            x = self.order[b][np.repeat(lo, count) + offs]
            d = distance(words[q], self.words[x])
            keep = d <= max_distance
            qs.append(q[keep]), xs.append(x[keep])
        if not qs:
            e = np.zeros(0, dtype=np.int64)
            return e, e, e
        code = np.unique(np.concatenate(qs).astype(np.int64) * len(self.words) + np.concatenate(xs))
        q, x = code // len(self.words), code % len(self.words)
        return q, x, distance(words[q], self.words[x])


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label (0..) of each of n nodes under the edges (i, j)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(g, directed=False)[1].astype(np.int64)


def image_clusters(hexes, max_distance: int = NEAR_DISTANCE) -> np.ndarray:
    """Per row: the cluster of near-identical pictures it belongs to (-1 without a hash). Rows whose
    hashes are at most `max_distance` bits apart, directly or through a chain, share a cluster."""
    n = len(hexes)
    out = np.full(n, -1, dtype=np.int64)
    words, pos = hash_words(hexes)
    if pos.size == 0:
        return out
    uniq, inverse = np.unique(words, axis=0, return_inverse=True)
    i, j, _ = near_pairs(uniq, max_distance)
    out[pos] = components(len(uniq), i, j)[inverse.ravel()]
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
