"""The generic warm start, part 1: a supervised forecast of the forward mid move, learned from data.

Nothing here knows what the simulator plants. Targets are what any market shows: the change of the mid
(in probability) over the next 10, 40 and 160 events of the same market, or to the settlement value when
the market settles sooner. The forecaster is an MLP over one market's model features, fitted on training
markets with a tenth of them (whole markets) held out for early stopping, so the fit it reports is on
markets it never saw. The policy embeds it (training/learners/policy.py) and the forecast trader
(training/learners/forecast_trader.py) acts on it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn

from training.data.mapped_pages import release_mapped_pages
from training.data.market_data import MarketData, MarketSeries
from training.learners.limits import NO_LIMIT, TimeLimit

HORIZONS = (10, 40, 160)   # events ahead
TARGET_SCALE = 10.0        # targets are learned in tenths of a probability: unit-scale for the loss
WINDOW_ROWS = 1 << 20      # rows of the training arrays (about 230 MB) one read holds mapped at a time
PART_BATCHES = 64          # training batches read at once (in the arrays' order): 262,144 rows, about 57 MB


def forward_mid_moves(market: MarketSeries) -> np.ndarray:
    """float32 [n, len(HORIZONS)]: mid h events later minus the mid now, in probability. Past the last event
    the later value is the settlement (1 or 0) if the market settled, else the last mid."""
    return MarketRows([market]).take(np.arange(len(market.time_ms)))[1].numpy()


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
    held_out_share: float = 0.1    # of the fit markets, whole markets, where no market selects
    checks_per_epoch: int = 8      # held-out loss checks per epoch (the best state is kept)
    max_rows: int = 4_000_000      # training rows sampled per epoch at most (memory and time)


def early_stopping_roles(data: MarketData, config: ForecastConfig, generator: torch.Generator
                         ) -> tuple[list[MarketSeries], list[MarketSeries]]:
    """(fit, held out) markets: the fit and select roles; where no market selects (a universe too small to
    hold one out), `held_out_share` of the fit markets, drawn by `generator`."""
    fit = sorted(data.of_role("fit"), key=lambda m: m.ticker)
    held = sorted(data.of_role("select"), key=lambda m: m.ticker)
    if held or len(fit) < 2:
        return fit, held
    order = torch.randperm(len(fit), generator=generator).tolist()
    n_held = max(1, int(round(len(fit) * config.held_out_share)))
    return [fit[i] for i in order[n_held:]], [fit[i] for i in order[:n_held]]


class MarketRows:
    """The rows of some markets numbered one after another (market by market, in the given order), read on
    demand: features and forward-mid-move targets of any positions, without concatenating the markets. With
    MarketData's flat arrays (the training cache, memory-mapped) a read touches only the rows asked for;
    markets made one by one (tests) are concatenated once."""

    def __init__(self, markets: list[MarketSeries], arrays: dict[str, np.ndarray] | None = None):
        self.length = np.array([len(m.time_ms) for m in markets], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.length)]).astype(np.int64)
        if arrays is None or any(m.first_row is None for m in markets):
            arrays = {name: np.concatenate([getattr(m, name) for m in markets]) if markets else np.zeros(0)
                      for name in ("features", "bid", "ask")}
            self.first = self.offsets[:-1]
        else:
            self.first = np.array([m.first_row for m in markets], np.int64)
        self.arrays = arrays
        self.final = np.array([_final_mid(m) for m in markets], np.float64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def take(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(features float32 [k, F], targets float32 [k, H]) of the rows at `positions`; the targets are
        `forward_mid_moves` of those rows. Read in the arrays' order, `WINDOW_ROWS` of them at a time, the
        mapped pages given back after each window: positions spread over the whole history then hold one
        window of it in memory, not all of it (the kernel maps a large page-cache folio, up to 2 MiB, per
        row touched, so a few thousand random rows would map the whole cache)."""
        positions = np.asarray(positions, np.int64)
        owner = np.searchsorted(self.offsets, positions, side="right") - 1
        local = positions - self.offsets[owner]
        rows = self.first[owner] + local
        order = np.argsort(rows, kind="stable")
        features = np.empty((len(rows),) + self.arrays["features"].shape[1:], np.float32)
        targets = np.empty((len(rows), len(HORIZONS)), np.float32)
        window_starts = np.flatnonzero(np.diff(rows[order] // WINDOW_ROWS, prepend=-1))
        for chunk in np.split(order, window_starts[1:]):
            features[chunk] = self.arrays["features"][rows[chunk]]
            targets[chunk] = self._targets(rows[chunk], local[chunk], owner[chunk])
            release_mapped_pages()
        return torch.from_numpy(features), torch.from_numpy(targets)

    def _targets(self, rows: np.ndarray, local: np.ndarray, owner: np.ndarray) -> np.ndarray:
        mid = self._mid(rows)
        targets = np.empty((len(rows), len(HORIZONS)), np.float32)
        for k, h in enumerate(HORIZONS):
            inside = local + h < self.length[owner]
            targets[:, k] = np.where(inside, self._mid(np.where(inside, rows + h, rows)), self.final[owner]) - mid
        return targets

    def blocks(self, size: int = 1 << 16) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every row, `size` at a time, in order."""
        for start in range(0, len(self), size):
            yield self.take(np.arange(start, min(start + size, len(self))))

    def _mid(self, rows: np.ndarray) -> np.ndarray:
        return (self.arrays["bid"][rows].astype(np.float64) + self.arrays["ask"][rows].astype(np.float64)) / 200.0


def _final_mid(market: MarketSeries) -> float:
    """The value a forward move ends at past the market's last event: its settlement, else its last mid."""
    if market.settled_ms is not None:
        return 1.0 if market.outcome_yes else 0.0
    return (float(market.bid[-1]) + float(market.ask[-1])) / 200.0 if len(market.bid) else 0.0


def _loss(model: Forecaster, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.huber_loss(model.net(model.normalise(features)), targets * TARGET_SCALE, delta=1.0)


def held_out_fit(model: Forecaster, rows: MarketRows, device: torch.device | str = "cpu", chunk: int = 1 << 16) -> dict:
    """Huber loss and R^2 per horizon on rows the model did not train on, read `chunk` rows at a time (sums in
    float64, so the figures do not depend on the chunking)."""
    horizons = len(HORIZONS)
    loss_sum, count = 0.0, 0
    residual, target_sum, target_squares = (torch.zeros(horizons, dtype=torch.float64) for _ in range(3))
    with torch.no_grad():
        for features, targets in rows.blocks(chunk):
            predicted = model(features.to(device)).cpu()
            loss_sum += float(nn.functional.huber_loss(predicted * TARGET_SCALE, targets * TARGET_SCALE, delta=1.0,
                                                       reduction="sum"))
            residual += ((predicted - targets).double() ** 2).sum(0)
            target_sum += targets.double().sum(0)
            target_squares += (targets.double() ** 2).sum(0)
            count += len(targets)
    if count == 0:
        return {"loss": float("nan"), "r2": {f"{h}_events": float("nan") for h in HORIZONS}}
    variance = ((target_squares - target_sum ** 2 / count) / max(count - 1, 1)).clamp(min=1e-12)
    r2 = 1 - (residual / count) / variance
    return {"loss": loss_sum / (count * horizons), "r2": {f"{h}_events": float(r2[k]) for k, h in enumerate(HORIZONS)}}


def fit_forecaster(data: MarketData, config: ForecastConfig = ForecastConfig(), seed: int = 0,
                   time_limit: TimeLimit = NO_LIMIT, device: torch.device | str = "cpu") -> tuple[Forecaster, dict]:
    """Fit on the fit markets, early-stopped on the select markets (training/data/roles.py); returns the best
    model (on CPU) and a report of the fit."""
    started = time.perf_counter()
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    fit, held = early_stopping_roles(data, config, generator)
    if not fit:
        raise ValueError("no training markets to fit the forecaster on")
    fit_rows, held_rows = MarketRows(fit, data.arrays), MarketRows(held, data.arrays)
    model = Forecaster(torch.from_numpy(data.mean), torch.from_numpy(data.std), config.hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    best_state, best_loss = copy.deepcopy(model.state_dict()), held_out_fit(model, held_rows, device)["loss"]
    initial_loss = best_loss
    rows = min(len(fit_rows), config.max_rows)
    batches = max(rows // config.batch, 1)
    check_every = max(batches // config.checks_per_epoch, 1)
    steps = checks = 0
    stopped = "epochs"
    for _ in range(config.max_epochs):
        # One number per training row (8 bytes each) is what still grows with the history: the permutation
        # that keeps the batches those of earlier versions. The rows themselves are read per batch.
        permutation = torch.randperm(len(fit_rows), generator=generator)[:rows].numpy()
        for b in range(batches):
            if b % PART_BATCHES == 0:   # the next PART_BATCHES batches, read in one pass over the arrays
                part = fit_rows.take(permutation[b * config.batch:(b + PART_BATCHES) * config.batch])
            within = slice((b % PART_BATCHES) * config.batch, (b % PART_BATCHES + 1) * config.batch)
            features, targets = part[0][within], part[1][within]
            loss = _loss(model, features.to(device), targets.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if steps % check_every == 0:
                checks += 1
                current = held_out_fit(model, held_rows, device)["loss"]
                if current < best_loss:
                    best_loss, best_state = current, copy.deepcopy(model.state_dict())
            if time_limit.passed():
                stopped = "time_limit"
                break
        if stopped == "time_limit":
            break
    model.load_state_dict(best_state)
    model = model.cpu().eval()
    report = {"train_markets": len(fit), "held_out_markets": len(held), "rows": len(fit_rows), "steps": steps,
              "checks": checks, "stopped_by": stopped, "cut_short": stopped == "time_limit",
              "initial_held_out_loss": initial_loss,
              "held_out": held_out_fit(model, held_rows),
              "seconds": time.perf_counter() - started, "horizons_events": list(HORIZONS)}
    return model, report
