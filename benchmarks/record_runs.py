"""Record real RLlib PPO runs on CartPole-v1, healthy and broken, for the detection benchmark.

    python benchmarks/record_runs.py [--iterations 35] [--only NAME ...] [--out benchmarks/data]

Trains small PPO runs (train_batch_size_per_learner 1000, minibatch 250,
4 epochs, no remote env runners, ``ray.init(num_cpus=2)``) with the
instrumented learner (``actors.learner.use_supervised_learner``), and writes,
per run, ``benchmarks/data/<name>.jsonl``: one line per training iteration,
the normalized metrics of :func:`supervisor.metrics.normalize_result` plus
``training_iteration`` (a file ``supervise scan`` also reads). Non-finite
values are kept (written as NaN / Infinity). ``benchmarks/data/runs.json`` is
the meta file: per run its kind (healthy / faulty), the fault, how it was
planted, and the onset: ``onset_index``, the 0-based line of the first
iteration whose update or batch is affected (``null`` for healthy runs).

Faults, planted through the config or the env at a fixed env-step count
(``FAULT_STEP``; the onset is the first iteration whose sample reaches it):

* ``lr_jump``: lr schedule [[0, 3e-4], [S - 1, 3e-4], [S, 5.0]];
* ``entropy_coeff_huge``: entropy_coeff schedule jumping from 0 to 20 at S;
* ``nan_reward``: the env's reward becomes NaN after S env steps;
* ``garbage_obs``: the env's observations become huge random vectors after S steps.

Takes a few minutes on 2 cores; run it in the background::

    nohup python benchmarks/record_runs.py > /tmp/record.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from gymnasium.envs.classic_control import CartPoleEnv  # noqa: E402

from supervisor.metrics import normalize_result  # noqa: E402

BATCH = 1000
FAULT_ITERATION = 18           # 1-based training iteration whose sample first reaches FAULT_STEP
FAULT_STEP = (FAULT_ITERATION - 1) * BATCH + 1


class NanRewardCartPole(CartPoleEnv):
    """CartPole whose reward is NaN from env step ``after`` + 1 on (counted over the env's life)."""

    def __init__(self, config=None):
        super().__init__()
        self.after = int((config or {}).get("after", FAULT_STEP - 1))
        self.steps = 0

    def step(self, action):
        obs, reward, term, trunc, info = super().step(action)
        self.steps += 1
        if self.steps > self.after:
            reward = float("nan")
        return obs, reward, term, trunc, info


class GarbageObsCartPole(CartPoleEnv):
    """CartPole whose observations become huge random vectors from env step ``after`` + 1 on (a
    broken sensor or preprocessing bug); the dynamics and rewards are unchanged."""

    def __init__(self, config=None):
        super().__init__()
        self.after = int((config or {}).get("after", FAULT_STEP - 1))
        self.steps = 0
        self.garbage = np.random.default_rng(int((config or {}).get("seed", 0)))

    def _g(self, obs):
        if self.steps > self.after:
            return (self.garbage.normal(0.0, 1e3, obs.shape)).astype(np.float32)
        return obs

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return self._g(obs), info

    def step(self, action):
        obs, reward, term, trunc, info = super().step(action)
        self.steps += 1
        return self._g(obs), reward, term, trunc, info


# name -> (fault, seed, how). Healthy runs: fault None.
RUNS: dict[str, tuple[str | None, int, str]] = {
    "healthy_s1": (None, 1, "default config"),
    "healthy_s2": (None, 2, "default config"),
    "healthy_s3": (None, 3, "default config"),
    # held out: recorded after the detectors were tuned (on the synthetic tune split and s1-s3)
    "healthy_s8": (None, 8, "default config (held-out)"),
    "healthy_s9": (None, 9, "default config (held-out)"),
    "healthy_s10": (None, 10, "default config (held-out)"),
    "lr_jump": ("lr_jump", 4, f"lr schedule [[0, 3e-4], [{FAULT_STEP - 1}, 3e-4], [{FAULT_STEP}, 5.0]]"),
    "entropy_coeff_huge": ("entropy_coeff_huge", 5,
                           f"entropy_coeff schedule [[0, 0.0], [{FAULT_STEP - 1}, 0.0], [{FAULT_STEP}, 20.0]]"),
    "nan_reward": ("nan_reward", 6, f"env reward NaN after {FAULT_STEP - 1} env steps"),
    "garbage_obs": ("garbage_obs", 7, f"env observations ~ N(0, 1e3) after {FAULT_STEP - 1} env steps"),
}


def build(name: str, seed: int):
    from ray.rllib.algorithms.ppo import PPOConfig

    from actors.learner import use_supervised_learner

    fault = RUNS[name][0]
    env = "CartPole-v1"
    env_config: dict = {}
    if fault == "nan_reward":
        env = NanRewardCartPole
    elif fault == "garbage_obs":
        env, env_config = GarbageObsCartPole, {"seed": seed}
    cfg = (
        PPOConfig()
        .environment(env, env_config=env_config)
        .env_runners(num_env_runners=0)
        .learners(num_learners=0)
        .training(train_batch_size_per_learner=BATCH, minibatch_size=250, num_epochs=4, lr=3e-4, gamma=0.99,
                  lambda_=0.95, vf_loss_coeff=0.01)
        .debugging(seed=seed)
    )
    if fault == "lr_jump":
        cfg.training(lr=[[0, 3e-4], [FAULT_STEP - 1, 3e-4], [FAULT_STEP, 5.0]])
    elif fault == "entropy_coeff_huge":
        cfg.training(entropy_coeff=[[0, 0.0], [FAULT_STEP - 1, 0.0], [FAULT_STEP, 20.0]])
    return use_supervised_learner(cfg).build_algo()


def record(name: str, iterations: int, out: Path) -> dict:
    fault, seed, how = RUNS[name]
    algo = build(name, seed)
    rows = []
    t0 = time.time()
    try:
        for _ in range(iterations):
            try:
                result = algo.train()
            except Exception as e:  # a broken run may crash RLlib: the stream ends there
                print(f"[{name}] train() raised {e.__class__.__name__}: {str(e).splitlines()[0][:200]}", flush=True)
                break
            norm = normalize_result(result, name)
            rows.append({"training_iteration": norm["iteration"], **norm["metrics"]})
            m = norm["metrics"]
            print(f"[{name}] it {norm['iteration']:3d} steps {m.get('env_steps_lifetime')} "
                  f"ret {m.get('episode_return_mean')} lr {m.get('lr')} ent {m.get('entropy')} "
                  f"loss {m.get('total_loss')}", flush=True)
    finally:
        algo.stop()
    path = out / f"{name}.jsonl"
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, allow_nan=True) + "\n")
    return {"file": path.name, "kind": "healthy" if fault is None else "faulty", "fault": fault, "seed": seed,
            "how": how, "iterations": len(rows), **onset_of(fault, rows),
            "fault_step": FAULT_STEP if fault else None, "seconds": round(time.time() - t0, 1)}


SCHEDULED = {"lr_jump", "entropy_coeff_huge"}


def onset_of(fault: str | None, rows: list[dict]) -> dict:
    """The onset: the first iteration the fault acts on. An env fault acts on the first iteration
    whose sample reaches FAULT_STEP (its batch holds broken rewards or observations). A scheduled
    hyperparameter acts one iteration later: RLlib moves its schedulers after each update, with the
    lifetime env steps of that iteration, so that iteration already *reports* the new lr / entropy
    coefficient but was trained with the old one; the next update is the first to use it."""
    if fault is None:
        return {"onset_index": None, "onset_iteration": None}
    first = next((i for i, r in enumerate(rows) if r.get("env_steps_lifetime", 0) >= FAULT_STEP), None)
    if first is not None and fault in SCHEDULED:
        first += 1
    if first is None or first >= len(rows):
        return {"onset_index": None, "onset_iteration": None}
    return {"onset_index": first, "onset_iteration": rows[first]["training_iteration"]}


def reindex(out: Path) -> None:
    """Recompute the onsets in runs.json from the recorded files (no training)."""
    meta_path = out / "runs.json"
    meta = json.loads(meta_path.read_text())
    for name, m in meta.items():
        if name.startswith("_") or not (out / m["file"]).exists():
            continue
        rows = [json.loads(line) for line in (out / m["file"]).read_text().splitlines() if line.strip()]
        m.update(onset_of(m.get("fault"), rows))
    if "_about" in meta:
        meta["_about"]["onset_index"] = "0-based line of the first iteration the fault acts on (see onset_of)"
    meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=35)
    ap.add_argument("--only", nargs="*", default=None, help="run names (default: all)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "data"))
    ap.add_argument("--reindex", action="store_true", help="only recompute the onsets in runs.json")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.reindex:
        reindex(out)
        return
    names = args.only or list(RUNS)
    unknown = set(names) - set(RUNS)
    if unknown:
        sys.exit(f"unknown run(s): {', '.join(sorted(unknown))}; known: {', '.join(RUNS)}")

    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # address="local": always a private instance (ray.init() would join a cluster another process
    # started on this machine, and refuse num_cpus)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    meta_path = out / "runs.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.setdefault("_about", {
        "config": {"env": "CartPole-v1", "train_batch_size_per_learner": BATCH, "minibatch_size": 250,
                   "num_epochs": 4, "num_env_runners": 0, "lr": 3e-4, "gamma": 0.99, "lambda_": 0.95,
                   "vf_loss_coeff": 0.01, "learner": "actors.learner.SupervisedPPOTorchLearner"},
        "onset_index": "0-based line of the first iteration the fault acts on (see onset_of)",
        "recorded_with": "benchmarks/record_runs.py",
    })
    try:
        for name in names:
            meta[name] = record(name, args.iterations, out)
            meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
            print(f"[{name}] done: {meta[name]}", flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
