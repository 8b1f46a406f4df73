"""The Gymnasium wrapper passes the environment checker."""

from __future__ import annotations

from features.schema import MODEL_FEATURES
from tests.training.synthetic import synthetic_data, synthetic_market
from training.environment.spaces import POSITION_FEATURES


def test_gymnasium_wrapper_passes_the_environment_checker():
    from gymnasium.utils.env_checker import check_env

    from training.environment.gym_env import KalshiMarketsEnv

    data = synthetic_data(*[synthetic_market(f"KX{i}", 2500, start=i) for i in range(3)])
    env = KalshiMarketsEnv(data)
    check_env(env, skip_render_check=True)
    observation, _ = env.reset(seed=3)
    assert observation["features"].shape == (5, len(MODEL_FEATURES) + POSITION_FEATURES)
    _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert isinstance(reward, float) and not truncated
