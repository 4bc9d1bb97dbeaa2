"""Probes: each fits a model of the preference out of fold and returns per-pair margins.

The interface and the registry are in `audit.probes.base`; `score` runs one probe per role (`cue`,
`text`, `mm`), chosen by the config. The registered probes:

- `cue` (`cues`): interpretable cue features + BT logistic (which cue carries the shortcut);
- `text-embedding` (`text_embedding`): frozen text encoder + BT head on chosen-minus-rejected
  embeddings and their interaction with the prompt (the default text-only shortcut model);
- `text-finetune` (`finetune`): a text reward model fine-tuned per fold (`--text-probe finetune`);
- `bilinear` (`multimodal`): frozen image features x text embeddings, a bilinear BT head trained with
  the text model's margin as a fixed offset (product of experts), so it learns what the text cannot
  explain (the offline multimodal side: `sfc-residual`);
- `external-scores` (`external`): a user's own multimodal RM scores, read from columns (`--mm-scores`);
- `reward-model` (`reward_model`): a user's multimodal RM, scored with and without the image (`--rm`);
- `lexical` (`lexical`): BT head on hashed word n-gram differences (`--text-probe lexical`), and as the
  auxiliary `lexical-aux` beside another text probe, with phrase discovery (`summary.phrases`);
- `prompt-blind` (`lexical`, auxiliary): the text probe's head on the responses alone;
- `text-only` (`text_only`): the empty multimodal side of `score --text-only` (NaN margins).

Adding a probe: one module with a registered `Probe` subclass, one import line below, one test.
"""

from audit.probes import text_only  # noqa: F401 (registered first: `--text-only` fills the mm role with no model)
from audit.probes import cues, external, finetune, lexical, multimodal, reward_model, text_embedding  # noqa: F401 (registry)
from audit.probes.base import PROBES, Probe, ProbeResult, register, select
from audit.probes.external import external_margins
from audit.probes.multimodal import multimodal_margins
from audit.probes.text_embedding import text_features

__all__ = ["PROBES", "Probe", "ProbeResult", "external_margins", "multimodal_margins", "register", "select",
           "text_features"]
