"""Probes: each fits a shortcut or multimodal model out-of-fold and returns per-pair margins.

- `text_embedding`: frozen text encoder + BT head on chosen-minus-rejected embeddings and their
  interaction with the prompt (the default text-only shortcut model);
- `cues`: interpretable features + BT logistic (which cue carries the shortcut);
- `multimodal`: frozen image features x text embeddings, a bilinear BT head trained with the text
  model's margin as a fixed offset (product of experts), so it learns what the text cannot explain;
- `external`: a user's own multimodal RM scores, read from two columns.
"""

from audit.probes.external import external_margins
from audit.probes.multimodal import multimodal_margins
from audit.probes.text_embedding import text_features

__all__ = ["external_margins", "multimodal_margins", "text_features"]
