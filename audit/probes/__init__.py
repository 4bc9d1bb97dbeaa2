"""Probes: each fits a model of the preference out of fold and returns per-pair margins.

The interface and the registry are in `audit.probes.base`; `score` runs one probe per role (`cue`,
`text`, `mm`), chosen by the config. The registered probes:

- `cue` (`cues`): interpretable cue features + BT logistic (which cue carries the shortcut);
- `stack` (`stack`): the default text-only shortcut model, a nested stack of components: static token
  embeddings (`tokens`), the text encoder (`embedding`), naive-Bayes n-gram log-odds (`lexical`), the
  cues (`cue`), optionally a fine-tuned text RM (`finetune`, `audit.probes.finetune`);
  `text-tokens`, `text-embedding`, `lexical`, `text-finetune`: one component alone (`--text-probe`);
- `bilinear` (`multimodal`): frozen image features x text embeddings, a bilinear BT head trained with
  the text model's margin as a fixed offset (product of experts), so it learns what the text cannot
  explain (the offline multimodal side: `sfc-residual`);
- `external-scores` (`external`): a user's own multimodal RM scores, read from columns (`--mm-scores`);
- `reward-model` (`reward_model`): a user's multimodal RM, scored with and without the image (`--rm`);
- `text-only` (`text_only`): the empty multimodal side of `score --text-only` (NaN margins);
- auxiliary, in this order: `slices` (`slices`: the text-only accuracy per value of the data's own
  low-cardinality columns), `phrases` (`phrases`: phrase discovery), `prompt-blind` (`stack`: the text
  probe on the responses alone).

Adding a probe: one module with a registered `Probe` subclass, one import line below, one test.
"""

from audit.probes import text_only  # noqa: F401 (registered first: `--text-only` fills the mm role with no model)
from audit.probes import cues, external, multimodal, reward_model, stack  # noqa: F401 (registry)
from audit.probes import slices, phrases  # noqa: F401,I001 (auxiliary, in this order: phrases read the slices)
from audit.probes.base import PROBES, Probe, ProbeResult, register, select
from audit.probes.external import external_margins
from audit.probes.multimodal import multimodal_margins
from audit.probes.text_embedding import text_features

__all__ = ["PROBES", "Probe", "ProbeResult", "external_margins", "multimodal_margins", "register", "select",
           "text_features"]
