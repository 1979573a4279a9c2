"""Supervision overhead on a real PPO run: supervised vs plain, side by side in one run.

    python benchmarks/overhead.py [--iterations 20]

Builds the same PPO config twice (CartPole-v1, 1 env runner): once plain,
once under the supervisor (callback, instrumented learner, verdict round
trip, health-gated checkpoints). Iterations alternate between the two so
machine noise hits both alike; reports the median iteration time of each
and their ratio. Writes benchmarks/results/overhead.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from actors import run_registry  # noqa: E402
from actors.algo_config import build_config  # noqa: E402
from actors.supervisor_actor import get_or_create_supervisor  # noqa: E402
from supervisor.config import Experiment  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=20)
    args = ap.parse_args()
    exp = Experiment.model_validate({
        "name": "overhead", "env": "CartPole-v1", "seed": 3, "stop": {"iterations": args.iterations},
        "config": {"lr": 3e-4, "train_batch_size_per_learner": 2000, "minibatch_size": 250, "num_epochs": 6,
                   "num_env_runners": 1}})
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)  # never a cluster found here
    run_dir = tempfile.mkdtemp()
    run_info = {"run_dir": run_dir, "name": "overhead", "kind": "run", "settings": {}, "spec": None,
                "profile": None}
    sup = get_or_create_supervisor()
    ray.get(sup.open_run.remote("overhead", **run_info))
    run_registry.publish("overhead", {"run_id": "overhead", "trial_id": "supervised", "run_info": run_info,
                                      "timeout_s": 2.0})
    plain = build_config(exp, "bench").build_algo()
    supervised = build_config(exp, "bench", "overhead").build_algo()
    times = {"plain": [], "supervised": []}
    for i in range(args.iterations):
        order = [("plain", plain), ("supervised", supervised)]
        for name, algo in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            algo.train()
            times[name].append(time.perf_counter() - t0)
    p, s = statistics.median(times["plain"]), statistics.median(times["supervised"])
    text = "\n".join(["| measure | supervised | plain | ratio |", "|---|---|---|---|",
                      f"| median PPO iteration time, s ({args.iterations} interleaved iterations) | {s:.3f} | {p:.3f} "
                      f"| {s / p:.3f} |"])
    print(text)
    from benchmarks.results_io import write_results

    write_results("overhead", text, {"iterations": args.iterations, "supervised_s": s, "plain_s": p,
                                     "ratio": s / p})
    plain.stop()
    supervised.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
