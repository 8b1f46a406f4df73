"""The train -> validate -> publish chain on the small universe, shared by the pipeline and publish tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def published(built_store):
    from training.market_data import load_market_data
    from training.pipeline import (
        TrainingConfig,
        run_publish,
        run_training,
        run_validation,
    )
    from training.ppo import PPOConfig

    _, lake, _ = built_store
    data = load_market_data(lake)
    summary = run_training(lake, TrainingConfig(seed=1, total_steps=8 * 64 * 12, warm_start_batches=5,
                                                 ppo=PPOConfig(n_envs=8, rollout_steps=64)), data=data)
    validation = run_validation(lake, "validation", data=data)
    manifest = run_publish(lake, data=data)
    return lake, data, summary, validation, manifest
