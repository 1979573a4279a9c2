"""SupervisedASHA: Tune's ASHA, with its rung decision deferred while the supervisor repairs a trial."""

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from actors.tune.scheduler import SupervisedASHA

KW = dict(time_attr="training_iteration", metric="r", mode="max", max_t=18, grace_period=2, reduction_factor=3)


def _rung_of_three(sched):
    """Three trials recorded at the first rung (iteration 2) with returns 100, 101, 102; a fourth added."""
    trials = [Trial("PPO", stub=True, trial_id=f"t{i}") for i in range(4)]
    for t in trials:
        sched.on_trial_add(None, t)
    for i, t in enumerate(trials[:3]):
        assert sched.on_trial_result(None, t, {"training_iteration": 2, "r": 100.0 + i}) == TrialScheduler.CONTINUE
    return trials[3]


def test_plain_asha_stops_a_trial_for_the_dip_a_repair_causes():
    sched = ASHAScheduler(**KW)
    t = _rung_of_three(sched)
    assert sched.on_trial_result(None, t, {"training_iteration": 2, "r": 5.0,
                                           "supervisor": {"repairing": True}}) == TrialScheduler.STOP


@pytest.mark.parametrize("after, verdict", [(150.0, TrialScheduler.CONTINUE), (6.0, TrialScheduler.STOP)])
def test_the_rung_decision_waits_for_the_repairs_outcome(after, verdict):
    """While repairing: CONTINUE, nothing recorded. The first result after it is judged at the rung the
    trial reached: repaired and ahead -> continues; still behind its peers -> stopped as usual."""
    sched = SupervisedASHA(**KW)
    t = _rung_of_three(sched)
    for it, r in ((2, 5.0), (3, 6.0)):
        assert sched.on_trial_result(None, t, {"training_iteration": it, "r": r,
                                               "supervisor": {"repairing": True}}) == TrialScheduler.CONTINUE
    assert sched.deferred == {t.trial_id: 2}
    assert sched.on_trial_result(None, t, {"training_iteration": 4, "r": after,
                                           "supervisor": {"repairing": False}}) == verdict


def test_without_a_supervisor_it_is_asha():
    sched = SupervisedASHA(**KW)
    t = _rung_of_three(sched)
    assert sched.on_trial_result(None, t, {"training_iteration": 2, "r": 5.0}) == TrialScheduler.STOP
    assert sched.deferred == {}


@pytest.mark.parametrize("enabled, cls", [(True, SupervisedASHA), (False, ASHAScheduler)])
def test_a_sweep_files_asha_is_the_supervised_one_when_supervised(enabled, cls):
    from supervisor.config import Sweep

    from actors.tune import sweep_tune_config

    sweep = Sweep.model_validate({"name": "s", "env": "CartPole-v1", "stop": {"iterations": 16},
                                  "scheduler": "asha", "supervisor": {"enabled": enabled}})
    sched = sweep_tune_config(sweep, 2).scheduler
    assert type(sched) is cls and sched._max_t == 16 and sched._brackets[0]._rungs[-1][0] == 2  # grace period
