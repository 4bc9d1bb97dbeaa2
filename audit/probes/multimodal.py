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

from audit.bt import LinearBT, PairFeatures, cross_fit


def _pca(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Top-k principal directions (k, d) of the rows of x (on at most 5000 rows, seeded)."""
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(len(x), min(len(x), 5000), replace=False)]
    _, _, vt = np.linalg.svd(sample - sample.mean(0), full_matrices=False)
    return vt[: min(k, vt.shape[0])]


def _standardise(x: np.ndarray) -> np.ndarray:
    return x / (x.std(axis=0, keepdims=True) + 1e-6)


def bilinear_features(image: np.ndarray, e_chosen: np.ndarray, e_rejected: np.ndarray, dims: int, seed: int) -> np.ndarray:
    responses = np.concatenate([e_chosen, e_rejected])
    t = _standardise((e_chosen - e_rejected) @ _pca(responses, dims, seed).T)          # (n, kt)
    centred = image - image.mean(axis=0, keepdims=True)
    v = _standardise(centred @ _pca(image, dims, seed).T)                              # (n, kv)
    return (t[:, :, None] * v[:, None, :]).reshape(len(t), -1) / np.sqrt(t.shape[1] * v.shape[1])


def multimodal_margins(image: np.ndarray, e_chosen: np.ndarray, e_rejected: np.ndarray, folds: np.ndarray,
                       groups: np.ndarray, text_margin: np.ndarray, seed: int, dims: int = 32) -> tuple[np.ndarray, float]:
    x = PairFeatures(linear=bilinear_features(image, e_chosen, e_rejected, dims, seed))
    return cross_fit(LinearBT, x, folds, groups, offset=text_margin, seed=seed)
