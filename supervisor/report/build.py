"""The forensics report of a run, from its SQLite store (read-only, so it works while the run is going):
the dict ``supervise report --format json`` prints and every other format renders."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

from supervisor.detectors.metrics_missing import blind_detectors
from supervisor.errors import InputError
from supervisor.jsonsafe import json_safe
from supervisor.modules import DEFAULT, key
from supervisor.modules import is_multi as modules_in
from supervisor.store import SchemaError, Store, loads


def _iso(t: float | None) -> str | None:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds") if t else None


def open_store(run_dir: str | Path) -> Store:
    p = Path(run_dir)
    db = p / "supervisor.db" if p.is_dir() else p
    if not db.is_file():
        raise InputError(str(run_dir), None, "not a run folder (no supervisor.db)")
    try:
        return Store.open_readonly(db)
    except sqlite3.Error as e:
        raise InputError(str(db), None, store_problem(e)) from None


def store_problem(e: Exception) -> str:
    """One line for a file that is not a store this version can read."""
    msg = str(e)
    if isinstance(e, ValueError):
        return f"corrupted store (a stored value is not valid JSON: {msg})"
    if isinstance(e, SchemaError):
        return msg
    if "no such table" in msg:
        return "not a supervisor store (no reports table; empty, or another program's database)"
    if "not a database" in msg or "malformed" in msg or "disk image" in msg:
        return f"not a readable SQLite database (corrupted or truncated: {msg})"
    return f"cannot read the store: {msg}"


def build_report(run_dir: str | Path) -> dict:
    store = open_store(run_dir)
    try:
        return _build(store, run_dir)
    except (sqlite3.Error, ValueError) as e:  # damage past the first page shows only when it is read
        raise InputError(str(store.path), None, store_problem(e)) from None
    finally:
        store.close()


def _build(store: Store, run_dir: str | Path) -> dict:
    try:
        runs = store.runs()
        run = runs[-1] if runs else {"name": Path(run_dir).name, "status": "unknown", "started": None,
                                     "ended": None}
        spec = _loads(run.get("spec")) or {}
        trials = []
        for t in store.trials():
            tid = t["trial_id"]
            rows = store.findings(tid)
            final = json_safe(_loads(t["final"]) or {})  # non-finite: null (the findings keep the evidence)
            final.setdefault("episode_return_mean", None)
            health = _loads(t["health"]) or {}
            trials.append({
                "trial_id": tid,
                "status": t["status"],
                "iterations": t["iterations"],
                "node_id": t["node_id"],
                "final": final,
                "health": {"score": t["health_score"], "worst_severity": t["worst_severity"],
                           "components": health.get("components", {})},
                "modules": modules_of(t, health, store.latest_report(tid)),
                "findings": [{"iteration": f["iteration"], "module": f.get("module"), "detector": f["detector"],
                              "severity": f["severity"], "metric": f["metric"], "value": json_safe(f["value"]),
                              "message": f["message"], "threshold": json_safe(f["threshold"])}
                             for f in rows],
                "blind": blind_detectors(rows),
                "interventions": [{"iteration": i["iteration"], "module": i.get("module"), "action": i["action"],
                                   "params": i["params"], "reason": i["reason"], "outcome": i["outcome"],
                                   "verified": None if i["verified"] is None else bool(i["verified"])}
                                  for i in store.interventions(tid)],
            })
            evals = [(i, v) for i, v in store.metric_series(tid, "eval_return_mean") if isinstance(v, (int, float))]
            if evals:  # only runs that evaluate (evaluation_interval)
                final["eval_return_mean"] = json_safe(evals[-1][1])
                trials[-1]["evaluation"] = {"evaluations": len(evals), "last_iteration": evals[-1][0],
                                            "best": json_safe(max(v for _, v in evals))}
            best = store.best_checkpoint(tid)
            trials[-1]["best_checkpoint"] = None if best is None else {
                "path": best["path"], "iteration": best["iteration"], "metric": best["metric"],
                "value": json_safe(best["value"])}
            trials[-1]["compute"] = compute_account(trials[-1], spec)
            crash = _crash(store.findings(tid))
            if crash is not None:
                trials[-1]["crash"] = crash
            if t["status"] == "recovered":
                trials[-1]["recovery"] = _recovery(store, tid, trials[-1])
        nodes = [{"node_id": n["node_id"], "alive": bool(n["alive"]), "address": n["address"],
                  "last_seen": _iso(n["last_seen"]), **(n["info"] or {})} for n in store.nodes()]
        cluster = [{"detector": f["detector"], "severity": f["severity"], "message": f["message"],
                    "time": _iso(f["time"])} for f in store.findings() if f["trial_id"] is None]
        total = {k: sum(t["compute"][k] for t in trials) for k in ("env_steps", "wall_s", "saved_env_steps")}
        total["wall_s"] = round(total["wall_s"], 3)
        alerts = [{"time": _iso(a["time"]), "kind": a["kind"], "trial_id": a["trial_id"], "iteration": a["iteration"],
                   "detector": a["detector"], "severity": a["severity"], "destination": a["destination"],
                   "status": a["status"], "attempts": a["attempts"], "error": a["error"]} for a in store.alerts()]
        return {"run": {"name": run["name"], "status": run["status"], "started": _iso(run["started"]),
                        "ended": _iso(run["ended"]), "compute": total},
                "trials": trials, "nodes": nodes, "cluster_findings": cluster, "alerts": alerts}
    finally:
        store.close()


def modules_of(trial_row: dict, health: dict, latest: dict | None) -> list[dict]:
    """A trial's modules as the report lists them: ``{"module", "trained", "health", "final"}`` each (one,
    ``default_policy``, for a single-agent trial or a store written before modules were recorded)."""
    per = health.get("modules") if isinstance(health.get("modules"), dict) else {}
    metrics = (latest or {}).get("metrics") or {}
    if not per:
        per = {DEFAULT: {"score": trial_row["health_score"], "worst_severity": trial_row["worst_severity"],
                         "components": health.get("components", {}), "trained": True}}
    out = []
    for m, h in sorted(per.items()):
        ret = metrics.get(key(m, "episode_return_mean")) if modules_in(metrics) else metrics.get("episode_return_mean")
        out.append({"module": m, "trained": bool(h.get("trained", True)),
                    "health": {"score": h.get("score"), "worst_severity": h.get("worst_severity", "ok"),
                               "components": h.get("components", {})},
                    "final": {"episode_return_mean": json_safe(ret) if isinstance(ret, (int, float)) else None}})
    return out


def compute_account(trial: dict, spec: dict) -> dict:
    """What a trial used (env steps, its own training wall time) and, for a stopped trial, the env steps
    its budget still had: the experiment's ``stop.timesteps``, else ``stop.iterations`` at the trial's
    own steps per iteration."""
    final = trial["final"]
    steps = int(final.get("env_steps_lifetime") or 0)
    wall = float(final.get("time_total_s") or 0.0)
    stop = (spec or {}).get("stop") or {}
    budget = stop.get("timesteps")
    if not budget and stop.get("iterations") and trial["iterations"]:
        budget = stop["iterations"] * steps / trial["iterations"]
    saved = int(max(0.0, budget - steps)) if trial["status"] == "stopped" and budget else 0
    return {"env_steps": steps, "wall_s": round(wall, 3), "saved_env_steps": saved}


def _recovery(store: Store, trial_id: str, trial: dict) -> dict:
    """A recovered trial: the return when the supervisor first acted, against the return it reached."""
    first = next((i for i in trial["interventions"] if i["action"] != "alert"), None)
    at = None
    if first is not None:
        for r in store.reports(trial_id):
            if r["iteration"] <= first["iteration"]:
                at = (r["metrics"] or {}).get("episode_return_mean", at)
    return {"fault_iteration": first["iteration"] if first else None, "return_at_fault": json_safe(at),
            "return_reached": trial["final"].get("episode_return_mean")}


def _crash(findings: list[dict]) -> dict | None:
    """The trial's newest crash, explained: its exception, the cause with its evidence, where (node,
    iteration, phase) and the innermost frames by origin; ``crashes``: how many it had."""
    crashes = [f for f in findings if f["detector"] == "trial_crashed"]
    if not crashes:
        return None
    f = crashes[-1]
    d = f.get("details") or {}
    cause = d.get("cause") or {}
    return {"exception": d.get("exception"), "message": d.get("exception_message"), "iteration": f["iteration"],
            "node_id": d.get("node_id"), "phase": d.get("phase"), "cause": cause.get("kind"),
            "cause_text": cause.get("summary"), "actionable": cause.get("actionable"),
            "evidence": cause.get("evidence") or [], "frames": d.get("frames") or {}, "crashes": len(crashes)}


def _loads(s):
    return loads(s) if isinstance(s, str) else s



def load_series(run_dir: str | Path) -> dict[str, dict[str, list]]:
    """Per trial: ``{"iteration": [...], metric: [...]}`` (None where a report lacks the metric)."""
    store = open_store(run_dir)
    try:
        return _series(store)
    except (sqlite3.Error, ValueError) as e:
        raise InputError(str(store.path), None, store_problem(e)) from None
    finally:
        store.close()


def _series(store: Store) -> dict[str, dict[str, list]]:
    try:
        out = {}
        for t in store.trials():
            reports = store.reports(t["trial_id"])
            names = dict.fromkeys(k for r in reports for k in (r["metrics"] or {}))
            s: dict[str, list] = {"iteration": [r["iteration"] for r in reports]}
            for n in names:
                s[n] = [_float((r["metrics"] or {}).get(n)) for r in reports]
            out[t["trial_id"]] = s
        return out
    finally:
        store.close()


def _float(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None
