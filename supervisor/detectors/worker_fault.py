"""worker_fault: RLlib's env-runner fault tolerance had to step in (restarts, dropped or missing runners), or a
remote learner died."""

from __future__ import annotations

from pydantic import Field

from supervisor.detectors._common import Alarm, fmt, value_of
from supervisor.detectors.base import Detector
from supervisor.detectors.options import Count, DetectorOptions, Number, at_least, positive
from supervisor.findings import Finding


class WorkerFaultOptions(DetectorOptions):
    critical_fraction: Number = Field(0.5, ge=0, lt=1)
    persist: Count = at_least(1, 3)
    exit: Count = at_least(1, 3)
    repeat: Count = positive(10)


class WorkerFault(Detector):
    """Flag env-runner faults from RLlib's fault-tolerance figures.

    Reads the normalized metrics ``healthy_env_runners`` (remote env runners
    RLlib counts healthy now), ``env_runner_restarts`` (restarts so far) and
    ``env_runners_dropped`` (sample requests lost to dead or timed-out runners
    so far). Rule, each iteration:

    * restarts: ``env_runner_restarts`` rose since the previous iteration
      (or is above 0 on a trial's first report): warning;
    * dropped: ``env_runners_dropped`` rose (a sample request that did not
      answer within RLlib's timeout: the iteration trained without it): a
      warning when a runner restarted or the fleet is short this iteration,
      or when requests were dropped on ``persist`` consecutive iterations;
      otherwise ``info``: one slow answer from a fleet that is whole is load
      (a busy machine), not a fault. The count of iterations in a row starts
      over after a rollback (the drops since the checkpoint arrive as one
      rise); a report without the counter leaves it as it is;
    * missing: ``healthy_env_runners`` is below the most this trial has had
      (its expected fleet): warning, critical when none is left, or when at
      most ``critical_fraction`` of the fleet is;
    * learner lost: ``healthy_learners`` is below ``learners`` (remote learner
      actors, ``num_learners >= 2``: RLlib's actor manager marked one dead):
      warning, critical at most ``critical_fraction`` of them (DDP cannot
      update without every learner; the supervisor's changes still reach the
      live ones).

    A counter that goes down (a restarted trial starts counting again) is a
    new baseline, not a fault. "missing" is a state and is latched (on at
    once, off after ``exit`` clean iterations, re-reported every ``repeat``
    iterations or when it worsens); restarts and drops are events, reported
    each iteration they happen. No warm-up: the figures are counts.

    Args:
        critical_fraction: healthy share of the fleet at or below which a
            shortfall is critical. Default 0.5.
        persist: consecutive iterations with dropped requests (the fleet
            whole, no restart) before they are a warning. Default 3.
        exit: iterations without a shortfall before it clears. Default 3.
        repeat: iterations between reports of a lasting shortfall. Default 10.
    """

    name = "worker_fault"
    called_with = ("healthy_env_runners", "env_runner_restarts", "env_runners_dropped", "learners",
                   "healthy_learners")
    scope = "trial"
    needs = (("healthy_env_runners", "env_runner_restarts", "env_runners_dropped"),)
    metrics = ("healthy_env_runners", "env_runner_restarts", "env_runners_dropped", "healthy_learners", "learners")
    Options = WorkerFaultOptions

    def __init__(self, **options):
        super().__init__(**options)
        self._latch_args = (1, self.exit, self.repeat)
        self.reset()

    def reset(self) -> None:
        self._alarm = Alarm(*self._latch_args)
        self._learner_alarm = Alarm(*self._latch_args)
        self._dropping = 0  # consecutive iterations with dropped requests

    @staticmethod
    def _previous(history, metric: str) -> float | None:
        return history.last(metric)

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        healthy = value_of(metrics, "healthy_env_runners")
        restarts = value_of(metrics, "env_runner_restarts")
        dropped = value_of(metrics, "env_runners_dropped")
        learners, live = value_of(metrics, "learners"), value_of(metrics, "healthy_learners")
        out: list[Finding] = []
        if learners is not None and live is not None:
            lost = live < learners
            sev = "critical" if lost and live <= self.critical_fraction * learners else "warning"
            if self._learner_alarm.update(lost, sev):
                out.append(self.finding(
                    iteration, sev, "healthy_learners", live,
                    f"worker_fault: {fmt(live)} of {fmt(learners)} learners alive; a learner actor died (its "
                    "updates stop; changes still reach the others)", learners, learners=learners))
        if healthy is None and restarts is None and dropped is None:
            return out
        restarted = short = False
        if restarts is not None:
            prev = self._previous(history, "env_runner_restarts")
            new = restarts - (prev if prev is not None and prev <= restarts else 0.0)
            if new > 0:
                restarted = True
                out.append(self.finding(
                    iteration, "warning", "env_runner_restarts", restarts,
                    f"worker_fault: {fmt(new)} env runner restart(s) this iteration ({fmt(restarts)} so far); "
                    "RLlib replaced crashed env runners", prev if prev is not None else 0.0, new=new))
        if healthy is not None:
            seen = history.values("healthy_env_runners")
            fleet = max(healthy, max(seen)) if len(seen) else healthy
            short = healthy < fleet
        if dropped is not None:
            prev = self._previous(history, "env_runners_dropped")
            if prev is not None and dropped > prev:
                self._dropping += 1
                held = self._dropping >= self.persist
                if restarted or short or held:
                    sev, why = "warning", ("runners died or timed out while sampling" if not held else
                                           f"requests dropped on {self._dropping} iterations in a row: runners "
                                           "too slow or stuck, every iteration trains on part of its samples")
                else:
                    sev, why = "info", ("a runner did not answer in time; every runner is healthy and none "
                                        "restarted: load, a warning if it happens on "
                                        f"{self.persist} iterations in a row")
                out.append(self.finding(
                    iteration, sev, "env_runners_dropped", dropped,
                    f"worker_fault: {fmt(dropped - prev)} env runner request(s) dropped this iteration "
                    f"({fmt(dropped)} so far): {why}", prev, new=dropped - prev, consecutive=self._dropping))
            else:
                self._dropping = 0
        if healthy is not None:
            sev = "warning"
            if short and (healthy <= 0 or healthy <= self.critical_fraction * fleet):
                sev = "critical"
            if self._alarm.update(short, sev):
                out.append(self.finding(
                    iteration, sev, "healthy_env_runners", healthy,
                    f"worker_fault: {fmt(healthy)} of {fmt(fleet)} env runners healthy "
                    f"(critical at <= {fmt(self.critical_fraction * fleet)} or none)", fleet, fleet=fleet))
        return out
