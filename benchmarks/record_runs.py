"""Record real RLlib runs, healthy and broken, for the detection benchmark.

    python benchmarks/record_runs.py [--group G ...] [--only NAME ...] [--iterations N] [--out benchmarks/data]

PPO runs train small (train_batch_size_per_learner 1000, minibatch 250, 4 epochs, lr 3e-4,
gamma 0.99, lambda 0.95, vf_loss_coeff 0.01, no remote env runners, ``ray.init(num_cpus=2)``)
with the instrumented learner (``actors.learner.use_supervised_learner``); a run's own settings
override these. APPO, IMPALA, DQN and SAC runs use their stock learners and RLlib's defaults
(APPO/IMPALA with one env runner; ``min_time_s_per_iteration`` 1 instead of 10, and for APPO/IMPALA
``min_sample_timesteps_per_iteration`` 1000).

Per run it writes, in ``--out``:

* ``<name>.jsonl``: one line per training iteration, the normalized metrics of
  :func:`supervisor.metrics.normalize_result` plus ``training_iteration`` (a file
  ``supervise scan`` also reads);
* ``<name>.raw.jsonl.gz``: the same iterations as RLlib reported them, flattened ("a/b/c" keys),
  numbers only: every key under ``learners/``, ``env_runners/``, ``timers/``,
  ``fault_tolerance/``, ``evaluation/``, and ``training_iteration``, ``time_this_iter_s``,
  ``time_total_s``, ``num_env_steps_sampled_lifetime`` (no ``config``), so that a changed
  normalization can be replayed without training again;
* ``runs.json``: the meta file, per run: kind (healthy / faulty / bad_start), fault, how it was
  planted, env, algorithm, seed, split (tune / held-out, healthy runs), ``onset_index`` (the
  0-based line of the first iteration whose update or batch is affected; 0 for a config bad
  from the start, ``null`` for healthy runs), iterations, seconds, and ``priors``: what the
  algorithm's config and spaces say a run should look like (see ``priors_of``).

Non-finite values are kept (written as NaN / Infinity).

Faults mid-run are planted at a fixed env-step count (``fault_step``; the onset is the first
iteration whose sample reaches it) through the env (``benchmarks/envs.py``: NaN rewards, rewards
x1000, garbage observations) or the config (an lr schedule jumping to 5.0). Bad-from-the-start
runs carry the fault in their config from iteration 1.

Multi-agent runs (``--group multi_agent``: two policies on RLlib's MultiAgentCartPole, a fault planted in one
policy's own config, ``fault_module``) go to ``<out>/multi_agent/`` with a ``runs.json`` of their own (the
per-module section of ``benchmarks/detection.py`` reads them; the single-agent analyses never do).

Takes tens of minutes on 2 cores; run it in the background, a group at a time::

    nohup python benchmarks/record_runs.py --group bad_start > /tmp/record.log 2>&1 &
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import envs  # noqa: E402
from supervisor.metrics import normalize_result  # noqa: E402

BATCH = 1000
PPO_BASE = dict(train_batch_size_per_learner=BATCH, minibatch_size=250, num_epochs=4, lr=3e-4, gamma=0.99,
                lambda_=0.95, vf_loss_coeff=0.01)


def fault_step(iteration: int) -> int:
    """The env step whose sample is in the 1-based training ``iteration`` (BATCH steps each)."""
    return (iteration - 1) * BATCH + 1


LEGACY_STEP = fault_step(18)   # the first recorded CartPole faults (35 iterations)
MID_STEP = fault_step(15)      # the mid-run faults of 30 iterations: onset index 14 (15 for lr)


@dataclass
class Run:
    group: str
    kind: str                      # healthy / faulty / bad_start
    fault: str | None
    seed: int
    how: str
    env: str = "CartPole-v1"
    algorithm: str = "PPO"
    split: str | None = None       # healthy runs: tune / held-out
    iterations: int = 25
    env_config: dict = field(default_factory=dict)   # extra benchmarks.envs config (max_episode_steps, fault...)
    training: dict = field(default_factory=dict)     # config.training(...) overrides
    fault_step: int | None = None  # mid-run faults
    scheduled: bool = False        # a scheduled hyperparameter (acts one iteration after it is reported)
    # multi-agent (MultiAgentCartPole, two agents): policies -> their own config, agent -> policy, the trained ones
    multi: dict | None = None
    fault_module: str | None = None  # the policy the fault is planted in (the others are healthy)


def _lr_jump(step: int) -> list:
    return [[0, 3e-4], [step - 1, 3e-4], [step, 5.0]]


def _runs() -> dict[str, Run]:
    r: dict[str, Run] = {}
    # -- CartPole healthy, first recorded (35 / 45 iterations); s1-s3 tuned the detectors
    for s in (1, 2, 3):
        r[f"healthy_s{s}"] = Run("cartpole_healthy", "healthy", None, s, "default config", split="tune", iterations=35)
    for s in (8, 9, 10):
        r[f"healthy_s{s}"] = Run("cartpole_healthy", "healthy", None, s, "default config (held-out)",
                                 split="held-out", iterations=45)
    # -- CartPole faults mid-run, first recorded (35 iterations, onset at iteration 18)
    S = LEGACY_STEP
    r["lr_jump"] = Run("legacy_midrun", "faulty", "lr_jump", 4, f"lr schedule {_lr_jump(S)}", iterations=35,
                       training={"lr": _lr_jump(S)}, fault_step=S, scheduled=True)
    r["entropy_coeff_huge"] = Run("legacy_midrun", "faulty", "entropy_coeff_huge", 5,
                                  f"entropy_coeff schedule [[0, 0.0], [{S - 1}, 0.0], [{S}, 20.0]]", iterations=35,
                                  training={"entropy_coeff": [[0, 0.0], [S - 1, 0.0], [S, 20.0]]},
                                  fault_step=S, scheduled=True)
    r["nan_reward"] = Run("legacy_midrun", "faulty", "nan_reward", 6, f"env reward NaN after {S - 1} env steps",
                          iterations=35, env_config={"fault": "nan_reward", "after": S - 1}, fault_step=S)
    r["garbage_obs"] = Run("legacy_midrun", "faulty", "garbage_obs", 7,
                           f"env observations ~ N(0, 1e3) after {S - 1} env steps", iterations=35,
                           env_config={"fault": "garbage_obs", "after": S - 1, "seed": 7}, fault_step=S)

    # -- (a) bad from the start, CartPole, 20 iterations
    for s in (1, 2, 3):
        r[f"bad_lr_high_s{s}"] = Run("bad_start", "bad_start", "lr_too_high", s, "lr 0.05, num_epochs 10",
                                     split="held-out" if s == 3 else "tune", iterations=20,
                                     training={"lr": 0.05, "num_epochs": 10})
    r["bad_lr_low"] = Run("bad_start", "bad_start", "lr_too_low", 4, "lr 1e-7", iterations=20,
                          training={"lr": 1e-7})
    r["bad_entropy_huge"] = Run("bad_start", "bad_start", "entropy_coeff_huge", 5, "entropy_coeff 5.0",
                                iterations=20, training={"entropy_coeff": 5.0})
    r["bad_vf_clipped"] = Run("bad_start", "bad_start", "value_loss_clipped", 6,
                              "rewards x100 (env wrapper) against the default vf_clip_param 10",
                              iterations=20, env_config={"fault": "reward_scale", "after": 0, "scale": 100.0})
    r["bad_epochs_60"] = Run("bad_start", "bad_start", "too_many_epochs", 7, "num_epochs 60, minibatch_size 64",
                             iterations=20, training={"num_epochs": 60, "minibatch_size": 64})

    # -- (b) healthy on other envs, 25 iterations; seeds 1, 2 tune, 3 held-out
    for prefix, env, extra, how in (
        ("acrobot", "Acrobot-v1", {}, "default config"),
        ("pendulum", "Pendulum-v1", {}, "default config"),
        ("pendulum_long", "Pendulum-v1", {"max_episode_steps": 2500},
         "default config, max_episode_steps 2500 (episodes longer than a train batch)"),
        ("mcc", "MountainCarContinuous-v0", {}, "default config"),
        # MuJoCo (pip install -e '.[mujoco]'): returns in the thousands, early terminations (Hopper), none (HalfCheetah)
        ("hopper", "Hopper-v5", {}, "default config"),
        ("halfcheetah", "HalfCheetah-v5", {}, "default config"),
        # Box2D (pip install -e '.[box2d]'): a crash ends an episode at -100, a landing at +100
        ("lunarlander", "LunarLander-v3", {}, "default config"),
    ):
        for s in (1, 2, 3):
            r[f"{prefix}_healthy_s{s}"] = Run("healthy", "healthy", None, s, how, env=env,
                                              split="held-out" if s == 3 else "tune", env_config=dict(extra))

    # -- (c) faults mid-run, CartPole and Pendulum, 30 iterations, onset at iteration 15
    S = MID_STEP
    for k, (prefix, env) in enumerate((("cartpole", "CartPole-v1"), ("pendulum", "Pendulum-v1"))):
        base = 11 + 10 * k
        r[f"{prefix}_nan_reward"] = Run("midrun", "faulty", "nan_reward", base, f"env reward NaN after {S - 1} env steps",
                                        env=env, iterations=30, env_config={"fault": "nan_reward", "after": S - 1},
                                        fault_step=S)
        r[f"{prefix}_reward_scale"] = Run("midrun", "faulty", "reward_scale_jump", base + 1,
                                          f"env reward x1000 after {S - 1} env steps", env=env, iterations=30,
                                          env_config={"fault": "reward_scale", "after": S - 1, "scale": 1000.0},
                                          fault_step=S)
        r[f"{prefix}_garbage_obs"] = Run("midrun", "faulty", "garbage_obs", base + 2,
                                         f"env observations ~ N(0, 1e3) after {S - 1} env steps", env=env,
                                         iterations=30,
                                         env_config={"fault": "garbage_obs", "after": S - 1, "seed": base + 2},
                                         fault_step=S)
        r[f"{prefix}_lr_jump"] = Run("midrun", "faulty", "lr_jump", base + 3, f"lr schedule {_lr_jump(S)}", env=env,
                                     iterations=30, training={"lr": _lr_jump(S)}, fault_step=S, scheduled=True)

    # -- (d) other algorithms, stock learners, RLlib defaults, 20 iterations
    for algo, env, high in (("APPO", "CartPole-v1", {"lr": 0.05}), ("IMPALA", "CartPole-v1", {"lr": 0.05}),
                            ("DQN", "CartPole-v1", {"lr": 0.05}),
                            ("SAC", "Pendulum-v1", {"actor_lr": 0.05, "critic_lr": 0.05})):
        a = algo.lower()
        r[f"{a}_healthy"] = Run("other_algos", "healthy", None, 1, "RLlib default config", env=env, algorithm=algo,
                                split="tune", iterations=20)
        r[f"{a}_lr_high"] = Run("other_algos", "bad_start", "lr_too_high", 2,
                                ", ".join(f"{k} {v}" for k, v in high.items()), env=env, algorithm=algo,
                                iterations=20, training=high)
    # -- (d') other algorithms on harder envs (Box2D, MuJoCo, Acrobot), RLlib defaults, 20 iterations; never tuned
    #    on before they were recorded: seed 1 tune, seed 2 held-out
    for algo, env in (("DQN", "LunarLander-v3"), ("APPO", "LunarLander-v3"), ("IMPALA", "Acrobot-v1"),
                      ("SAC", "HalfCheetah-v5")):
        for s in (1, 2):
            r[f"{algo.lower()}_{env.split('-')[0].lower()}_healthy_s{s}"] = Run(
                "other_algos_envs", "healthy", None, s, "RLlib default config", env=env, algorithm=algo,
                split="held-out" if s == 2 else "tune", iterations=20)
    # -- (e) multi-agent: two agents of RLlib's MultiAgentCartPole, PPO, 12 iterations; each policy its own
    #    stream. Faults are planted in one policy's own config (algorithm_config_overrides_per_module).
    two = {0: "p0", 1: "p1"}
    S = fault_step(6)
    multi = dict(group="multi_agent", iterations=12)
    r["ma_healthy_s1"] = Run(kind="healthy", fault=None, seed=31, how="policies p0 (agent 0), p1 (agent 1)",
                             split="held-out", multi={"policies": {"p0": {}, "p1": {}}, "mapping": two}, **multi)
    r["ma_shared_healthy"] = Run(kind="healthy", fault=None, seed=33, how="one shared policy for both agents",
                                 split="held-out", multi={"policies": {"shared": {}}, "mapping": {0: "shared",
                                                                                               1: "shared"}}, **multi)
    r["ma_frozen_healthy"] = Run(kind="healthy", fault=None, seed=34, how="p1 frozen (policies_to_train [p0])",
                                 split="held-out", multi={"policies": {"p0": {}, "p1": {}}, "mapping": two,
                                                          "train": ["p0"]}, **multi)
    r["ma_p1_lr_jump"] = Run(kind="faulty", fault="lr_jump", seed=35, how=f"p1's lr schedule {_lr_jump(S)}; p0 healthy",
                             fault_step=S, scheduled=True, fault_module="p1",
                             multi={"policies": {"p0": {}, "p1": {"lr": _lr_jump(S)}}, "mapping": two}, **multi)
    r["ma_p0_lr_high"] = Run(kind="bad_start", fault="lr_too_high", seed=36, how="p0's lr 0.05; p1 healthy",
                             fault_module="p0", multi={"policies": {"p0": {"lr": 0.05}, "p1": {}}, "mapping": two},
                             **multi)
    r["ma_p1_entropy_huge"] = Run(kind="bad_start", fault="entropy_coeff_huge", seed=37,
                                  how="p1's entropy_coeff 5.0; p0 healthy", fault_module="p1",
                                  multi={"policies": {"p0": {}, "p1": {"entropy_coeff": 5.0}}, "mapping": two}, **multi)
    return r


RUNS = _runs()
#: Multi-agent runs are written to their own folder (and runs.json) below ``--out``: the single-agent
#: analyses never see them.
MULTI_DIR = "multi_agent"
GROUPS = list(dict.fromkeys(run.group for run in RUNS.values()))


def build(name: str):
    import ray.rllib.algorithms as algos

    from actors.learner import use_supervised_learner

    run = RUNS[name]
    if run.multi is not None:
        return _build_multi(run)
    env_config = {"id": run.env, **run.env_config}
    if run.algorithm == "PPO":
        cfg = (algos.ppo.PPOConfig().env_runners(num_env_runners=0).learners(num_learners=0)
               .training(**{**PPO_BASE, **run.training}))
    else:
        cls = {"APPO": algos.appo.APPOConfig, "IMPALA": algos.impala.IMPALAConfig,
               "DQN": algos.dqn.DQNConfig, "SAC": algos.sac.SACConfig}[run.algorithm]
        asynchronous = run.algorithm in ("APPO", "IMPALA")  # they need a remote env runner
        cfg = (cls().env_runners(num_env_runners=1 if asynchronous else 0).learners(num_learners=0)
               .reporting(min_time_s_per_iteration=1))
        if asynchronous:
            # 1 s alone gave ~100 env steps an iteration on the busy machine (and none while the
            # runner started): let an iteration last until BATCH env steps were sampled
            cfg.reporting(min_sample_timesteps_per_iteration=BATCH)
        if run.training:
            cfg.training(**run.training)
    cfg.environment(envs.ENV_NAME, env_config=env_config).debugging(seed=run.seed)
    if run.algorithm == "PPO":
        cfg = use_supervised_learner(cfg)
    algo = cfg.build_algo()
    return algo, priors_of(algo, env_config)


def _build_multi(run: Run):
    """A two-policy (or shared-policy) PPO on MultiAgentCartPole, as an experiment file's multi_agent: builds it."""
    import ray.rllib.algorithms as algos
    from ray.rllib.examples.envs.classes.multi_agent import MultiAgentCartPole

    from actors.learner import use_supervised_learner
    from actors.multi_agent import AgentTable
    from actors.priors import modules_of

    m = run.multi
    cfg = (algos.ppo.PPOConfig().env_runners(num_env_runners=0).learners(num_learners=0)
           .training(**{**PPO_BASE, **run.training})
           .environment(MultiAgentCartPole, env_config={"num_agents": 2}).debugging(seed=run.seed)
           .multi_agent(policies=set(m["policies"]), policy_mapping_fn=AgentTable(m["mapping"]),
                        policies_to_train=m.get("train"),
                        algorithm_config_overrides_per_module={p: o for p, o in m["policies"].items() if o}))
    algo = use_supervised_learner(cfg).build_algo()
    mods = modules_of(algo)
    return algo, {"algorithm": "PPO", "modules": mods,
                  **next(iter(mods.values()))["priors"]}


def _space(space) -> dict:
    import gymnasium as gym

    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n)}
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "low": space.low.tolist(), "high": space.high.tolist()}
    return {"type": type(space).__name__}


def _initial_entropy(algo, env) -> float | None:
    """Mean entropy of the module's action distribution at build time, over 64 observations
    of a random-action rollout (the policy before any update)."""
    import numpy as np
    import torch

    from ray.rllib.core.columns import Columns

    try:
        module = algo.get_module()
        obs, _ = env.reset(seed=0)
        env.action_space.seed(0)
        rows = []
        for _ in range(64):
            rows.append(obs)
            obs, _, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                obs, _ = env.reset()
        with torch.no_grad():
            out = module.forward_exploration({Columns.OBS: torch.as_tensor(np.array(rows), dtype=torch.float32)})
            dist = module.get_train_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
            return float(dist.entropy().mean())
    except Exception:  # DQN has no action distribution of this kind
        return None


def priors_of(algo, env_config: dict) -> dict:
    """What the config and the spaces say, read from the built algorithm (not from this file).

    ``max_entropy``: log n for a Discrete action space; for a Box, the entropy of a diagonal
    Gaussian with sigma 1 (RLlib's default PPO head starts near log_std 0), 0.5 * log(2 pi e)
    = 1.4189 per dimension (a Gaussian has no maximum entropy; this is the starting scale).
    ``initial_entropy``: measured, the module's mean action-distribution entropy before any
    update (64 observations), for PPO/APPO/IMPALA."""
    import gymnasium as gym

    c = algo.config
    pri = {}
    for k in ("kl_target", "clip_param", "vf_clip_param", "entropy_coeff", "lr", "num_epochs", "minibatch_size",
              "use_kl_loss", "kl_coeff", "grad_clip", "gamma", "lambda_", "vf_loss_coeff", "actor_lr",
              "critic_lr", "alpha_lr"):
        if hasattr(c, k):
            v = getattr(c, k)
            pri[k] = v if isinstance(v, (int, float, bool, str, list, type(None))) else repr(v)
    pri["train_batch_size"] = c.train_batch_size_per_learner
    env = envs.make(env_config)
    try:
        a, o = env.action_space, env.observation_space
        pri["action_space"] = _space(a)
        pri["observation_shape"] = list(o.shape) if o.shape is not None else None
        if isinstance(a, gym.spaces.Discrete):
            pri["max_entropy"] = math.log(a.n)
        elif isinstance(a, gym.spaces.Box):
            pri["max_entropy"] = int(math.prod(a.shape)) * 0.5 * math.log(2 * math.pi * math.e)
        pri["initial_entropy"] = _initial_entropy(algo, env)
        pri["max_episode_steps"] = env.spec.max_episode_steps if env.spec else None
    finally:
        env.close()
    return pri


RAW_PREFIXES = ("learners/", "env_runners/", "timers/", "fault_tolerance/", "evaluation/", "replay_buffer/",
                "supervisor_extra/")  # the last: what actors.algos.extra_metrics adds (DQN's epsilon)
RAW_TOP = ("training_iteration", "time_this_iter_s", "time_total_s", "num_env_steps_sampled_lifetime")


def flatten_raw(result, prefix: str = "") -> dict:
    """The result as {"a/b": number}, restricted to RAW_PREFIXES / RAW_TOP; numbers only (NaN and
    inf kept)."""
    out = {}
    for k, v in result.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            if key == "config":
                continue
            out.update(flatten_raw(v, key + "/"))
            continue
        if not (key in RAW_TOP or key.startswith(RAW_PREFIXES)):
            continue
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int):
            out[key] = v
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        # 9 significant digits: exact for float32 (most of RLlib's values), and keeps the files small
        out[key] = float(f"{v:.9g}") if math.isfinite(v) else v
    return out


def train_streams(algo, name: str, iterations: int, extra=None) -> tuple[list, list]:
    """Train ``iterations`` iterations: per iteration the normalized metrics (with ``training_iteration``)
    and the flattened raw result. ``extra(algo) -> dict`` adds values RLlib does not report."""
    from actors.algos import EXTRA_ROOT

    rows, raws = [], []
    try:
        for _ in range(iterations):
            try:
                result = algo.train()
            except Exception as e:  # a broken run may crash RLlib: the stream ends there
                print(f"[{name}] train() raised {e.__class__.__name__}: {str(e).splitlines()[0][:200]}", flush=True)
                break
            more = extra(algo) if extra else None
            if more:
                result[EXTRA_ROOT] = more
            norm = normalize_result(result, name)
            rows.append({"training_iteration": norm["iteration"], **norm["metrics"]})
            raws.append(flatten_raw(result))
            m = norm["metrics"]
            print(f"[{name}] it {norm['iteration']:3d} steps {m.get('env_steps_lifetime')} "
                  f"ret {m.get('episode_return_mean')} "
                  + " ".join(f"{k} {m.get(k)}" for k in ("entropy", "approx_kl", "vf_clip_fraction", "q_mean",
                                                          "td_error_mean") if k in m)
                  + f" t {m.get('time_this_iter_s', 0):.1f}s", flush=True)
    finally:
        algo.stop()
    return rows, raws


def write_streams(out: Path, name: str, rows: list, raws: list) -> dict:
    """``<name>.jsonl`` (normalized) and ``<name>.raw.jsonl.gz`` (raw: ten times the size, so gzipped)."""
    for suffix, data, opener in ((".jsonl", rows, open), (".raw.jsonl.gz", raws, gzip.open)):
        with opener(out / f"{name}{suffix}", "wt") as f:
            for r in data:
                f.write(json.dumps(r, allow_nan=True, separators=(",", ":")) + "\n")
    return {"file": f"{name}.jsonl", "raw_file": f"{name}.raw.jsonl.gz"}


def record(name: str, iterations: int | None, out: Path) -> dict:
    run = RUNS[name]
    n = iterations or run.iterations
    t0 = time.time()
    if run.multi is not None:
        out = out / MULTI_DIR
        out.mkdir(parents=True, exist_ok=True)
    from actors.appliers.rllib import extra_metrics

    algo, priors = build(name)
    # what the live callback adds to a result (DQN's epsilon; remote learners' fleet), as it adds it
    rows, raws = train_streams(algo, name, n, extra=extra_metrics)
    return {**write_streams(out, name, rows, raws), **static_meta(name), "iterations": len(rows),
            **onset_of(run, rows), "seconds": round(time.time() - t0, 1), "priors": priors}


def onset_of(run: Run, rows: list[dict]) -> dict:
    """The onset: the first iteration the fault acts on. A config bad from the start: the first.
    An env fault mid-run acts on the first iteration whose sample reaches ``fault_step`` (its batch
    holds broken rewards or observations). A scheduled hyperparameter acts one iteration later:
    RLlib moves its schedulers after each update, with the lifetime env steps of that iteration,
    so that iteration already *reports* the new lr / entropy coefficient but was trained with the
    old one; the next update is the first to use it."""
    if run.fault is None or not rows:
        return {"onset_index": None, "onset_iteration": None}
    if run.kind == "bad_start":
        first = 0
    else:
        first = next((i for i, r in enumerate(rows) if r.get("env_steps_lifetime", 0) >= run.fault_step), None)
        if first is not None and run.scheduled:
            first += 1
    if first is None or first >= len(rows):
        return {"onset_index": None, "onset_iteration": None}
    return {"onset_index": first, "onset_iteration": rows[first]["training_iteration"]}


ABOUT = {
    "config": {"env": "per run", "train_batch_size_per_learner": BATCH, "minibatch_size": 250, "num_epochs": 4,
               "num_env_runners": 0, "lr": 3e-4, "gamma": 0.99, "lambda_": 0.95, "vf_loss_coeff": 0.01,
               "learner": "actors.learner.SupervisedPPOTorchLearner"},
    "config_note": "PPO runs: these settings unless the run's `how` says otherwise (RLlib's own PPO defaults "
                   "are lr 5e-5, lambda 1.0, vf_loss_coeff 1.0, batch 4000, minibatch 128, 30 epochs; "
                   "vf_loss_coeff 0.01 is kept from the first recordings). APPO/IMPALA/DQN/SAC: RLlib's "
                   "defaults with their stock learners, min_time_s_per_iteration 1, APPO/IMPALA 1 env runner "
                   "and min_sample_timesteps_per_iteration 1000.",
    "onset_index": "0-based line of the first iteration the fault acts on (see onset_of); 0 for bad_start",
    "raw_file": "<name>.raw.jsonl.gz: RLlib's result per iteration, flattened to 'a/b' keys, numbers only",
    "priors": "read from the built algorithm's config and the env's spaces (see priors_of); max_entropy: "
              "log n (Discrete) or 0.5*log(2*pi*e) per action dimension (Box, sigma 1)",
    "recorded_with": "benchmarks/record_runs.py",
}


def reindex(out: Path) -> None:
    """Recompute the onsets in runs.json from the recorded files (no training)."""
    meta_path = out / "runs.json"
    meta = json.loads(meta_path.read_text())
    for name, m in meta.items():
        if name.startswith("_") or name not in RUNS or not (out / m["file"]).exists():
            continue
        rows = [json.loads(line) for line in (out / m["file"]).read_text().splitlines() if line.strip()]
        m.update(onset_of(RUNS[name], rows))
    meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def _locked(meta_path: Path):
    """runs.json as a dict, written back on exit, under an exclusive lock on the file itself:
    several recorder processes may run at once."""
    with open(meta_path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        text = meta_path.read_text()
        meta = json.loads(text) if text.strip() else {}
        yield meta
        meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True, allow_nan=True) + "\n")


def static_meta(name: str) -> dict:
    """The meta fields a run's definition fixes (not its recording)."""
    run = RUNS[name]
    out = {"group": run.group, "kind": run.kind, "fault": run.fault, "how": run.how, "env": run.env,
           "algorithm": run.algorithm, "seed": run.seed, "split": run.split, "env_config": run.env_config,
           "fault_step": run.fault_step}
    if run.multi is not None:
        out.update(env="MultiAgentCartPole (2 agents)", fault_module=run.fault_module,
                   multi={**run.multi, "mapping": {str(k): v for k, v in run.multi["mapping"].items()}})
    return out


def refresh_meta(out: Path, names: list[str]) -> None:
    """Fill the definition fields and priors of already recorded runs (builds each algorithm, no
    training): for files recorded before those fields existed."""
    meta_path = out / "runs.json"
    for name in names:
        algo, priors = build(name)
        algo.stop()
        with _locked(meta_path) as meta:
            if name in meta:
                meta[name].update(static_meta(name), priors=priors)
        print(f"[{name}] meta refreshed", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=None, help="override every run's own count")
    ap.add_argument("--only", nargs="*", default=None, help="run names")
    ap.add_argument("--group", nargs="*", default=None, help=f"run groups: {', '.join(GROUPS)}")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "data"))
    ap.add_argument("--reindex", action="store_true", help="only recompute the onsets in runs.json")
    ap.add_argument("--refresh-meta", action="store_true",
                    help="only fill the definition fields and priors of the selected, already recorded runs")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.reindex:
        reindex(out)
        return
    unknown = set(args.only or ()) - set(RUNS)
    if unknown:
        print(f"record_runs.py: --only: unknown run(s): {', '.join(sorted(unknown))}; known: {', '.join(RUNS)}",
              file=sys.stderr)
        sys.exit(2)
    unknown = set(args.group or ()) - set(GROUPS)
    if unknown:
        print(f"record_runs.py: --group: unknown group(s): {', '.join(sorted(unknown))}; known: {', '.join(GROUPS)}",
              file=sys.stderr)
        sys.exit(2)
    names = list(args.only or ())
    names += [n for n, r in RUNS.items() if args.group and r.group in args.group and n not in names]
    if not args.only and not args.group:
        names = list(RUNS)

    import ray
    import torch

    # One intra-op thread: on a busy shared machine torch's spinning OpenMP threads made an update
    # up to ~75x slower than on an idle one (the models are tiny; a thread pool buys nothing).
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # address="local": always a private instance (ray.init() would join a cluster another process
    # started on this machine, and refuse num_cpus)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    envs.register()
    if args.refresh_meta:
        try:
            refresh_meta(out, names)
        finally:
            ray.shutdown()
        return
    meta_path = out / "runs.json"
    try:
        for name in names:
            entry = record(name, args.iterations, out)
            with _locked(out / MULTI_DIR / "runs.json" if RUNS[name].multi is not None else meta_path) as meta:
                meta["_about"] = ABOUT
                meta[name] = entry
            print(f"[{name}] done: {json.dumps({k: v for k, v in entry.items() if k != 'priors'})}", flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
