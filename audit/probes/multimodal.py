"""Multimodal probe: a bilinear BT head over (image features, response embedding), cross-fitted.

The trap it avoids: a multimodal head fitted on shortcut-laden data learns the text cue too, its loss
is then high exactly where the text model's is, SFC ~ 0.5 everywhere and the weights do nothing.
Two guards: (1) the head is bilinear in (response embedding difference, centred image features), so a
pure text term (a cue that does not depend on the image) cannot be represented; (2) it is trained with
the text probe's out-of-fold margin as a fixed offset (product of experts), so whatever the text
already explains gives it no gradient. Its own margin is the image-grounded evidence, `mm_margin`.
"""

from __future__ import annotations

import numpy as np

from audit.bt import BilinearBT, PairFeatures, cross_fit


def multimodal_margins(image: np.ndarray, e_chosen: np.ndarray, e_rejected: np.ndarray, folds: np.ndarray,
                       groups: np.ndarray, text_margin: np.ndarray, seed: int, rank: int = 16) -> tuple[np.ndarray, list[float]]:
    # Centre and scale image features (statistics over all scored rows: unsupervised, label-free).
    v = image - image.mean(axis=0, keepdims=True)
    v = v / (v.std(axis=0, keepdims=True) + 1e-6) / np.sqrt(v.shape[1])
    x = PairFeatures(image=v, chosen=e_chosen, rejected=e_rejected)
    return cross_fit(lambda l2: BilinearBT(l2, rank=rank), x, folds, groups, offset=text_margin, seed=seed)
