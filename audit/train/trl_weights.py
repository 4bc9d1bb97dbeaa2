"""Per-pair weights in Hugging Face TRL: a `DPOTrainer` and a `RewardTrainer` that honour the `weight`
column of an `export` (text and vision-language DPO), exactly, with the TRL versions that were tested.

The weighted loss of a micro-batch of B pairs is mean_i(w_i * l_i): TRL's own per-micro-batch mean with
each pair's term scaled by its weight, no per-batch renormalisation. With weights at mean 1 over the
training set (what `export` writes) a step is the importance-weighted risk at the stock learning-rate
scale, and gradient accumulation and data parallelism give the update of one big batch, as in stock TRL.

How the weight enters (no copy of TRL's loss code):
- DPO: every DPO loss TRL has (but `aot`) is a mean over pairs of a term that depends only on pair i's
  two sequences, rows i and i+B of the policy's output. A gradient hook on that output scales rows i and
  i+B by w_i, which is the gradient of mean_i(w_i * l_i). The logged `loss` stays TRL's unweighted one;
  `weight/mean` is logged beside it. An `sft` term (a token mean over the micro-batch) becomes a
  token mean with each token of pair i weighted by w_i.
- Reward: the per-pair Bradley-Terry terms are recomputed from the rewards TRL's forward returned
  (checked against TRL's own loss, so a change of its formula fails loudly) and averaged with weights.
Every weighted micro-batch checks that the weight was applied exactly once, else it raises.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from audit.errors import AuditError, ConfigError, FormatError

log = logging.getLogger(__name__)

# The TRL releases the exactness tests (tests/test_trl.py, tests/test_trl_ddp.py) ran against: every release
# from the first to the last, inclusive, but those in SKIPPED_TRL. Enforced at run time.
TESTED_TRL = ("1.9.0", "1.16.0")
SKIPPED_TRL = {"1.15.0": "its DPO fails in the stock trainer too on a CPU-only torch (its fused LM head imports "
                         "Triton), so the exactness tests could not run on it"}
INSTALL = "pip install 'shortcut-audit[trl]'"
_PIP_RANGE = "'trl>=" + TESTED_TRL[0] + ",<=" + TESTED_TRL[1] + "".join(",!=" + v for v in SKIPPED_TRL) + "'"
WEIGHT = "weight"
MEAN_TOLERANCE = 1e-3            # |mean weight - 1| beyond this is refused unless `renormalise=True`
UNWEIGHTABLE_DPO_LOSSES = ("aot", "aot_unpaired")   # they sort margins across the batch: no per-pair term


class MissingTRLError(ConfigError, ImportError):
    """TRL is not installed (the optional `[trl]` extra)."""


class TRLChangedError(AuditError, RuntimeError):
    """TRL computed the loss in a way the weighting does not recognise: the weight would be skipped."""


try:
    import torch
    import trl
    from trl import DPOTrainer, RewardTrainer
except ImportError as e:   # the core install does not need TRL
    raise MissingTRLError(f"the TRL integration needs TRL: `{INSTALL}` (tested: trl {TESTED_TRL[0]} to "
                          f"{TESTED_TRL[1]})") from e


def check_trl_version(version: str | None = None) -> str:
    """The installed TRL version, or a ConfigError when it is outside the tested range."""
    from packaging.version import Version

    version = version or trl.__version__
    lo, hi = (Version(v) for v in TESTED_TRL)
    skipped = {Version(v): why for v, why in SKIPPED_TRL.items()}
    if Version(version) in skipped:
        raise ConfigError(f"trl {version} is installed and was not tested: {skipped[Version(version)]}; "
                          f"`pip install {_PIP_RANGE}`")
    if not lo <= Version(version) <= hi:
        raise ConfigError(f"trl {version} is installed; the weighted trainers were tested with trl {TESTED_TRL[0]} "
                          f"to {TESTED_TRL[1]} only (a TRL release can change where its loss is computed and skip "
                          f"the weight silently): `pip install {_PIP_RANGE}`")
    return version


def check_weights(w: Any, renormalise: bool = False, where: str = "the training set") -> np.ndarray:
    """The `weight` column as float64, refused when a value is negative or not finite, or when its mean is
    more than MEAN_TOLERANCE from 1 (`renormalise=True` divides it by its mean instead)."""
    w = np.asarray(w, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        raise FormatError(f"`{WEIGHT}` of {where} must be finite and not negative: row {int(bad[0])} is "
                          f"{float(w[bad[0]])!r} ({bad.size} such rows); fix the column or re-run `shortcut-audit export`")
    mean = float(w.mean()) if w.size else 1.0
    if mean <= 0:
        raise FormatError(f"`{WEIGHT}` of {where} is zero on every row: nothing would train")
    if abs(mean - 1.0) > MEAN_TOLERANCE:
        if not renormalise:
            raise FormatError(f"`{WEIGHT}` of {where} has mean {mean:.6g}, not 1 (as `export` writes it): the "
                              "learning rate would be scaled by it. Pass `renormalise=True` to divide the weights "
                              "by their mean, or export the rows you train on")
        log.info("renormalised `%s` of %s from mean %.6g to 1", WEIGHT, where, mean)
        w = w / mean
    return w


class WeightCollator:
    """Wraps a TRL (or a user's) preference collator: the base collator sees each example without
    `weight`; the batch gets `weight`, a float32 tensor (B,) in example order."""

    def __init__(self, base):
        self.base = base

    def __call__(self, examples: list[dict]) -> dict:
        if not examples or WEIGHT not in examples[0]:
            return self.base(examples)
        try:
            w = torch.tensor([float(ex[WEIGHT]) for ex in examples], dtype=torch.float32)
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"every example needs a numeric `{WEIGHT}` when the first one has it") from None
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise FormatError(f"a batch holds a `{WEIGHT}` that is negative or not finite: {w.tolist()}")
        batch = self.base([{k: v for k, v in ex.items() if k != WEIGHT} for ex in examples])
        batch[WEIGHT] = w
        return batch


class _Weighted:
    """What both weighted trainers share: the version gate, the weight check, keeping the column through
    `remove_unused_columns`, the collator, and `weight/mean` in the logs."""

    def _bind(self, base, args: tuple, kwargs: dict, renormalise: bool) -> tuple[Any, tuple, dict]:
        """TRL's init arguments with the training set checked (and renormalised when asked); also the
        trainer's `args` (its config)."""
        import inspect

        bound = inspect.signature(base.__init__).bind_partial(self, *args, **kwargs)
        config = bound.arguments.get("args")
        bound.arguments["train_dataset"] = self._setup_weights(config, bound.arguments.get("train_dataset"), renormalise)
        return config, bound.args[1:], bound.kwargs

    def _setup_weights(self, args, train_dataset, renormalise: bool):
        check_trl_version()
        if getattr(args, "padding_free", False):
            raise ConfigError("`padding_free=True` packs pairs into one row, so a pair's weight has no row to scale; "
                              "set `padding_free=False`")
        columns = getattr(train_dataset, "column_names", None) or []
        if train_dataset is not None and WEIGHT not in columns:
            log.warning("the training set has no `%s` column: every pair weighs 1 (the stock trainer)", WEIGHT)
        elif hasattr(train_dataset, "__len__") and hasattr(train_dataset, "map"):
            w = check_weights(train_dataset[WEIGHT], renormalise)
            if renormalise:
                train_dataset = train_dataset.map(lambda _, i: {WEIGHT: float(w[i])}, with_indices=True)
        elif train_dataset is not None:
            log.warning("a streamed training set: `%s` is checked per batch (finite, not negative), its mean is not "
                        "checked", WEIGHT)
        return train_dataset

    def _wrap_collator(self) -> None:
        if not isinstance(self.data_collator, WeightCollator):
            self.data_collator = WeightCollator(self.data_collator)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if WEIGHT not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, WEIGHT]

    def _log_weight(self, w) -> None:
        metrics = getattr(self, "_metrics", None)
        if metrics is not None:
            metrics["train"]["weight/mean"].append(float(w.mean()))


class WeightedDPOTrainer(_Weighted, DPOTrainer):
    """TRL's `DPOTrainer` (text or vision-language) with a per-pair `weight` column: loss mean_i(w_i * l_i)
    per micro-batch (see the module docstring). `renormalise=True` divides `weight` by its mean over
    `train_dataset` first; without it a mean far from 1 is refused. All other arguments are TRL's."""

    def __init__(self, *args, renormalise: bool = False, **kwargs):
        args_, args, kwargs = self._bind(DPOTrainer, args, kwargs, renormalise)
        losses = getattr(args_, "loss_type", None) or ["sigmoid"]
        losses = [losses] if isinstance(losses, str) else list(losses)
        if any(lt in UNWEIGHTABLE_DPO_LOSSES for lt in losses):
            raise ConfigError(f"`loss_type` {losses}: `aot` and `aot_unpaired` sort the margins across the batch, so "
                              "no term belongs to one pair and a per-pair weight is not defined; use another loss type "
                              "or `shortcut-audit export --mode resample` (weights as repeated rows)")
        if getattr(args_, "use_liger_kernel", False) and _older_than("1.15.0"):
            raise ConfigError(f"`use_liger_kernel=True` with trl {trl.__version__}: its DPO loss calls the backbone "
                              "directly and would skip the weight; set `use_liger_kernel=False`")
        self._weight_grads_pending = 0
        super().__init__(*args, **kwargs)
        self._wrap_collator()      # after TRL's init: its reference log-prob precompute uses the base collator

    def compute_ref_log_probs(self, *args):
        """Reference log-probs (`(inputs)` up to trl 1.8, `(model, inputs)` since): never with `weight`."""
        *head, inputs = args
        return super().compute_ref_log_probs(*head, {k: v for k, v in inputs.items() if k != WEIGHT})

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        w = inputs.pop(WEIGHT, None)
        if w is None or not torch.is_grad_enabled():          # evaluation: the unweighted loss
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self._log_weight(w)
        if bool((w == 1).all()):                              # bit for bit the stock trainer
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        fired = []
        core = self.accelerator.unwrap_model(model)
        handle = core.register_forward_hook(lambda _m, _a, out: self._scale_rows(out, w, fired))
        try:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            handle.remove()
        if len(fired) != 1:
            raise TRLChangedError(f"the policy forward with gradients ran {len(fired)} times in one DPO micro-batch "
                                  f"(expected once): trl {trl.__version__} computes the loss in a way the weighting "
                                  "does not know, and the weights would not be applied exactly")
        return result

    def _scale_rows(self, output, w, fired: list) -> None:
        """Forward hook: scale the gradient of rows i and i+B of the per-token output by w_i."""
        out = getattr(output, "log_probs", None)               # trl >= 1.15: fused LM head
        if out is None:
            out = getattr(output, "logits", None)              # earlier: logits
        if out is None or not out.requires_grad:               # a reference forward (PEFT: no_grad)
            return
        if out.shape[0] != 2 * w.shape[0]:
            raise TRLChangedError(f"the policy output has {out.shape[0]} rows for {w.shape[0]} pairs (expected "
                                  f"[chosen; rejected], {2 * w.shape[0]} rows): trl {trl.__version__} batches pairs "
                                  "differently and the weights cannot be applied")
        fired.append(1)
        scale = torch.cat([w, w]).to(out.device, torch.float32).view(-1, *([1] * (out.dim() - 1)))
        self._weight_grads_pending += 1

        def hook(g):
            self._weight_grads_pending -= 1
            return (g.float() * scale).to(g.dtype)

        out.register_hook(hook)

    def training_step(self, *args, **kwargs):
        self._weight_grads_pending = 0                         # count this step's micro-batch only
        loss = super().training_step(*args, **kwargs)
        if self._weight_grads_pending:
            pending, self._weight_grads_pending = self._weight_grads_pending, 0
            raise TRLChangedError(f"{pending} weighted DPO output(s) got no gradient in this step: trl "
                                  f"{trl.__version__} no longer back-propagates through the policy output the "
                                  "weighting scales, so the weights were not applied")
        return loss


class WeightedRewardTrainer(_Weighted, RewardTrainer):
    """TRL's `RewardTrainer` (text sequence-classification models) with a per-pair `weight` column:
    mean_i(w_i * (-log sigmoid(r_c - r_r [- margin]))) + coef * mean_i(w_i * (r_c + r_r)^2) per
    micro-batch (`coef`: `center_rewards_coefficient`). `renormalise` as in `WeightedDPOTrainer`."""

    def __init__(self, *args, renormalise: bool = False, **kwargs):
        _, args, kwargs = self._bind(RewardTrainer, args, kwargs, renormalise)
        super().__init__(*args, **kwargs)
        self._wrap_collator()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        w = inputs.pop(WEIGHT, None)
        if w is None or not torch.is_grad_enabled():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self._log_weight(w)
        if bool((w == 1).all()):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        weighted = self._weighted_loss(loss, outputs.logits, inputs.get("margin"), w)
        return (weighted, outputs) if return_outputs else weighted

    def _weighted_loss(self, stock, logits, margin, w):
        """Recompute TRL's loss per pair from the rewards; check it equals TRL's, then weight it."""
        rewards = logits.squeeze(-1)
        if rewards.dim() != 1 or rewards.shape[0] != 2 * w.shape[0]:
            raise TRLChangedError(f"the reward model returned {tuple(logits.shape)} for {w.shape[0]} pairs (expected "
                                  f"[chosen; rejected], {2 * w.shape[0]} rewards): trl {trl.__version__} batches "
                                  "pairs differently and the weights cannot be applied")
        rc, rr = torch.chunk(rewards, 2)
        diff = rc - rr if margin is None else rc - rr - margin
        per_pair = -torch.nn.functional.logsigmoid(diff)
        w = w.to(per_pair.device, per_pair.dtype)
        coef = self.args.center_rewards_coefficient
        same, weighted = per_pair.mean(), (w * per_pair).mean()
        if coef is not None:
            centre = (rc + rr) ** 2
            same, weighted = same + coef * centre.mean(), weighted + coef * (w * centre).mean()
        if not math.isclose(float(same.detach()), float(stock.detach()), rel_tol=1e-5, abs_tol=1e-6):
            raise TRLChangedError(f"trl {trl.__version__}'s reward loss is {float(stock.detach()):.6g} where the "
                                  f"Bradley-Terry loss of its rewards is {float(same.detach()):.6g}: its formula changed, and the weighted "
                                  "loss would not be the one TRL trains")
        return weighted


def _older_than(version: str) -> bool:
    from packaging.version import Version

    return Version(trl.__version__) < Version(version)
