"""The warm start's loss: up-weighting rare orders steers the fit without shifting the policy's choices."""

from __future__ import annotations

import torch

from training.environment.spaces import HOLD, N_ACTIONS
from training.learners.warm_start import class_weights, imitation_loss, prior_adjustment


def _fit_bias(targets: torch.Tensor, adjustment: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The class probabilities a model of one logit per class reaches on `targets` (the same input everywhere)."""
    bias = torch.zeros(N_ACTIONS, requires_grad=True)
    optimizer = torch.optim.Adam([bias], lr=0.05)
    mask = torch.ones(len(targets), 1, dtype=torch.bool)
    for _ in range(1500):
        loss = imitation_loss(bias.expand(len(targets), 1, N_ACTIONS), targets[:, None], mask, weights, adjustment)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.softmax(bias.detach(), -1)


def test_the_adjusted_loss_fits_the_trader_s_own_frequencies():
    # the trader buys YES on 2% of decisions; the demonstrations kept every order and a quarter of the holds
    seen = torch.tensor([9800, 200, 0, 0, 0])
    kept = torch.tensor([2450, 200, 0, 0, 0])
    targets = torch.cat([torch.full((int(n),), c) for c, n in enumerate(kept) if n > 0])
    weights = class_weights(targets, N_ACTIONS)
    adjustment = prior_adjustment(weights, kept, seen)
    assert adjustment[HOLD] == 0 and torch.allclose(adjustment[1], torch.log(weights[1] * 4.0), atol=1e-4)
    fitted = _fit_bias(targets, adjustment, weights)
    assert abs(float(fitted[1]) - 0.02) < 0.003, fitted         # the trader's own share of orders
    shifted = _fit_bias(targets, torch.zeros(N_ACTIONS), weights)
    assert float(shifted[1]) > 0.25, shifted                     # without it: weights x 4 more orders than the trader
