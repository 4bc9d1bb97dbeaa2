"""The training losses on hand-worked logits: the weighted BT loss and the paper's shortcut-aware loss."""

from __future__ import annotations

import math

import pytest
import torch

from audit.train.losses import bt_loss, shortcut_aware_loss, shortcut_aware_weight, weighted_bt_loss


def test_shortcut_aware_weight_follows_the_reference_precedence():
    # (bias margin, main margin) = (-2, 3): L_t = 2.126928, L = 0.048587 -> 0.977666 (both forms agree)
    w = shortcut_aware_weight(torch.tensor([3.0]), torch.tensor([-2.0]))
    assert w.item() == pytest.approx(0.977666, abs=1e-6)
    # Both margins 40: L_t = L = 4.2484e-18, so w = eps/2 + L_t/(eps + 2 L_t) = 5e-8 + 4.248e-11
    # = 5.00425e-8 (the smoothed form would give 0.5): the reference code's precedence.
    w = shortcut_aware_weight(torch.tensor([40.0], dtype=torch.float64), torch.tensor([40.0], dtype=torch.float64))
    assert w.item() == pytest.approx(5.00425e-8, rel=1e-5)
    # Both margins 5: 0.499996 per the paper digest.
    w = shortcut_aware_weight(torch.tensor([5.0], dtype=torch.float64), torch.tensor([5.0], dtype=torch.float64))
    assert w.item() == pytest.approx(0.499996, abs=1e-6)


def test_shortcut_aware_loss_value_and_gradients():
    mc = torch.tensor([1.0, 0.5], requires_grad=True)
    mr = torch.tensor([0.0, 1.0], requires_grad=True)
    bc = torch.tensor([2.0, -1.0], requires_grad=True)
    br = torch.tensor([0.0, 0.0], requires_grad=True)
    loss, w = shortcut_aware_loss(mc, mr, bc, br)
    lm = [math.log1p(math.exp(-1.0)), math.log1p(math.exp(0.5))]
    lt = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(1.0))]
    ws = [1e-7 / 2 + lt[i] / (1e-7 + lt[i] + lm[i]) for i in range(2)]
    assert w.tolist() == pytest.approx(ws, rel=1e-5)
    assert loss.item() == pytest.approx(sum(ws[i] * lm[i] + lt[i] for i in range(2)) / 2, rel=1e-5)
    loss.backward()
    # No gradient flows through w: the main branch's gradient is exactly w_i * dL_i/dm_i / B.
    dl = [-1 / (1 + math.exp(1.0)), -1 / (1 + math.exp(-0.5))]
    assert mc.grad.tolist() == pytest.approx([ws[i] * dl[i] / 2 for i in range(2)], rel=1e-5)
    # The text branch is trained by its own unweighted loss.
    dt = [-1 / (1 + math.exp(2.0)), -1 / (1 + math.exp(-1.0))]
    assert bc.grad.tolist() == pytest.approx([dt[i] / 2 for i in range(2)], rel=1e-5)


def test_weighted_loss_zero_weight_removes_a_pair():
    rc = torch.tensor([0.3, -0.2], requires_grad=True)
    rr = torch.tensor([0.1, 0.4], requires_grad=True)
    loss = weighted_bt_loss(rc, rr, torch.tensor([2.0, 0.0]))
    assert loss.item() == pytest.approx(2.0 * bt_loss(torch.tensor(0.3), torch.tensor(0.1)).item() / 2)
    loss.backward()
    assert rc.grad[1].item() == 0.0 and rr.grad[1].item() == 0.0 and rc.grad[0].item() != 0.0
