"""A small CleanRL-style PPO on CartPole (after cleanrl/ppo.py), for the API tests and benchmark.

``train(updates, on_update=...)`` runs a real hand-written PPO loop: ``num_envs`` vector envs,
``num_steps`` each per rollout, GAE, clipped surrogate, ``update_epochs`` x ``num_minibatches``.
After each update it calls ``on_update(update, metrics, ctx)`` with CleanRL's own metric names (the
return of the episodes that finished in the rollout, with ``num_episodes``, and the value targets'
scale, as supervisor.integrations.torch says a loop should report); returning True ends training.
``on_episode(global_step, return, length)`` sees each finished episode. ``before_update(update, ctx)``
may plant faults.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.distributions.categorical import Categorical


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_dim: int, n_actions: int):
        super().__init__()
        self.critic = nn.Sequential(layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)),
                                    nn.Tanh(), layer_init(nn.Linear(64, 1), std=1.0))
        self.actor = nn.Sequential(layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)),
                                   nn.Tanh(), layer_init(nn.Linear(64, n_actions), std=0.01))

    def get_value(self, x):
        return self.critic(x)

    def get_action_and_value(self, x, action=None):
        probs = Categorical(logits=self.actor(x))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(x)


@dataclass
class Args:
    num_envs: int = 4
    num_steps: int = 128
    learning_rate: float = 2.5e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 4
    clip_coef: float = 0.2
    vf_coef: float = 0.5
    seed: int = 1


@dataclass
class Ctx:
    """What a hook can touch: the live agent, optimizer and coefficients the loop reads every update."""
    agent: Agent
    optimizer: torch.optim.Optimizer
    coefs: dict = field(default_factory=lambda: {"entropy_coeff": 0.01, "grad_clip": 0.5})
    update_s: list = field(default_factory=list)


def train(updates: int, on_update=None, before_update=None, args: Args | None = None, ctx_ready=None,
          on_episode=None) -> Ctx:
    args = args or Args()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(1)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(
        gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(args.num_envs)]))
    agent = Agent(int(np.prod(envs.single_observation_space.shape)), int(envs.single_action_space.n))
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    ctx = Ctx(agent, optimizer)
    if ctx_ready is not None:
        ctx_ready(ctx)
    n, e = args.num_steps, args.num_envs
    obs = torch.zeros((n, e) + envs.single_observation_space.shape)
    actions = torch.zeros((n, e), dtype=torch.long)
    logprobs, rewards, dones, values = (torch.zeros((n, e)) for _ in range(4))
    next_obs = torch.tensor(envs.reset(seed=args.seed)[0], dtype=torch.float32)
    next_done = torch.zeros(e)
    batch_size = n * e
    mb = batch_size // args.num_minibatches
    global_step = 0
    try:
        for update in range(1, updates + 1):
            if before_update is not None:
                before_update(update, ctx)
            t0 = time.perf_counter()
            finished: list[float] = []  # returns of the episodes that ended in this rollout
            for step in range(n):
                global_step += e
                obs[step], dones[step] = next_obs, next_done
                with torch.no_grad():
                    action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step], actions[step], logprobs[step] = value.flatten(), action, logprob
                o, r, term, trunc, info = envs.step(action.numpy())
                rewards[step] = torch.tensor(r, dtype=torch.float32)
                next_obs = torch.tensor(o, dtype=torch.float32)
                next_done = torch.tensor(np.logical_or(term, trunc), dtype=torch.float32)
                if "episode" in info:
                    finished += [float(x) for x in info["episode"]["r"][info["_episode"]]]
                    if on_episode is not None:  # CleanRL logs each finished episode at its global step
                        for ep_r, ep_l in zip(info["episode"]["r"][info["_episode"]], info["episode"]["l"][info["_episode"]]):
                            on_episode(global_step, float(ep_r), int(ep_l))
            with torch.no_grad():
                next_value = agent.get_value(next_obs).reshape(1, -1)
                adv = torch.zeros_like(rewards)
                last = 0
                for t in reversed(range(n)):
                    nonterm = 1.0 - (next_done if t == n - 1 else dones[t + 1])
                    nv = next_value if t == n - 1 else values[t + 1]
                    delta = rewards[t] + args.gamma * nv * nonterm - values[t]
                    adv[t] = last = delta + args.gamma * args.gae_lambda * nonterm * last
                ret = adv + values
            b_obs = obs.reshape((-1,) + envs.single_observation_space.shape)
            b_logprobs, b_actions = logprobs.reshape(-1), actions.reshape(-1)
            b_adv, b_ret, b_values = adv.reshape(-1), ret.reshape(-1), values.reshape(-1)
            inds = np.arange(batch_size)
            clipfracs = []
            for _ in range(args.update_epochs):
                np.random.shuffle(inds)
                for start in range(0, batch_size, mb):
                    i = inds[start:start + mb]
                    _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[i], b_actions[i])
                    logratio = newlogprob - b_logprobs[i]
                    ratio = logratio.exp()
                    with torch.no_grad():
                        old_approx_kl = (-logratio).mean()
                        approx_kl = ((ratio - 1) - logratio).mean()
                        clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean().item())
                    a = b_adv[i]
                    a = (a - a.mean()) / (a.std() + 1e-8)
                    pg_loss = torch.max(-a * ratio, -a * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)).mean()
                    v_loss = 0.5 * ((newvalue.view(-1) - b_ret[i]) ** 2).mean()
                    entropy_loss = entropy.mean()
                    loss = pg_loss - ctx.coefs["entropy_coeff"] * entropy_loss + v_loss * args.vf_coef
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), ctx.coefs["grad_clip"])
                    optimizer.step()
            ctx.update_s.append(time.perf_counter() - t0)
            y_pred, y_true = b_values.numpy(), b_ret.numpy()
            var_y = np.var(y_true)
            metrics = {
                "charts/learning_rate": optimizer.param_groups[0]["lr"],
                "losses/value_loss": v_loss.item(), "losses/policy_loss": pg_loss.item(),
                "losses/entropy": entropy_loss.item(), "losses/old_approx_kl": old_approx_kl.item(),
                "losses/approx_kl": approx_kl.item(), "losses/clipfrac": float(np.mean(clipfracs)),
                "losses/explained_variance": float("nan") if var_y == 0 else float(1 - np.var(y_true - y_pred) / var_y),
                "global_step": global_step, "num_episodes": len(finished),
                "value_target_scale": float(np.abs(y_true).mean()),
            }
            if finished:
                metrics["charts/episodic_return"] = float(np.mean(finished))
            if on_update is not None and on_update(update, metrics, ctx):
                break
    finally:
        envs.close()
    return ctx
