"""The data guard: what it costs the env runners, how soon it flags poisoned data, and whether it stays quiet
on healthy runs.

Three parts, one run (each can be skipped):

A. **Cost** (``--cost-reps``). One PPO env runner per environment (``num_env_runners=0``), its sampling timed
   with the guard on and off, alternately (ABBA order: a neighbour's load hits both alike), ``--steps`` env
   steps a call: the same env runner, the same episodes in progress, only the guard's check in between.
   Reported: sampling time per call with and without (medians), their ratio, and the guard's own time
   (``data_guard/check_s``: taking the arrays out of the episodes and checking them) as a share of the
   guarded sampling time, the figure to trust on a busy machine. Environments: CartPole-v1 (4 features),
   Pendulum-v1 (3 features, continuous actions) and CartPole with its observation tiled to 84 x 84 = 7,056
   features (an image-sized observation: the cost grows with the observation).
B. **Detection delay** (``--delay-iterations``). Real supervised trainings (``actors.rllib.supervise``, the
   supervisor's defaults, ``checkpoint_every: 1``) of ``benchmarks.envs`` with a fault from a fixed env step
   (after 2 iterations' steps): NaN rewards, a NaN observation feature, garbage observations (~N(0, 1e3)).
   PPO and DQN on CartPole, PPO on Pendulum. Reported: the iteration the fault starts in, the first
   data-guard finding (``data_poisoned``, ``obs_out_of_range``; a ``trial_crashed`` when the poisoned data
   makes the policy raise before the guard sees the sample), the delay in iterations (0: flagged in the
   iteration it started), what the supervisor did and when the trial stopped, whether any learner
   statistic went non-finite, and for DQN whether any NaN reached the replay buffer.
C. **Healthy runs** (``--healthy-iterations``). PPO on CartPole-v1, Acrobot-v1, MountainCar-v0, Pendulum-v1,
   MountainCarContinuous-v0 and DQN on CartPole-v1, supervised, no fault: every data-guard finding there is
   a false alarm (none of these envs was used to choose the guard's defaults except CartPole and Pendulum).

    python benchmarks/data_guard.py [--cost-reps 30] [--steps 1000] [--delay-iterations 6]
        [--healthy-iterations 12] [--parts cost,delay,healthy]

Writes ``benchmarks/results/data_guard.md`` and ``.json`` (the README's table is generated from the JSON by
``benchmarks/readme_tables.py``). Starts (and shuts down) its own local Ray with 2 CPUs.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402


class TiledCartPole(gym.Wrapper):
    """CartPole-v1 whose observation is its 4 features tiled to an 84 x 84 float image (7,056 features)."""

    def __init__(self, config=None):
        super().__init__(gym.make("CartPole-v1"))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (84 * 84,), np.float32)

    def _tile(self, obs):
        return np.resize(np.asarray(obs, np.float32), 84 * 84)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._tile(obs), info

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        return self._tile(obs), r, term, trunc, info


# ------------------------------------------------------------------------------------------------ A: cost
def cost(args) -> list[dict]:
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.callbacks.callbacks import RLlibCallback

    from actors.data_guard import EnvRunnerGuard

    class Toggle(RLlibCallback):
        """The supervisor's guard (``EnvRunnerGuard``, its defaults), switched by ``on``."""

        on = True

        def __init__(self):
            super().__init__()
            self.guard = EnvRunnerGuard({})
            self.check_s = 0.0

        def on_sample_end(self, *, env_runner=None, metrics_logger=None, samples=None, **kw):
            if Toggle.on:
                t0 = time.perf_counter()
                self.guard.on_sample_end(env_runner, metrics_logger, samples)
                self.check_s += time.perf_counter() - t0

    out = []
    for label, env in (("CartPole-v1 (4 features)", "CartPole-v1"), ("Pendulum-v1 (3 features, continuous)",
                                                                    "Pendulum-v1"),
                       ("CartPole, 84 x 84 float observation (7,056 features)", TiledCartPole)):
        cfg = (PPOConfig().environment(env).env_runners(num_env_runners=0).callbacks(Toggle)
               .debugging(seed=1))
        algo = cfg.build_algo()
        er = algo.env_runner
        cb = next(c for c in er._callbacks if isinstance(c, Toggle))
        for _ in range(2):  # warm-up: the model, the env, numpy's first calls
            er.sample(num_timesteps=args.steps)
        on, off, check = [], [], []
        for rep in range(args.cost_reps):
            for guard_on in ((True, False) if rep % 2 == 0 else (False, True)):
                Toggle.on = guard_on
                before = cb.check_s
                t0 = time.perf_counter()
                er.sample(num_timesteps=args.steps)
                dt = time.perf_counter() - t0
                (on if guard_on else off).append(dt)
                if guard_on:
                    check.append(cb.check_s - before)
        algo.stop()
        row = {"env": label, "steps": args.steps, "reps": args.cost_reps,
               "sample_ms_off": 1000 * statistics.median(off), "sample_ms_on": 1000 * statistics.median(on),
               "check_ms": 1000 * statistics.median(check),
               "check_share": sum(check) / sum(on)}
        row["ratio"] = row["sample_ms_on"] / row["sample_ms_off"]
        print(f"  cost {label}: sampling {row['sample_ms_off']:.1f} ms off, {row['sample_ms_on']:.1f} ms on "
              f"(x{row['ratio']:.3f}); the guard's own time {row['check_ms']:.2f} ms = "
              f"{100 * row['check_share']:.2f} % of sampling", flush=True)
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------------ B, C: runs
#: PPO's lr per env: the recorded healthy runs' (at 1e-3 Pendulum's first update already overshoots its trust region)
PPO_LR = {"CartPole-v1": 1e-3, "Acrobot-v1": 1e-3, "MountainCar-v0": 1e-3, "Pendulum-v1": 3e-4,
          "MountainCarContinuous-v0": 3e-4}


def _config(algo: str, env_config: dict):
    from benchmarks.envs import BenchEnv

    if algo == "PPO":
        from ray.rllib.algorithms.ppo import PPOConfig

        cfg = (PPOConfig().environment(BenchEnv, env_config=env_config).env_runners(num_env_runners=0)
               .training(train_batch_size_per_learner=1000, minibatch_size=250, num_epochs=4,
                         lr=PPO_LR.get(env_config.get("id"), 3e-4), vf_loss_coeff=0.01, gamma=0.99, lambda_=0.95))
        return cfg, 1000
    from ray.rllib.algorithms.dqn import DQNConfig

    cfg = (DQNConfig().environment(BenchEnv, env_config=env_config)
           .env_runners(num_env_runners=0, rollout_fragment_length=100)
           .training(lr=5e-4, train_batch_size_per_learner=64, num_steps_sampled_before_learning_starts=200,
                     target_network_update_freq=500, epsilon=[[0, 1.0], [10000, 0.05]])
           .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=1000))
    return cfg, 1000


def supervised_run(algo_name: str, env_config: dict, iterations: int, root: Path, name: str) -> dict:
    """One supervised training; its findings, actions and whether poisoned data got through."""
    from actors.rllib import finish, supervise
    from supervisor.metrics import LEARNER_METRICS
    from supervisor.report import build_report
    from supervisor.store import Store

    cfg, per_iter = _config(algo_name, env_config)
    cfg.debugging(seed=1)
    run_dir = root / name
    algo = supervise(cfg, run_dir, settings={"checkpoint_every": 1}).build_algo()
    raised = None
    try:
        for _ in range(iterations):
            try:
                r = algo.train()
            except Exception as e:  # a crash the supervisor could not turn into a stop
                raised = f"{e.__class__.__name__}: {e}"[:200]
                break
            if r["supervisor"].get("stop"):
                break
        buffer_nan = None
        buf = getattr(algo, "local_replay_buffer", None)
        if buf is not None:
            eps = [e for e in getattr(buf, "episodes", []) if e is not None]
            buffer_nan = sum(int(not np.isfinite(np.asarray(e.get_rewards(), float)).all()
                                 or not np.isfinite(np.asarray(e.get_observations(), float)).all()) for e in eps)
        try:
            finish(algo)
        except Exception:
            pass
    finally:
        algo.stop()
    (t,) = build_report(run_dir)["trials"]
    store = Store.open_readonly(run_dir / "supervisor.db")
    try:
        learner_nan = sorted({k for r in store.reports(t["trial_id"]) for k, v in (r["metrics"] or {}).items()
                              if k in LEARNER_METRICS and isinstance(v, float) and not math.isfinite(v)})
    finally:
        store.close()
    return {"trial": t, "per_iteration": per_iter, "raised": raised, "buffer_nan_episodes": buffer_nan,
            "learner_nan": learner_nan}


GUARD_DETECTORS = ("data_poisoned", "obs_out_of_range", "trial_crashed")


def delay(args, root: Path) -> list[dict]:
    cases = [("PPO", "CartPole-v1", "nan_reward"), ("PPO", "CartPole-v1", "nan_obs"),
             ("PPO", "CartPole-v1", "garbage_obs"), ("DQN", "CartPole-v1", "nan_reward"),
             ("DQN", "CartPole-v1", "garbage_obs"), ("PPO", "Pendulum-v1", "nan_reward"),
             ("PPO", "Pendulum-v1", "garbage_obs")]
    out = []
    for algo_name, env, fault in cases:
        after = 2 * 1000  # two iterations' steps: the fault starts in iteration 3
        onset = after // 1000 + 1
        r = supervised_run(algo_name, {"id": env, "fault": fault, "after": after, "seed": 7}, args.delay_iterations,
                           root, f"delay-{algo_name}-{env}-{fault}".lower())
        t = r["trial"]
        flagged = [f for f in t["findings"] if f["detector"] in GUARD_DETECTORS]
        first = flagged[0] if flagged else None
        row = {"algorithm": algo_name, "env": env, "fault": fault, "onset_iteration": onset,
               "detector": first["detector"] if first else None,
               "flagged_iteration": first["iteration"] if first else None,
               "delay": (first["iteration"] - onset) if first else None,
               "actions": [[i["iteration"], i["action"]] for i in t["interventions"]],
               "status": t["status"], "iterations": t["iterations"], "learner_nan": r["learner_nan"],
               "buffer_nan_episodes": r["buffer_nan_episodes"], "raised": r["raised"],
               "crash_cause": (t.get("crash") or {}).get("cause")}
        print(f"  delay {algo_name} {env} {fault}: {row['detector']} at {row['flagged_iteration']} (onset {onset}), "
              f"actions {row['actions']}, {row['status']} at {row['iterations']}, learner NaN {row['learner_nan']}, "
              f"buffer NaN {row['buffer_nan_episodes']}, raised {row['raised']}", flush=True)
        out.append(row)
    return out


def healthy(args, root: Path) -> list[dict]:
    cases = [("PPO", "CartPole-v1"), ("PPO", "Acrobot-v1"), ("PPO", "MountainCar-v0"), ("PPO", "Pendulum-v1"),
             ("PPO", "MountainCarContinuous-v0"), ("DQN", "CartPole-v1")]
    out = []
    for algo_name, env in cases:
        r = supervised_run(algo_name, {"id": env}, args.healthy_iterations, root,
                           f"healthy-{algo_name}-{env}".lower())
        t = r["trial"]
        alarms = [[f["iteration"], f["detector"], f["severity"]] for f in t["findings"]
                  if f["detector"] in GUARD_DETECTORS]
        row = {"algorithm": algo_name, "env": env, "iterations": t["iterations"], "guard_findings": alarms,
               "stopped": t["status"] == "stopped" and any(d in ("data_poisoned", "obs_out_of_range")
                                                          for _, d, _ in alarms)}
        print(f"  healthy {algo_name} {env}: {t['iterations']} iterations, guard findings {alarms}", flush=True)
        out.append(row)
    return out


def markdown(res: dict, args) -> str:
    lines = ["# The data guard: cost, detection delay, healthy runs", "",
             f"Generated by `python benchmarks/data_guard.py` on {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} "
             f"cores, 1-minute load average {res.get('load_start', float('nan')):.1f} at the start, "
             f"{os.getloadavg()[0]:.1f} at the end.", ""]
    if res.get("cost"):
        lines += ["## Cost on the env runner", "",
                  f"One env runner, {args.steps} env steps a `sample()` call, {args.cost_reps} calls each way, the "
                  "guard on and off alternately (ABBA).", "",
                  "| environment | sampling, guard off | guard on | on / off | the guard's own time | its share of "
                  "sampling |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for c in res["cost"]:
            lines.append(f"| {c['env']} | {c['sample_ms_off']:.1f} ms | {c['sample_ms_on']:.1f} ms | "
                         f"{c['ratio']:.3f} | {c['check_ms']:.2f} ms | {100 * c['check_share']:.2f} % |")
        lines += ["", "The ratio of medians carries the machine's noise; the guard's own time, measured around the "
                      "check itself, is the cost (goal: <= 1 % of sampling).", ""]
    if res.get("delay"):
        lines += ["## Detection delay", "",
                  "Supervised trainings (defaults, `checkpoint_every: 1`), 1,000 env steps an iteration, the fault "
                  "from env step 2,001 (iteration 3). *Delay*: iterations from the one the fault starts in to the "
                  "first finding (0: the same iteration).", "",
                  "| algorithm | env | fault | first finding | delay | actions (iteration: action) | end | learner "
                  "statistic non-finite | NaN episodes in the replay buffer |",
                  "| --- | --- | --- | --- | ---: | --- | --- | --- | ---: |"]
        for d in res["delay"]:
            acts = ", ".join(f"{i}: {a}" for i, a in d["actions"]) or "-"
            lines.append(f"| {d['algorithm']} | {d['env']} | {d['fault']} | {d['detector'] or '-'}"
                         f"{' (' + d['crash_cause'] + ')' if d['detector'] == 'trial_crashed' else ''} | "
                         f"{d['delay'] if d['delay'] is not None else '-'} | {acts} | {d['status']} at "
                         f"{d['iterations']} | {', '.join(d['learner_nan']) or 'none'} | "
                         f"{d['buffer_nan_episodes'] if d['buffer_nan_episodes'] is not None else '-'} |")
        lines.append("")
    if res.get("healthy"):
        lines += ["## Healthy runs", "", "| algorithm | env | iterations | data-guard findings |",
                  "| --- | --- | ---: | --- |"]
        for h in res["healthy"]:
            lines.append(f"| {h['algorithm']} | {h['env']} | {h['iterations']} | "
                         f"{', '.join(f'{i}: {d} ({s})' for i, d, s in h['guard_findings']) or 'none'} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cost-reps", type=int, default=30)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--delay-iterations", type=int, default=6)
    p.add_argument("--healthy-iterations", type=int, default=12)
    p.add_argument("--parts", default="cost,delay,healthy")
    p.add_argument("--out", default="data_guard", help="results name (benchmarks/results/NAME.md and .json)")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))

    import ray
    import torch

    from benchmarks.results_io import write_results

    torch.set_num_threads(1)
    for attempt in range(3):  # a raylet that misses Ray's 30 s start-up window on a loaded machine: again
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING,
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}})
            break
        except Exception as e:
            if attempt == 2:
                raise
            print(f"Ray did not start ({e}); again", flush=True)
    root = Path(tempfile.mkdtemp(prefix="data_guard_"))
    res: dict = {"load_start": os.getloadavg()[0]}  # a shared machine: its load when the run starts
    try:
        if "cost" in parts:
            res["cost"] = cost(args)
        if "delay" in parts:
            res["delay"] = delay(args, root)
        if "healthy" in parts:
            res["healthy"] = healthy(args, root)
    finally:
        ray.shutdown()
    md = markdown(res, args)
    print(md)
    print("written to", write_results(args.out, md, res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
