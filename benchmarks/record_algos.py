"""Record real APPO, IMPALA, DQN and SAC runs, healthy and faulty, for the detection benchmark.

    python benchmarks/record_algos.py [--only NAME ...] [--iterations N] [--out benchmarks/data]

Per algorithm one healthy run and one whose learning rate jumps mid-run (an RLlib lr schedule: from
the example's lr to one far too high at ``fault_step`` env steps), 20 iterations each, with the
configs of the ``experiments/`` examples (``cartpole_dqn.yaml``, ``pendulum_sac.yaml``,
``cartpole_appo.yaml``, ``cartpole_impala.yaml``): RLlib's stock learners, sized for 2 cores.

Same format as ``benchmarks/record_runs.py``; per run, in ``--out``:

* ``<name>.jsonl``: one line per training iteration, :func:`supervisor.metrics.normalize_result`'s
  metrics plus ``training_iteration`` (DQN's epsilon included, read off the env runners as the
  supervisor's callback does);
* ``<name>.raw.jsonl.gz``: RLlib's result per iteration, flattened to "a/b" keys, numbers only (every key
  under ``learners/``, ``env_runners/``, ``replay_buffer/``, ``timers/``, ``fault_tolerance/``,
  ``supervisor_extra/`` and a few top-level counters);
* ``runs_algos.json`` (not ``runs.json``, which the PPO recorder owns; same schema): kind (healthy /
  faulty), fault, how, env, algorithm, seed, split, fault_step, ``onset_index`` (0-based line of the
  first iteration trained with the bad lr: these algorithms update many times an iteration and RLlib
  moves the lr scheduler after each update, so it is the iteration whose sampling reaches
  ``fault_step``), iterations, seconds, priors.

``--renormalize`` rebuilds every ``<name>.jsonl`` and the onsets from the ``.raw.jsonl.gz`` files with the
current :mod:`supervisor.metrics` (no training).

Runs in the background (tens of minutes on 2 cores)::

    nohup python benchmarks/record_algos.py > /tmp/record_algos.log 2>&1 &
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from supervisor.config import load_experiment  # noqa: E402
from supervisor.metrics import normalize_result  # noqa: E402

ITERATIONS = 20
ONSET_ITERATION = 8  # the fault's lr is in the schedule from the sample of this iteration on


@dataclass(frozen=True)
class Algo:
    example: str      # experiments/<example>.yaml
    lr_key: str       # the config key whose schedule jumps
    bad_lr: float
    steps_per_iteration: int  # min_sample_timesteps_per_iteration of the example


ALGOS = {
    "DQN": Algo("cartpole_dqn", "lr", 1.0, 400),
    "SAC": Algo("pendulum_sac", "critic_lr", 50.0, 200),
    "APPO": Algo("cartpole_appo", "lr", 5.0, 1000),
    "IMPALA": Algo("cartpole_impala", "lr", 5.0, 1000),
}


def fault_step(algo: str) -> int:
    # an iteration samples at least steps_per_iteration: the first env step of ONSET_ITERATION at the latest
    return (ONSET_ITERATION - 1) * ALGOS[algo].steps_per_iteration + 1


def runs() -> dict[str, dict]:
    out = {}
    for name in ALGOS:
        a = name.lower()
        # "_ex_": the examples' configs (record_runs.py's <algo>_healthy runs use RLlib's defaults)
        out[f"{a}_ex_healthy"] = {"algorithm": name, "kind": "healthy", "fault": None, "seed": 1, "split": "tune",
                               "how": f"experiments/{ALGOS[name].example}.yaml"}
        out[f"{a}_ex_lr_jump"] = {"algorithm": name, "kind": "faulty", "fault": "lr_jump", "seed": 2, "split": None,
                               "how": f"experiments/{ALGOS[name].example}.yaml, {ALGOS[name].lr_key} schedule "
                                      f"{_schedule(name)}", "fault_step": fault_step(name)}
    return out


def _schedule(algo: str) -> list:
    exp = load_experiment(REPO / "experiments" / f"{ALGOS[algo].example}.yaml")
    lr0 = float(exp.config[ALGOS[algo].lr_key])
    s = fault_step(algo)
    return [[0, lr0], [s - 1, lr0], [s, ALGOS[algo].bad_lr]]


def build(name: str, meta: dict):
    from actors.algo_config import build_config

    algo = meta["algorithm"]
    path = REPO / "experiments" / f"{ALGOS[algo].example}.yaml"
    sets = [f"seed={meta['seed']}"]
    if meta["fault"] == "lr_jump":
        sets.append(f"config.{ALGOS[algo].lr_key}={json.dumps(_schedule(algo))}")
    exp = load_experiment(path, sets)
    return build_config(exp, str(path), None).build_algo(), exp


def priors(algorithm, exp) -> dict:
    """What the built algorithm's config and spaces say (``actors.priors.priors_of``), plus the off-policy
    settings the detectors' bounds use."""
    from actors.priors import priors_of

    c = algorithm.config
    out = dict(priors_of(algorithm))
    out["algorithm"] = exp.algorithm
    for k in ("gamma", "lr", "actor_lr", "critic_lr", "alpha_lr", "initial_alpha", "target_entropy", "tau",
              "target_network_update_freq", "epsilon", "entropy_coeff", "grad_clip", "n_step",
              "num_steps_sampled_before_learning_starts"):
        if hasattr(c, k):
            v = getattr(c, k)
            out[k] = v if isinstance(v, (int, float, bool, str, list, type(None))) else repr(v)
    out["train_batch_size"] = c.train_batch_size_per_learner
    return out


def onset_of(meta: dict, rows: list[dict]) -> dict:
    if meta["fault"] is None or not rows:
        return {"onset_index": None, "onset_iteration": None}
    # These algorithms update many times an iteration and RLlib moves the lr scheduler after each update:
    # the iteration whose sampling reaches fault_step already trains with the bad lr.
    first = next((i for i, r in enumerate(rows) if r.get("env_steps_lifetime", 0) >= meta["fault_step"]), None)
    if first is None or first >= len(rows):
        return {"onset_index": None, "onset_iteration": None}
    return {"onset_index": first, "onset_iteration": rows[first]["training_iteration"]}


def record(name: str, meta: dict, iterations: int, out: Path) -> dict:
    from actors.appliers.rllib import extra_metrics
    from benchmarks.record_runs import train_streams, write_streams

    t0 = time.time()
    algo, exp = build(name, meta)
    pri = priors(algo, exp)
    rows, raws = train_streams(algo, name, iterations, extra=extra_metrics)
    return {**write_streams(out, name, rows, raws), "group": "algorithms", "env": exp.env,
            "env_config": dict(exp.env_config), "fault_step": meta.get("fault_step"),
            **{k: meta[k] for k in ("kind", "fault", "how", "algorithm", "seed", "split")},
            "iterations": len(rows), **onset_of(meta, rows), "seconds": round(time.time() - t0, 1), "priors": pri}


def renormalize(out: Path, table: dict) -> None:
    from supervisor.keymaps import unflatten

    meta_path = out / "runs_algos.json"
    meta = json.loads(meta_path.read_text())
    for name, m in meta.items():
        if name.startswith("_") or not (out / m["raw_file"]).exists():
            continue
        rows = []
        with gzip.open(out / m["raw_file"], "rt") as f:
            raw_lines = f.read().splitlines()
        for line in raw_lines:
            if line.strip():
                norm = normalize_result(unflatten(json.loads(line)), name)
                rows.append({"training_iteration": norm["iteration"], **norm["metrics"]})
        with open(out / m["file"], "w") as f:
            for r in rows:
                f.write(json.dumps(r, allow_nan=True, separators=(",", ":")) + "\n")
        m.update(onset_of(table[name], rows))
    meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True, allow_nan=True) + "\n")


ABOUT = {
    "config": "per run: the experiments/ example named in `how` (RLlib's stock learners, min_time_s_per_iteration "
              "0, an iteration bounded by min_sample_timesteps_per_iteration)",
    "onset_index": "0-based line of the first iteration trained with the bad lr (see onset_of)",
    "raw_file": "<name>.raw.jsonl.gz: RLlib's result per iteration, flattened to 'a/b' keys, numbers only",
    "priors": "actors.priors.priors_of plus the algorithm's off-policy settings (gamma, lrs, tau, ...)",
    "recorded_with": "benchmarks/record_algos.py",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=ITERATIONS)
    ap.add_argument("--only", nargs="*", default=None, help="run names")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "data"))
    ap.add_argument("--renormalize", action="store_true", help="rebuild the .jsonl files from the .raw.jsonl ones")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = runs()
    if args.renormalize:
        renormalize(out, table)
        return
    unknown = set(args.only or ()) - set(table)
    if unknown:
        sys.exit(f"unknown run(s): {', '.join(sorted(unknown))}; known: {', '.join(table)}")
    names = list(args.only or table)

    import ray
    import torch

    # one intra-op thread: on a busy shared machine torch's spinning OpenMP threads slow tiny models down
    torch.set_num_threads(1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}})
    meta_path = out / "runs_algos.json"
    try:
        for name in names:
            entry = record(name, table[name], args.iterations, out)
            with open(out / ".runs_algos.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
                meta["_about"] = ABOUT
                meta[name] = entry
                meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True, allow_nan=True) + "\n")
            print(f"[{name}] done: {json.dumps({k: v for k, v in entry.items() if k != 'priors'})}", flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    main()
