"""Training-stack speed (issue: train, validate, publish), on the demo universe's feature store.

- simulator slot-steps/s on one thread (random actions, 256 episodes in a batch);
- PPO environment steps/s end to end (rollout + update) on one thread, against Stable-Baselines3 PPO on
  the same simulator through the Gymnasium wrapper, in the same run;
- inference latency p50/p99 (batch 1, one thread) of the scripted int8 and fp32 policies.
Needs the feature store of `make demo` (lake/features); install the extra with `pip install -e .[bench]`.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results_io import Result, print_results, write_results  # noqa: E402
from kfs.lake import Lake  # noqa: E402
from training.env import BatchedMarketEnv  # noqa: E402
from training.episodes import MAX_SLOTS, build_episode, curriculum_stage  # noqa: E402
from training.market_data import load_market_data  # noqa: E402
from training.ppo import PPOConfig, make_policy, train  # noqa: E402
from training.publish import latency_us, script_fp32, script_int8  # noqa: E402


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

    from training.gym_env import KalshiMarketsEnv

    warnings.filterwarnings("ignore")
    model = PPO("MultiInputPolicy", KalshiMarketsEnv(data), n_steps=1024, batch_size=2048 // 4, n_epochs=2, seed=0,
                verbose=0, device="cpu")
    started = time.perf_counter()
    model.learn(total_timesteps=steps)
    return steps / (time.perf_counter() - started)


def main() -> list[Result]:
    lake = Lake()
    if not any((lake.root / "features" / "events").glob("date=*/*.parquet")):
        raise SystemExit(f"no feature store under {lake.root}: run `make demo` first")
    data = load_market_data(lake)
    torch.set_num_threads(1)
    slot_steps = simulator_slot_steps(data)
    ours = train(data, PPOConfig(threads=1, seed=0, total_steps=128 * 64 * 8, warm_start_batches=0))
    theirs = sb3_steps_per_second(data)
    torch.set_num_threads(1)
    policy = make_policy(data).eval()
    int8 = latency_us(script_int8(policy), len(data.feature_names), calls=3000)
    fp32 = latency_us(script_fp32(policy), len(data.feature_names), calls=3000)
    results = [
        Result("simulator_slot_steps_per_s_one_thread", slot_steps, "slot-steps/s", target="batched, 256 episodes"),
        Result("ppo_env_steps_per_s_one_thread", ours.steps_per_second, "steps/s", "sb3_ppo_gymnasium_steps_per_s",
               theirs, ours.steps_per_second / theirs, ">= 20"),
        Result("int8_inference_p50", int8["p50_us"], "us", "fp32_scripted_p50", fp32["p50_us"],
               int8["p50_us"] / fp32["p50_us"]),
        Result("int8_inference_p99", int8["p99_us"], "us", "fp32_scripted_p99", fp32["p99_us"],
               int8["p99_us"] / fp32["p99_us"], "<= 1000 us"),
    ]
    write_results("training.json", results)
    print_results("training (demo universe feature store)", results)
    return results


if __name__ == "__main__":
    main()
