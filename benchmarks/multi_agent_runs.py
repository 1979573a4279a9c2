"""Recorded multi-agent runs, replayed per module: per-module recall and false alarms (a section of
``benchmarks/detection.py``; ``--multi-agent-only`` runs it alone).

The runs (``benchmarks/data/multi_agent/``, ``python benchmarks/record_runs.py --group multi_agent``) are
PPO on RLlib's MultiAgentCartPole with two policies (or one shared), healthy, or with a fault planted in one
policy's own config. Each is replayed iteration by iteration through a real :class:`supervisor.engine.Engine`
registered as the RLlib callback registers a trial (each module with its priors and whether it trains), so
every module is judged by its own detectors, as in a supervised run. Per module:

* the *faulty* module (``fault_module``) is *detected* when a warning or critical finding names it at or
  after the onset, within ``HORIZON`` iterations; *delay* = that iteration - onset;
* a *false alarm* is a warning or critical finding on a healthy module (a module of a healthy run, the
  other modules of a faulty run, the faulty module before its onset), counted per 1,000 module-iterations
  of trained modules (a frozen module is never judged; any finding on it would still count); a fault of p1
  that flags p0 counts here;
* findings of the trial's own stream (``module`` null: the team return, env runners) are listed apart.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "data" / "multi_agent"
HEADING = "## Multi-agent recorded runs (per module)"
HORIZON = 30


@dataclass
class MultiReplay:
    name: str
    meta: dict
    iterations: int
    findings: list = field(default_factory=list)  # (index, module, detector, severity)
    actions: list = field(default_factory=list)  # (index, module, action)


def load_runs(data: Path = DATA) -> list[tuple[str, dict, list[dict]]]:
    meta_path = data / "runs.json"
    if not meta_path.exists():
        return []
    out = []
    for name, m in sorted(json.loads(meta_path.read_text()).items()):
        path = data / m.get("file", "")
        if name.startswith("_") or not path.is_file():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for r in rows:
            r.pop("training_iteration", None)
        out.append((name, m, rows))
    return out


def _config(meta: dict) -> dict:
    """The trial config the RLlib callback registers: algorithm, priors, and each module's."""
    from benchmarks.real_runs import _priors

    pri = dict(meta.get("priors") or {})
    mods = pri.pop("modules", None) or {}
    # each module's priors as the live callback sends them (actors.priors.priors_of per module)
    return {"algorithm": meta.get("algorithm", "PPO"), "priors": _priors({**meta, "priors": pri}),
            "modules": {m: {**c, "priors": _priors({**meta, "priors": c.get("priors") or pri})}
                        for m, c in mods.items()}}


def replay(name: str, meta: dict, rows: list[dict], settings=None) -> MultiReplay:
    from supervisor.engine import Engine
    from supervisor.store import Store

    rep = MultiReplay(name, meta, len(rows))
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "supervisor.db")
        engine = Engine(store, settings)
        engine.register_trial(name, "bench", config=_config(meta))
        for i, row in enumerate(rows):
            v = engine.observe({"trial_id": name, "seq": i, "iteration": i + 1, "metrics": dict(row)})
            rep.findings += [(i, f["module"], f["detector"], f["severity"]) for f in v.findings]
            rep.actions += [(i, a["module"], a["action"]) for a in v.actions]
        store.close()
    return rep


def _alarm(sev: str) -> bool:
    return sev in ("warning", "critical")


def modules_of(meta: dict) -> dict:
    """module -> trained, from the recorded priors."""
    mods = (meta.get("priors") or {}).get("modules") or {}
    return {m: bool(c.get("trained", True)) for m, c in mods.items()}


def summarize(reps: list[MultiReplay]) -> dict:
    rows, healthy_iters, false_alarms, detected, faulty = [], 0, 0, 0, 0
    for r in reps:
        m = r.meta
        sick, onset = m.get("fault_module"), m.get("onset_index")
        mods = modules_of(m)
        per: dict = {}
        for mod in mods:
            alarms = [(i, d) for i, mm, d, s in r.findings if mm == mod and _alarm(s)]
            if mod == sick and onset is not None:
                hit = [(i, d) for i, d in alarms if onset <= i <= onset + HORIZON]
                fa = [(i, d) for i, d in alarms if i < onset]
                healthy_iters += onset
                faulty += 1
                detected += bool(hit)
                per[mod] = {"role": "faulty", "trained": mods[mod], "detected": bool(hit),
                            "delay": hit[0][0] - onset if hit else None,
                            "by": sorted({d for i, d in hit if i == hit[0][0]}) if hit else [],
                            "false_alarms": len(fa)}
            else:
                if mods[mod]:  # a frozen module is never judged: its silence proves nothing, not counted
                    healthy_iters += r.iterations
                per[mod] = {"role": "healthy", "trained": mods[mod], "false_alarms": len(alarms),
                            "detectors": sorted({d for _, d in alarms})}
            false_alarms += per[mod]["false_alarms"]
        trial = sorted({d for i, mm, d, s in r.findings if mm is None and _alarm(s)})
        acted = sorted({(mm or "trial", a) for i, mm, a in r.actions if a != "alert"})
        rows.append({"name": r.name, "kind": m.get("kind"), "fault": m.get("fault"), "fault_module": sick,
                     "how": m.get("how"), "split": m.get("split"), "iterations": r.iterations, "onset": onset,
                     "modules": per, "trial_findings": trial, "actions": [f"{a} ({mm})" for mm, a in acted]})
    return {"runs": rows, "faulty_modules": faulty, "detected": detected, "healthy_module_iterations": healthy_iters,
            "false_alarms": false_alarms,
            "false_alarms_per_1000": round(1000 * false_alarms / healthy_iters, 2) if healthy_iters else None}


def render(res: dict) -> str:
    out = [HEADING, "",
           "PPO on RLlib's MultiAgentCartPole (two agents), each policy judged as its own stream by the engine "
           "(`python benchmarks/record_runs.py --group multi_agent` records them; a fault is planted in one policy's "
           "own config). Detected: a warning or critical finding naming the faulty module within "
           f"{HORIZON} iterations of the onset. False alarms: warning or critical findings on healthy modules "
           "(healthy runs, the other policy of a faulty run, the faulty one before its onset).", "",
           f"Per-module recall: **{res['detected']}/{res['faulty_modules']}**; false alarms on healthy modules: "
           f"**{res['false_alarms']}** in {res['healthy_module_iterations']} module-iterations "
           f"({res['false_alarms_per_1000']} per 1,000).", "",
           "| run | policies | fault (module) | faulty module: detected (delay, by) | healthy modules: false alarms "
           "| trial's own findings | actions |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["runs"]:
        mods = ", ".join(f"{m}{'' if v['trained'] else ' (frozen)'}" for m, v in r["modules"].items())
        sick = r["modules"].get(r["fault_module"]) if r["fault_module"] else None
        det = ("-" if sick is None else
               f"yes ({sick['delay']}, {', '.join(sick['by'])})" if sick["detected"] else "**no**")
        fa = ", ".join(f"{m}: {v['false_alarms']}" + (f" ({', '.join(v['detectors'])})" if v.get("detectors") else "")
                       for m, v in r["modules"].items() if v["role"] == "healthy") or "-"
        fault = f"{r['fault']} ({r['fault_module']})" if r["fault"] else "healthy"
        out.append(f"| {r['name']} | {mods} | {fault} | {det} | {fa} | {', '.join(r['trial_findings']) or '-'} | "
                   f"{', '.join(r['actions']) or '-'} |")
    return "\n".join(out) + "\n"


def run(data: Path = DATA) -> dict:
    return summarize([replay(n, m, rows) for n, m, rows in load_runs(data)])


def figures(res: dict) -> dict:
    """What readme_tables.py reads."""
    return {k: res[k] for k in ("faulty_modules", "detected", "healthy_module_iterations", "false_alarms",
                                "false_alarms_per_1000")} | {
        "runs": [{"name": r["name"], "fault": r["fault"], "fault_module": r["fault_module"],
                  "modules": {m: {k: v.get(k) for k in ("role", "trained", "detected", "delay", "by", "false_alarms")}
                              for m, v in r["modules"].items()}} for r in res["runs"]]}
