"""The real-run half of the detection benchmark: recorded RLlib runs replayed through the supervisor.

Each run in ``benchmarks/data/runs.json`` (written by ``benchmarks/record_runs.py``) is replayed
iteration by iteration through a real :class:`supervisor.engine.Engine` on a real SQLite store, the
trial registered with the priors recorded from its config and spaces, exactly as a live trial would
be: the findings and the decided interventions are the supervisor's own. The same streams go through
the published rule sets of :mod:`benchmarks.baselines`.

Counting (warning and critical findings only):

* healthy runs: every finding is a false alarm and every decided action an intervention on a healthy run,
  except ``value_loss_clipped`` where the recorded ``vf_clip_fraction`` shows every sample clipped on the
  iterations its rule needs: that warning is true (PPO's vf_clip_param pitfall on long episodes, where the
  critic gets no gradient at all) and is counted in its own column;
* bad-from-the-start runs (``kind: bad_start``, onset 0): *flagged* when a finding comes by
  iteration ``BAD_START_BY`` (3); it *names the cause* when that finding is the designated detector
  for the fault (``CAUSE``); *acted on* when the supervisor decided a non-alert action by then;
* mid-run faults (``kind: faulty``): detected when any finding comes at or after the onset within
  ``HORIZON`` iterations; delay = that iteration - onset; findings before the onset are false alarms.
"""

from __future__ import annotations

import gzip
import json
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.baselines import BASELINES
from supervisor.keymaps import unflatten
from supervisor.metrics import normalize_result

DATA = Path(__file__).resolve().parent / "data"
HORIZON = 10
BAD_START_BY = 3
#: The detector whose finding names the real cause of each planted fault.
CAUSE = {
    "lr_too_high": "update_too_large", "too_many_epochs": "update_too_large", "lr_too_low": "no_learning",
    "entropy_coeff_huge": "entropy_saturated", "vf_clipped": "value_loss_clipped",
    "value_loss_clipped": "value_loss_clipped",
}
#: A finding that is true on a run otherwise healthy: the value loss clipped on every sample (the recorded
#: vf_clip_fraction is ~1 on the iterations the rule needs), PPO's vf_clip_param pitfall on long episodes.
PITFALL = "value_loss_clipped"


@dataclass
class Replay:
    name: str
    meta: dict
    n: int
    findings: list = field(default_factory=list)      # (index, detector, severity)
    clipped: list = field(default_factory=list)       # per index: the value loss clipped on every sample
    actions: list = field(default_factory=list)       # (index, action)
    baselines: dict = field(default_factory=dict)     # baseline -> [(index, rule)]

    @property
    def kind(self) -> str:
        return self.meta.get("kind") or ("healthy" if self.meta.get("fault") is None else "faulty")

    @property
    def env(self) -> str:
        return self.meta.get("env", "CartPole-v1")

    @property
    def algorithm(self) -> str:
        return self.meta.get("algorithm", "PPO")

    @property
    def onset(self) -> int | None:
        return self.meta.get("onset_index")


#: Meta files of recorded runs: PPO and others (record_runs.py), APPO/IMPALA/DQN/SAC (record_algos.py).
META_FILES = ("runs.json", "runs_algos.json")


def load_runs(data: Path = DATA) -> list[tuple[str, dict, list[dict]]]:
    meta = {}
    for f in META_FILES:
        if (data / f).exists():
            meta.update(json.loads((data / f).read_text()))
    out = []
    for name, m in sorted(meta.items()):
        path = data / m.get("file", "")
        if name.startswith("_") or not path.is_file():
            continue
        raw = data / m["raw_file"] if m.get("raw_file") else None
        if raw is not None and raw.is_file():
            # the raw RLlib results, normalized by today's maps (they change; the recording doesn't)
            opener = gzip.open if raw.suffix == ".gz" else open
            with opener(raw, "rt") as f:
                rows = [normalize_result(unflatten(json.loads(line)), name)["metrics"] for line in f if line.strip()]
        else:
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            for r in rows:
                r.pop("training_iteration", None)
        out.append((name, m, rows))
    return out


def _priors(meta: dict, rows: list[dict] | None = None) -> dict:
    """The trial's priors as the live callback sends them (``actors.priors.priors_of``), from the recorded
    config. The runs are RLlib's results through the supervisor's maps, so ``reporter`` is "rllib" (what
    ``metrics_missing`` needs to expect RLlib's keys), except for recordings that lack what the live callback
    adds to a result (DQN's epsilon, read off the env runners: the first DQN recordings did not copy it)."""
    p = dict(meta.get("priors") or {})
    algo = meta.get("algorithm", "PPO")
    if algo != "DQN" or rows is None or any("epsilon" in r for r in rows):
        p["reporter"] = "rllib"
    p["instrumented"] = algo == "PPO"  # benchmarks/record_runs.py trains PPO with the instrumented learner
    p.setdefault("learning_starts", p.pop("num_steps_sampled_before_learning_starts", None))
    space = p.pop("action_space", None) or {}
    if space.get("type") == "Discrete":
        p.update(action_kind="discrete", action_dim=space.get("n"))
    elif space.get("type") == "Box":
        dim = 1
        for s in space.get("shape") or [1]:
            dim *= int(s)
        p.update(action_kind="continuous", action_dim=dim)
    p.setdefault("algorithm", meta.get("algorithm", "PPO"))
    return p


def replay(name: str, meta: dict, rows: list[dict], settings=None) -> Replay:
    from supervisor.engine import Engine
    from supervisor.metrics import drop_no_data
    from supervisor.store import Store

    rep = Replay(name, meta, len(rows))
    rep.clipped = [r.get("vf_clip_fraction", 0.0) >= 0.999 for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "supervisor.db")
        engine = Engine(store, settings)
        engine.register_trial(name, "bench", config={"priors": _priors(meta, rows)})
        for i, row in enumerate(rows):
            v = engine.observe({"trial_id": name, "seq": i, "iteration": i + 1,
                                "metrics": drop_no_data(dict(row))})
            rep.findings += [(i, f["detector"], f["severity"]) for f in v.findings]
            rep.actions += [(i, a["action"]) for a in v.actions]
        store.close()
    for cls in BASELINES:
        b = cls()
        rep.baselines[cls.name] = [(i, r) for i, row in enumerate(rows) for r in b.step(drop_no_data(dict(row)))]
    return rep


def _alarm(sev: str) -> bool:
    return sev in ("warning", "critical")


def summarize(reps: list[Replay], held_out_only: bool = True) -> dict:
    """Per environment and kind, and per baseline, the figures the README table shows."""
    res: dict = {"healthy": [], "bad_start": [], "faulty": []}
    for r in reps:
        alarms = [(i, d, s) for i, d, s in r.findings if _alarm(s)]
        acted = [(i, a) for i, a in r.actions if a != "alert"]
        row = {"name": r.name, "env": r.env, "algorithm": r.algorithm, "kind": r.kind,
               "split": r.meta.get("split"), "fault": r.meta.get("fault"), "n": r.n,
               "baselines": {}}
        if r.kind == "healthy":
            true = {(i, d) for i, d, _ in alarms if d == PITFALL and all(r.clipped[max(0, i - 2):i + 1])}
            pitfall_acts = {i for i, _ in r.actions if any(i == j for j, _ in true)}
            alarms = [a for a in alarms if (a[0], a[1]) not in true]
            row.update(pitfall=len(true), pitfall_actions=len(pitfall_acts))
            row.update(warnings=sum(s == "warning" for _, _, s in alarms),
                       criticals=sum(s == "critical" for _, _, s in alarms),
                       interventions=len(r.actions) - len(pitfall_acts), detectors=sorted({d for _, d, _ in alarms}))
            for b, fired in r.baselines.items():
                row["baselines"][b] = {"false_alarms": len(fired), "rules": sorted({x for _, x in fired})}
        elif r.kind == "bad_start":
            early = [(i, d, s) for i, d, s in alarms if i < BAD_START_BY]
            cause = CAUSE.get(r.meta.get("fault"))
            row.update(flagged=bool(early), first=(early[0][0] + 1 if early else None),
                       named=[d for _, d, _ in early], cause=cause,
                       cause_named=any(d == cause for _, d, _ in early),
                       acted=any(i < BAD_START_BY for i, _ in acted))
            for b, fired in r.baselines.items():
                hit = [i for i, _ in fired if i < BAD_START_BY]
                row["baselines"][b] = {"flagged": bool(hit), "first": hit[0] + 1 if hit else None}
        else:
            onset = r.onset or 0
            after = [(i, d) for i, d, _ in alarms if onset <= i <= onset + HORIZON]
            row.update(onset=onset, detected=bool(after), delay=(after[0][0] - onset) if after else None,
                       by=(after[0][1] if after else None),
                       false_alarms=sum(1 for i, _, _ in alarms if i < onset))
            for b, fired in r.baselines.items():
                hit = [i for i, _ in fired if onset <= i <= onset + HORIZON]
                row["baselines"][b] = {"detected": bool(hit), "delay": (hit[0] - onset) if hit else None,
                                       "false_alarms": sum(1 for i, _ in fired if i < onset)}
        res[r.kind if r.kind in res else "faulty"].append(row)
    return res


def _pct(k: int, n: int) -> str:
    return f"{k}/{n}" if n else "-"


def render(res: dict) -> str:
    """Markdown: one table per kind of run, ours beside each baseline."""
    names = [cls.name for cls in BASELINES]
    out = ["## Real recorded runs", ""]
    healthy = res["healthy"]
    by_env = defaultdict(list)
    for h in healthy:
        by_env[(h["algorithm"], h["env"])].append(h)
    out += ["### Healthy runs: false alarms (warning or critical findings) and interventions", "",
            "| algorithm | env | runs (held-out) | iterations | supervisor: warnings / criticals / interventions (held-out) "
            "| supervisor: all runs | supervisor: value-loss-clipping warnings (true) | "
            + " | ".join(f"{n}: false alarms" for n in names) + " |",
            "|---|---|---:|---:|---|---|---:|" + "---:|" * len(names)]
    for (algo, env), hs in sorted(by_env.items()):
        held = [h for h in hs if h["split"] in ("held_out", "held-out")]
        f = lambda xs: f"{sum(h['warnings'] for h in xs)} / {sum(h['criticals'] for h in xs)} / {sum(h['interventions'] for h in xs)}"  # noqa: E731
        out.append(f"| {algo} | {env} | {len(hs)} ({len(held)}) | {sum(h['n'] for h in hs)} | {f(held) if held else '-'} "
                   f"| {f(hs)} | {sum(h['pitfall'] for h in hs)} | " + " | ".join(str(sum(h['baselines'][n]['false_alarms'] for h in hs)) for n in names) + " |")
    bad = res["bad_start"]
    if bad:
        out += ["", f"### Bad from the start: flagged by iteration {BAD_START_BY}, by the detector naming the cause, acted on", "",
                "| run | algorithm | env | fault | supervisor: first finding (iteration) | named | cause named | acted on | "
                + " | ".join(f"{n}: first firing" for n in names) + " |",
                "|---|---|---|---|---:|---|---|---|" + "---:|" * len(names)]
        for b in bad:
            out.append(f"| {b['name']} | {b['algorithm']} | {b['env']} | {b['fault']} | {b['first'] or 'not flagged'} | "
                       f"{', '.join(sorted(set(b['named']))) or '-'} | {'yes' if b['cause_named'] else 'no'} | "
                       f"{'yes' if b['acted'] else 'no'} | "
                       + " | ".join(str(b['baselines'][n]['first'] or '-') for n in names) + " |")
    faulty = res["faulty"]
    if faulty:
        out += ["", "### Faults mid-run: recall, delay (iterations after the onset), false alarms before the onset", "",
                "| run | algorithm | env | fault | supervisor: delay | detector | false alarms | "
                + " | ".join(f"{n}: delay / false alarms" for n in names) + " |",
                "|---|---|---|---|---:|---|---:|" + "---|" * len(names)]
        for r in faulty:
            d = "missed" if r["delay"] is None else str(r["delay"])
            out.append(f"| {r['name']} | {r['algorithm']} | {r['env']} | {r['fault']} | {d} | {r['by'] or '-'} | "
                       f"{r['false_alarms']} | "
                       + " | ".join(f"{'missed' if r['baselines'][n]['delay'] is None else r['baselines'][n]['delay']}"
                                    f" / {r['baselines'][n]['false_alarms']}" for n in names) + " |")
        det = [r for r in faulty if r["detected"]]
        delays = [r["delay"] for r in det]
        out += ["", f"Supervisor: recall {len(det)}/{len(faulty)}, median delay "
                    f"{statistics.median(delays) if delays else 'n/a'}."]
        out += ["", "Per algorithm (supervisor; mid-run faults and healthy runs):", "",
                "| algorithm | mid-run recall | median delay | false alarms (healthy runs + before onsets) | healthy iterations |",
                "|---|---:|---:|---:|---:|"]
        for algo in sorted({r["algorithm"] for r in faulty + healthy}):
            fs = [r for r in faulty if r["algorithm"] == algo]
            hs = [h for h in healthy if h["algorithm"] == algo]
            ds = [r["delay"] for r in fs if r["detected"]]
            fa = sum(h["warnings"] + h["criticals"] for h in hs) + sum(r["false_alarms"] for r in fs)
            out.append(f"| {algo} | {_pct(len(ds), len(fs))} | {statistics.median(ds) if ds else '-'} | {fa} | "
                       f"{sum(h['n'] for h in hs) + sum(r['onset'] for r in fs)} |")
        for n in names:
            hit = [r["baselines"][n]["delay"] for r in faulty if r["baselines"][n]["detected"]]
            out.append(f"{n}: recall {len(hit)}/{len(faulty)}, median delay "
                       f"{statistics.median(hit) if hit else 'n/a'}.")
    return "\n".join(out) + "\n"


def totals(res: dict) -> list[dict]:
    """One row per way of judging (ours, each baseline): recall on faults, bad-start flagged, false alarms."""
    names = ["supervisor"] + [cls.name for cls in BASELINES]
    rows = []
    faulty, bad, healthy = res["faulty"], res["bad_start"], res["healthy"]
    for n in names:
        if n == "supervisor":
            rec = sum(r["detected"] for r in faulty)
            flag = sum(b["flagged"] for b in bad)
            fa = sum(h["warnings"] + h["criticals"] for h in healthy) + sum(r["false_alarms"] for r in faulty)
            delays = [r["delay"] for r in faulty if r["detected"]]
        else:
            rec = sum(r["baselines"][n]["detected"] for r in faulty)
            flag = sum(b["baselines"][n]["flagged"] for b in bad)
            fa = sum(h["baselines"][n]["false_alarms"] for h in healthy) + sum(r["baselines"][n]["false_alarms"] for r in faulty)
            delays = [r["baselines"][n]["delay"] for r in faulty if r["baselines"][n]["detected"]]
        iters = sum(h["n"] for h in healthy) + sum(r["onset"] for r in faulty)
        rows.append({"way": n, "mid_run_recall": _pct(rec, len(faulty)), "bad_start_flagged": _pct(flag, len(bad)),
                     "median_delay": statistics.median(delays) if delays else None, "false_alarms": fa,
                     "healthy_iterations": iters})
    return rows
