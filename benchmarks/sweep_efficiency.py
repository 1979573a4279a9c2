"""Sweep efficiency: the same PPO sweep run without a supervisor (FIFO), with ASHA, and supervised.

One script, one run. The sweep (PPO on CartPole-v1, same seed for every trial):

* lr trials over a range that includes diverging values: healthy ones
  (1e-4 .. 3e-3) and diverging ones (1, 10, 1000: the first update already
  reports ``total_loss=inf``);
* one trial whose lr schedule jumps from 1e-3 to 5.0 mid-run (it trains
  well, then diverges): the trial a supervisor should recover;
* trials on an environment that breaks mid-run (``BreakingCartPole``): after
  ``break_after`` env steps its rewards become NaN (a broken reward pipeline), or
  its observations become garbage (a failed sensor). No hyperparameter fixes
  those: the right call is to stop the trial.

Each way runs the same trials with the same stop conditions (``--iterations``
per trial, or a return of ``--target``):

* ``fifo``        no supervisor, Tune's FIFO scheduler (every trial runs to the end);
* ``asha``        no supervisor, ``ASHAScheduler`` on ``env_runners/episode_return_mean``
                  (the same settings ``supervise sweep`` uses: grace period max_t // 8,
                  reduction factor 3);
* ``supervisor``  every trial supervised (``supervise sweep``'s code path), FIFO.

Reported per way: env steps consumed (every reported iteration of every trial,
restarts included), wall time, best final return (the best trial's last
``episode_return_mean``), healthy trials killed (a healthy trial ended before
its iteration budget without reaching the target), bad trials caught (a
diverging-lr, lr-jump or broken-env trial that the way acted on: supervisor: an
intervention other than ``alert``; ASHA: terminated before its budget), trials
recovered (the supervisor's ``recovered`` status: an intervention worked and the
trial finished). Healthy and bad are defined by construction, not by outcome;
the per-trial table shows what happened to each.

    python benchmarks/sweep_efficiency.py [--iterations 16] [--batch 500] [--num-cpus 2]
        [--modes fifo,asha,supervisor] [--out benchmarks/results/sweep_efficiency.md]

Prints a markdown table and writes it (with the per-trial table and the
settings) to ``--out``, and the raw per-trial figures next to it (``.json``).
Starts (and shuts down) its own local Ray. About 16 minutes on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from gymnasium.envs.classic_control import CartPoleEnv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

ENV = "benchmarks.sweep_efficiency:BreakingCartPole"


class BreakingCartPole(CartPoleEnv):
    """CartPole-v1 (500-step limit) that breaks after ``break_after`` env steps of this instance.

    ``mode``: ``nan_reward`` (every reward becomes NaN) or ``garbage_obs`` (observations
    become N(0, 100^2) noise: a failed sensor). ``break_after`` 0 (the default): never breaks.
    """

    def __init__(self, config=None):
        super().__init__()
        cfg = dict(config or {})
        self.break_after = int(cfg.get("break_after", 0))
        self.mode = cfg.get("mode", "nan_reward")
        self.total = 0
        self.t = 0
        self.rng = np.random.default_rng(int(cfg.get("noise_seed", 0)))

    @property
    def broken(self) -> bool:
        return self.break_after > 0 and self.total >= self.break_after

    def _obs(self, obs):
        if self.broken and self.mode == "garbage_obs":
            return self.rng.normal(0.0, 100.0, size=obs.shape).astype(np.float32)
        return obs

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        self.t = 0
        return self._obs(obs), info

    def step(self, action):
        obs, reward, term, trunc, info = super().step(action)
        self.total += 1
        self.t += 1
        trunc = trunc or self.t >= 500
        if self.broken and self.mode == "nan_reward":
            reward = float("nan")
        return self._obs(obs), reward, term, trunc, info


def variants(args) -> list[tuple[str, str, dict]]:
    """(label, kind, PPOConfig values) per trial; kind is healthy / diverging / lr_jump / broken_env."""
    jump = args.batch * args.iterations * 2 // 5  # 40 % into the budget
    brk = args.batch * args.iterations * 2 // 5
    out = [(f"lr={lr:g}", "healthy", {"lr": lr}) for lr in (1e-4, 3e-4, 1e-3, 3e-3)]
    out += [(f"lr={lr:g}", "diverging", {"lr": lr}) for lr in (1.0, 10.0, 1000.0)]
    out.append((f"lr 1e-3 -> 5.0 at {jump} steps", "lr_jump",
                {"lr": [[0, 1e-3], [jump - 1, 1e-3], [jump, 5.0]]}))
    out.append((f"env: NaN rewards after {brk} steps", "broken_env",
                {"lr": 1e-3, "env_config": {"break_after": brk, "mode": "nan_reward"}}))
    out.append((f"env: garbage obs after {brk} steps", "broken_env",
                {"lr": 1e-3, "env_config": {"break_after": brk, "mode": "garbage_obs"}}))
    return out


def sweep_for(mode: str, args):
    from supervisor.config import Sweep

    sup = {"enabled": mode.startswith("supervisor"), "checkpoint_every": 2,
           # a sweep has many other trials to spend its budget on: one repair, then stop
           "ladders": {"non_finite": [["rollback", "reduce_lr"], ["stop_trial"]]},
           "action_params": {"reduce_lr": {"factor": 0.01}}}
    return Sweep.model_validate({
        "name": f"bench-{mode}", "env": ENV, "seed": 1,
        "config": {"lr": 1e-3, "train_batch_size_per_learner": args.batch, "minibatch_size": 250, "num_epochs": 2,
                   "num_env_runners": 0, "gamma": 0.99, "lambda_": 0.95, "vf_loss_coeff": 0.01},
        "stop": {"iterations": args.iterations, "episode_return_mean": args.target},
        "scheduler": "asha" if "asha" in mode else "none",
        "max_failures": 1,
        "supervisor": sup,
    })


def run_mode(mode: str, args, root: Path) -> dict:
    from actors.tune import run_sweep
    from supervisor.report import build_report

    vs = variants(args)
    sink: dict = {}
    t0 = time.time()
    code = run_sweep(sweep_for(mode, args), "benchmarks/sweep_efficiency.py", out=str(root / mode),
                     quiet=not args.verbose, result_sink=sink, variants=[v for _, _, v in vs],
                     max_concurrent=args.num_cpus)
    wall = time.time() - t0
    cb = sink.get("callback")
    if cb is None:
        raise SystemExit(f"{mode}: the sweep failed (exit code {code})")
    report = {t["trial_id"]: t for t in build_report(root / mode)["trials"]} if mode.startswith("supervisor") else {}
    trials = []
    for tid, vals in cb.configs.items():
        label, kind = next(((lab, k) for lab, k, v in vs if _same(v, vals)), ("?", "?"))
        last = cb.last.get(tid, {})
        rep = report.get(tid, {})
        acts = [i["action"] for i in rep.get("interventions", []) if i["action"] != "alert"]
        trials.append({"trial_id": tid, "label": label, "kind": kind, "status": cb.status.get(tid, "?"),
                       "iteration": last.get("iteration") or 0, "iterations_run": cb.iterations_run.get(tid, 0),
                       "steps": cb.steps_consumed.get(tid, 0), "final": last.get("return"),
                       "actions": acts, "restarts": cb.restarts.get(tid, 0)})
    trials.sort(key=lambda t: [lab for lab, _, _ in vs].index(t["label"]) if t["label"] != "?" else 99)
    return {"mode": mode, "code": code, "wall": wall, "trials": trials}


def _same(a: dict, b: dict) -> bool:
    return _norm(a) == _norm(b)


def _norm(x):
    if isinstance(x, dict):
        return {k: _norm(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_norm(v) for v in x]
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    return x


def summarize(res: dict, args) -> dict:
    ts = res["trials"]
    finals = [t["final"] for t in ts if isinstance(t["final"], (int, float)) and math.isfinite(t["final"])]
    solved = lambda t: isinstance(t["final"], (int, float)) and math.isfinite(t["final"]) and t["final"] >= args.target
    ended_early = lambda t: t["iteration"] < args.iterations and not solved(t)
    mode = res["mode"]
    if mode.startswith("supervisor"):
        killed = [t for t in ts if t["kind"] == "healthy" and (t["status"] in ("stopped", "errored")
                                                             or (ended_early(t) and "asha" in mode))]
        caught = [t for t in ts if t["kind"] != "healthy" and (t["actions"] or t["status"] == "stopped")]
        recovered = [t for t in ts if t["kind"] != "healthy" and t["status"] == "recovered"]
    elif mode == "asha":
        killed = [t for t in ts if t["kind"] == "healthy" and ended_early(t)]
        caught = [t for t in ts if t["kind"] != "healthy" and ended_early(t)]
        recovered = []
    else:
        killed, caught, recovered = [t for t in ts if t["kind"] == "healthy" and t["status"] == "errored"], [], []
    bad = sum(t["kind"] != "healthy" for t in ts)
    touched = [t for t in ts if t["kind"] == "healthy" and t["actions"]]
    return {"mode": mode, "steps": sum(t["steps"] for t in ts), "wall": res["wall"], "touched": len(touched),
            "best": max(finals) if finals else float("nan"), "killed": len(killed),
            "healthy": sum(t["kind"] == "healthy" for t in ts), "caught": len(caught), "bad": bad,
            "recovered": len(recovered), "trials": len(ts)}


def markdown(results: list[dict], summaries: list[dict], args, machine: str) -> str:
    base = next((s for s in summaries if s["mode"] == "fifo"), None)
    lines = ["# Sweep efficiency: FIFO vs ASHA vs the supervisor", "",
             f"PPO on CartPole-v1 (`{ENV}`), {summaries[0]['trials']} trials, at most {args.iterations} "
             f"iterations of {args.batch} env steps each (minibatch 250, 2 epochs, 0 env runners), stop at return "
             f">= {args.target}; {args.num_cpus} trials at a time on {machine}. Generated by "
             "`python benchmarks/sweep_efficiency.py` "
             f"(`--iterations {args.iterations} --batch {args.batch} --num-cpus {args.num_cpus}`), "
             f"{time.strftime('%Y-%m-%d %H:%M')}.", "",
             "| way | env steps | vs FIFO | wall time | best final return | healthy trials killed "
             "| healthy trials intervened on | bad trials caught | bad trials recovered |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in summaries:
        rel = f"{s['steps'] / base['steps']:.0%}" if base and base["steps"] else "-"
        lines.append(f"| {s['mode']} | {s['steps']:,} | {rel} | {s['wall']:.0f} s | {s['best']:.1f} | "
                     f"{s['killed']} / {s['healthy']} | {s['touched']} / {s['healthy']} | {s['caught']} / {s['bad']} "
                     f"| {s['recovered']} / {s['bad']} |")
    lines += ["", "Per trial: last iteration reached (iterations actually run, restarts and rollbacks included), "
              "final return, status / actions.", ""]
    head = "| trial | kind | " + " | ".join(r["mode"] for r in results) + " |"
    lines += [head, "| --- | --- |" + " --- |" * len(results)]
    labels = [t["label"] for t in results[0]["trials"]]
    for lab in labels:
        row = [lab, next(t["kind"] for t in results[0]["trials"] if t["label"] == lab)]
        for r in results:
            t = next((t for t in r["trials"] if t["label"] == lab), None)
            if t is None:
                row.append("-")
                continue
            fin = f"{t['final']:.1f}" if isinstance(t["final"], (int, float)) and math.isfinite(t["final"]) else "nan"
            what = t["status"]
            if t["actions"]:
                what += ": " + ", ".join(dict.fromkeys(t["actions"]))
            row.append(f"it {t['iteration']} ({t['iterations_run']}), {fin}, {what}")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Definitions: *healthy* and *bad* (diverging lr >= 1, the lr jump, the broken env) are by "
              "construction. *Killed*: a healthy trial ended before its budget without reaching the target "
              "(ASHA's early stops; the supervisor's `stopped`). *Caught*: a bad trial the way acted on "
              "(supervisor: an intervention other than alert, or stopped; ASHA: ended early). *Intervened on*: a "
              "healthy trial that got an intervention other than alert (a false alarm acted on). *Recovered*: a bad "
              "trial with the supervisor's `recovered` status (an intervention judged effective, trial finished). "
              "Env steps: every iteration any trial ran. The "
              "supervised sweep's ladder for `non_finite` is `[rollback, reduce_lr (x0.01)]`, then "
              "`stop_trial`; everything else is the supervisor's default."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=16)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--target", type=float, default=450.0)
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--modes", default="fifo,asha,supervisor")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "sweep_efficiency.md"))
    p.add_argument("--runs", help="where the sweeps' run folders go (default: a temporary folder)")
    p.add_argument("--verbose", action="store_true", help="per-iteration progress lines")
    args = p.parse_args(argv)

    import logging

    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    root = Path(args.runs or tempfile.mkdtemp(prefix="sweep_efficiency_")).resolve()
    results, summaries = [], []
    try:
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            print(f"== {mode}: running ...", flush=True)
            res = run_mode(mode, args, root)
            results.append(res)
            summaries.append(summarize(res, args))
            s = summaries[-1]
            print(f"== {mode}: {s['steps']:,} env steps, {s['wall']:.0f} s, best {s['best']:.1f}, "
                  f"killed {s['killed']}, caught {s['caught']}, recovered {s['recovered']}", flush=True)
    finally:
        ray.shutdown()
    import platform

    machine = f"{os.cpu_count()} cores ({platform.machine()}), shared"
    md = markdown(results, summaries, args, machine)
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    import json

    raw = out.with_suffix(".json")
    raw.write_text(json.dumps({"args": vars(args), "summaries": summaries, "results": results}, indent=1,
                              default=str))
    print(f"written to {out} (raw per-trial figures: {raw}); run folders under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
