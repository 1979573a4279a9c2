"""metrics_missing on real short RLlib runs of every algorithm: healthy configs must not be taken for blind.

    python benchmarks/blind_check.py [--iterations N] [--only PPO APPO ...] [--out benchmarks/results/blind_check.json]

Each algorithm's ``experiments/`` example runs under ``supervise run`` (real Ray, RLlib, SQLite), sized down
as in ``tests/test_algos_e2e.py``, for ``metrics_by + 2`` iterations after its learner starts (default), with
configs that switch metrics off as well as on: PPO with and without the KL penalty and with a gradient clip,
SAC with and without ``grad_clip``, DQN with its default clip, APPO/IMPALA as shipped. Per run it records the
metrics_missing findings (there must be none), how many needs the detector watched and the keys reported.
Run it alone on the machine (minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "benchmarks" / "results" / "blind_check.json"
SMALL = {
    "PPO": ["config.train_batch_size_per_learner=500", "config.minibatch_size=250", "config.num_epochs=2"],
    "DQN": [],
    "SAC": ["config.num_steps_sampled_before_learning_starts=200", "config.rollout_fragment_length=25"],
    "APPO": ["config.min_sample_timesteps_per_iteration=500", "config.train_batch_size_per_learner=250"],
    "IMPALA": ["config.min_sample_timesteps_per_iteration=500", "config.train_batch_size_per_learner=250"],
}
FILES = {"PPO": "cartpole_ppo", "DQN": "cartpole_dqn", "SAC": "pendulum_sac", "APPO": "cartpole_appo",
         "IMPALA": "cartpole_impala"}
# name -> (algorithm, extra --set values)
CASES = {
    "ppo": ("PPO", []),
    "ppo_no_kl_loss_grad_clip": ("PPO", ["config.use_kl_loss=false", "config.grad_clip=0.5"]),
    "appo": ("APPO", []),
    "impala": ("IMPALA", []),
    "dqn": ("DQN", []),
    "sac": ("SAC", []),
    "sac_grad_clip": ("SAC", ["config.grad_clip=40.0"]),
}


def run_case(name: str, iterations: int | None, tmp: Path) -> dict:
    from actors.run import run_experiment
    from supervisor import algorithms
    from supervisor.config import load_experiment
    from supervisor.report import build_report
    from supervisor.store import Store

    algo, sets = CASES[name]
    spec = algorithms.ALGORITHMS[algo]
    n = iterations or spec.metrics_by + 2 + (2 if spec.off_policy else 0)
    path = REPO / "experiments" / f"{FILES[algo]}.yaml"
    exp = load_experiment(path, [*SMALL[algo], f"stop.iterations={n}", "stop.episode_return_mean=null", *sets])
    out = tmp / name
    code = run_experiment(exp, str(path), str(out), quiet=True)
    (trial,) = build_report(out)["trials"]
    store = Store.open_readonly(out / "supervisor.db")
    try:
        reports = store.reports(trial["trial_id"])
        row = store.trial(trial["trial_id"])
    finally:
        store.close()
    from supervisor.detectors import build_detectors
    from supervisor.engine import json_or_empty

    pri = json_or_empty(row.get("config")).get("priors")
    suite = build_detectors(priors=pri)
    watched = [sorted(g) for d in suite if d.name == "metrics_missing" for g, _, _, _ in d._pending]
    keys = sorted({k for r in reports for k in r["metrics"]})
    missing = [f for f in trial["findings"] if f["detector"] == "metrics_missing"]
    res = {"algorithm": algo, "sets": sets, "exit_code": code, "iterations": trial["iterations"],
           "priors": pri, "watched": watched, "keys": keys, "metrics_missing": missing,
           "other_findings": [f"{f['detector']}:{f['severity']}" for f in trial["findings"]
                              if f["detector"] != "metrics_missing"]}
    print(name, "iterations", trial["iterations"], "watched", len(watched), "metrics_missing", missing, flush=True)
    return res


def main() -> None:
    import tempfile

    import ray

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--only", nargs="*", default=None, choices=list(CASES))
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}})
    out_path = Path(args.out)
    res = json.loads(out_path.read_text()) if out_path.exists() else {}
    res.setdefault("cases", {})
    try:
        with tempfile.TemporaryDirectory(prefix="blind-check-") as tmp:
            for name in args.only or CASES:
                res["cases"][name] = run_case(name, args.iterations, Path(tmp))
                res["command"] = "python benchmarks/blind_check.py"
                out_path.parent.mkdir(parents=True, exist_ok=True)
                out_path.write_text(json.dumps(res, indent=1) + "\n")
    finally:
        ray.shutdown()
    bad = {n: c["metrics_missing"] for n, c in res["cases"].items() if c["metrics_missing"]}
    print("metrics_missing on healthy runs:", bad or "none")


if __name__ == "__main__":
    main()
