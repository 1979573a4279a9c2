"""APPO's/IMPALA's learner results folded into one per driver call (actors/learner_results.py), on RLlib's real
MetricsLogger (no Ray cluster): the same figures as taking every result in turn, the newest values, nothing lost."""

from __future__ import annotations

import queue
import threading

import pytest

pytest.importorskip("ray.rllib")

from ray.rllib.utils.metrics.metrics_logger import MetricsLogger  # noqa: E402

from actors.learner_results import NewestResults, _install  # noqa: E402


def _update(leaf: MetricsLogger, i: int) -> dict:
    """One learner update's result as IMPALA's learner thread queues it (``metrics.reduce()``)."""
    leaf.log_value(("default_policy", "curr_entropy_coeff"), 0.01 if i < 4 else 0.02, window=1)
    leaf.log_value(("default_policy", "total_loss"), float(i), reduce="mean", window=5)
    leaf.log_value(("__all_modules__", "num_env_steps_trained"), 250, reduce="sum")
    leaf.log_value(("__all_modules__", "num_env_steps_trained_lifetime"), 250, reduce="lifetime_sum",
                   with_throughput=True)
    return leaf.reduce()


def _compiled(root: MetricsLogger) -> dict:
    out = root.compile()["learners"]
    return {"coeff": out["default_policy"]["curr_entropy_coeff"], "loss": out["default_policy"]["total_loss"],
            "trained": out["__all_modules__"]["num_env_steps_trained"],
            "lifetime": out["__all_modules__"]["num_env_steps_trained_lifetime"]}


def test_folded_results_read_as_every_result_taken_in_turn():
    folded_leaf, every_leaf = MetricsLogger(), MetricsLogger()
    folded, every = MetricsLogger(root=True), MetricsLogger(root=True)
    q = NewestResults()
    seen = []
    for it in range(3):  # 3 driver calls, 3 updates queued before each (a backlog RLlib 2.60 would keep)
        for j in range(3):
            i = 3 * it + j
            q.put(_update(folded_leaf, i))
            every.aggregate([_update(every_leaf, i)], key="learners")
        assert q.qsize() == 1
        folded.aggregate([q.get(timeout=1.0)], key="learners")
        assert q.empty()
        a, b = _compiled(folded), _compiled(every)
        assert a == pytest.approx(b), (it, a, b)
        seen.append(a)
    # the newest call shows only updates after the change (0.02 from update 4 on); nothing counted twice or lost
    assert seen[-1]["coeff"] == pytest.approx(0.02) and seen[0]["coeff"] == pytest.approx(0.01)
    assert seen[-1]["lifetime"] == 9 * 250 and seen[-1]["trained"] == 3 * 250


def test_get_waits_for_a_result_or_says_empty():
    q = NewestResults()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    leaf = MetricsLogger()
    threading.Timer(0.05, lambda: q.put(_update(leaf, 0))).start()
    assert "default_policy" in q.get(timeout=30.0)  # a blocking get returns once the learner thread put one


class _Thread:
    def __init__(self, out):
        self._out_queue = out


class _Learner:
    """The two attributes IMPALA's learner has for it (``_learner_thread_out_queue``, its thread's ``_out_queue``)."""

    def __init__(self):
        self._learner_thread_out_queue = queue.Queue()
        self._learner_thread = _Thread(self._learner_thread_out_queue)


def test_install_takes_over_the_queue_and_what_was_in_it():
    learner, leaf = _Learner(), MetricsLogger()
    learner._learner_thread_out_queue.put(_update(leaf, 0))
    learner._learner_thread_out_queue.put(_update(leaf, 1))
    assert _install(learner) and _install(learner)  # twice: the same
    q = learner._learner_thread_out_queue
    assert isinstance(q, NewestResults) and learner._learner_thread._out_queue is q
    root = MetricsLogger(root=True)
    root.aggregate([q.get_nowait()], key="learners")
    assert _compiled(root)["lifetime"] == 500
    assert not _install(object())  # not APPO/IMPALA: left alone
