"""Multi-agent trials in the Ray-free core: every module its own stream (issue 24).

Results are RLlib 2.60's layout for two policies on MultiAgentCartPole (keys as measured), built here
so that each test says what it feeds."""

from __future__ import annotations

import math

from supervisor.metrics import normalize_result


def ma_result(it: int = 1, p0: dict | None = None, p1: dict | None = None, ret0: float = 20.0, ret1: float = 25.0):
    """One iteration's result dict of a two-policy trial (p0, p1; agents 0 and 1)."""
    def learner(lr, extra):
        return {"policy_loss": -0.05, "vf_loss": 9.0, "total_loss": 9.0, "entropy": 0.69, "mean_kl_loss": 1e-4,
                "curr_kl_coeff": 0.2, "curr_entropy_coeff": 0.0, "default_optimizer_learning_rate": lr,
                "gradients_default_optimizer_global_norm": 2.0, "vf_explained_var": 0.1, **(extra or {})}
    return {"training_iteration": it,
            "learners": {"__all_modules__": {"num_env_steps_trained": 800},
                         "p0": learner(3e-4, p0), "p1": learner(5.0, p1)},
            "env_runners": {"episode_return_mean": ret0 + ret1, "num_episodes": 10, "episode_len_mean": 25.0,
                            "num_env_steps_sampled": 400,
                            "module_episode_returns_mean": {"p0": ret0, "p1": ret1},
                            "agent_episode_returns_mean": {0: ret0, 1: ret1}},
            "fault_tolerance": {"num_healthy_workers": 1}}


def test_normalize_result_reads_every_module():
    """Before issue 24 only the first module of ``learners/`` was read: p1's divergence was invisible."""
    m = normalize_result(ma_result(p0={"total_loss": 1.0}, p1={"total_loss": math.inf}), "t")["metrics"]
    assert m["modules/p0/total_loss"] == 1.0
    assert m["modules/p1/total_loss"] == math.inf
    assert m["modules/p0/lr"] == 3e-4 and m["modules/p1/lr"] == 5.0
    # each module's own return, the per-agent returns, and the team return at the trial level
    assert m["modules/p0/episode_return_mean"] == 20.0 and m["modules/p1/episode_return_mean"] == 25.0
    assert m["agents/0/episode_return_mean"] == 20.0 and m["agents/1/episode_return_mean"] == 25.0
    assert m["episode_return_mean"] == 45.0
    assert "total_loss" not in m and "lr" not in m  # no module's statistic passes for the trial's


# --------------------------------------------------------------------------- the engine, per module
import pytest  # noqa: E402

from supervisor.config import SupervisorConfig  # noqa: E402
from supervisor.engine import Engine  # noqa: E402
from supervisor.store import Store  # noqa: E402

CARTPOLE = {"algorithm": "PPO", "kl_target": 0.01, "clip_param": 0.3, "vf_clip_param": 10.0, "use_kl_loss": True,
            "action_kind": "discrete", "action_dim": 2}


def modules_config(trained=("p0", "p1"), ids=("p0", "p1")):
    return {"algorithm": "PPO", "priors": CARTPOLE,
            "modules": {m: {"trained": m in trained, "priors": CARTPOLE} for m in ids}}


@pytest.fixture
def engine(tmp_path):
    store = Store(tmp_path / "supervisor.db")
    store.upsert_run("r", "r", "run", "running")
    eng = Engine(store, SupervisorConfig(checkpoint_every=2, cooldown=0))
    yield eng
    store.close()


def feed(eng, tid, seq, result):
    rep = normalize_result(result, tid)
    rep["seq"] = seq
    return eng.observe(rep)


def test_a_sick_module_is_flagged_and_repaired_alone(engine):
    engine.register_trial("t", "r", config=modules_config())
    for i in range(4):  # healthy; a checkpoint to roll back to
        v = feed(engine, "t", i, ma_result(i + 1, ret0=20 + i, ret1=20 + i))
        assert v.findings == [], v.findings
        if v.checkpoint:
            engine.record_checkpoint("t", i, i + 1, f"/ckpt/{i}", {"modules": {"p0": {"lr": 3e-4}, "p1": {"lr": 5.0}}})
    v = feed(engine, "t", 4, ma_result(5, p1={"total_loss": math.inf, "mean_kl_loss": math.inf}))
    assert {f["module"] for f in v.findings} == {"p1"}
    assert "non_finite" in {f["detector"] for f in v.findings}
    assert {(a["action"], a["module"]) for a in v.actions} == {("rollback", "p1"), ("reduce_lr", "p1")}
    rb = next(a for a in v.actions if a["action"] == "rollback")
    assert not rb["params"].get("whole_trial")  # p0 is healthy: only p1 goes back
    assert rb["params"]["hparams"] == {"modules": {"p0": {"lr": 3e-4}, "p1": {"lr": 5.0}}}
    assert v.health["modules"]["p0"]["score"] == 1.0 and v.health["modules"]["p1"]["score"] == 0.0
    assert v.health["score"] == 0.0  # the trial is its worst module
    # the trial applies it: only p1's lr changed; the next report verifies it on p1's own metrics
    rl = next(a for a in v.actions if a["action"] == "reduce_lr")
    engine.acknowledge("t", [{"id": rl["id"], "action": "reduce_lr", "ok": True, "module": "p1",
                              "before": {"lr": 5.0}, "after": {"lr": 0.5}}])
    assert engine.register_trial("t", "r")["overrides"] == {"modules": {"p1": {"lr": 0.5}}}
    feed(engine, "t", 5, ma_result(6, p1={"default_optimizer_learning_rate": 0.5}))
    stored = {i["id"]: i for i in engine.store.interventions("t")}
    assert stored[rl["id"]]["verified"] == 1 and stored[rl["id"]]["module"] == "p1"
    assert {f["module"] for f in engine.store.findings("t")} == {"p1"}


def test_a_fault_two_modules_share_rolls_the_whole_trial_back(engine):
    engine.register_trial("t", "r", config=modules_config())
    for i in range(4):
        v = feed(engine, "t", i, ma_result(i + 1))
        if v.checkpoint:
            engine.record_checkpoint("t", i, i + 1, f"/ckpt/{i}", {})
    bad = {"total_loss": math.inf}
    v = feed(engine, "t", 4, ma_result(5, p0=bad, p1=bad))
    assert {f["module"] for f in v.findings} == {"p0", "p1"}
    rbs = [a for a in v.actions if a["action"] == "rollback"]
    assert len(rbs) == 1 and rbs[0]["params"]["whole_trial"] is True
    assert sorted(a["module"] for a in v.actions if a["action"] == "reduce_lr") == ["p0", "p1"]


def test_a_frozen_module_gets_no_finding_and_no_action(engine):
    """A module RLlib does not train (a frozen opponent) reports a zero gradient and the lr it was built with;
    its return falls as its opponent learns: none of that is a fault of a policy that cannot change."""
    engine.register_trial("t", "r", config=modules_config(trained=("p0",)))
    for i in range(12):
        v = feed(engine, "t", i, ma_result(i + 1, p1={"gradients_default_optimizer_global_norm": 0.0,
                                                       "entropy": 0.0, "total_loss": 1e9},
                                          ret0=20 + 3 * i, ret1=max(1.0, 40 - 5 * i)))
        assert [f for f in v.findings if f["module"] == "p1"] == []
        assert [a for a in v.actions if a["module"] == "p1"] == []
    h = v.health["modules"]["p1"]
    assert h["trained"] is False and h["worst_severity"] == "ok"


def test_the_team_return_is_judged_by_the_trials_own_stream(engine):
    engine.register_trial("t", "r", config=modules_config())
    names = {None: engine.trials["t"].streams[None].detectors.names,
             "p0": engine.trials["t"].streams["p0"].detectors.names}
    assert "reward_collapse" in names[None] and "worker_fault" in names[None] and "kl_spike" not in names[None]
    assert "kl_spike" in names["p0"] and "worker_fault" not in names["p0"]


def test_a_single_agent_trial_is_one_module_and_its_env_findings_are_the_trials(engine):
    engine.register_trial("s", "r", config={"algorithm": "PPO", "priors": CARTPOLE})
    base = {"episode_return_mean": 20.0, "num_episodes": 5.0, "total_loss": 1.0, "lr": 3e-4,
            "healthy_env_runners": 2.0}
    for i in range(3):
        engine.observe({"trial_id": "s", "seq": i, "iteration": i + 1, "metrics": dict(base)})
    v = engine.observe({"trial_id": "s", "seq": 3, "iteration": 4,
                        "metrics": {**base, "total_loss": math.inf, "healthy_env_runners": 1.0}})
    by = {f["detector"]: f["module"] for f in v.findings}
    assert by["non_finite"] == "default_policy" and by["worker_fault"] is None
    assert list(v.health["modules"]) == ["default_policy"]


@pytest.mark.parametrize("body, key, words", [
    ("policies: bogus", "multi_agent.policies", "must be per_agent, shared"),
    ("policies: {p0: {}, p1: {lr: -1.0}}\n  mapping: {0: p0, 1: p1}", "multi_agent.policies.p1.lr", "must be > 0"),
    ("policies: [p0, p1]\n  mapping: {0: p0, 1: p2}", "multi_agent.mapping.1", "unknown policy 'p2'"),
    ("policies: [p0, p1]\n  policies_to_train: [p9]", "multi_agent.policies_to_train", "unknown policy 'p9'"),
    ("policies: shared\n  mapping: {0: shared}", "multi_agent.mapping", "not with policies: shared"),
    ("policies: [p0]\n  mapping: nope.mod:fn", "multi_agent.mapping", "cannot import module 'nope.mod'"),
    ("policies: [p0]\n  extra: 1", "multi_agent.extra", "unknown key"),
])
def test_bad_multi_agent_keys_are_one_line_naming_the_key(tmp_path, body, key, words):
    from supervisor.config import load_experiment
    from supervisor.errors import InputError

    f = tmp_path / "exp.yaml"
    f.write_text(f"name: x\nenv: CartPole-v1\nstop: {{iterations: 1}}\nmulti_agent:\n  {body}\n")
    with pytest.raises(InputError) as e:
        load_experiment(f)
    assert e.value.key == key and words in e.value.problem, (e.value.key, e.value.problem)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- a supervisor restart, per module
from tests.test_restart import healthy  # noqa: E402

MODS = ("p0", "p1")
SICK_AT = 9            # p1 alone goes non-finite: p1 rolls back and its lr is cut, p0 goes on
P1_KL_HIGH = range(18, 34)  # p1's KL far too large: its KL ladder climbs, p0's stays at its foot
N_MA = 44


class SimTeam:
    """Two policies that do what the verdicts say, each for itself: a module's action changes that module's
    hyperparameters; a module's rollback takes back that module's progress and hyperparameters, a whole-trial
    one every module's."""

    def __init__(self):
        self.hp = {m: {"lr": 3e-4, "kl_coeff": 0.2} for m in MODS}
        self.progress = {m: 0 for m in MODS}
        self.saved: dict[str, tuple[dict, dict]] = {}
        self.applied: list[dict] = []

    def metrics(self, seq: int) -> dict:
        out = {"env_steps_lifetime": 2000.0 * (seq + 1), "time_this_iter_s": 1.0}
        team = 0.0
        for m in MODS:
            h = healthy(self.progress[m])
            h.pop("env_steps_lifetime"), h.pop("time_this_iter_s")
            h.update(self.hp[m])
            if m == "p1" and seq == SICK_AT:
                h.update(total_loss=math.inf, kl=math.inf, grad_norm=0.0, entropy=0.0)
            if m == "p1" and seq in P1_KL_HIGH:
                h["kl"] = 5.0
            team += h["episode_return_mean"]
            out.update({f"modules/{m}/{k}": v for k, v in h.items()})
        out["episode_return_mean"] = team
        return out

    def save(self, seq: int) -> str:
        path = f"/ckpt/{seq}"
        self.saved[path] = (dict(self.progress), {m: dict(hp) for m, hp in self.hp.items()})
        return path

    def apply(self, acts: list[dict]) -> None:
        for a in acts:
            name, params, m = a["action"], a.get("params") or {}, a["module"]
            mods = list(MODS) if m is None or params.get("whole_trial") else [m]
            entry = {"id": a["id"], "action": name, "ok": True, "module": m}
            if name == "rollback":
                progress, hp = self.saved[params["checkpoint"]]
                back = (params.get("hparams") or {}).get("modules", {})
                for x in mods:
                    self.progress[x], self.hp[x] = progress[x], {**hp[x], **back.get(x, {})}
                entry["verified"] = True
            elif name == "reduce_lr":
                self.hp[m]["lr"] *= params.get("factor", 0.5)
            elif name == "raise_kl_coeff":
                self.hp[m]["kl_coeff"] *= params.get("factor", 2.0)
            entry["after"] = {"modules": {x: dict(self.hp[x]) for x in mods}} if len(mods) > 1 else dict(self.hp[m])
            self.applied.append(entry)

    def step(self) -> None:
        for m in MODS:
            self.progress[m] += 1

    def take_applied(self) -> list[dict]:
        out, self.applied = self.applied, []
        return out


def judge_team(db, restart_before_every_report: bool) -> tuple[list, list]:
    store = Store(db)
    store.upsert_run("r", "r", "run", "running")
    settings = SupervisorConfig(checkpoint_every=3, cooldown=1)
    eng = Engine(store, settings)
    eng.register_trial("t", "r", config=modules_config())
    team, verdicts = SimTeam(), []
    for seq in range(N_MA):
        if restart_before_every_report:  # the actor died and came back: a new engine on the same store
            eng = Engine(store, settings)
            eng.register_trial("t", "r")
        eng.acknowledge("t", team.take_applied())
        v = eng.observe({"trial_id": "t", "seq": seq, "iteration": seq + 1, "metrics": team.metrics(seq)})
        verdicts.append({"actions": [(a["action"], a["module"], a["params"].get("whole_trial")) for a in v.actions],
                         "findings": sorted((f["detector"], f["severity"], f["module"] or "") for f in v.findings),
                         "checkpoint": v.checkpoint, "stop": v.stop,
                         "health": {m: h["score"] for m, h in v.health["modules"].items()}})
        if v.checkpoint:
            eng.record_checkpoint("t", seq, seq + 1, team.save(seq), {"modules": team.hp})
        team.apply(v.actions)
        team.step()
        if v.stop:
            break
    ivs = [(i["seq"], i["action"], i["module"], i["outcome"], i["verified"], i["judged_seq"])
           for i in store.interventions("t")]
    store.close()
    return verdicts, ivs


def test_an_engine_rebuilt_before_every_report_decides_the_same_on_every_module(tmp_path):
    """The restart rebuild restores each module's stream: its detectors (a module's rollback rewinds that
    module alone), its ladder, its repairs in flight with the hyperparameters they must show on it."""
    once = judge_team(tmp_path / "once.db", False)
    acts = {(seq, a, m) for seq, a, m, *_ in once[1]}
    assert (SICK_AT, "rollback", "p1") in acts and (SICK_AT, "reduce_lr", "p1") in acts
    assert {m for _, _, m, *_ in once[1]} == {"p1"}, once[1]  # p0 is never touched
    # the KL trouble after it: update_too_large's (then kl_spike's) hyperparameter change
    later = [i for i in once[1] if i[0] > SICK_AT and i[1] in ("reduce_lr", "raise_kl_coeff")]
    assert later and later[0][4] == 1, later  # applied and verified on p1's own metrics
    restarted = judge_team(tmp_path / "restarted.db", True)
    for seq, (a, b) in enumerate(zip(once[0], restarted[0])):
        assert a == b, f"seq {seq}: one engine said {a}, the rebuilt engine said {b}"
    assert len(once[0]) == len(restarted[0])
    assert once[1] == restarted[1], "interventions (seq, action, module, outcome, verified, judged_seq) differ"


def fingerprint(state) -> dict:
    """What of a trial's state decides its next verdicts, stream by stream."""
    out = {"last_seq": state.last_seq, "checkpoint": state.checkpoint, "overrides": state.overrides,
           "last_trouble_seq": state.last_trouble_seq, "had_effective": state.had_effective}
    for m, st in state.streams.items():
        out[m] = {"history": {k: [repr(x) for x in st.history.series(k)] for k in sorted(st.history.metrics())},
                  "at_checkpoint": None if st.history_at_checkpoint is None else
                  {k: [repr(x) for x in st.history_at_checkpoint.series(k)]
                   for k in sorted(st.history_at_checkpoint.metrics())},
                  "alarmed": sorted(st.detectors.alarmed()),
                  "streaks": {d: st.detectors.streak(d) for d in st.detectors.names},
                  "rungs": st.policy.rungs, "action_seqs": list(st.policy.action_seqs),
                  "last_action_seq": st.policy.last_action_seq, "ineffective": sorted(st.policy.ineffective),
                  "pending": [(p.id, p.seq, p.action, p.module, p.target, p.verified, p.checks) for p in st.pending],
                  "first_returns": st.first_returns, "prev_lr": st.prev_lr, "health": st.health.snapshot(state.last_seq)}
    return out


def test_load_trial_rebuilds_every_modules_stream_as_it_was(tmp_path):
    """After every report (its checkpoint recorded, its actions applied and acknowledged), a trial loaded from
    the store is the live one, stream by stream: each module's history (rewound by that module's rollback
    alone), detector latches, ladder and repairs in flight with their per-module targets."""
    store = Store(tmp_path / "s.db")
    store.upsert_run("r", "r", "run", "running")
    settings = SupervisorConfig(checkpoint_every=3, cooldown=1)
    eng = Engine(store, settings)
    eng.register_trial("t", "r", config=modules_config())
    team, pending_targets = SimTeam(), 0
    for seq in range(N_MA):
        v = eng.observe({"trial_id": "t", "seq": seq, "iteration": seq + 1, "metrics": team.metrics(seq)})
        if v.checkpoint:
            eng.record_checkpoint("t", seq, seq + 1, team.save(seq), {"modules": team.hp})
        team.apply(v.actions)
        team.step()
        eng.acknowledge("t", team.take_applied())
        live = eng.trials["t"]
        pending_targets += any(p.target and p.verified is None for p in live.pending)
        loaded = Engine(store, settings).load_trial("t", "r", store)
        assert fingerprint(loaded) == fingerprint(live), f"seq {seq}"
    assert pending_targets, "no repair was waiting to show its change across a restart"
    store.close()


def test_the_actors_gauges_carry_each_modules_health(tmp_path):
    """What the cluster watch sets the Prometheus gauges from: the trial's score and each module's own."""
    from actors.supervisor_actor import SupervisorService

    svc = SupervisorService()  # the actor's own class, in this process
    svc.open_run("r", str(tmp_path), "r", "run")
    svc.register_trial("t", "r", config=modules_config())
    team = SimTeam()  # p1 goes non-finite at its last report
    svc.report_batch("r", [{"trial_id": "t", "seq": s, "iteration": s + 1, "metrics": team.metrics(s)}
                           for s in range(SICK_AT + 1)])
    (run_id, tid, score, _, mods), = svc.trial_gauges()
    assert (run_id, tid, score) == ("r", "t", 0.0) and mods == {"p0": 1.0, "p1": 0.0}
    svc.close_run("r", "completed")


@pytest.mark.parametrize("case, acted", [("p1", []), ("p0 and p1", []), ("p1 and the env runners", [("reduce_lr", "p1")])])
def test_a_policys_warning_is_corroborated_by_the_trials_alarms_never_by_another_policys(engine, case, acted):
    """A one-report warning acts once held or corroborated (supervisor.policy). Another policy's alarm is no
    evidence about this one (each waits for its own); the trial's own (an env runner lost) is."""
    engine.register_trial("t", "r", config=modules_config())

    def result(i, hot=(), runners=4):
        kl = {m: {"mean_kl_loss": 0.3 if m in hot else 0.005} for m in ("p0", "p1")}
        r = ma_result(i + 1, p0=kl["p0"], p1=kl["p1"], ret0=20 + i, ret1=20 + i)
        r["fault_tolerance"]["num_healthy_workers"] = runners
        return r

    for i in range(8):
        assert feed(engine, "t", i, result(i)).findings == []
    v = feed(engine, "t", 8, result(8, hot=("p1", "p0") if "p0" in case else ("p1",),
                                    runners=3 if "runners" in case else 4))
    assert ("p1", "update_too_large", "warning") in {(f["module"], f["detector"], f["severity"]) for f in v.findings}
    assert [(a["action"], a["module"]) for a in v.actions] == acted


def test_a_policys_missing_metric_is_that_policys_blindness(tmp_path):
    """metrics_missing in every stream, about its own detectors: p1's entropy key taken away from a recorded
    two-policy run (benchmarks/data/multi_agent) blinds p1's entropy detectors, once, and nothing of p0's."""
    from benchmarks import multi_agent_runs

    meta, rows = next((m, r) for n, m, r in multi_agent_runs.load_runs() if n == "ma_healthy_s1")
    store = Store(tmp_path / "s.db")
    store.upsert_run("r", "r", "run", "running")
    eng = Engine(store, SupervisorConfig())
    eng.register_trial("t", "r", config=multi_agent_runs._config(meta))
    found = []
    for i, row in enumerate(rows):
        v = eng.observe({"trial_id": "t", "seq": i, "iteration": i + 1,
                         "metrics": {k: x for k, x in row.items() if k != "modules/p1/entropy"}})
        found += [(i + 1, f) for f in v.findings if f["detector"] == "metrics_missing"]
        assert v.actions == []
    ((at, f),) = found
    assert at == 3 and f["module"] == "p1" and f["metric"] == "entropy"
    assert {"entropy_collapse", "entropy_saturated"} <= set(f["details"]["detectors"])
    store.close()
