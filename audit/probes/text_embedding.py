"""Text-embedding probe features: for a pair, [e_c - e_r, (e_c - e_r) * e_p] (d = 2 x encoder width).

The first block is what the responses say regardless of the question (the prompt-blind part), the
second how well each response fits the prompt; the text probe's `tokens` and `embedding` components
fit ridge BT heads over both (`audit.probes.stack`)."""

from __future__ import annotations

import numpy as np

from audit.bt import PairFeatures


def text_features(e_prompt: np.ndarray, e_chosen: np.ndarray, e_rejected: np.ndarray) -> PairFeatures:
    diff = e_chosen - e_rejected
    return PairFeatures(linear=np.concatenate([diff, diff * e_prompt], axis=1))


class PairEmbeddings:
    """The prompt / chosen / rejected embeddings of m pairs as positions in an EmbeddingCache, gathered
    chunk by chunk (12 bytes per text instead of a float32 row)."""

    def __init__(self, cache, prompt_keys, chosen_keys, rejected_keys) -> None:
        self.cache, self.m = cache, len(prompt_keys)
        self.loc = [cache.locate(k) for k in (prompt_keys, chosen_keys, rejected_keys)]

    def take(self, idx: np.ndarray, which: str = "pcr") -> tuple[np.ndarray, ...]:
        idx = np.asarray(idx)
        pos = {"p": 0, "c": 1, "r": 2}
        return tuple(self.cache.gather(self.loc[pos[w]][0][idx], self.loc[pos[w]][1][idx]) for w in which)

    def __len__(self) -> int:
        return self.m


def text_feature_rows(emb: PairEmbeddings):
    """Lazy [e_c - e_r, (e_c - e_r) * e_p] rows for `cross_fit`."""
    from audit.bt import LazyFeatures

    return LazyFeatures(len(emb), lambda idx: text_features(*emb.take(idx)).linear)
