"""Multimodal probe: a bilinear BT head between response embeddings and image features, cross-fitted.

Features of a pair: the outer product of the chosen-minus-rejected text embedding and the centred
image features, both first reduced by PCA (label-free, fitted on the scored rows) to `dims`
components: a full-rank bilinear model on those subspaces, fitted as a convex linear BT head.

The trap it avoids: a multimodal head fitted on shortcut-laden data learns the text cue too, its loss
is then high exactly where the text model's is, SFC ~ 0.5 everywhere and the weights do nothing. Two
guards: (1) every feature is a product of a text difference and a centred image feature, so a pure
text term (a cue that does not depend on the image) cannot be represented; (2) the head is trained
with the text probe's out-of-fold margin as a fixed offset (product of experts), so whatever the text
already explains gives it no gradient. Its own margin is the image-grounded evidence: `mm_margin`.
"""

from __future__ import annotations

import numpy as np

from audit.bt import SCORE_CHUNK, LinearBT, cross_fit


def _pca_rows(n: int, rows, k: int, seed: int) -> np.ndarray:
    """Top-k principal directions (k, d) of n rows fetched by `rows(idx)` (on at most 5000, seeded)."""
    rng = np.random.default_rng(seed)
    sample = rows(rng.choice(n, min(n, 5000), replace=False))
    _, _, vt = np.linalg.svd(sample - sample.mean(0), full_matrices=False)
    return vt[: min(k, vt.shape[0])]


def _pca(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    return _pca_rows(len(x), lambda idx: x[idx], k, seed)


def _chunks(n: int, size: int = SCORE_CHUNK):
    for s in range(0, n, size):
        yield np.arange(s, min(n, s + size))


def bilinear_projections(image_rows, chosen_rows, rejected_rows, n: int, dims: int, seed: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The per-pair PCA projections (n, kt) of the text difference and (n, kv) of the centred image
    features, standardised; rows are fetched in chunks, so only these small projections are held."""
    def responses(idx: np.ndarray) -> np.ndarray:      # rows 0..n-1 chosen, n..2n-1 rejected
        is_c = idx < n
        rows = [(is_c, chosen_rows(idx[is_c])), (~is_c, rejected_rows(idx[~is_c] - n))]
        width = max(r.shape[1] for _, r in rows)
        out = np.empty((len(idx), width), dtype=np.float32)
        for mask, r in rows:
            if mask.any():
                out[mask] = r
        return out

    def project(rows, basis: np.ndarray, shift=0.0) -> np.ndarray:
        """(n, k) float32 projections filled chunk by chunk, standardised in place (no extra copies)."""
        out = np.empty((n, basis.shape[0]), dtype=np.float32)
        for i in _chunks(n):
            out[i] = (rows(i) - shift) @ basis.T
        out /= out.std(axis=0, keepdims=True) + 1e-6
        return out

    pt = _pca_rows(2 * n, responses, dims, seed)
    t = project(lambda i: chosen_rows(i) - rejected_rows(i), pt)
    total = None
    for i in _chunks(n):
        s = image_rows(i).sum(0, dtype=np.float64)
        total = s if total is None else total + s
    mean = (total / max(n, 1)).astype(np.float32)
    pv = _pca_rows(n, image_rows, dims, seed)
    return t, project(image_rows, pv, mean)


def bilinear_rows(t: np.ndarray, v: np.ndarray):
    """Lazy outer-product features (n, kt * kv) for `cross_fit`."""
    from audit.bt import LazyFeatures

    scale = np.sqrt(t.shape[1] * v.shape[1])
    return LazyFeatures(len(t), lambda idx: (t[idx, :, None] * v[idx, None, :]).reshape(len(idx), -1) / scale)


def multimodal_margins(image_rows, chosen_rows, rejected_rows, n: int, folds: np.ndarray, groups: np.ndarray,
                       text_margin, seed: int, dims: int = 32, max_fit: int | None = None
                       ) -> tuple[np.ndarray, float]:
    """`*_rows(idx) -> float32 rows`: image features and chosen / rejected embeddings of the pairs.
    `text_margin`: the offset, one array or a function of the held-out fold (`audit.bt.nested_margins`)."""
    t, v = bilinear_projections(image_rows, chosen_rows, rejected_rows, n, dims, seed)
    return cross_fit(LinearBT, bilinear_rows(t, v), folds, groups, offset=text_margin, seed=seed, max_fit=max_fit)


from audit.probes.base import Probe, ProbeResult, register  # noqa: E402


@register
class BilinearProbe(Probe):
    """The offline multimodal probe (no `--rm`, no `--mm-scores`): image features x response
    embeddings (the text encoder's when the text probe runs it, else the static token embeddings),
    trained with the text probe's margin as a fixed offset; gives `sfc-residual`."""

    name, role = "bilinear", "mm"

    @classmethod
    def selected(cls, cfg) -> bool:
        return not (cfg.rm or cfg.mm_scores or cfg.text_only)

    def __init__(self, cfg, ctx=None) -> None:
        from audit.probes.stack import text_inputs

        super().__init__(cfg, ctx)
        self.text_kind = "text" if "text" in text_inputs(cfg, ctx) else "tokens"
        self.needs = frozenset({"image", self.text_kind})

    def fit(self, ctx, fitted) -> ProbeResult:
        cfg = self.cfg
        tenc, emb = ctx.inputs[self.text_kind]
        ienc, image_rows = ctx.inputs["image"]
        text = fitted["text"]
        margin, l2 = multimodal_margins(image_rows, lambda i: emb.take(i, "c")[0], lambda i: emb.take(i, "r")[0],
                                        ctx.m, ctx.folds, ctx.groups, text.nested or text.margin, cfg.seed,
                                        dims=cfg.mm_dims, max_fit=cfg.fit_pairs)
        return ProbeResult(margin, l2=l2, encoder={
            "mm": f"bilinear probe on {cfg.mm_dims}x{cfg.mm_dims} PCA dims (product of experts with the text margin)",
            "image_encoder": cfg.image_encoder, "fingerprint": ienc.fingerprint,
            "text_side": f"{self.text_kind} ({tenc.fingerprint})",
            "offset": ("nested out-of-fold text margins (no offset saw the multimodal head's test fold)"
                       if text.nested else "out-of-fold text margins (not nested: the fine-tuned text probe alone is "
                       "fitted once per fold)")})
