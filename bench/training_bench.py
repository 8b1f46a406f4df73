"""Training-stack speed on a simulated universe's feature store (built here; needs nothing else).

- simulator slot-steps/s on one thread (random actions, 256 episodes in a batch);
- PPO environment steps/s end to end (rollout + update) on one thread, against Stable-Baselines3 PPO on
  the same simulator through the Gymnasium wrapper, in the same run;
- inference latency p50/p99 (batch 1, one thread) of the scripted int8 and fp32 policies.
Install the extra with `pip install -e .[bench]` (`make bench` does).
"""

from __future__ import annotations

import time
import warnings
from datetime import date

import numpy as np
import torch

from bench.results_io import Result, print_results, write_results
from bench.universe import feature_store
from source.simulator import SimulationConfig
from training.data.cache import load_market_data
from training.environment.batched_env import BatchedMarketEnv
from training.environment.episodes import build_episode, curriculum_stage
from training.environment.spaces import MAX_SLOTS
from training.learners.policy import build_policy
from training.learners.ppo import Budget, PPOConfig, run_ppo
from training.release.publish import latency_us, script_fp32, script_int8

UNIVERSE = SimulationConfig(markets=120, days=3, seed=3, start=date(2026, 6, 1))
def simulator_slot_steps(data, n_envs: int = 256, steps: int = 400) -> float:
    rng = np.random.default_rng(0)
    env = BatchedMarketEnv(data, lambda _: build_episode(data, rng, curriculum_stage(0.99)), n_envs)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for _ in range(steps):
        env.observe()
        env.step(torch.randint(0, 5, (n_envs, MAX_SLOTS), generator=generator))
    return n_envs * MAX_SLOTS * steps / (time.perf_counter() - started)


def sb3_steps_per_second(data, steps: int = 4096) -> float:
    from stable_baselines3 import PPO

    from training.environment.gym_env import KalshiMarketsEnv

    warnings.filterwarnings("ignore")
    model = PPO("MultiInputPolicy", KalshiMarketsEnv(data), n_steps=1024, batch_size=2048 // 4, n_epochs=2, seed=0,
                verbose=0, device="cpu")
    started = time.perf_counter()
    model.learn(total_timesteps=steps)
    return steps / (time.perf_counter() - started)


def ppo_steps_per_second(data, steps: int = 128 * 64 * 8, n_envs: int = 128, device: str = "cpu") -> float:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    env = BatchedMarketEnv(data, lambda _: build_episode(data, rng, curriculum_stage(0.99)), n_envs, device=device)
    policy = build_policy(data.feature_names, data.mean, data.std).to(device)
    return run_ppo(policy, env, PPOConfig(n_envs=n_envs), Budget(steps)).steps_per_second


def cuda_results(data) -> list[Result]:
    """PPO at 4,096 environments on the GPU, when there is one (the figures name the card)."""
    if not torch.cuda.is_available():
        return []
    name = f"cuda: {torch.cuda.get_device_name(0)}"
    steps = ppo_steps_per_second(data, steps=4096 * 128 * 4, n_envs=4096, device="cuda")
    return [Result("ppo_env_steps_per_s_cuda_4096_envs", steps, "steps/s", target="GPU", device=name)]


def main() -> list[Result]:
    with feature_store(UNIVERSE, "kfs_bench_training") as lake:
        data = load_market_data(lake)
    torch.set_num_threads(1)
    slot_steps = simulator_slot_steps(data)
    ours = ppo_steps_per_second(data)
    theirs = sb3_steps_per_second(data)
    torch.set_num_threads(1)
    policy = build_policy(data.feature_names, data.mean, data.std).eval()
    int8 = latency_us(script_int8(policy), len(data.feature_names), calls=3000)
    fp32 = latency_us(script_fp32(policy), len(data.feature_names), calls=3000)
    results = [
        Result("simulator_slot_steps_per_s_one_thread", slot_steps, "slot-steps/s", target="batched, 256 episodes"),
        Result("ppo_env_steps_per_s_one_thread", ours, "steps/s", "sb3_ppo_gymnasium_steps_per_s",
               theirs, ours / theirs, ">= 20"),
        Result("int8_inference_p50", int8["p50_us"], "us", "fp32_scripted_p50", fp32["p50_us"],
               int8["p50_us"] / fp32["p50_us"]),
        Result("int8_inference_p99", int8["p99_us"], "us", "fp32_scripted_p99", fp32["p99_us"],
               int8["p99_us"] / fp32["p99_us"], "<= 1000 us"),
        *cuda_results(data),
    ]
    write_results("training.json", results)
    print_results(f"training ({UNIVERSE.markets} markets x {UNIVERSE.days} days feature store)", results)
    return results


if __name__ == "__main__":
    main()
