"""Token-budget batching for model forward passes (reward models, text encoders, the fine-tuned probe).

A plain loop cuts the data into batches of B sequences in file order and pads each batch to its
longest member: with lengths spread between 64 and 1024 tokens most of the work is padding, and the
batches of short sequences are too small to keep a GPU busy. Here sequences are sorted by length and
cut into batches of at most `budget` tokens *after* padding (batch size x longest member), so every
batch carries about the same work, padding stays a few percent, and GPU memory is bounded by the
budget, not by the data. The longest batches come first, so a budget that does not fit fails at
once. A batch that still runs out of memory is split in half and retried (`run_batches`); only a
single sequence that does not fit is an error, and it names the row.

Pure numpy/torch: `benchmarks/rm_batching_bench.py` imports it on a bare GPU machine.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)


def plain_batches(n: int, batch_size: int) -> list[np.ndarray]:
    """The baseline: fixed-size batches in the given order."""
    return [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def token_budget_batches(lengths: Sequence[int], budget: int, max_batch: int | None = None,
                         max_padding: float = 0.05) -> list[np.ndarray]:
    """Indices grouped into batches, longest first, with len(batch) x max(length) <= budget and at most
    `max_padding` of the batch's token slots padding (a batch is cut early rather than span a wide
    range of lengths). A sequence longer than the budget gets a batch of its own. Deterministic:
    ties keep input order."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        return []
    if budget < 1:
        raise ValueError(f"token budget must be positive, got {budget}")
    lengths = np.maximum(lengths, 1)
    order = np.argsort(-lengths, kind="stable")
    sorted_len = lengths[order]
    batches, start = [], 0
    while start < order.size:
        longest = int(sorted_len[start])
        size = max(1, budget // longest)
        if max_batch:
            size = min(size, max_batch)
        window = sorted_len[start:start + size]
        pad_share = 1.0 - np.cumsum(window) / (np.arange(1, window.size + 1) * longest)   # non-decreasing
        size = max(1, int(np.searchsorted(pad_share, max_padding, side="right")))
        batches.append(order[start:start + size])
        start += size
    return batches


def padding_share(lengths: Sequence[int], batches: Iterable[np.ndarray]) -> float:
    """Fraction of the computed token slots that are padding."""
    lengths = np.asarray(lengths, dtype=np.int64)
    slots = real = 0
    for b in batches:
        slots += len(b) * int(lengths[b].max())
        real += int(lengths[b].sum())
    return 1.0 - real / slots if slots else 0.0


def is_oom(err: BaseException) -> bool:
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def run_batches(batches: Iterable[np.ndarray], fn: Callable[[np.ndarray], None],
                describe: Callable[[int], str] = lambda i: f"item {i}") -> int:
    """Call `fn(batch)` for each batch; on out-of-memory free the cache, split the batch in half and
    retry both halves. Returns how many splits happened. A single item that does not fit raises
    MemoryError naming it (via `describe`)."""
    import torch

    splits = 0
    stack = list(batches)[::-1]
    while stack:
        batch = stack.pop()
        try:
            fn(batch)
        except Exception as err:   # noqa: BLE001 - re-raised unless it is an out-of-memory
            if not is_oom(err):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(batch) == 1:
                raise MemoryError(f"{describe(int(batch[0]))} does not fit in memory even alone; lower "
                                  "`--max-length` (it truncates) or use a card with more memory") from err
            half = len(batch) // 2
            log.warning("out of memory on a batch of %d; retrying as %d + %d", len(batch), half, len(batch) - half)
            stack.extend([batch[half:], batch[:half]])
            splits += 1
    return splits
