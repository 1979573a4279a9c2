"""Evaluation-aware pieces without training: the metric, the stop key, the detector on synthetic streams."""

from supervisor.config import StopConfig
from supervisor.detectors import build_detectors
from supervisor.detectors.generalization_gap import GeneralizationGap
from supervisor.history import History
from supervisor.metrics import normalize_result


def result(it, train, ev=None):
    r = {"training_iteration": it, "env_runners": {"episode_return_mean": train, "num_episodes": 5}}
    if ev is not None:
        r["evaluation"] = {"env_runners": {"episode_return_mean": ev, "num_episodes": 10}}
    return r


def test_eval_return_is_read_only_on_evaluation_iterations():
    assert normalize_result(result(4, 50.0, 40.0), "t", eval_interval=2)["metrics"]["eval_return_mean"] == 40.0
    # RLlib repeats the last evaluation in later results: not a new evaluation
    assert "eval_return_mean" not in normalize_result(result(5, 50.0, 40.0), "t", eval_interval=2)["metrics"]
    assert normalize_result(result(5, 50.0, 40.0), "t")["metrics"]["eval_return_mean"] == 40.0
    assert "eval_return_mean" not in normalize_result(result(4, 50.0, float("nan")), "t", eval_interval=2)["metrics"]


def test_stop_on_the_evaluation_return():
    from actors.tune.stopper import StopRule

    rule = StopRule(StopConfig(eval_return_mean=100.0))
    assert rule.reason(result(2, 500.0, 90.0)) is None  # the training return does not count
    assert rule.reason(result(4, 50.0, 120.0)) == "eval_return_mean"


def run(det, evals, trains):
    h, out = History(128), []
    for it, (tr, ev) in enumerate(zip(trains, evals), start=1):
        m = {"episode_return_mean": tr}
        if ev is not None:
            m["eval_return_mean"] = ev
        out += [(it, f.severity) for f in det(it, m, h)]
        h.append(m)
    return out


def test_gap_fires_when_evaluation_falls_while_training_rises():
    trains = [20.0 + 10 * i for i in range(20)]
    evals = [None if i % 2 == 0 else (60.0 if i < 8 else 60.0 - 8 * (i - 7)) for i in range(20)]
    found = run(GeneralizationGap(), evals, trains)
    assert found and all(s == "warning" for _, s in found) and found[0][0] % 2 == 0


def test_gap_is_silent_when_both_rise_or_both_fall_or_there_is_no_evaluation():
    trains = [20.0 + 10 * i for i in range(20)]
    rising = [None if i % 2 == 0 else 20.0 + 9 * i + (3 if i % 4 == 1 else -3) for i in range(20)]
    assert run(GeneralizationGap(), rising, trains) == []
    falling_train = [200.0 - 10 * i for i in range(20)]
    falling_eval = [None if i % 2 == 0 else 200.0 - 10 * i for i in range(20)]
    assert run(GeneralizationGap(), falling_eval, falling_train) == []  # a collapse, not a gap
    assert run(GeneralizationGap(), [None] * 20, trains) == []
    assert "generalization_gap" in [d.name for d in build_detectors()]
