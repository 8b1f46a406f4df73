"""The generic warm start, part 1: a supervised forecast of the forward mid move, learned from data.

Nothing here knows what the simulator plants. Targets are what any market shows: the change of the mid
(in probability) over the next 10, 40 and 160 events of the same market, or to the settlement value when
the market settles sooner. The forecaster is an MLP over one market's model features, fitted on training
markets with a tenth of them (whole markets) held out for early stopping, so the fit it reports is on
markets it never saw. The policy embeds it (training/policy.py) and the forecast trader
(training/forecast_trader.py) acts on it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from training.market_data import MarketData, MarketSeries

HORIZONS = (10, 40, 160)   # events ahead
TARGET_SCALE = 10.0        # targets are learned in tenths of a probability: unit-scale for the loss


def forward_mid_moves(market: MarketSeries, horizons: tuple[int, ...] = HORIZONS) -> np.ndarray:
    """float32 [n, len(horizons)]: mid h events later minus the mid now, in probability. Past the last event
    the later value is the settlement (1 or 0) if the market settled, else the last mid."""
    mid = (market.bid.astype(np.float64) + market.ask.astype(np.float64)) / 200.0
    n = len(mid)
    final = (1.0 if market.outcome_yes else 0.0) if market.settled_ms is not None else (mid[-1] if n else 0.0)
    moves = np.empty((n, len(horizons)), dtype=np.float32)
    for k, h in enumerate(horizons):
        later = np.arange(n) + h
        moves[:, k] = np.where(later < n, mid[np.minimum(later, n - 1)], final) - mid
    return moves


class Forecaster(nn.Module):
    """Raw model features [..., F] -> forecast mid moves [..., H] in probability. Normalisation is part of it,
    so the exported policy takes raw feature values."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, hidden: int = 128, horizons: int = len(HORIZONS)):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean).clone().float())
        self.register_buffer("std", torch.as_tensor(std).clone().float())
        n = self.mean.shape[0]
        self.target_scale = TARGET_SCALE   # an attribute, so TorchScript sees a constant, not a global
        self.net = nn.Sequential(nn.Linear(n, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, horizons))

    def normalise(self, features: torch.Tensor) -> torch.Tensor:
        return ((features - self.mean) / self.std).clamp(-10.0, 10.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalise(features)) / self.target_scale


@dataclass(frozen=True)
class ForecastConfig:
    hidden: int = 128
    batch: int = 4096
    learning_rate: float = 1e-3
    max_epochs: int = 3
    held_out_share: float = 0.1    # of training markets, whole markets
    checks_per_epoch: int = 8      # held-out loss checks per epoch (the best state is kept)
    max_rows: int = 4_000_000      # training rows sampled per epoch at most (memory and time)


def _rows(markets: list[MarketSeries]) -> tuple[torch.Tensor, torch.Tensor]:
    if not markets:
        raise ValueError("no training markets to fit the forecaster on")
    features = torch.from_numpy(np.concatenate([m.features for m in markets]))
    targets = torch.from_numpy(np.concatenate([forward_mid_moves(m) for m in markets]))
    return features, targets


def _loss(model: Forecaster, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.huber_loss(model.net(model.normalise(features)), targets * TARGET_SCALE, delta=1.0)


def held_out_fit(model: Forecaster, features: torch.Tensor, targets: torch.Tensor, chunk: int = 1 << 16) -> dict:
    """Huber loss and R^2 per horizon on rows the model did not train on."""
    with torch.no_grad():
        predicted = torch.cat([model(features[i:i + chunk]) for i in range(0, len(features), chunk)])
        residual = ((predicted - targets) ** 2).mean(0)
        variance = targets.var(0).clamp(min=1e-12)
        loss = float(nn.functional.huber_loss(predicted * TARGET_SCALE, targets * TARGET_SCALE, delta=1.0))
    return {"loss": loss, "r2": {f"{h}_events": float(1 - residual[k] / variance[k]) for k, h in enumerate(HORIZONS)}}


def fit_forecaster(data: MarketData, config: ForecastConfig = ForecastConfig(), seed: int = 0,
                   seconds: float | None = None, device: torch.device | str = "cpu") -> tuple[Forecaster, dict]:
    """Fit on training markets, early-stopped on held-out whole training markets; returns the best model
    (on CPU) and a report of the fit."""
    started = time.perf_counter()
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    train = sorted(data.of_split("train"), key=lambda m: m.ticker)
    order = torch.randperm(len(train), generator=generator).tolist()
    n_held = max(1, int(round(len(train) * config.held_out_share))) if len(train) > 1 else 0
    held = [train[i] for i in order[:n_held]]
    fit = [train[i] for i in order[n_held:]] or held
    features, targets = _rows(fit)
    held_features, held_targets = _rows(held) if held else (features[:0], targets[:0])
    features, targets = features.to(device), targets.to(device)
    held_features, held_targets = held_features.to(device), held_targets.to(device)
    model = Forecaster(torch.from_numpy(data.mean), torch.from_numpy(data.std), config.hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    best_state, best_loss = copy.deepcopy(model.state_dict()), held_out_fit(model, held_features, held_targets)["loss"]
    initial_loss = best_loss
    rows = min(len(features), config.max_rows)
    batches = max(rows // config.batch, 1)
    check_every = max(batches // config.checks_per_epoch, 1)
    steps = checks = 0
    stopped = "epochs"
    for _ in range(config.max_epochs):
        permutation = torch.randperm(len(features), generator=generator)[:rows].to(device)
        for b in range(batches):
            idx = permutation[b * config.batch:(b + 1) * config.batch]
            loss = _loss(model, features[idx], targets[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if steps % check_every == 0:
                checks += 1
                current = held_out_fit(model, held_features, held_targets)["loss"]
                if current < best_loss:
                    best_loss, best_state = current, copy.deepcopy(model.state_dict())
            if seconds is not None and time.perf_counter() - started > seconds:
                stopped = "time"
                break
        if stopped == "time":
            break
    model.load_state_dict(best_state)
    model = model.cpu().eval()
    report = {"train_markets": len(fit), "held_out_markets": len(held), "rows": len(features), "steps": steps,
              "checks": checks, "stopped_by": stopped, "initial_held_out_loss": initial_loss,
              "held_out": held_out_fit(model, held_features.cpu(), held_targets.cpu()),
              "seconds": time.perf_counter() - started, "horizons_events": list(HORIZONS)}
    return model, report
