"""Text-embedding probe features: for a pair, [e_c - e_r, (e_c - e_r) * e_p] (d = 2 x encoder width).

The first block is what the responses say regardless of the question, the second how well each
response fits the prompt; a linear BT head over both is the default text-only shortcut model."""

from __future__ import annotations

import numpy as np

from audit.bt import PairFeatures


def text_features(e_prompt: np.ndarray, e_chosen: np.ndarray, e_rejected: np.ndarray) -> PairFeatures:
    diff = e_chosen - e_rejected
    return PairFeatures(linear=np.concatenate([diff, diff * e_prompt], axis=1))
