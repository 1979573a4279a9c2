"""APPO's and IMPALA's learner results kept current: a report shows the learner as it is, not as it was.

Their learner trains in its own thread (``_LearnerThread``) and hands the driver a reduced result per
update through an unbounded queue (``learner._learner_thread_out_queue``); ``Learner.update`` takes one of
them per batch the driver hands over. APPO's circular buffer trains each batch
``circular_buffer_iterations_per_batch`` times (2 by default), so in RLlib 2.60 that queue grows by about one
result per batch for the whole run and the learner values a report carries trail the learner by a growing
number of updates. Measured on CartPole (2 batches an iteration): the queue held 2 more results after every
iteration, and a change applied after iteration N first showed at about iteration 2N+1, so no fixed
``report_lag`` covers it (older RLlib took every queued result and kept the newest).

:func:`keep_current` puts :class:`NewestResults` in that queue's place on every learner (local or remote):
each result the learner thread queues is folded, with RLlib's own aggregation (``MetricsLogger.aggregate``,
as the algorithm itself folds learner results: counters add up, values are merged over the updates), into
one pending result, and the driver's next ``get`` takes all of it. So every update is still counted once
(RLlib 2.60 reported about half of APPO's trained env steps: the rest sat in the queue), and what an
iteration reports is the learner's since the last report. Measured (same CartPole run): a change shows in
the first or second report after it, and stays at that lag for the whole run.
"""

from __future__ import annotations

import logging
import queue
import threading

log = logging.getLogger(__name__)


class NewestResults:
    """Stands in for the learner thread's out-queue (the calls RLlib makes on it: ``put``, ``put_nowait``,
    ``get``, ``get_nowait``, ``qsize``, ``empty``): what was put since the last ``get`` is one result."""

    def __init__(self):
        self._cond = threading.Condition()
        self._pending = None  # MetricsLogger folding the results put since the last get
        self._count = 0

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

        with self._cond:
            if self._pending is None:
                # a root logger: RLlib 2.60 asserts on an intermediate one's throughput stats; as each is
                # used for one get only, its lifetime sums are still the updates' own (what reduce() hands on)
                self._pending = MetricsLogger(root=True)
            self._pending.aggregate([item])
            self._count += 1
            self._cond.notify_all()

    def put_nowait(self, item) -> None:
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: float | None = None):
        with self._cond:
            if block and not self._count:
                self._cond.wait_for(lambda: self._count > 0, timeout=timeout)
            if not self._count:
                raise queue.Empty
            pending, self._pending, self._count = self._pending, None, 0
            return pending.reduce()

    def get_nowait(self):
        return self.get(block=False)

    def qsize(self) -> int:
        with self._cond:
            return 1 if self._count else 0

    def empty(self) -> bool:
        return self.qsize() == 0


def _install(learner) -> bool:
    """On the learner (its own process): NewestResults in place of its thread's out-queue; False if it has
    none (not APPO/IMPALA, or an RLlib that keeps no backlog)."""
    from actors import compat

    old = compat.learner_results_queue(learner)
    if isinstance(old, NewestResults):
        return True
    if old is None:
        return False
    new = NewestResults()
    compat.set_learner_results_queue(learner, new)
    while True:  # anything queued before the swap (nothing, at algorithm init)
        try:
            new.put(old.get_nowait())
        except queue.Empty:
            return True


def _on_every_learner(algorithm, fn, what: str) -> bool:
    """``fn`` on every learner of ``algorithm`` (local or remote); True where it took everywhere. Never raises."""
    from actors.appliers.rllib.remote import foreach_learner

    if getattr(algorithm, "learner_group", None) is None:
        return False
    try:  # a remote learner imports this module and actors.compat, as it imports the supervised learner
        return all(foreach_learner(algorithm, fn))
    except Exception:  # noqa: BLE001
        log.warning("could not %s %s's learner", what, type(algorithm).__name__, exc_info=True)
        return False


def keep_current(algorithm) -> bool:
    """Install :class:`NewestResults` on every learner of ``algorithm``; True where it took (APPO, IMPALA).
    Never raises: without it the trial trains on, its reports trailing its learner as RLlib 2.60 has it."""
    return _on_every_learner(algorithm, _install, "keep the results current of")


def guard_updates(algorithm) -> bool:
    """On every learner of ``algorithm`` (APPO, IMPALA), before its first update: a lock around its thread's
    updates, which a rollback takes around its restore (``compat.guard_learner_thread``); True where it took.
    Never raises: without it a rollback may land mid-update, as in RLlib itself."""
    from actors import compat

    return _on_every_learner(algorithm, compat.guard_learner_thread, "guard the updates of")


def _thread_crash(learner) -> dict | None:
    """On the learner (its own process): the crash report of its dead learner thread, or None while it runs."""
    from actors import compat

    report = compat.learner_thread_death(learner)
    if report is None:
        return None
    report["source"] = "learner_thread"
    try:  # a remote learner's node, not the driver's
        import ray

        report["node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001
        pass
    return report


def learner_thread_crash(algorithm) -> dict | None:
    """The crash report of the first learner of ``algorithm`` (APPO, IMPALA; local or remote) whose learner
    thread died, or None. RLlib lets the algorithm sample on while that learner learns nothing (and, on the
    driver's learner, its next update waited forever: ``compat.guard_learner_thread`` wakes it). Never raises:
    a learner that cannot be asked is not a death (a dead learner actor is ``worker_fault``'s)."""
    from actors.appliers.rllib.remote import foreach_learner

    if getattr(algorithm, "learner_group", None) is None:
        return None
    try:
        return next((r for r in foreach_learner(algorithm, _thread_crash) if r), None)
    except Exception:  # noqa: BLE001
        log.warning("could not ask %s's learners about their learner threads", type(algorithm).__name__,
                    exc_info=True)
        return None
