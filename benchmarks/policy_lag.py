"""Policy lag of APPO and IMPALA, measured on real RLlib runs: healthy configs against configs made stale.

    python benchmarks/policy_lag.py [--iterations 12] [--only NAME ...] [--out benchmarks/results/policy_lag.json]

RLlib 2.60's learner logs, per module and update, ``diff_num_grad_updates_vs_sampler_policy``: how many
gradient updates the learner's weights are ahead of the weights that sampled the batch it trains on
(``learners/<module>/...``; the supervisor's ``policy_lag``). V-trace corrects for some lag; a lag that
runs away means the learner trains on data from a policy ever further behind. Each case runs the
``experiments/cartpole_appo.yaml`` / ``cartpole_impala.yaml`` config (one env runner, 1,000 env steps an
iteration, ``train_batch_size_per_learner`` 500) with a change:

* healthy: as the example; with 2 env runners;
* stale for real: the weight sync lost (RLlib's ``EnvRunnerStateServer``, the actor the env runners pull
  new weights from, killed after iteration 3: they keep sampling with the weights they had, and the lag
  grows by the learner's updates an iteration); weights broadcast only every ``broadcast_interval`` updates
  (RLlib's knob for how often samplers get new weights; in 2.60 it is also how often the learner hands
  back its results, so the lag is reported every few iterations), and many env runners feeding a slow
  learner (a 512x512 network, 4 epochs per batch, 4 sample requests in flight per runner).

Per case and iteration it keeps ``policy_lag``, ``is_ratio_mean`` (APPO's V-trace mean_IS), the return
and the iteration time. The policy_lag detector's threshold comes from these figures (docs/reference.md).
Run it alone on the machine (minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from supervisor.metrics import normalize_result  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "policy_lag.json"
SLOW = {"model": {"fcnet_hiddens": [512, 512]}, "num_epochs": 4}
# RLlib 2.60's APPO/IMPALA learner hands back its results (and the weights for the env runners) once every
# broadcast_interval update calls: with 4 batches an iteration (train batch 250, 1,000 env steps an
# iteration) and broadcast_interval 8, every second iteration reports the lag.
BROADCAST = {"broadcast_interval": 8, "train_batch_size_per_learner": 250}
MANY = {"num_env_runners": 4, "max_requests_in_flight_per_env_runner": 4}
# name -> (algorithm, kind, training() overrides, env_runners() overrides)
CASES = {
    "appo_default": ("APPO", "healthy", {}, {}),
    "appo_runners2": ("APPO", "healthy", {}, {"num_env_runners": 2}),
    "appo_small_batch": ("APPO", "healthy", {"train_batch_size_per_learner": 250}, {}),
    "appo_broadcast8": ("APPO", "stale", BROADCAST, {}),
    "appo_slow_learner": ("APPO", "stale", SLOW, MANY),
    "impala_default": ("IMPALA", "healthy", {}, {}),
    "impala_broadcast8": ("IMPALA", "stale", BROADCAST, {}),
    "impala_slow_learner": ("IMPALA", "stale", SLOW, MANY),
    # the weight sync lost: RLlib's EnvRunnerStateServer (the actor env runners pull new weights from) killed
    # after iteration SYNC_LOST_AFTER; the env runners keep sampling with the weights they had
    "appo_sync_lost": ("APPO", "stale", {}, {}),
    "impala_sync_lost": ("IMPALA", "stale", {}, {}),
}
SYNC_LOST_AFTER = 3


def build(algorithm: str, training: dict, runners: dict):
    from ray.rllib.algorithms.appo import APPOConfig
    from ray.rllib.algorithms.impala import IMPALAConfig

    cfg = (APPOConfig() if algorithm == "APPO" else IMPALAConfig()).environment("CartPole-v1")
    training = dict(training)
    model = training.pop("model", None)
    if model:
        from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

        cfg.rl_module(model_config=DefaultModelConfig(**model))
    cfg.training(**{"lr": 0.0005, "gamma": 0.99, "train_batch_size_per_learner": 500, **training})
    n = runners.get("num_env_runners", 1)
    cfg.env_runners(**{"num_env_runners": 1, **runners, "num_cpus_per_env_runner": min(1.0, 1.0 / n)})
    cfg.reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=1000)
    cfg.debugging(seed=1)
    return cfg


def run_case(name: str, iterations: int) -> dict:
    algorithm, kind, training, runners = CASES[name]
    algo = build(algorithm, training, runners).build_algo()
    rows = []
    try:
        for i in range(iterations):
            if name.endswith("_sync_lost") and i == SYNC_LOST_AFTER:
                import ray

                ray.kill(algo._env_runner_state_server, no_restart=True)
            t0 = time.perf_counter()
            res = algo.train()
            m = normalize_result(res, name)["metrics"]
            rows.append({k: m.get(k) for k in ("policy_lag", "is_ratio_mean", "episode_return_mean")}
                        | {"seconds": round(time.perf_counter() - t0, 2)})
            print(name, len(rows), rows[-1], flush=True)
    finally:
        algo.stop()
    lags = [r["policy_lag"] for r in rows if isinstance(r["policy_lag"], float) and math.isfinite(r["policy_lag"])]
    settled = lags[len(lags) // 3:]  # after the first third: the queue and the broadcast cycle have filled
    return {"algorithm": algorithm, "kind": kind, "training": training, "env_runners": runners,
            "sync_lost_after": SYNC_LOST_AFTER if name.endswith("_sync_lost") else None, "rows": rows,
            "lag_max": max(lags) if lags else None,
            "lag_median_settled": sorted(settled)[len(settled) // 2] if settled else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=12)
    ap.add_argument("--only", nargs="*", default=None, choices=list(CASES))
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    out_path = Path(args.out)
    res = json.loads(out_path.read_text()) if out_path.exists() else {}
    res.setdefault("cases", {})
    try:
        for name in args.only or CASES:
            res["cases"][name] = run_case(name, args.iterations)
            res["command"] = "python benchmarks/policy_lag.py" + (f" --iterations {args.iterations}"
                                                                  if args.iterations != 12 else "")
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(res, indent=1) + "\n")
    finally:
        ray.shutdown()
    for name, c in res["cases"].items():
        print(f"{name:22} {c['kind']:8} lag max {c['lag_max']}  settled median {c['lag_median_settled']}")


if __name__ == "__main__":
    main()
