"""A supervisor restart in the middle of a repair changes nothing.

The engine a restarted actor builds from the store must carry on exactly where the old one was: the
detectors' state (history replayed through them, without acting), the repairs still waiting for their
outcome with their windows, the rollback target and the verified hyperparameters. Here a simulated trial
(it applies what it is told, rolls back to the checkpoints it saved) is judged twice on the same stream:
once by one engine, once by an engine rebuilt from the store before every single report. Every verdict,
every outcome and the final status must be the same. (The same through the real actor, killed between a
repair and its outcome: ``tests/test_detached_actor.py``.)
"""

from __future__ import annotations

import math

from supervisor.config import SupervisorConfig
from supervisor.engine import Engine
from supervisor.store import Store

SETTINGS = dict(checkpoint_every=3, cooldown=1)
DIVERGE_AT = 9          # one non-finite iteration: rollback + reduce_lr, which work
KL_HIGH = range(18, 34)  # the KL far too large for 16 iterations: raise_kl_coeff does not hold, the ladder climbs
N = 44


def healthy(i: int) -> dict:
    w = 1 + 0.05 * math.sin(i * 1.7)
    return {"episode_return_mean": 20.0 + 4 * i * w, "total_loss": 5.0 * w, "policy_loss": -0.02 * w,
            "vf_loss": 4.0 * w, "entropy": 0.69 - 0.002 * i, "kl": 0.01 * w, "kl_coeff": 0.2, "lr": 3e-4,
            "grad_norm": 1.5 * w, "explained_variance": 0.3 * w, "env_steps_lifetime": 2000.0 * (i + 1),
            "time_this_iter_s": 1.0 + 0.1 * w}


class SimTrial:
    """A trial that does what the verdicts say: lowers its lr, raises its KL coefficient, rolls back to
    the checkpoint named (its progress and hyperparameters as they were there), and says so
    (``acknowledge``) before its next report."""

    def __init__(self):
        self.hp = {"lr": 3e-4, "kl_coeff": 0.2}
        self.progress = 0
        self.saved: dict[str, tuple[int, dict]] = {}
        self.applied: list[dict] = []
        self.stopped = False

    def metrics(self, seq: int) -> dict:
        if seq == DIVERGE_AT:
            return {"episode_return_mean": 9.0, "total_loss": math.inf, "policy_loss": 0.0, "vf_loss": 10.0,
                    "entropy": 0.0, "kl": math.inf, "kl_coeff": 0.1, "lr": self.hp["lr"], "grad_norm": 0.0,
                    "explained_variance": 0.0}
        m = healthy(self.progress)
        m.update(lr=self.hp["lr"], kl_coeff=self.hp["kl_coeff"])
        if seq in KL_HIGH:
            m["kl"] = 5.0
        return m

    def step(self) -> None:
        self.progress += 1

    def save(self, seq: int) -> str:
        path = f"/ckpt/{seq}"
        self.saved[path] = (self.progress, dict(self.hp))
        return path

    def apply(self, actions: list[dict]) -> None:
        for a in actions:
            name, params = a["action"], a.get("params") or {}
            entry = {"id": a["id"], "action": name, "ok": True, "before": dict(self.hp)}
            if name == "rollback":
                self.progress, hp = self.saved[params["checkpoint"]]
                self.hp = {**hp, **(params.get("hparams") or {})}
                entry["verified"] = True
            elif name == "reduce_lr":
                self.hp["lr"] *= params.get("factor", 0.5)
            elif name == "raise_kl_coeff":
                self.hp["kl_coeff"] *= params.get("factor", 2.0)
            elif name == "stop_trial":
                self.stopped = True
            entry["after"] = dict(self.hp)
            self.applied.append(entry)

    def take_applied(self) -> list[dict]:
        out, self.applied = self.applied, []
        return out


def _verdict(v) -> dict:
    """What the trial and the user see of a verdict (``Verdict``, or its wire form)."""
    v = v if isinstance(v, dict) else v.to_dict()
    return {"actions": [(a["action"], a.get("params", {}).get("checkpoint")) for a in v.get("actions") or []],
            "findings": sorted((f["detector"], f["severity"]) for f in v.get("findings") or []),
            "checkpoint": v.get("checkpoint"), "stop": v.get("stop"), "repairing": v.get("repairing"),
            "health": (v.get("health") or {}).get("score"), "duplicate": v.get("duplicate", False)}


def judge(db, restart_before_every_report: bool) -> tuple[list, list, str]:
    store = Store(db)
    store.upsert_run("r", "r", "run", "running")
    settings = SupervisorConfig(**SETTINGS)
    eng = Engine(store, settings)
    eng.register_trial("t", "r")
    trial, verdicts = SimTrial(), []
    for seq in range(N):
        if restart_before_every_report:  # the actor died and came back: a new engine on the same store
            eng = Engine(store, settings)
            eng.register_trial("t", "r")
        eng.acknowledge("t", trial.take_applied())
        v = eng.observe({"trial_id": "t", "seq": seq, "iteration": trial.progress + 1,
                         "metrics": trial.metrics(seq)})
        verdicts.append(_verdict(v))
        if v.checkpoint:
            eng.record_checkpoint("t", seq, trial.progress + 1, trial.save(seq), dict(trial.hp))
        trial.apply(v.actions)
        trial.step()
        if trial.stopped:
            break
    if restart_before_every_report:
        eng = Engine(store, settings)
        eng.register_trial("t", "r")
    eng.acknowledge("t", trial.take_applied())
    status = eng.finish_trial("t", "stopped" if trial.stopped else "completed")
    ivs = [(i["seq"], i["action"], i["outcome"], i["verified"], i["judged_seq"]) for i in store.interventions("t")]
    store.close()
    return verdicts, ivs, status


def test_the_scenario_exercises_repairs_that_work_and_repairs_that_do_not(tmp_path):
    verdicts, ivs, status = judge(tmp_path / "once.db", False)
    acts = [(seq, a) for seq, _, a in ((i[0], 0, i[1]) for i in ivs)]
    assert (DIVERGE_AT, "rollback") in acts and (DIVERGE_AT, "reduce_lr") in acts
    outcome = {(i[0], i[1]): i[2] for i in ivs}
    assert outcome[(DIVERGE_AT, "rollback")] == "effective" and outcome[(DIVERGE_AT, "reduce_lr")] == "effective"
    kl = [i for i in ivs if i[1] == "raise_kl_coeff"]
    assert kl and kl[0][2] == "ineffective" and kl[0][3] == 1  # applied and verified, yet the KL stayed high
    assert len(ivs) >= 4, ivs  # the KL ladder climbed past raise_kl_coeff


def test_an_engine_rebuilt_before_every_report_decides_exactly_the_same(tmp_path):
    """Restarts at every point of every repair window: before the repair is decided, between the repair
    and the report that shows it applied, inside its outcome window, right before its outcome."""
    once = judge(tmp_path / "once.db", False)
    restarted = judge(tmp_path / "restarted.db", True)
    for seq, (a, b) in enumerate(zip(once[0], restarted[0])):
        assert a == b, f"seq {seq}: one engine said {a}, the rebuilt engine said {b}"
    assert len(once[0]) == len(restarted[0])
    assert once[1] == restarted[1], "interventions (seq, action, outcome, verified, judged_seq) differ"
    assert once[2] == restarted[2] == "recovered"
