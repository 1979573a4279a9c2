"""Sweep efficiency: the same PPO sweeps run four ways, FIFO, ASHA, the supervisor, and the supervisor with ASHA.

The sweep: two environments, each its own Tune experiment (ASHA compares trials of one environment),
``benchmarks.envs:BenchEnv`` (gymnasium's env with a fault planted after a fixed number of env steps):

* CartPole-v1 (discrete), at most ``--cartpole-iterations`` iterations, stop at a return of ``--target``;
* Pendulum-v1 (continuous control), at most ``--pendulum-iterations`` iterations, no return target.

Per environment, 9 trials (18 in all, 10 healthy):

* 5 healthy: CartPole lr 3e-4, 1e-3 (two seeds), 2e-3, 3e-3; Pendulum lr 1e-4, 3e-4 (two seeds),
  5e-4, 1e-3;
* 3 faults mid-run, after ``--fault-at`` (0.4) of the iteration budget (lr 1e-3 on CartPole, 3e-4 on
  Pendulum, the recorded runs' healthy config, until then): the lr schedule
  jumps to 5.0 (a config bug a repair can fix), the rewards become NaN (a broken reward pipeline), the
  observations become garbage (a failed sensor) -- no hyperparameter fixes the last two;
* 1 bad from the first iteration: CartPole lr 0.05 with 10 epochs (every update far too large),
  Pendulum lr 10 (the first update diverges).

Every way runs the same trials with the same seeds; ``--reps`` repetitions use different seeds
(repetition r: the sweep seed and every trial's seed shifted by 100 r). The PPO settings are
``benchmarks/record_runs.py``'s (batch 1000, minibatch 250, 4 epochs, gamma 0.99, lambda 0.95,
vf_loss_coeff 0.01: the recorded healthy runs the detectors were validated on), 0 env runners,
``--num-cpus`` trials at a time (more trials than slots: a trial ended early frees its slot for the
next one at once).

The ways:

* ``fifo``            no supervisor, Tune's FIFO scheduler: every trial runs to its budget or target;
* ``asha``            no supervisor, ``ASHAScheduler`` on ``env_runners/episode_return_mean`` (what
                      ``scheduler: asha`` gives: grace period max_t // 8, reduction factor 3);
* ``supervisor``      every trial supervised (``supervise sweep``'s code path, the supervisor's defaults,
                      ``checkpoint_every: 2``), FIFO;
* ``supervisor+asha`` both: ``SupervisedASHA`` (ASHA that waits for a repair's outcome).

Reported per way (mean and spread, max - min, over the repetitions): env steps (every reported
iteration of every trial, restarts included) and their ratio to FIFO's, wall time, the best final return
per environment (the best trial's last ``episode_return_mean``), healthy trials stopped by the supervisor,
healthy trials ended early by ASHA (before their budget, target not reached), bad trials caught (the
supervisor acted on it, other than alert, or it ended early under ASHA), bad trials recovered (the
supervisor's ``recovered``), bad-from-start trials acted on within 3 iterations, and how soon a slot
freed by an early end started the next trial. Healthy and bad are by construction, not by outcome.

    python benchmarks/sweep_efficiency.py [--reps 2] [--modes fifo,asha,supervisor,supervisor+asha]
        [--num-cpus 2] [--out benchmarks/results/sweep_efficiency.md]

Writes the tables to ``--out`` and every trial's figures next to it (``.json``). Starts (and shuts
down) its own local Ray. Run it alone on the machine: about 35 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

ENV = "benchmarks.envs:BenchEnv"
MODES = ("fifo", "asha", "supervisor", "supervisor+asha")
BATCH = 1000
PPO = {"train_batch_size_per_learner": BATCH, "minibatch_size": 250, "num_epochs": 4, "gamma": 0.99,
       "lambda_": 0.95, "vf_loss_coeff": 0.01, "num_env_runners": 0, "lr": 1e-3}


def envs(args) -> dict[str, dict]:
    # healthy lrs: the range where PPO with these settings trains normally on that env (Pendulum's
    # Gaussian policy moves further per step: at lr 2e-3 its first update is already 45x kl_target)
    # fault_lr: the mid-run fault trials' lr until their fault (a config that trains cleanly there)
    return {"CartPole-v1": {"iterations": args.cartpole_iterations, "target": args.target,
                            "healthy": (3e-4, 1e-3, 1e-3, 2e-3, 3e-3), "fault_lr": 1e-3,
                            "bad_start": ("lr 0.05, 10 epochs", {"lr": 0.05, "num_epochs": 10})},
            "Pendulum-v1": {"iterations": args.pendulum_iterations, "target": None,
                            "healthy": (1e-4, 3e-4, 3e-4, 5e-4, 1e-3), "fault_lr": 3e-4,
                            "bad_start": ("lr 10", {"lr": 10.0})}}


def variants(env: str, spec: dict, rep: int, args) -> list[tuple[str, str, dict]]:
    """(label, kind, config values) per trial; kind: healthy, midrun or bad_start (``--healthy-count`` keeps
    the first N healthy trials: a reduced run)."""
    out = _variants(env, spec, rep, args)
    n = getattr(args, "healthy_count", None)
    if n is None:
        return out
    healthy = [v for v in out if v[1] == "healthy"][:n]
    return [v for v in out if v[1] != "healthy" or v in healthy]


def _variants(env: str, spec: dict, rep: int, args) -> list[tuple[str, str, dict]]:
    s = 100 * rep
    # the fault acts from the first sample after round(fault_at x budget) healthy iterations
    after = round(args.fault_at * spec["iterations"]) * BATCH
    out = [(f"lr={lr:g} seed {seed}", "healthy", {"lr": lr, "seed": s + seed})
           for seed, lr in enumerate(spec["healthy"], start=1)]
    lr = spec["fault_lr"]
    out.append((f"lr {lr:g} -> 5.0 after {after} steps", "midrun",
                {"lr": [[0, lr], [after, lr], [after + 1, 5.0]], "seed": s + 6}))
    for fault, what in (("nan_reward", "NaN rewards"), ("garbage_obs", "garbage observations")):
        out.append((f"{what} after {after} steps", "midrun",
                    {"lr": lr, "env_config": {"id": env, "fault": fault, "after": after, "seed": s + 7},
                     "seed": s + 7}))
    label, values = spec["bad_start"]
    out.append((label, "bad_start", {**values, "seed": s + 8}))
    return out


def onset_of(kind: str, values: dict) -> int | None:
    """The env step a bad trial's fault starts after (0: from the start); None for a healthy trial."""
    if kind == "bad_start":
        return 0
    if kind != "midrun":
        return None
    if isinstance(values.get("env_config"), dict) and "after" in values["env_config"]:
        return int(values["env_config"]["after"])
    sched = values.get("lr")
    return int(sched[1][0]) if isinstance(sched, list) and len(sched) > 1 else 0


def sweep_for(mode: str, env: str, spec: dict, rep: int):
    from supervisor.config import Sweep

    stop = {"iterations": spec["iterations"]}
    if spec["target"] is not None:
        stop["episode_return_mean"] = spec["target"]
    return Sweep.model_validate({
        "name": f"bench-{mode.replace('+', '-')}-{env.split('-')[0].lower()}-r{rep}", "env": ENV,
        "env_config": {"id": env}, "seed": 1 + 100 * rep, "config": dict(PPO), "stop": stop,
        "scheduler": "asha" if "asha" in mode else "none", "max_failures": 1,
        "supervisor": {"enabled": mode.startswith("supervisor"), "checkpoint_every": 2},
    })


def run_one(mode: str, env: str, spec: dict, rep: int, args, root: Path) -> dict:
    from actors.tune import run_sweep
    from supervisor.report import build_report

    vs = variants(env, spec, rep, args)
    sink: dict = {}
    out = root / f"{mode.replace('+', '-')}-{env}-r{rep}"
    t0 = time.time()
    code = run_sweep(sweep_for(mode, env, spec, rep), "benchmarks/sweep_efficiency.py", out=str(out),
                     quiet=not args.verbose, result_sink=sink, variants=[v for _, _, v in vs],
                     max_concurrent=args.num_cpus)
    wall = time.time() - t0
    cb = sink.get("callback")
    if cb is None:
        raise SystemExit(f"{mode} {env}: the sweep failed (exit code {code})")
    report = {t["trial_id"]: t for t in build_report(out)["trials"]} if mode.startswith("supervisor") else {}
    trials = []
    for tid, vals in cb.configs.items():
        label, kind, values = next(((lab, k, v) for lab, k, v in vs if _norm(v) == _norm(vals)), ("?", "?", {}))
        last = cb.last.get(tid, {})
        rep_t = report.get(tid, {})
        acts = [(i["iteration"], i["action"]) for i in rep_t.get("interventions", []) if i["action"] != "alert"]
        trials.append({"trial_id": tid, "label": label, "kind": kind, "env": env,
                       "status": cb.status.get(tid, "?"), "iteration": last.get("iteration") or 0,
                       "iterations_run": cb.iterations_run.get(tid, 0), "steps": cb.steps_consumed.get(tid, 0),
                       "final": last.get("return"), "actions": acts, "restarts": cb.restarts.get(tid, 0),
                       "stopped_by_supervisor": tid in sink.get("stopped_by_supervisor", set()),
                       "started": cb.started_at.get(tid), "ended": cb.ended_at.get(tid),
                       "onset": onset_of(kind, values)})
    order = [lab for lab, _, _ in vs]
    trials.sort(key=lambda t: order.index(t["label"]) if t["label"] in order else 99)
    return {"mode": mode, "env": env, "rep": rep, "code": code, "wall": wall, "trials": trials,
            "budget": spec["iterations"], "target": spec["target"]}


def _norm(x):
    if isinstance(x, dict):
        return {k: _norm(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_norm(v) for v in x]
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    return x


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def summarize(runs: list[dict]) -> dict:
    """One way, one repetition (its runs: one per environment)."""
    out = {"steps": 0, "wall": 0.0, "best": {}, "healthy": 0, "killed_by_supervisor": 0, "ended_by_asha": 0,
           "touched": 0, "touched_actions": set(),
           "bad": 0, "caught": 0, "recovered": 0, "bad_start": 0, "bad_start_in_3": 0, "refill_s": []}
    for r in runs:
        ts, budget, target = r["trials"], r["budget"], r["target"]
        sup, asha = r["mode"].startswith("supervisor"), "asha" in r["mode"]
        out["steps"] += sum(t["steps"] for t in ts)
        out["wall"] += r["wall"] if r["wall"] is not None else float("nan")  # a cut stored run: no wall time
        finals = [t["final"] for t in ts if _finite(t["final"])]
        out["best"][r["env"]] = max(finals) if finals else float("nan")
        for t in ts:
            solved = target is not None and _finite(t["final"]) and t["final"] >= target
            early = t["iteration"] < budget and not solved
            stopped = t["status"] == "stopped" or t["stopped_by_supervisor"]
            if t["kind"] == "healthy":
                out["healthy"] += 1
                out["killed_by_supervisor"] += sup and stopped
                out["ended_by_asha"] += asha and early and not stopped and t["status"] != "errored"
                out["touched"] += bool(t["actions"])
                out["touched_actions"] |= {a for _, a in t["actions"]}
                continue
            out["bad"] += 1
            out["caught"] += bool(t["actions"]) or stopped or (asha and early)
            out["recovered"] += t["status"] == "recovered"
            if t["kind"] == "bad_start":
                out["bad_start"] += 1
                out["bad_start_in_3"] += sup and any(it <= 3 for it, _ in t["actions"])
        # a slot freed before the budget: how soon the next trial started in it
        if r["wall"] is None:  # a stored run cut to fewer trials: its slots held others too
            continue
        starts = sorted(t["started"] for t in ts if t["started"] is not None)
        for t in ts:
            if t["ended"] is None or not (t["iteration"] < budget):
                continue
            nxt = [s for s in starts if s >= t["ended"] - 1e-3]
            if nxt:
                out["refill_s"].append(nxt[0] - t["ended"])
    return out


def post_onset(results: list[dict], way: str = "supervisor") -> dict | None:
    """The bad trials ``way`` cannot save (bad by construction, not ``recovered`` under it): the env steps they
    spent after their fault's onset (restarts and rollbacks included), against FIFO's on the same trials
    (same environment, repetition and label). None without both ways' runs."""
    mine = {(r["env"], r["rep"]): r for r in results if r["mode"] == way}
    fifo = {(r["env"], r["rep"]): r for r in results if r["mode"] == "fifo"}
    spent = base = 0
    trials = []
    for key, r in mine.items():
        if key not in fifo:
            continue
        by_label = {t["label"]: t for t in fifo[key]["trials"]}
        for t in r["trials"]:
            if t["kind"] == "healthy" or t["status"] == "recovered" or t.get("onset") is None:
                continue
            f = by_label.get(t["label"])
            if f is None:
                continue
            a, b = max(0, t["steps"] - t["onset"]), max(0, f["steps"] - f["onset"])
            spent, base = spent + a, base + b
            trials.append({"env": r["env"], "rep": r["rep"], "label": t["label"], "steps": a, "fifo_steps": b,
                           "status": t["status"]})
    if not trials:
        return None
    return {"steps": spent, "fifo_steps": base, "ratio": spent / base if base else float("nan"), "trials": trials,
            "healthy_stopped": sum(t["kind"] == "healthy" and (t["status"] == "stopped" or t["stopped_by_supervisor"])
                                   for r in mine.values() for t in r["trials"])}


def fifo_from(path: str, envmap: dict, args) -> list[dict]:
    """FIFO's runs of the repetitions and envs asked for, from an earlier run's JSON, with the trials this run
    has (``--healthy-count``; a run cut that way has no wall time of its own); each trial's onset filled in
    from its label (runs written before ``onset`` was recorded)."""
    try:
        runs = json.loads(Path(path).read_text())["results"]
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"--fifo-from {path}: not a sweep_efficiency JSON ({e.__class__.__name__}: {e})")
    out = []
    for r in runs:
        if r["mode"] != "fifo" or r["env"] not in envmap or r["rep"] >= args.reps:
            continue
        kinds = {lab: (k, v) for lab, k, v in variants(r["env"], envmap[r["env"]], r["rep"], args)}
        trials = [{**t, "onset": t.get("onset", onset_of(*kinds[t["label"]]))}
                  for t in r["trials"] if t["label"] in kinds]
        out.append({**r, "trials": trials, "from": path,
                    **({"wall": None} if len(trials) < len(r["trials"]) else {})})
    if not out:
        raise SystemExit(f"--fifo-from {path}: no FIFO run of {', '.join(envmap)} there")
    return out


def _mean_spread(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if _finite(x)]
    if not xs:
        return float("nan"), float("nan")
    return sum(xs) / len(xs), max(xs) - min(xs)


def _ms(xs, fmt="{:,.0f}") -> str:
    m, s = _mean_spread(xs)
    if not _finite(m):
        return "-"
    return fmt.format(m) + (f" ± {fmt.format(s / 2)}" if len(xs) > 1 else "")


def markdown(results: list[dict], args, envmap: dict) -> str:
    modes = list(dict.fromkeys(r["mode"] for r in results))
    reps = sorted({r["rep"] for r in results})
    summ = {(m, rep): summarize([r for r in results if r["mode"] == m and r["rep"] == rep])
            for m in modes for rep in reps}
    env_names = list(envmap)
    where = []
    for e in env_names:
        tgt = envmap[e]["target"]
        where.append(f"{e}: at most {envmap[e]['iterations']} iterations"
                     + (f", stop at return >= {tgt:g}" if tgt is not None else ""))
    lines = ["# Sweep efficiency: FIFO, ASHA, the supervisor, the supervisor with ASHA", "",
             f"PPO, {sum(len(variants(e, envmap[e], 0, args)) for e in env_names)} trials per sweep "
             f"({'; '.join(where)}; "
             f"{BATCH} env steps an iteration), {args.num_cpus} trials at a time, {len(reps)} repetitions with "
             f"different seeds, on {os.cpu_count()} cores ({platform.machine()}). Generated by "
             f"`{' '.join(['python benchmarks/sweep_efficiency.py', *(getattr(args, 'argv', None) or [])])}`"
             f" on {getattr(args, 'date', None) or time.strftime('%Y-%m-%d %H:%M')}, 1-minute load average "
             f"{' at the start, '.join(f'{x:.1f}' for x in getattr(args, 'load', None) or [os.getloadavg()[0]])}"
             f" at the end (2 cores; env steps do not depend on it, wall times do). Figures: mean ± half the "
             "spread (max - min) over the repetitions.", "",
             "| way | env steps | vs FIFO | wall time | " + " | ".join(f"best return {e}" for e in env_names)
             + " | healthy stopped by the supervisor | healthy intervened on | healthy ended early by ASHA "
               "| bad caught | bad recovered "
               "| bad-from-start acted on by iteration 3 | slot refilled after an early end |",
             "| --- | ---: | ---: | ---: | " + " ---: |" * len(env_names) + " ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m in modes:
        ss = [summ[(m, rep)] for rep in reps]
        ratio = [summ[(m, rep)]["steps"] / summ[("fifo", rep)]["steps"] for rep in reps
                 if ("fifo", rep) in summ and summ[("fifo", rep)]["steps"]]
        refill = [x for s in ss for x in s["refill_s"]]
        refill_s = f"median {sorted(refill)[len(refill) // 2]:.1f} s, max {max(refill):.1f} s" if refill else "-"
        sup = m.startswith("supervisor")
        acted = sorted(set().union(*(s["touched_actions"] for s in ss)))
        touched = (f"{_ms([s['touched'] for s in ss], '{:.1f}')} / {ss[0]['healthy']}"
                   + (f" ({', '.join(acted)})" if acted else "")) if sup else f"- / {ss[0]['healthy']}"
        lines.append(
            f"| {m} | {_ms([s['steps'] for s in ss])} | {_ms(ratio, '{:.0%}')} | {_ms([s['wall'] for s in ss], '{:.0f} s')} | "
            + " | ".join(_ms([s["best"].get(e) for s in ss], "{:.1f}") for e in env_names)
            + f" | {_ms([s['killed_by_supervisor'] for s in ss], '{:.1f}') if sup else '-'} / {ss[0]['healthy']}"
              f" | {touched}"
              f" | {_ms([s['ended_by_asha'] for s in ss], '{:.1f}') if 'asha' in m else '-'} / {ss[0]['healthy']}"
              f" | {_ms([s['caught'] for s in ss], '{:.1f}')} / {ss[0]['bad']}"
              f" | {_ms([s['recovered'] for s in ss], '{:.1f}') if sup else '-'} / {ss[0]['bad']}"
              f" | {_ms([s['bad_start_in_3'] for s in ss], '{:.1f}') if sup else '-'} / {ss[0]['bad_start']}"
              f" | {refill_s} |")
    fifo = [r for r in results if r["mode"] == "fifo"]
    reused = sorted({r["from"] for r in fifo if r.get("from")})
    if reused:
        lines += ["", f"FIFO's trials were not run again: they are the stored run's ({', '.join(reused)}; its own "
                      "date and machine), with every trial, seed and fault the same. FIFO runs no supervisor code, "
                      "so a change to the supervisor leaves them as they were."]
    if fifo:
        healthy = sum(t["steps"] for r in fifo for t in r["trials"] if t["kind"] == "healthy")
        total = sum(t["steps"] for r in fifo for t in r["trials"])
        lines += ["", f"The healthy trials alone used {healthy / total:.0%} of FIFO's env steps: a way that lets every "
                      "healthy trial run its course (stops none early, as FIFO and the supervisor do) cannot spend "
                      "less, whatever it does with the bad ones."]
    for way in [m for m in modes if m.startswith("supervisor")]:
        po = post_onset(results, way)
        if po is None:
            continue
        lines += ["", f"**The bad trials {way} cannot save** (bad by construction, not `recovered`): env steps spent "
                      f"after the fault's onset, restarts and rollbacks included, against FIFO's on the same trials: "
                      f"{po['steps']:,} / {po['fifo_steps']:,} = **{po['ratio']:.2f}** (goal <= 0.2, with no healthy "
                      f"trial stopped: {po['healthy_stopped']} stopped).", "",
                  "| env | repetition | trial | after onset | FIFO's | end |", "| --- | ---: | --- | ---: | ---: | --- |"]
        lines += [f"| {t['env']} | {t['rep'] + 1} | {t['label']} | {t['steps']:,} | {t['fifo_steps']:,} | {t['status']} |"
                  for t in po["trials"]]
    lines += ["", "Per environment, env steps (mean over the repetitions) and the ratio to FIFO:", "",
              "| way | " + " | ".join(env_names) + " |", "| --- |" + " ---: |" * len(env_names)]
    for m in modes:
        cells = []
        for e in env_names:
            st = [sum(t["steps"] for t in r["trials"]) for r in results if r["mode"] == m and r["env"] == e]
            fi = [sum(t["steps"] for t in r["trials"]) for r in results if r["mode"] == "fifo" and r["env"] == e]
            rel = f" ({sum(st) / sum(fi):.0%})" if fi and sum(fi) else ""
            cells.append(f"{sum(st) / max(len(st), 1):,.0f}{rel}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for rep in reps:
        for e in env_names:
            rs = [r for r in results if r["rep"] == rep and r["env"] == e]
            if not rs:
                continue
            lines += ["", f"Repetition {rep + 1}, {e}: per trial, the last iteration reached (iterations run, "
                          "restarts and rollbacks included), final return, status, and the supervisor's actions "
                          "(iteration: action).", "",
                      "| trial | kind | " + " | ".join(r["mode"] for r in rs) + " |",
                      "| --- | --- |" + " --- |" * len(rs)]
            for lab, kind, _ in variants(e, envmap[e], rep, args):
                row = [lab, kind]
                for r in rs:
                    t = next((t for t in r["trials"] if t["label"] == lab), None)
                    if t is None:
                        row.append("-")
                        continue
                    fin = f"{t['final']:.1f}" if _finite(t["final"]) else "nan"
                    what = t["status"]
                    if t["actions"]:
                        what += ": " + ", ".join(f"{it}: {a}" for it, a in t["actions"])
                    row.append(f"it {t['iteration']} ({t['iterations_run']}), {fin}, {what}")
                lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Definitions. *Healthy* and *bad* are by construction. *Stopped by the supervisor*: a healthy "
              "trial the supervisor ended (a false alarm acted on). *Intervened on*: a healthy trial that got an "
              "action other than alert, and which ones (`raise_vf_clip` on Pendulum is the true "
              "`value_loss_clipped`: RLlib's default vf_clip_param 10 clips every sample of Pendulum's returns). *Ended early by ASHA*: a healthy trial ASHA "
              "stopped before its budget without reaching the target (ASHA's own policy: it ranks trials by their "
              "return so far). *Caught*: a bad trial the supervisor acted on (other than alert) or that ended "
              "early under ASHA. *Recovered*: the supervisor's `recovered` status (a repair judged effective, "
              "trial finished). *Slot refilled*: for every trial that ended before its budget while trials were "
              "waiting, the seconds until the next trial started. The supervisor runs on its defaults "
              "(`checkpoint_every: 2` for trials this short): a repair that proves ineffective on a trial that "
              "shows no learning stops it at once (`stop_unsalvageable`)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--cartpole-iterations", type=int, default=25)
    p.add_argument("--pendulum-iterations", type=int, default=15)
    p.add_argument("--fault-at", type=float, default=0.4,
                   help="a mid-run fault acts after this fraction of the env's iteration budget")
    p.add_argument("--target", type=float, default=450.0, help="CartPole's return target")
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--envs", default="CartPole-v1,Pendulum-v1")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "sweep_efficiency.md"))
    p.add_argument("--runs", help="where the sweeps' run folders go (default: a temporary folder)")
    p.add_argument("--verbose", action="store_true", help="per-iteration progress lines")
    p.add_argument("--healthy-count", type=int, help="a reduced run: only the first N healthy trials per env")
    p.add_argument("--fifo-from", help="FIFO's trials from an earlier run's JSON instead of running them (FIFO runs "
                                       "no supervisor code: a change to the supervisor leaves them as they were)")
    p.add_argument("--render", metavar="JSON", help="no training: write the Markdown (and JSON) again from a run's "
                                                    "JSON, with this version's tables")
    args = p.parse_args(argv)
    if args.render:
        return render(Path(args.render), args)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.load = [os.getloadavg()[0]]  # the machine's load when it starts and ends (shared machines)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        p.error(f"--modes: unknown {', '.join(bad)} (known: {', '.join(MODES)})")
    envmap = {e: s for e, s in envs(args).items() if e in args.envs.split(",")}

    import logging

    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    root = Path(args.runs or tempfile.mkdtemp(prefix="sweep_efficiency_")).resolve()
    results = fifo_from(args.fifo_from, envmap, args) if args.fifo_from else []
    try:
        for rep in range(args.reps):
            for mode in modes:
                for env, spec in envmap.items():
                    print(f"== repetition {rep + 1}, {mode}, {env}: running ...", flush=True)
                    r = run_one(mode, env, spec, rep, args, root)
                    results.append(r)
                    s = summarize([r])
                    print(f"== {mode} {env}: {s['steps']:,} env steps, {s['wall']:.0f} s, best "
                          f"{s['best'][env]:.1f}, caught {s['caught']}/{s['bad']}, recovered {s['recovered']}, "
                          f"healthy stopped {s['killed_by_supervisor']}, ended by ASHA {s['ended_by_asha']}",
                          flush=True)
                    po = post_onset(results, mode) if mode.startswith("supervisor") else None
                    if po is not None:
                        print(f"== {mode}: bad trials it cannot save so far: {po['steps']:,} env steps after onset "
                              f"against FIFO's {po['fifo_steps']:,} = {po['ratio']:.2f}", flush=True)
    finally:
        ray.shutdown()
    args.load.append(os.getloadavg()[0])
    args.date = time.strftime("%Y-%m-%d %H:%M")
    md = markdown(results, args, envmap)
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    raw = out.with_suffix(".json")
    raw.write_text(json.dumps({"args": vars(args), "results": results}, indent=1, default=str))
    print(f"written to {out} (every trial's figures: {raw}); run folders under {root}")
    return 0


def render(raw_path: Path, cli) -> int:
    """``--render``: the run's own arguments and trials (FIFO's taken again from ``--fifo-from``), tables again."""
    raw = json.loads(raw_path.read_text())
    args = argparse.Namespace(**raw["args"])
    envmap = {e: s for e, s in envs(args).items() if e in args.envs.split(",")}
    results = [r for r in raw["results"] if not r.get("from")]
    if getattr(args, "fifo_from", None):
        results = fifo_from(args.fifo_from, envmap, args) + results
    md = markdown(results, args, envmap)
    out = raw_path.with_suffix(".md")
    out.write_text(md)
    raw_path.write_text(json.dumps({"args": vars(args), "results": results}, indent=1, default=str))
    print(md)
    print(f"written to {out} and {raw_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
