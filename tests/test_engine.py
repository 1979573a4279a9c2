"""The Ray-free core end to end: reports in, verdicts out, everything in SQLite."""

import dataclasses
import json
import math

import pytest

from supervisor.config import SupervisorConfig
from supervisor.engine import Engine
from supervisor.findings import Finding
from supervisor.policy import EscalationPolicy, PolicyState
from supervisor.report import build_report
from supervisor.report.text import render_text
from supervisor.store import Store


def healthy(i):
    # smooth, noisy-ish healthy PPO numbers
    w = 1 + 0.05 * math.sin(i * 1.7)
    return {"episode_return_mean": 20.0 + 4 * i * w, "total_loss": 5.0 * w, "policy_loss": -0.02 * w,
            "vf_loss": 4.0 * w, "entropy": 0.69 - 0.002 * i, "kl": 0.01 * w, "kl_coeff": 0.2, "lr": 3e-4,
            "grad_norm": 1.5 * w, "explained_variance": 0.3 * w, "env_steps_lifetime": 2000.0 * (i + 1)}


def diverged():
    return {"episode_return_mean": 9.0, "total_loss": math.inf, "policy_loss": 0.0, "vf_loss": 10.0,
            "entropy": 0.0, "kl": math.inf, "kl_coeff": 0.1, "lr": 5.0, "grad_norm": 0.0,
            "explained_variance": 0.0}


@pytest.fixture
def engine(tmp_path):
    store = Store(tmp_path / "supervisor.db")
    store.upsert_run("r", "r", "run", "running")
    eng = Engine(store, SupervisorConfig(checkpoint_every=3, cooldown=1))
    eng.register_trial("t", "r")
    yield eng
    store.close()


def send(eng, seq, metrics, applied=None):
    eng.acknowledge("t", applied)  # what the trial applied since its last report, before the report
    return eng.observe({"trial_id": "t", "seq": seq, "iteration": seq + 1, "metrics": metrics})


def warm_up(eng, n, stream=None):
    """n healthy iterations (of ``stream``, default ``healthy``), taking the checkpoints the engine asks for."""
    for s in range(n):
        if send(eng, s, (stream or healthy)(s)).checkpoint:
            eng.record_checkpoint("t", s, s + 1, f"/ckpt/{s}", {"lr": 3e-4})


def test_healthy_stream_no_findings_and_regular_checkpoints(engine):
    cps = []
    for s in range(40):
        v = send(engine, s, healthy(s))
        assert v.actions == [] and v.findings == [], v
        if v.checkpoint:
            cps.append(s)
            engine.record_checkpoint("t", s, s + 1, f"/ckpt/{s}", {"lr": 3e-4})
    assert cps == [s for s in range(40) if (s + 1) % 3 == 0]


def test_nan_is_critical_non_finite_in_the_same_iteration(engine):
    for s in range(6):
        send(engine, s, healthy(s))
    m = healthy(6)
    m["vf_loss"] = float("nan")
    v = send(engine, 6, m)
    nf = [f for f in v.findings if f["detector"] == "non_finite"]
    assert nf and nf[0]["severity"] == "critical" and nf[0]["iteration"] == 7 and nf[0]["metric"] == "vf_loss"


def test_divergence_rolls_back_then_escalates_to_stop(engine):
    warm_up(engine, 6)
    v = send(engine, 6, diverged())
    acts = [a["action"] for a in v.actions]
    assert acts == ["rollback", "reduce_lr"]
    rb = v.actions[0]["params"]
    assert rb["checkpoint"] == "/ckpt/5" and rb["hparams"]["lr"] == 3e-4
    applied = [{"id": v.actions[0]["id"], "ok": True, "verified": True, "after": {"lr": 3e-4}},
               {"id": v.actions[1]["id"], "ok": True, "after": {"lr": 3e-5}}]
    # the fix did not hold: trouble again after the rollback -> next rung, then stop
    v = send(engine, 7, diverged(), applied)
    assert v.actions == []  # cooldown: the iteration right after an action shows its effect
    v = send(engine, 8, diverged())
    v = send(engine, 9, diverged()) if not v.actions else v
    actions = [a["action"] for a in v.actions]
    assert actions in (["rollback"], ["stop_trial"], ["rollback", "reduce_lr"])
    for s in range(10, 16):
        v = send(engine, s, diverged())
        if v.stop:
            break
    assert v.stop, "repeated trouble after rollback must escalate to stop_trial"
    ivs = engine.store.interventions("t")
    assert ivs[0]["outcome"] == "ineffective" and ivs[0]["verified"] == 1
    assert ivs[1]["verified"] == 0  # the next report showed lr=5.0, not 3e-5
    assert engine.finish_trial("t", "stopped") == "stopped"


def test_effective_intervention_marks_trial_recovered(engine):
    warm_up(engine, 6)
    v = send(engine, 6, diverged())
    ids = [a["id"] for a in v.actions]
    applied = [{"id": ids[0], "ok": True, "verified": True, "after": {"lr": 3e-4}},
               {"id": ids[1], "ok": True, "after": {"lr": 3e-5}}]
    for s in range(7, 12):
        m = healthy(s - 2)
        m["lr"] = 3e-5
        v = send(engine, s, m, applied if s == 7 else None)
        assert not [f for f in v.findings if f["severity"] != "info"], v.findings
    ivs = engine.store.interventions("t")
    assert [i["outcome"] for i in ivs] == ["effective", "effective"]
    assert ivs[1]["verified"] == 1
    assert engine.finish_trial("t", "completed") == "recovered"
    rep = build_report(engine.store.path.rsplit("/", 1)[0])
    t = rep["trials"][0]
    assert t["status"] == "recovered" and len(t["interventions"]) == 2
    assert any(f["detector"] == "non_finite" and f["value"] is None for f in t["findings"])
    assert "rollback" in render_text(rep)


def test_replayed_reports_are_stored_once_and_state_survives_a_restart(engine, tmp_path):
    for s in range(5):
        send(engine, s, healthy(s))
    assert send(engine, 3, healthy(3)).duplicate
    assert len(engine.store.reports("t")) == 5
    # a new engine on the same store (the actor was restarted) picks up where it left off
    eng2 = Engine(engine.store, engine.settings)
    reg = eng2.register_trial("t", "r")
    assert reg["next_seq"] == 5
    assert eng2.observe({"trial_id": "t", "seq": 4, "metrics": healthy(4)}).duplicate
    assert not eng2.observe({"trial_id": "t", "seq": 5, "metrics": healthy(5)}).duplicate


def test_malformed_reports_do_not_crash(engine):
    for bad in [{}, {"trial_id": "t", "metrics": "nope"}, {"trial_id": "t", "seq": "x", "metrics": {"a": [1]}},
                {"trial_id": "t", "metrics": {"entropy": "inf", "x": None, 3: 4}}]:
        v = engine.observe(bad)
        assert isinstance(v.actions, list) and v.error is None


def _f(det, sev="critical"):
    return Finding(det, sev, None, None, "m")


def test_policy_intensity_limit_escalates():
    pol = EscalationPolicy(cooldown=0, max_interventions=3, intensity_window=10,
                           ladders={"kl_spike": [["raise_kl_coeff"]] * 10})
    st = PolicyState()
    got = [pol.decide(st, s, [_f("kl_spike", "warning")]).actions for s in range(4)]
    assert got[:3] == [["raise_kl_coeff"]] * 3 and got[3] == ["stop_trial"]


def test_policy_cooldown_info_and_ineffective_skip():
    pol = EscalationPolicy(cooldown=2)
    st = PolicyState()
    assert pol.decide(st, 0, [_f("plateau", "info")]) is None
    assert pol.decide(st, 0, [_f("gradient_explosion", "warning")]).actions == ["tighten_grad_clip"]
    assert pol.decide(st, 1, [_f("gradient_explosion", "warning")]) is None
    assert pol.decide(st, 2, [_f("gradient_explosion", "warning")]) is None
    st.ineffective.add("reduce_lr")
    # rung 2 is reduce_lr (ineffective: skipped), rung 3 rollback+reduce_lr -> rollback alone is skipped too
    assert pol.decide(st, 3, [_f("gradient_explosion", "warning")]).actions == ["restart_trial"]


def test_policy_worst_finding_first():
    pol = EscalationPolicy()
    d = pol.decide(PolicyState(), 0, [_f("entropy_collapse", "warning"), _f("non_finite", "critical")])
    assert d.finding.detector == "non_finite" and d.actions == ["rollback", "reduce_lr"]


def test_alert_only_ladders_never_escalate_to_stop():
    pol = EscalationPolicy(cooldown=0, max_interventions=100)
    st = PolicyState()
    for det in ("kl_controller_stuck", "advantage_anomaly", "straggler"):
        got = [pol.decide(st, s, [_f(det, "warning")]).actions for s in range(5)]
        assert got == [["alert"]] * 5, (det, got)


def test_checkpoint_keeps_the_lr_that_produced_its_healthy_updates(engine):
    """A schedule that just jumped shows the new lr in the checkpoint iteration's report before any update
    used it: rollback must restore the lr that trained healthily, not the one that is about to break it."""
    for s in range(6):
        m = healthy(s)
        m["lr"] = 5.0 if s == 5 else 3e-4
        v = send(engine, s, m)
        if v.checkpoint:
            engine.record_checkpoint("t", s, s + 1, f"/ckpt/{s}", {"lr": m["lr"]})
    v = send(engine, 6, diverged())
    rb = v.actions[0]
    assert rb["action"] == "rollback" and rb["params"]["checkpoint"] == "/ckpt/5"
    assert rb["params"]["hparams"]["lr"] == 3e-4


def test_batches_queue_quiet_reports_and_coalesce_trial_rows(tmp_path):
    """Under load: quiet reports go to SQLite in one executemany per batch, trial summary rows at most
    every FLUSH_S; both are in the store before the batch's verdicts return / the trial ends."""
    store = Store(tmp_path / "supervisor.db")
    store.upsert_run("r", "r", "run", "running")
    eng = Engine(store, SupervisorConfig(checkpoint_every=3, cooldown=1))
    for tid in ("a", "b"):
        eng.register_trial(tid, "r")
    eng.flush(force=True)
    for s in range(0, 12, 4):
        out = eng.observe_batch([{"trial_id": t, "seq": q, "iteration": q + 1, "metrics": healthy(q)}
                                 for q in range(s, s + 4) for t in ("a", "b")])
        assert len(out) == 8 and all(v.error is None for v in out)
    # every report is stored before its verdict went out (a reader on another connection sees them)
    reader = Store(tmp_path / "supervisor.db", readonly=True)
    assert [r["seq"] for r in reader.reports("a")] == list(range(12))
    assert reader.trial("a")["iterations"] < 12  # the summary row waits (batches came within FLUSH_S)
    eng.flush(force=True)
    row = reader.trial("a")
    assert row["iterations"] == 12 and row["last_seq"] == 11
    assert json.loads(row["final"])["episode_return_mean"] == healthy(11)["episode_return_mean"]
    # a batch that fails halfway writes nothing of it
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.record_iteration({"trial_id": "a", "iteration": 99, "metrics": {"x": 1.0}}, 99, [], [])
            raise RuntimeError("boom")
    eng.observe_batch([{"trial_id": "b", "seq": 12, "iteration": 13, "metrics": healthy(12)}])
    assert [r["seq"] for r in reader.reports("a")][-1] == 11  # nor in the next transaction
    assert eng.finish_trial("b", "completed") == "completed"
    assert reader.trial("b")["iterations"] == 13  # finishing a trial writes its row at once
    reader.close()
    store.close()


def test_actor_microbatches_concurrent_reports_and_measures_verdict_latency(tmp_path):
    import asyncio

    from actors.supervisor_actor import SupervisorActorImpl

    svc = SupervisorActorImpl()  # the actor's own class, in this process (no Ray needed)

    async def main():
        await svc.open_run("r", str(tmp_path), "r", "run")
        verdicts = await asyncio.gather(*(svc.report("r", {"trial_id": f"t{i}", "seq": 0, "iteration": 1,
                                                            "metrics": healthy(0)}) for i in range(40)))
        lat = svc.verdict_latency(reset=True)
        await svc.close_run("r", "completed")
        return verdicts, lat

    verdicts, lat = asyncio.run(main())
    svc.shutdown()
    assert len(verdicts) == 40 and all(v["seq"] == 0 and v["actions"] == [] for v in verdicts)
    assert lat["n"] == 40 and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert lat["reports_per_batch"] > 1  # concurrent reports shared batches
    # the engine thread's CPU is part of its judging time (which adds the fsyncs and waits for a core)
    assert 0 < lat["judging_cpu_ms_per_report"] <= lat["judging_ms_per_report"]
    assert svc.verdict_latency()["n"] == 0
    reader = Store(tmp_path / "supervisor.db", readonly=True)
    assert len(reader.trials()) == 40 and all(t["iterations"] == 1 for t in reader.trials())
    assert reader.runs()[0]["status"] == "completed"


def test_a_lost_answer_is_handed_out_again_once(engine, tmp_path):
    """The actor stored a report and its decisions, then died before answering: the trial replays the
    report after the restart and hears the undelivered actions from the duplicate's verdict; the client
    hands each action id to the trial once even if a late answer carried it too."""
    from actors.client import SupervisorClient

    warm_up(engine, 6)
    first = send(engine, 6, diverged())
    assert [a["action"] for a in first.actions] == ["rollback", "reduce_lr"]
    restarted = Engine(engine.store, engine.settings)  # the actor came back: state from the store
    restarted.register_trial("t", "r")
    replay = restarted.observe({"trial_id": "t", "seq": 6, "iteration": 7, "metrics": diverged()})
    assert replay.duplicate and [a["id"] for a in replay.actions] == [a["id"] for a in first.actions]
    assert replay.actions[0]["params"]["checkpoint"] == "/ckpt/5"
    client = SupervisorClient("r", {})
    got = client._once([dataclasses.replace(first, actions=list(first.actions)), replay])
    assert [len(v.actions) for v in got] == [2, 0]  # the late answer and the replay: each action once
    # once the trial says it applied them, a later replay hands out nothing
    applied = [{"id": a["id"], "ok": True, "after": {}} for a in first.actions]
    restarted.acknowledge("t", applied)
    again = restarted.observe({"trial_id": "t", "seq": 6, "metrics": diverged()})
    assert again.duplicate and again.actions == []


def _stuck(i):
    """A trial that never learns: the return stays at its first iterations' level."""
    m = healthy(0)
    m["episode_return_mean"] = 20.0 + 0.5 * math.sin(i)
    return m


def _applied(v):
    return [{"id": a["id"], "ok": True, "verified": True, "after": {"lr": 3e-4}} if a["action"] == "rollback"
            else {"id": a["id"], "ok": True, "after": {"lr": 1.5e-4}} for a in v.actions]


def _kl_far_too_large(eng, start, stream):
    """From ``start`` to iteration 16, ``stream`` with kl 5.0; the actions decided, until a stop."""
    acts = []
    for s in range(start, 16):
        m = stream(s)
        m["kl"] = 5.0
        v = send(eng, s, m)
        acts += [a["action"] for a in v.actions]
        if v.stop:
            break
    return acts, v


def test_ineffective_repair_without_learning_stops_at_once(engine):
    """Bad from the start: diverges at iteration 4 having never learned; the first repair (rollback +
    reduce_lr, applied) does not hold -> stopped right there, not after the ladder's second rollback."""
    warm_up(engine, 3, _stuck)
    v = send(engine, 3, diverged())
    assert [a["action"] for a in v.actions] == ["rollback", "reduce_lr"] and v.repairing
    m = diverged()
    m["lr"] = 1.5e-4  # the lower lr took; the numbers are still not finite
    v = send(engine, 4, m, _applied(v))
    assert [a["action"] for a in v.actions] == ["stop_trial"] and v.stop and not v.repairing
    reason = v.actions[0]["reason"]
    assert reason.startswith("cannot be saved: rollback for non_finite was ineffective") and "non-finite" in reason
    assert [i["outcome"] for i in engine.store.interventions("t")][:2] == ["ineffective", "ineffective"]


def test_return_at_its_starting_level_is_no_learning(engine):
    """Finite numbers, but the update is far too large from iteration 4 on and the return never left its
    start: the first repair (raise_kl_coeff) does not hold -> stopped, not after three more rungs."""
    warm_up(engine, 3, _stuck)
    acts, v = _kl_far_too_large(engine, 3, _stuck)
    assert acts == ["raise_kl_coeff", "stop_trial"], acts
    assert "never left the level it started at (20" in v.actions[0]["reason"]


def test_a_trial_that_learned_keeps_its_ladder(engine):
    """The same fault on a trial whose return had risen (20 -> 60): its ladder goes on, no stop."""
    warm_up(engine, 6)
    acts, v = _kl_far_too_large(engine, 6, healthy)
    # the stuck trial above was stopped once raise_kl_coeff proved ineffective; this one goes on
    assert acts == ["raise_kl_coeff"] and not v.stop, acts
    assert [i["outcome"] for i in engine.store.interventions("t")] == ["ineffective"]


def test_stop_unsalvageable_off_climbs_the_ladder(tmp_path):
    store = Store(tmp_path / "supervisor.db")
    store.upsert_run("r", "r", "run", "running")
    eng = Engine(store, SupervisorConfig(checkpoint_every=3, cooldown=1, stop_unsalvageable=False))
    eng.register_trial("t", "r")
    warm_up(eng, 3, _stuck)
    v = send(eng, 3, diverged())
    m = diverged()
    m["lr"] = 1.5e-4
    assert not send(eng, 4, m, _applied(v)).stop
    store.close()


def test_repairing_until_the_outcome_is_judged(engine):
    warm_up(engine, 6)
    v = send(engine, 6, diverged())
    assert v.repairing
    seen = []
    for s in range(7, 12):
        m = healthy(s - 2)
        m["lr"] = 1.5e-4
        seen.append(send(engine, s, m, _applied(v) if s == 7 else None).repairing)
    # inside the outcome window (3 iterations) the repair is pending; judged effective, it is over
    assert seen[:2] == [True, True] and seen[-1] is False
    assert [i["outcome"] for i in engine.store.interventions("t")] == ["effective", "effective"]


def test_a_collapsed_return_still_in_alarm_is_no_recovery(tmp_path):
    """The return fell back to its start and stays there; reward_collapse reports it once and stays in
    alarm (latched). A repair decided meanwhile (here by hand) must not be judged effective on quiet."""
    store = Store(tmp_path / "supervisor.db")
    store.upsert_run("r", "r", "run", "running")
    eng = Engine(store, SupervisorConfig(checkpoint_every=3, cooldown=1,
                                         ladders={"reward_collapse": [["alert"]]}))
    eng.register_trial("t", "r")
    warm_up(eng, 15)  # returns 20 -> ~80
    fell = None
    for s in range(15, 30):
        m = healthy(s)
        m["episode_return_mean"] = 20.0 + 0.3 * math.sin(s)
        v = send(eng, s, m)
        if fell is None and any(f["detector"] == "reward_collapse" for f in v.findings):
            fell = s
            assert eng.request_action("t", "reduce_lr")
    assert fell is not None
    ivs = [i for i in store.interventions("t") if i["action"] == "reduce_lr"]
    assert [i["outcome"] for i in ivs] == ["ineffective"], ivs
    store.close()


def test_a_rollback_settles_the_repairs_still_pending(engine):
    """raise_kl_coeff is pending (inside its outcome window) when a rollback goes out (here asked by hand).
    The rollback resets the detectors; the pending repair is judged on the alarms as they stood (kl still
    in alarm -> ineffective), not, 3 iterations later, on the silence after the reset."""
    warm_up(engine, 6)
    s, first = 6, None
    while first is None and s < 16:
        m = healthy(s)
        m["kl"] = 5.0
        if [a["action"] for a in send(engine, s, m).actions] == ["raise_kl_coeff"]:
            first = s
        s += 1
    assert first is not None and engine.request_action("t", "rollback")
    m = healthy(s)
    m["kl"] = 5.0
    assert [a["action"] for a in send(engine, s, m).actions] == ["rollback"]
    for k in range(s + 1, s + 5):  # healthy again after the rollback
        send(engine, k, healthy(k - 4))
    ivs = engine.store.interventions("t")
    assert ivs[0]["action"] == "raise_kl_coeff" and ivs[0]["outcome"] == "ineffective"
    assert ivs[0]["judged_seq"] == s == first + 1


def test_verdict_travels_as_a_dict_and_replays_fold_into_one(engine):
    """The actor sends verdicts as dicts; the trial reads them typed. Replayed reports' actions still apply."""
    from supervisor.verdict import Verdict

    warm_up(engine, 6)
    bad = send(engine, 6, diverged())
    wire = bad.to_dict()
    assert Verdict.from_dict(wire) == bad and Verdict.from_dict({**wire, "from_a_newer_actor": 1}) == bad
    assert Verdict.from_dict(None).reported is False  # no answer is no verdict
    assert Verdict.from_dict({"error": "disk full"}).reported is False
    later = send(engine, 7, healthy(7))
    both = Verdict.merged([bad, later])
    assert both.actions == bad.actions and both.seq == later.seq and both.health == later.health
    assert Verdict.merged([]) is None


def test_a_single_agent_trial_keeps_one_history_for_its_two_streams(engine):
    """Its own stream sees what its module sees: one history, appended once a report, still one after a
    checkpoint and a rollback, and two once the trial turns out multi-agent (each then sees its own view)."""
    state = engine.trials["t"]
    own, module = state.streams[None], state.streams["default_policy"]
    warm_up(engine, 6)
    assert own.history is module.history and own.history.iterations == 6
    assert own.history_at_checkpoint is module.history_at_checkpoint is not None
    assert own.history.values("kl_coeff").tolist() == [0.2] * 6
    v = send(engine, 6, diverged())
    assert "rollback" in [a["action"] for a in v.actions]
    assert own.history is module.history and own.history.iterations == 6  # back at the checkpoint (seq 5)
    send(engine, 7, {**healthy(7), "modules/p1/entropy": 0.5})
    assert state.multi and own.history is not module.history
    assert own.history_at_checkpoint is not module.history_at_checkpoint
    assert own.history.iterations == module.history.iterations == 7


def test_detectors_are_not_called_on_reports_without_their_keys():
    from supervisor.detectors import Detector, DetectorSuite
    from supervisor.history import History

    class Counting(Detector):
        name = "counting"
        called_with = ("alpha",)

        def __init__(self, **options):
            super().__init__(**options)
            self.calls = 0

        def __call__(self, iteration, metrics, history):
            self.calls += 1
            return []

    det = Counting()
    suite = DetectorSuite([det])
    for i, metrics in enumerate([{"kl": 0.1}, {"kl": 0.1, "alpha": 0.2}, {"kl": 0.1}, {"alpha": math.nan}]):
        suite.observe(i, metrics, History())
    assert det.calls == 2
