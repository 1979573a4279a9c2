"""policy_lag on synthetic streams shaped like the measured runs (benchmarks/results/policy_lag.json): healthy
APPO ~5.6 and IMPALA ~3 updates of lag, a weight sync lost at a known iteration after which the lag grows by the
learner's updates per iteration, and configs whose lag is reported only every few iterations. Its ladder on
the engine: sync_weights first, never a stop."""

from __future__ import annotations

import numpy as np
import pytest

from supervisor import actions
from supervisor.config import SupervisorConfig
from supervisor.detectors import build_detectors
from supervisor.detectors.policy_lag import PolicyLag
from supervisor.engine import Engine
from supervisor.findings import Finding
from supervisor.history import History
from supervisor.policy import EscalationPolicy, PolicyState
from supervisor.store import Store

APPO = {"algorithm": "APPO", "lag_bound": 8.0}  # circular_buffer_num_batches 8, broadcast_interval 1
IMPALA = {"algorithm": "IMPALA", "lag_bound": 3.0}  # learner_queue_size 3


def lag_stream(n, healthy, onset=None, per_iteration=2.0, every=1, seed=0):
    """``policy_lag`` per iteration: ``healthy`` +- 0.15 (a warm-up from 1 over 3 iterations); from ``onset``
    the sync is lost and the lag grows by ``per_iteration`` updates; only every ``every``-th iteration reports."""
    rng = np.random.default_rng(seed)
    out, lag = [], healthy
    for i in range(n):
        base = min(healthy, 1.0 + i * healthy / 3)
        if onset is not None and i >= onset:
            lag += per_iteration
            base = lag
        m = {"episode_return_mean": 20.0 + i}
        if i % every == every - 1:
            m["policy_lag"] = float(base + rng.normal(0, 0.15))
        out.append(m)
    return out


def run(priors, stream, **options):
    suite = build_detectors({"policy_lag": options} if options else None, priors=priors)
    suite.catch_errors = False
    (det,) = [d for d in suite if d.name == "policy_lag"]
    hist = History(256)
    out = []
    for i, m in enumerate(stream):
        out += [(i, f) for f in det(i, m, hist)]
        hist.append(m)
    return out


@pytest.mark.parametrize("priors,healthy", [(APPO, 5.6), (IMPALA, 3.0), ({"algorithm": "APPO"}, 7.2)])
def test_healthy_lag_never_fires(priors, healthy):
    for seed in range(20):
        assert run(priors, lag_stream(200, healthy, seed=seed)) == []


def test_a_lost_sync_is_flagged_when_the_lag_passes_its_level_twice():
    # APPO: level max(8, 1.5 x 8) = 12; from onset 40 the lag is 5.6 + 2 (k + 1) at 40 + k: past 12 at 43
    found = run(APPO, lag_stream(80, 5.6, onset=40, seed=1))
    (first_i, first), *rest = found
    assert first.detector == "policy_lag" and first.severity == "warning" and first.threshold == 12.0
    assert first_i == 44  # lag 13.6 (i=43), 15.6 (i=44): the second report past 12
    assert "weight sync" in first.message and first.details["bound"] == 8.0
    # critical at 5 x 12 = 60, at once when reached (61.6 at 40 + 27)
    crit = [i for i, f in rest if f.severity == "critical"]
    assert crit and crit[0] == 67
    # IMPALA: level max(8, 4.5) = 8; 3 + 2 (k + 1) past 8 at 42, the second report at 43
    (i, f), *_ = run(IMPALA, lag_stream(80, 3.0, onset=40, seed=2))
    assert i == 43 and f.threshold == 8.0


def test_reports_without_the_lag_neither_trigger_nor_clear():
    # broadcast_interval 8 at 4 updates an iteration: the learner's values come every second iteration
    bound = {"algorithm": "APPO", "lag_bound": 8.0 + 8 - 1}
    assert run(bound, lag_stream(100, 8.0, every=2)) == []
    found = run(bound, lag_stream(100, 8.0, onset=50, per_iteration=3.0, every=2))
    (i, f), *_ = found
    assert f.threshold == 22.5 and i % 2 == 1 and i > 50  # two reports carrying it past 22.5


def test_a_lag_that_keeps_growing_in_alarm_is_reported_again_each_level_it_grows():
    # APPO, level 12, +2.5 an iteration from 40: first report at 43 (15.6), then once past 15.6 + 12 (28.1 at 48),
    # 28.1 + 12 (40.6 at 53), 40.6 + 12 (53.1 at 58); `repeat` (the periodic re-report) out of the way
    found = run(APPO, lag_stream(60, 5.6, onset=40, per_iteration=2.5, seed=1), repeat=100)
    assert [i for i, _ in found] == [43, 48, 53, 58]
    assert [f.details["growing"] for _, f in found] == [False, True, True, True]
    assert "still growing, from 15.46 at its last report" in found[1][1].message  # 15.6 + noise
    # a lag that stays high but flat is reported once (then every `repeat` reports), not as growing
    flat = [{"policy_lag": 20.0 + 0.1 * (i % 2)} for i in range(12)]
    assert [(i, f.details["growing"]) for i, f in run(APPO, flat)] == [(1, False), (11, False)]


def test_options_and_bounds():
    det = PolicyLag(ratio=2.0, min_lag=4.0)
    det.priors = build_detectors(priors=IMPALA)[0].priors
    det.reset()
    assert det._level == 6.0  # 2 x 3
    with pytest.raises(ValueError, match="ratio must be > 1"):
        PolicyLag(ratio=1.0)


def test_its_ladder_pushes_the_weights_then_restarts_and_never_stops(tmp_path):
    pol = EscalationPolicy(cooldown=0)
    st = PolicyState()
    f = Finding("policy_lag", "warning", "policy_lag", 20.0, "lag")
    steps = [pol.decide(st, i, [f], algorithm="APPO").actions for i in range(4)]
    assert steps == [["sync_weights"], ["restart_trial"], ["alert"], ["alert"]]
    assert not pol.may_stop("policy_lag", "APPO")
    spec = actions.get("sync_weights")
    assert not spec.retry_if_ineffective and spec.counts_toward_limit and spec.manual
    # on the engine: the warning acts (sync_weights), the trial's report of the push is taken; the lag keeps
    # growing (the sync stays lost), the push is judged ineffective and the ladder climbs to restart_trial
    store = Store(tmp_path / "supervisor.db")
    store.upsert_run("r", "r", "run", "running")
    eng = Engine(store, SupervisorConfig(cooldown=1))
    eng.register_trial("t", "r", config={"priors": APPO})
    acted = []
    for i, m in enumerate(lag_stream(50, 5.6, onset=30, seed=3)):
        v = eng.observe({"trial_id": "t", "seq": i, "iteration": i + 1, "metrics": m})
        for a in v.actions:
            acted.append((i, a["action"]))
            eng.acknowledge("t", [{"id": a["id"], "action": a["action"], "ok": True, "verified": True}])
    # lag 15.6 at 34; 27.6 (15.6 + the level of 12) at 40: still growing
    assert acted[:2] == [(34, "sync_weights"), (40, "restart_trial")] and all(a != "stop_trial" for _, a in acted)
    (iv, restart, *_) = store.interventions("t")
    assert iv["detector"] == "policy_lag" and iv["verified"] == 1
    assert iv["outcome"] == "ineffective" and iv["judged_seq"] == 40
    assert restart["action"] == "restart_trial" and "still growing" in restart["reason"]
    store.close()


def test_an_applier_without_the_operation_records_it_as_not_applied():
    class NoSync:
        def hparams(self):
            return {}

    e = actions.apply(NoSync(), {"id": 1, "action": "sync_weights"})
    assert e["ok"] is False and "sync_weights" in e["error"]
