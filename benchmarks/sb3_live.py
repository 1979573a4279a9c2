"""Stock Stable-Baselines3 runs at full length under supervision, as a new user would run them.

    python benchmarks/sb3_live.py [--seeds 0 1] [--only NAME ...] [--jobs 2] [--scale 1.0]

Validation on what the detectors were not tuned on: issue 25's own table at its ORIGINAL length (the CI
matrix, tests/test_live_matrix.py, runs the same algorithms on deliberately short budgets) and
algorithm/env combinations never in the matrix (DQN on Acrobot and MountainCar, PPO/A2C/TD3 on Pendulum,
SAC and PPO on MountainCarContinuous, PPO/A2C on FrozenLake's Discrete observations, and MuJoCo's Hopper,
HalfCheetah, Walker2d and InvertedPendulum with PPO, A2C, SAC and TD3: ``pip install -e '.[mujoco]'``; Box2D's
LunarLander (discrete and continuous) and BipedalWalker with PPO, DQN, A2C, SAC and TD3: ``'.[box2d]'``). Each run is
``model.learn(N, callback=SupervisorCallback(run_dir))`` with SB3's DEFAULT hyperparameters (only the
issue's PPO CartPole row sets ``n_steps=512``, as the issue did), ``device="cpu"``, one torch thread,
each in its own process (``--jobs`` at once, 2 by default: the machine has 2 cores).

Per run it records what the supervisor stored (the run's ``supervisor.db``): env steps done, reports,
findings counted by severity and detector, interventions (action, detector, report and its env step),
the final status, the final mean return (SB3's ``ep_info_buffer``, the last 100 episodes) and the run's
CPU seconds. Every run here is healthy, or does what its defaults do without a fault (DQN on MountainCar
never reaches the flag: no_learning/plateau are then true, and fine as info or warning, but an
intervention or a stop is a false alarm). Writes ``benchmarks/results/sb3_live.md`` and ``.json``.
``--scale`` multiplies every budget (0.1 for a quick smoke run; the results then say so). Run it alone
on the machine: ~35 min of CPU at full length for one seed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.results_io import write_results  # noqa: E402
from supervisor.config import check_env  # noqa: E402
from supervisor.errors import InputError  # noqa: E402

#: (name, algorithm, env, env steps, non-default args, why it is here)
RUNS = [
    ("dqn-cartpole", "dqn", "CartPole-v1", 60_000, {}, "issue 25 (stopped at 7,916 before)"),
    ("a2c-cartpole", "a2c", "CartPole-v1", 60_000, {}, "issue 25 (stopped at 795 before)"),
    ("ppo-cartpole", "ppo", "CartPole-v1", 100_000, {"n_steps": 512}, "issue 25 (stopped at 55,296 before)"),
    ("sac-pendulum", "sac", "Pendulum-v1", 12_000, {}, "issue 25 (stopped at 415 before)"),
    ("ppo-acrobot", "ppo", "Acrobot-v1", 100_000, {}, "issue 25 (clean before)"),
    ("dqn-acrobot", "dqn", "Acrobot-v1", 60_000, {}, "never in the matrix"),
    ("dqn-mountaincar", "dqn", "MountainCar-v0", 60_000, {}, "never in the matrix; does not learn with defaults"),
    ("ppo-pendulum", "ppo", "Pendulum-v1", 100_000, {}, "never in the matrix; learns slowly with defaults"),
    ("a2c-pendulum", "a2c", "Pendulum-v1", 100_000, {}, "never in the matrix"),
    ("td3-pendulum", "td3", "Pendulum-v1", 12_000, {}, "matrix runs 2,000 steps"),
    ("sac-mcc", "sac", "MountainCarContinuous-v0", 20_000, {}, "never in the matrix"),
    ("ppo-frozenlake", "ppo", "FrozenLake-v1", 50_000, {}, "never in the matrix; Discrete observations"),
    ("a2c-frozenlake", "a2c", "FrozenLake-v1", 50_000, {}, "never in the matrix; Discrete observations"),
    ("ppo-mcc", "ppo", "MountainCarContinuous-v0", 50_000, {}, "never in the matrix; sparse reward"),
    # MuJoCo (pip install -e '.[mujoco]'): returns in the thousands, early terminations, 6-17 features
    ("ppo-hopper", "ppo", "Hopper-v5", 100_000, {}, "MuJoCo, never tuned on"),
    ("sac-hopper", "sac", "Hopper-v5", 20_000, {}, "MuJoCo, never tuned on"),
    ("td3-halfcheetah", "td3", "HalfCheetah-v5", 20_000, {}, "MuJoCo, never tuned on; no terminations"),
    ("ppo-halfcheetah", "ppo", "HalfCheetah-v5", 100_000, {}, "MuJoCo, never tuned on"),
    ("a2c-walker2d", "a2c", "Walker2d-v5", 100_000, {}, "MuJoCo, never tuned on"),
    ("ppo-invpendulum", "ppo", "InvertedPendulum-v5", 50_000, {}, "MuJoCo; the return reaches its cap and stays"),
    # Box2D (pip install -e '.[box2d]'): crash penalties (-100), shaped rewards from -200 up
    ("ppo-lunarlander", "ppo", "LunarLander-v3", 200_000, {}, "Box2D, never tuned on"),
    ("dqn-lunarlander", "dqn", "LunarLander-v3", 100_000, {}, "Box2D, never tuned on"),
    ("a2c-lunarlander", "a2c", "LunarLander-v3", 200_000, {}, "Box2D, never tuned on"),
    ("sac-lunarlandercont", "sac", "LunarLanderContinuous-v3", 20_000, {}, "Box2D, never tuned on"),
    ("ppo-bipedalwalker", "ppo", "BipedalWalker-v3", 200_000, {}, "Box2D; a fall costs -100"),
    ("td3-bipedalwalker", "td3", "BipedalWalker-v3", 20_000, {}, "Box2D; a fall costs -100"),
]
#: rl-baselines3-zoo's tuned hyperparameters (DLR-RM/rl-baselines3-zoo hyperparams/{ppo,a2c,dqn}.yml at
#: 208b6fd, c6c209e and ce95481): what most SB3 users actually train with. Several envs at once
#: (``n_envs``), VecNormalize (``normalize``: observations and rewards), gSDE, RMSprop, linear schedules
#: (``lin_X``), ``gradient_steps: -1``, ``learning_starts: 0``, Gaussian action noise (``noise_std``); and
#: sac.yml, td3.yml at c94924e and a02f4fb. Budgets are the zoo's ``n_timesteps`` where
#: this machine allows, else cut (the ``why`` says so). ``python benchmarks/sb3_live.py --zoo``.
ZOO_RUNS = [
    ("zoo-ppo-cartpole", "ppo", "CartPole-v1", 100_000,
     {"n_envs": 8, "n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20,
      "ent_coef": 0.0, "learning_rate": "lin_0.001", "clip_range": "lin_0.2"}, "zoo, tuned; its full budget"),
    ("zoo-ppo-pendulum", "ppo", "Pendulum-v1", 100_000,
     {"n_envs": 4, "n_steps": 1024, "gae_lambda": 0.95, "gamma": 0.9, "n_epochs": 10, "ent_coef": 0.0,
      "learning_rate": 1e-3, "clip_range": 0.2, "use_sde": True, "sde_sample_freq": 4}, "zoo, tuned; gSDE"),
    ("zoo-ppo-acrobot", "ppo", "Acrobot-v1", 200_000,
     {"normalize": True, "n_envs": 16, "n_steps": 256, "gae_lambda": 0.94, "gamma": 0.99, "n_epochs": 4,
      "ent_coef": 0.0}, "zoo; VecNormalize; 200k of its 1M steps"),
    ("zoo-a2c-cartpole", "a2c", "CartPole-v1", 200_000, {"n_envs": 8, "ent_coef": 0.0},
     "zoo; 200k of its 500k steps"),
    ("zoo-a2c-acrobot", "a2c", "Acrobot-v1", 200_000, {"normalize": True, "n_envs": 16, "ent_coef": 0.0},
     "zoo; VecNormalize; 200k of its 500k steps"),
    ("zoo-a2c-pendulum", "a2c", "Pendulum-v1", 200_000,
     {"normalize": True, "n_envs": 8, "ent_coef": 0.0, "max_grad_norm": 0.5, "n_steps": 8, "gae_lambda": 0.9,
      "vf_coef": 0.4, "gamma": 0.9, "use_rms_prop": True, "normalize_advantage": False,
      "learning_rate": "lin_7e-4", "use_sde": True, "policy_kwargs": {"log_std_init": -2, "ortho_init": False}},
     "zoo, tuned; VecNormalize, gSDE, RMSprop; 200k of its 1M steps"),
    ("zoo-dqn-cartpole", "dqn", "CartPole-v1", 50_000,
     {"learning_rate": 2.3e-3, "batch_size": 64, "buffer_size": 100_000, "learning_starts": 1000, "gamma": 0.99,
      "target_update_interval": 10, "train_freq": 256, "gradient_steps": 128, "exploration_fraction": 0.16,
      "exploration_final_eps": 0.04, "policy_kwargs": {"net_arch": [256, 256]}},
     "zoo; 128 gradient steps every 256 env steps; its full budget"),
    ("zoo-dqn-acrobot", "dqn", "Acrobot-v1", 50_000,
     {"learning_rate": 6.3e-4, "batch_size": 128, "buffer_size": 50_000, "learning_starts": 0, "gamma": 0.99,
      "target_update_interval": 250, "train_freq": 4, "gradient_steps": -1, "exploration_fraction": 0.12,
      "exploration_final_eps": 0.1, "policy_kwargs": {"net_arch": [256, 256]}},
     "zoo, tuned; learning_starts 0; 50k of its 100k steps"),
    ("zoo-sac-pendulum", "sac", "Pendulum-v1", 20_000, {"learning_rate": 1e-3}, "zoo; its full budget"),
    ("zoo-sac-mcc", "sac", "MountainCarContinuous-v0", 50_000,
     {"learning_rate": 3e-4, "buffer_size": 50_000, "batch_size": 512, "ent_coef": 0.1, "train_freq": 32,
      "gradient_steps": 32, "gamma": 0.9999, "tau": 0.01, "learning_starts": 0, "use_sde": True,
      "policy_kwargs": {"log_std_init": -3.67, "net_arch": [64, 64]}},
     "zoo, tuned; gSDE, a fixed entropy coefficient 0.1, gamma 0.9999; its full budget"),
    ("zoo-td3-pendulum", "td3", "Pendulum-v1", 20_000,
     {"gamma": 0.98, "buffer_size": 200_000, "learning_starts": 10_000, "noise_std": 0.1, "gradient_steps": -1,
      "train_freq": [1, "episode"], "learning_rate": 1e-3, "policy_kwargs": {"net_arch": [400, 300]}},
     "zoo (its Pendulum-v0 entry); Gaussian action noise, an update per episode; its full budget"),
]
SEVERITIES = ("info", "warning", "critical")


def _schedule(v):
    """The zoo's ``lin_X``: X decayed linearly to 0 over training (SB3's progress_remaining)."""
    if isinstance(v, str) and v.startswith("lin_"):
        x = float(v[4:])
        return lambda progress_remaining: progress_remaining * x
    return v


def train(name: str, algo: str, env: str, steps: int, kw: dict, seed: int, run_dir: Path) -> dict:
    """One supervised run in this process; what the supervisor stored about it."""
    import torch
    from stable_baselines3 import A2C, DQN, PPO, SAC, TD3

    from supervisor.integrations.sb3 import SupervisorCallback
    from supervisor.store import Store

    torch.set_num_threads(1)
    t0 = time.process_time()
    hp = {k: _schedule(v) for k, v in json.loads(json.dumps(kw)).items()}  # a copy: SB3 adds to policy_kwargs
    n_envs, normalize, noise_std = hp.pop("n_envs", None), hp.pop("normalize", False), hp.pop("noise_std", None)
    if isinstance(hp.get("train_freq"), list):  # rl-zoo's [1, "episode"]
        hp["train_freq"] = tuple(hp["train_freq"])
    if n_envs or normalize:  # as rl_zoo3 builds it: Monitor inside each env, VecNormalize outside
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import VecNormalize

        env_obj = make_vec_env(env, n_envs=n_envs or 1, seed=seed)
        if normalize:
            env_obj = VecNormalize(env_obj, gamma=hp.get("gamma", 0.99))
    else:
        env_obj = env
    if noise_std is not None:  # rl-zoo's noise_type normal: Gaussian action noise of noise_std per dimension
        import gymnasium as gym
        import numpy as np
        from stable_baselines3.common.noise import NormalActionNoise

        dims = gym.make(env).action_space.shape[0]
        hp["action_noise"] = NormalActionNoise(np.zeros(dims), noise_std * np.ones(dims))
    model = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC, "td3": TD3}[algo](
        "MlpPolicy", env_obj, seed=seed, device="cpu", **hp)
    cb = SupervisorCallback(run_dir)
    model.learn(steps, callback=cb)
    cpu = time.process_time() - t0
    eps = [e["r"] for e in model.ep_info_buffer]
    store = Store(run_dir / "supervisor.db")
    try:
        tid = cb.sup.trial_id
        reports = store.reports(tid)
        findings = store.findings(tid)
        ivs = store.interventions(tid)
    finally:
        store.close()
    env_step = {r["seq"]: int(r["metrics"].get("env_steps_lifetime", 0)) for r in reports}
    by = {s: dict(sorted(Counter(f["detector"] for f in findings if f["severity"] == s).items()))
          for s in SEVERITIES}
    first = {}
    for f in findings:
        if f["severity"] != "info":
            first.setdefault((f["severity"], f["detector"]), {
                "severity": f["severity"], "detector": f["detector"], "report": f["seq"],
                "env_step": env_step.get(f["seq"]), "metric": f["metric"], "value": f["value"],
                "threshold": f["threshold"], "message": f["message"]})
    return {"name": name, "algo": algo, "env": env, "seed": seed, "budget": steps, "kwargs": kw,
            "steps": int(model.num_timesteps), "reports": len(reports), "findings": by,
            "first_findings": list(first.values()),
            "interventions": [{"action": i["action"], "detector": i["detector"], "report": i["seq"],
                               "env_step": env_step.get(i["seq"]), "outcome": i["outcome"]}
                              for i in ivs if i["action"] != "alert"],
            "alerts": sum(i["action"] == "alert" for i in ivs), "status": cb.sup.status,
            "final_return": round(sum(eps) / len(eps), 2) if eps else None, "episodes_in_mean": len(eps),
            "cpu_s": round(cpu, 1)}


def run_child(spec: dict, work: Path) -> dict:
    """One run in a fresh process (its own CPU clock, its own torch threads)."""
    run_dir = work / f"{spec['name']}-s{spec['seed']}"
    cmd = [sys.executable, __file__, "--child", json.dumps(spec), "--work", str(run_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        return {**spec, "error": f"exit {p.returncode}: {p.stderr.strip().splitlines()[-1:] or ''}"}
    row = json.loads(lines[-1])
    print(f"{row['name']} seed {row['seed']}: {row['steps']} steps, {row['status']}, "
          f"{len(row['interventions'])} interventions, return {row['final_return']}, {row['cpu_s']} s CPU",
          flush=True)
    return row


def fmt_counts(d: dict) -> str:
    return ", ".join(f"{k} x{v}" for k, v in d.items()) or "-"


def markdown(rows: list[dict], scale: float, before: list[dict] | None = None, before_label: str = "",
             zoo: bool = False) -> str:
    out = ["# Stable-Baselines3 runs with rl-baselines3-zoo's tuned hyperparameters, supervised "
           "(`benchmarks/sb3_live.py --zoo`)" if zoo else
           "# Stock Stable-Baselines3 runs at full length, supervised (`benchmarks/sb3_live.py`)", "",
           ("rl-baselines3-zoo's hyperparameters (`ZOO_RUNS`: several envs, VecNormalize, gSDE, schedules)"
            if zoo else "SB3 default hyperparameters") + ", `device=\"cpu\"`, `SupervisorCallback(run_dir)` and nothing else. "
           "Findings: warning/critical by detector (count = reports it fired on); info counted. "
           "Interventions: action (detector) @ env step."
           + (f" **Budgets scaled by {scale}.**" if scale != 1 else ""), "",
           "| run | seed | steps / budget | reports | warnings | criticals | info | interventions | status "
           "| final return | CPU s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['name']} | {r['seed']} | error: {r['error']} |||||||||")
            continue
        ivs = "; ".join(f"{i['action']} ({i['detector']}) @ {i['env_step']}" for i in r["interventions"]) or "none"
        out.append(f"| {r['algo'].upper()} {r['env']} | {r['seed']} | {r['steps']:,} / {r['budget']:,} "
                   f"| {r['reports']} | {fmt_counts(r['findings']['warning'])} "
                   f"| {fmt_counts(r['findings']['critical'])} | {sum(r['findings']['info'].values())} "
                   f"| {ivs} | {r['status']} | {r['final_return']} | {r['cpu_s']} |")
    firsts = [(r, f) for r in rows if "error" not in r for f in r["first_findings"]]
    if firsts:
        out += ["", "First warning/critical of each detector per run:", "",
                "| run | seed | severity | detector | report @ env step | metric = value (threshold) | message |",
                "|---|---|---|---|---|---|---|"]
        for r, f in firsts:
            msg = f["message"].replace("|", "/")
            out.append(f"| {r['name']} | {r['seed']} | {f['severity']} | {f['detector']} | {f['report']} @ "
                       f"{f['env_step']} | {f['metric']} = {f['value']} ({f['threshold']}) | {msg} |")
    ok = [r for r in rows if "error" not in r]
    clean = sum(not r["interventions"] and not r["findings"]["critical"] and r["status"] == "completed" for r in ok)
    out += ["", f"{clean} of {len(ok)} runs completed with no intervention and no critical finding; "
                f"{sum(r['cpu_s'] for r in ok):.0f} s of CPU in all."]
    if before:
        out += ["", f"## Before: {before_label}", "",
                "| run | seed | steps / budget | warnings | criticals | interventions | status | final return |",
                "|---|---|---|---|---|---|---|---|"]
        for r in before:
            ivs = "; ".join(f"{i['action']} ({i['detector']}) @ {i['env_step']}" for i in r["interventions"]) or "none"
            out.append(f"| {r['algo'].upper()} {r['env']} | {r['seed']} | {r['steps']:,} / {r['budget']:,} "
                       f"| {fmt_counts(r['findings']['warning'])} | {fmt_counts(r['findings']['critical'])} "
                       f"| {ivs} | {r['status']} | {r['final_return']} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--only", nargs="+", help="run names (default: all): " + ", ".join(r[0] for r in RUNS + ZOO_RUNS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every budget (smoke runs)")
    ap.add_argument("--keep", help="keep each run's folder (supervisor.db, checkpoints) under this folder")
    ap.add_argument("--rows", help="also append each row to this JSONL file, and reuse rows already in it")
    ap.add_argument("--before", help="JSONL rows of an earlier version (from --rows) to set beside these")
    ap.add_argument("--before-label", default="an earlier version", help="what --before was run on")
    ap.add_argument("--zoo", action="store_true", help="rl-baselines3-zoo's tuned hyperparameters (ZOO_RUNS) "
                    "instead of SB3's defaults")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        s = json.loads(a.child)
        print(json.dumps(train(s["name"], s["algo"], s["env"], s["steps"], s["kwargs"], s["seed"], Path(a.work))))
        return
    runs = ZOO_RUNS if a.zoo else RUNS
    unknown = set(a.only or ()) - {r[0] for r in runs}
    if unknown:
        sys.exit(f"sb3_live.py: --only: unknown run(s) {sorted(unknown)}")
    done = {}
    if a.rows and Path(a.rows).exists():
        for ln in Path(a.rows).read_text().splitlines():
            r = json.loads(ln)
            if "error" not in r:
                done[(r["name"], r["seed"])] = r
    specs = [{"name": n, "algo": al, "env": e, "steps": max(1, int(st * a.scale)), "kwargs": kw, "seed": seed}
             for seed in a.seeds for n, al, e, st, kw, _ in runs if not a.only or n in a.only]
    todo = [s for s in specs if (s["name"], s["seed"]) not in done]
    for env in sorted({s["env"] for s in todo}):  # MuJoCo's and Box2D's rows need their extras
        try:
            check_env(env, "sb3_live.py")
        except InputError as e:
            sys.exit(f"{e} (pip install -e '.[mujoco]' / '.[box2d]', or --only other rows)")
    with tempfile.TemporaryDirectory(prefix="sb3_live-") as tmp, ThreadPoolExecutor(a.jobs) as pool:
        work = Path(a.keep) if a.keep else Path(tmp)
        for row in pool.map(lambda s: run_child(s, work), todo):
            done[(row["name"], row["seed"])] = row
            if a.rows and "error" not in row:
                with open(a.rows, "a") as f:
                    f.write(json.dumps(row) + "\n")
    rows = [done[(s["name"], s["seed"])] for s in specs]
    before = None
    if a.before:
        wanted = {(s["name"], s["seed"]) for s in specs}
        before = [r for r in map(json.loads, Path(a.before).read_text().splitlines())
                  if "error" not in r and (r["name"], r["seed"]) in wanted]
        order = {(s["name"], s["seed"]): i for i, s in enumerate(specs)}
        before.sort(key=lambda r: order[(r["name"], r["seed"])])
    md = markdown(rows, a.scale, before, a.before_label, zoo=a.zoo)
    print(md)
    write_results("sb3_live_zoo" if a.zoo else "sb3_live", md, {"scale": a.scale, "runs": rows,
                                   **({"before": {"label": a.before_label, "runs": before}} if before else {})})


if __name__ == "__main__":
    main()
