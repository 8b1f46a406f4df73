"""PPO on the batched market simulator, in one readable file (CleanRL style): the algorithm only.

What runs before it (a warm start) and what is done with its result (selection, validation) lives in
training/pipeline.py. The loop runs for a fixed number of environment steps (stopping early only at the
run's time limit, which its result then reports) and reports the elapsed share of its steps so a curriculum
can follow it.

Shapes: B = n_envs, T = rollout_steps, S = slots, D = features + position features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.distributions import Categorical

from training.environment.batched_env import BatchedMarketEnv
from training.learners.limits import NO_LIMIT, TimeLimit
from training.learners.policy import MarketPolicy


@dataclass(frozen=True)
class PPOConfig:
    n_envs: int = 64
    rollout_steps: int = 128
    # Measured on the default universe (validation, paired): at 1e-4 with lambda 0.95 PPO lost $11.8/market
    # [-18.4, -6.4] against its warm start: the entry's cost is immediate and its gain arrives a jump later,
    # beyond a short GAE horizon, so it unlearns entries. A smaller step and a long horizon keep it honest.
    learning_rate: float = 3e-5
    gamma: float = 0.999                # the gain of an entry arrives tens to hundreds of steps later
    gae_lambda: float = 0.99
    update_epochs: int = 3
    minibatches: int = 4
    clip: float = 0.2
    # Exploration by sampling costs spread and fees on every random order: with label smoothing 0.03 the
    # distilled policy sent 0.23 orders per step when sampled and PPO collapsed it to "never trade".
    entropy_coef: float = 0.0
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    # Iterations that fit only the value head first: after a warm start the critic knows nothing, and
    # advantages from an untrained critic would push the policy at random.
    value_warmup_iterations: int = 5


@dataclass(frozen=True)
class Budget:
    """Stop after `steps` environment steps."""

    steps: int

    def share(self, steps: int) -> float:
        """Elapsed share of the budget in [0, 1]: what a curriculum or a schedule should follow."""
        return min(steps / max(self.steps, 1), 1.0)


@dataclass
class PPOResult:
    curves: list[dict]
    steps: int
    seconds: float
    episodes: int
    cut_short: bool = False   # the run's time limit stopped it before its steps were done

    @property
    def steps_per_second(self) -> float:
        return self.steps / max(self.seconds, 1e-9)


def run_ppo(policy: MarketPolicy, env: BatchedMarketEnv, config: PPOConfig, budget: Budget,
            on_share: Callable[[float], None] | None = None,
            progress: Callable[[int, dict], None] | None = None, time_limit: TimeLimit = NO_LIMIT) -> PPOResult:
    """Improve `policy` in place on `env`'s episodes. `on_share` hears the budget share before each
    rollout (the curriculum follows it); `progress` hears (iteration, curve point) after each update."""
    device = env.device
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.learning_rate, eps=1e-5)
    B, T = env.n_envs, config.rollout_steps
    batch = B * T
    minibatch = max(batch // config.minibatches, 1)

    obs, live = env.observe()
    store_obs = torch.zeros((T, *obs.shape), device=device)             # [T, B, S, D]
    store_live = torch.zeros((T, *live.shape), dtype=torch.bool, device=device)
    store_actions = torch.zeros((T, *live.shape), dtype=torch.long, device=device)
    store_actable = torch.zeros((T, *live.shape), dtype=torch.bool, device=device)
    store_logprob = torch.zeros((T, B), device=device)
    store_reward = torch.zeros((T, B), device=device)
    store_done = torch.zeros((T, B), device=device)
    store_value = torch.zeros((T, B), device=device)
    curves: list[dict] = []
    started = time.perf_counter()
    steps = episodes = iteration = 0
    cut_short = False
    while True:
        share = budget.share(steps)
        if share >= 1.0:
            break
        if time_limit.passed():
            cut_short = True
            break
        if on_share:
            on_share(share)
        finished_pnl: list[torch.Tensor] = []
        orders = torch.zeros((), dtype=torch.long, device=device)
        for step in range(T):
            actable = env.actable()
            with torch.no_grad():
                logits, value = policy(obs, live)
            dist = Categorical(logits=logits)
            actions = torch.where(actable, dist.sample(), torch.zeros_like(live, dtype=torch.long))
            store_obs[step], store_live[step], store_actions[step] = obs, live, actions
            store_actable[step] = actable
            store_logprob[step] = (dist.log_prob(actions) * actable).sum(-1)
            store_value[step] = value
            reward, done, info = env.step(actions)
            store_reward[step], store_done[step] = reward, done.float()
            finished_pnl.append(info["episode_pnl_cents"][done])
            orders += info["orders"].sum()
            obs, live = env.observe()
        steps += batch
        finished = torch.cat(finished_pnl).float()
        episodes += int(finished.numel())

        with torch.no_grad():
            _, next_value = policy(obs, live)
            advantages = torch.zeros_like(store_reward)
            last_gae = torch.zeros(B, device=device)
            for step in reversed(range(T)):
                following = next_value if step == T - 1 else store_value[step + 1]
                not_done = 1.0 - store_done[step]
                delta = store_reward[step] + config.gamma * following * not_done - store_value[step]
                last_gae = delta + config.gamma * config.gae_lambda * not_done * last_gae
                advantages[step] = last_gae
            returns = advantages + store_value

        flat = lambda x: x.reshape(batch, *x.shape[2:])  # noqa: E731
        b_obs, b_live, b_actions, b_actable = flat(store_obs), flat(store_live), flat(store_actions), flat(store_actable)
        b_logprob, b_adv, b_ret = flat(store_logprob), flat(advantages), flat(returns)
        clip_fractions, kls = [], []
        for _ in range(config.update_epochs):
            order = torch.randperm(batch, device=device)
            for start in range(0, batch, minibatch):
                idx = order[start:start + minibatch]
                logits, value = policy(b_obs[idx], b_live[idx])
                dist = Categorical(logits=logits)
                mask = b_actable[idx].float()
                new_logprob = (dist.log_prob(b_actions[idx]) * mask).sum(-1)
                entropy = (dist.entropy() * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
                log_ratio = new_logprob - b_logprob[idx]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    kls.append(((ratio - 1) - log_ratio).mean())
                    clip_fractions.append(((ratio - 1.0).abs() > config.clip).float().mean())
                adv = b_adv[idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - config.clip, 1 + config.clip)).mean()
                value_loss = 0.5 * ((value - b_ret[idx]) ** 2).mean()
                if iteration < config.value_warmup_iterations:
                    loss = config.value_coef * value_loss
                else:
                    loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy.mean()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()

        elapsed = time.perf_counter() - started
        curves.append({
            "iteration": iteration, "steps": steps, "seconds": elapsed, "budget_share": share,
            "episode_pnl_cents": float(finished.mean()) if finished.numel() else float("nan"),
            "episodes": int(finished.numel()), "orders_per_step": int(orders) / batch,
            "policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": entropy.mean().item(),
            "approx_kl": float(torch.stack(kls).mean()), "clip_fraction": float(torch.stack(clip_fractions).mean()),
            "steps_per_second": steps / elapsed,
        })
        if progress:
            progress(iteration, curves[-1])
        iteration += 1
    policy.eval()
    return PPOResult(curves=curves, steps=steps, seconds=time.perf_counter() - started, episodes=episodes,
                     cut_short=cut_short)

