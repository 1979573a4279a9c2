"""Write the small log fixtures of tests/test_scan.py (and the log writers the tests reuse).

    python tests/data/make_fixtures.py

Everything comes from benchmarks/synthetic.py streams, written the
way the real loggers write them:

* ``tune_exp/``: a Ray Tune experiment folder with two PPO trials,
  ``PPO_CartPole-v1_00000`` (healthy, ``result.json``: one nested RLlib
  result dict per line) and ``PPO_CartPole-v1_00001`` (diverges at
  training_iteration 36, ``progress.csv`` only: Tune's flattened columns);
* ``cleanrl_kl_spike.jsonl``: CleanRL-style keys (``global_step``,
  ``losses/approx_kl``, ``charts/episodic_return``, ...) with a KL spike
  planted at global_step 512 * 31.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
N = 45          # iterations per fixture log (kept short: the fixtures stay small)
ONSET = 30      # 0-based index of the planted fault
STEP = 512      # CleanRL's global_step per update

# RLlib's result paths for the metrics the fixtures carry (a subset keeps them small).
RLLIB_METRICS = ("episode_return_mean", "episode_len_mean", "num_episodes", "policy_loss", "vf_loss",
                 "total_loss", "entropy", "kl", "kl_coeff", "lr", "grad_norm", "explained_variance")

CLEANRL_KEYS = {  # CleanRL ppo.py's writer.add_scalar names
    "charts/episodic_return": "episode_return_mean",
    "charts/episodic_length": "episode_len_mean",
    "charts/learning_rate": "lr",
    "losses/value_loss": "vf_loss",
    "losses/policy_loss": "policy_loss",
    "losses/entropy": "entropy",
    "losses/approx_kl": "approx_kl",
    "losses/clipfrac": "clip_fraction",
    "losses/explained_variance": "explained_variance",
}

TRL_KEYS = {  # TRL PPOTrainer (classic) stats names
    "objective/kl": "kl",
    "objective/kl_coef": "kl_coeff",
    "objective/entropy": "entropy",
    "ppo/mean_scores": "episode_return_mean",
    "ppo/loss/policy": "policy_loss",
    "ppo/loss/value": "vf_loss",
    "ppo/loss/total": "total_loss",
    "ppo/policy/approxkl": "approx_kl",
    "ppo/policy/clipfrac": "clip_fraction",
    "ppo/val/var_explained": "explained_variance",
    "ppo/policy/advantages_mean": "advantage_mean",
    "ppo/learning_rate": "lr",
    "train/grad_norm": "grad_norm",
}

RLDK_KEYS = {  # flat RLDK-style names
    "kl": "kl", "kl_coef": "kl_coeff", "entropy": "entropy", "approx_kl": "approx_kl", "clipfrac": "clip_fraction",
    "explained_variance": "explained_variance", "grad_norm": "grad_norm", "grad_norm_policy": "grad_norm_policy",
    "grad_norm_value": "grad_norm_value", "advantage_mean": "advantage_mean", "advantage_std": "advantage_std",
    "reward_mean": "episode_return_mean", "loss": "total_loss", "policy_loss": "policy_loss",
    "value_loss": "vf_loss",
}


def r(x: float) -> float:
    """5 significant digits (smaller files); non-finite kept."""
    return float(f"{x:.5g}") if math.isfinite(x) else x


def to_rllib(m: dict, iteration: int) -> dict:
    from supervisor.metrics import RESULT_PATHS

    out: dict = {"training_iteration": iteration}
    for name in RLLIB_METRICS:
        if name not in m:
            continue
        node = out
        parts = RESULT_PATHS[name].format(m="default_policy").split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = r(m[name])
    return out


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def styled(stream: list[dict], keys: dict, step_key: str | None = "step", step: int = STEP,
           extra: dict | None = None) -> list[dict]:
    """Synthetic normalized metrics -> logger-style records under ``keys`` (log key -> normalized name)."""
    out = []
    for i, m in enumerate(stream):
        rec = {step_key: step * (i + 1)} if step_key else {}
        rec.update({k: r(m[name]) for k, name in keys.items() if name in m})
        rec.update(extra or {})
        out.append(rec)
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    # json.dumps writes NaN/Infinity tokens, as Python loggers do
    path.write_text("".join(json.dumps(rec) + "\n" for rec in records))
    return path


def write_result_json(path: Path, stream: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_jsonl(path, [to_rllib(m, i + 1) for i, m in enumerate(stream)])


def write_progress_csv(path: Path, stream: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [flat(to_rllib(m, i + 1)) for i, m in enumerate(stream)]
    cols = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        w.writerows(rows)
    return path


def main() -> None:
    import sys

    sys.path.insert(0, str(HERE.parents[1]))  # the repo root, for benchmarks/
    from benchmarks.synthetic import faulty_stream, healthy_stream

    tune = HERE / "tune_exp"
    # a fast learner, so that the short fixture looks like a whole run
    healthy = healthy_stream(N, seed=3, mid=15.0, width=5.0)
    write_result_json(tune / "PPO_CartPole-v1_00000" / "result.json", healthy)
    (tune / "PPO_CartPole-v1_00000" / "params.json").write_text(json.dumps({"lr": 3e-4, "env": "CartPole-v1"}))
    diverged = faulty_stream("divergence", N, ONSET + 5, seed=4, mid=15.0, width=5.0)
    write_progress_csv(tune / "PPO_CartPole-v1_00001" / "progress.csv", diverged)
    (tune / "PPO_CartPole-v1_00001" / "params.json").write_text(json.dumps({"lr": 5.0, "env": "CartPole-v1"}))

    spike = faulty_stream("kl_spike", N, ONSET, seed=5, mid=15.0, width=5.0)
    write_jsonl(HERE / "cleanrl_kl_spike.jsonl",
                styled(spike, CLEANRL_KEYS, "global_step", extra={"charts/SPS": 1234}))
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"fixtures written under {HERE} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
