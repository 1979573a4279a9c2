"""``supervise report``: the forensics report of a run, from its SQLite store.

Opens the store read-only, so it works while the run is still going.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

from supervisor.errors import InputError
from supervisor.store import Store


def _iso(t: float | None) -> str | None:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds") if t else None


def _num(x):
    """JSON numbers: non-finite become null (the message keeps the evidence)."""
    if isinstance(x, str) and x in ("nan", "inf", "-inf"):
        return None
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def open_store(run_dir: str | Path) -> Store:
    p = Path(run_dir)
    db = p / "supervisor.db" if p.is_dir() else p
    if not db.is_file():
        raise InputError(str(run_dir), None, "not a run folder (no supervisor.db)")
    return Store(db, readonly=True)


def build_report(run_dir: str | Path) -> dict:
    store = open_store(run_dir)
    try:
        runs = store.runs()
        run = runs[-1] if runs else {"name": Path(run_dir).name, "status": "unknown", "started": None,
                                     "ended": None}
        trials = []
        for t in store.trials():
            tid = t["trial_id"]
            final = {k: _num(v) for k, v in (_loads(t["final"]) or {}).items()}
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
                "findings": [{"iteration": f["iteration"], "detector": f["detector"], "severity": f["severity"],
                              "metric": f["metric"], "value": _num(f["value"]), "message": f["message"],
                              "threshold": _num(f["threshold"])} for f in store.findings(tid)],
                "interventions": [{"iteration": i["iteration"], "action": i["action"], "params": i["params"],
                                   "reason": i["reason"], "outcome": i["outcome"],
                                   "verified": None if i["verified"] is None else bool(i["verified"])}
                                  for i in store.interventions(tid)],
            })
        nodes = [{"node_id": n["node_id"], "alive": bool(n["alive"]), "address": n["address"],
                  "last_seen": _iso(n["last_seen"]), **(n["info"] or {})} for n in store.nodes()]
        cluster = [{"detector": f["detector"], "severity": f["severity"], "message": f["message"],
                    "time": _iso(f["time"])} for f in store.findings() if f["trial_id"] is None]
        return {"run": {"name": run["name"], "status": run["status"], "started": _iso(run["started"]),
                        "ended": _iso(run["ended"])},
                "trials": trials, "nodes": nodes, "cluster_findings": cluster}
    finally:
        store.close()


def _loads(s):
    from supervisor.store import loads

    return loads(s) if isinstance(s, str) else s


def render_text(rep: dict) -> str:
    r = rep["run"]
    lines = [f"run {r['name']}: {r['status']} (started {r['started']}, ended {r['ended'] or '-'})", ""]
    for t in rep["trials"]:
        ret = t["final"].get("episode_return_mean")
        ret_s = f"{ret:.1f}" if isinstance(ret, (int, float)) else "-"
        lines.append(f"trial {t['trial_id']}: {t['status']}, {t['iterations']} iterations, final return {ret_s}, "
                     f"health {t['health']['score']:.2f} (worst {t['health']['worst_severity']})")
        if t["findings"]:
            lines.append("  findings:")
            for f in t["findings"]:
                lines.append(f"    iter {f['iteration']:>4}  {f['severity']:<8} {f['detector']:<20} {f['message']}")
        else:
            lines.append("  findings: none")
        if t["interventions"]:
            lines.append("  interventions:")
            for i in t["interventions"]:
                params = ", ".join(f"{k}={v}" for k, v in i["params"].items() if k not in ("hparams",))
                ver = {True: "verified", False: "NOT verified", None: "unverified"}[i["verified"]]
                lines.append(f"    iter {i['iteration']:>4}  {i['action']:<18} {params}")
                lines.append(f"               outcome {i['outcome']}, {ver}; reason: {i['reason']}")
        else:
            lines.append("  interventions: none")
        lines.append("")
    if rep["nodes"]:
        lines.append("nodes:")
        for n in rep["nodes"]:
            lines.append(f"  {n['node_id'][:12]}  {'alive' if n['alive'] else 'DEAD'}  {n.get('address') or ''}")
    return "\n".join(lines).rstrip() + "\n"
