"""Bradley-Terry losses: standard, weighted (per-pair weights, like TRL's `margin` key), and the
paper's dynamic shortcut-aware loss, exactly as the reference code computes it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-7


def bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Per-pair -log sigmoid(r_c - r_r), shape (B,)."""
    return -F.logsigmoid(r_chosen - r_rejected)


def weighted_bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, weight: torch.Tensor,
                     reduction: str = "mean") -> torch.Tensor:
    """sum_i w_i L_i / B: a plain mean of weighted losses. Weights have mean 1 over the dataset (the
    audit normalises them), so the expected scale matches the unweighted loss; a pair with w = 0
    contributes no gradient. Not divided by sum(w) per batch, which would re-normalise every batch.
    `reduction="none"` returns the per-pair terms w_i L_i."""
    per_pair = weight * bt_loss(r_chosen, r_rejected)
    return per_pair if reduction == "none" else per_pair.mean()


def shortcut_aware_weight(main_margin: torch.Tensor, bias_margin: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """w = eps/2 + L_t / (eps + L_t + L), both losses detached. This is the reference code's Python
    precedence (`eps / 2 - logsig(t) / (eps - logsig(t) - logsig(m))`), not (L_t + eps/2)/(L_t + L + eps)."""
    lt = -F.logsigmoid(bias_margin.detach())
    lm = -F.logsigmoid(main_margin.detach())
    return eps / 2 + lt / (eps + lt + lm)


def shortcut_aware_loss(main_chosen: torch.Tensor, main_rejected: torch.Tensor, bias_chosen: torch.Tensor,
                        bias_rejected: torch.Tensor, eps: float = EPS, reduction: str = "mean"
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """mean(w * L + L_t): the multimodal loss weighted by the detached SFC-like coefficient, plus the
    text-only branch's own unweighted loss (so the branch trains jointly). Returns (loss, w);
    `reduction="none"` returns the per-pair terms w_i L_i + L_t,i."""
    main_margin = main_chosen - main_rejected
    bias_margin = bias_chosen - bias_rejected
    w = shortcut_aware_weight(main_margin, bias_margin, eps)
    per_pair = w * -F.logsigmoid(main_margin) - F.logsigmoid(bias_margin)
    return (per_pair if reduction == "none" else per_pair.mean()), w
