"""Text-embedding probe features: for a pair, [e_c - e_r, (e_c - e_r) * e_p] (d = 2 x encoder width).

The first block is what the responses say regardless of the question, the second how well each
response fits the prompt; a linear BT head over both is the default text-only shortcut model."""

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


from audit.probes.base import Probe, ProbeResult, register  # noqa: E402


@register
class TextEmbeddingProbe(Probe):
    """The default text-only shortcut model: a BT head on [e_c - e_r, (e_c - e_r) * e_p] of frozen
    text-encoder embeddings, cross-fitted."""

    name, role, needs = "text-embedding", "text", frozenset({"text"})

    @classmethod
    def selected(cls, cfg) -> bool:
        return cfg.text_probe == "embedding"

    def fit(self, ctx, fitted) -> ProbeResult:
        from audit.bt import LinearBT, cross_fit, nested_margins

        enc, emb = ctx.inputs["text"]
        x = text_feature_rows(emb)
        margin, l2 = cross_fit(LinearBT, x, ctx.folds, ctx.groups, seed=self.cfg.seed, max_fit=self.cfg.fit_pairs)
        nested = nested_margins(LinearBT, x, ctx.folds, l2, self.cfg.seed, self.cfg.fit_pairs)
        return ProbeResult(margin, l2=l2, nested=nested, encoder={"probe": "embedding", "name": self.cfg.text_encoder,
                                                   "pooling": enc.pooling, "fingerprint": enc.fingerprint})
