"""metrics_missing: a metric a built detector needs never arrived, so that detector is blind."""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from pydantic import Field

from supervisor.detectors.base import Detector
from supervisor.detectors.options import Count, DetectorOptions
from supervisor.findings import Finding
from supervisor.metrics import DERIVED, LEARNER_METRICS, RESULT_PATHS

_LEARNER = frozenset(LEARNER_METRICS)


class MetricsMissingOptions(DetectorOptions):
    after: Count | None = Field(None, gt=0)


class MetricsMissing(Detector):
    """Warn once when a metric that one of the trial's detectors needs has not arrived in time.

    A detector whose metric never comes is silent, and silence reads as
    healthy: a result key renamed by a Ray upgrade, a config that turns a
    statistic off. Each detector declares the metrics it needs
    (``Detector.needs``, groups of alternatives); the algorithm table
    (:func:`supervisor.algorithms.reported`) says which of them the trial's
    writer reports under its config and from when. A need is expected only
    when its writer is known to report it: today the supervisor's RLlib
    callback (``Priors.reporter == "rllib"``), for PPO, APPO, IMPALA, DQN and
    SAC. The Python API, the SB3/HF integrations and ``supervise scan`` report
    what their user or log holds, so nothing is expected of them and this
    detector stays silent there.

    Rule: a need is due ``after`` iterations (default: the algorithm's
    ``metrics_by``) after the clock of its metrics starts: the trial's first
    report; for the learner's values the first report with ``learning_starts``
    env steps sampled (or a learner value): an off-policy learner's first
    update, and for APPO/IMPALA the first time their learner hands back its
    results, once every ``broadcast_interval`` updates (RLlib 2.60); for
    episode returns the first report that finished an episode; for evaluation
    returns the first that finished an evaluation episode. A due need none of whose
    metrics has arrived (NaN counts as arrived: it is evidence) is missing.
    The needs found missing at one iteration make one warning, which names
    the keys (with RLlib's result path) and the detectors left blind; no need
    is judged twice, and a rollback does not judge again. It records only:
    no ladder, never an action (``supervisor.policy.RECORD_ONLY``).

    Args:
        after: iterations after a clock starts by which its metrics must have arrived. Default: the
            algorithm's ``metrics_by`` (supervisor/algorithms.py).
    """

    name = "metrics_missing"
    scope = "every"  # each stream's own suite (a policy's, the trial's): it watches the detectors beside it
    Options = MetricsMissingOptions

    def __init__(self, **options):
        super().__init__(**options)
        self._pending: list[tuple[frozenset, frozenset, tuple[str, ...], list[str]]] = []
        self._started: dict[str, int] = {}
        self._n = 0
        self._by = self.after or 3
        self._learning_starts = 0.0

    def watch(self, detectors, algorithm: str | None) -> None:
        """Expect what the suite's ``detectors`` need and the trial's writer reports (``self.priors`` must be
        set first)."""
        from supervisor import algorithms

        spec = algorithms.get(algorithm)
        self._pending = []
        if spec is None or self.priors.reporter is None:
            return
        self._by = self.after or spec.metrics_by
        self._learning_starts = float(self.priors.learning_starts if self.priors.learning_starts is not None
                                      else spec.learning_starts)
        by_group: dict[tuple[str, ...], list[str]] = {}
        for det in detectors:
            if det is self:
                continue
            for group in det.needed():
                by_group.setdefault(tuple(group), []).append(det.name)
        for group, names in by_group.items():
            clocks = {m: algorithms.reported(m, algorithm, self.priors) for m in group}
            expected = tuple(m for m in group if clocks[m] is not None)
            if expected:  # else the config legitimately has none of them: the detector idles, it is not blind
                self._pending.append((frozenset(group), frozenset(clocks[m] for m in expected), expected, names))

    def reset(self) -> None:
        """Nothing to forget: a need is judged once per trial, and a rollback does not bring it back."""

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        if not self._pending:
            return []
        self._n += 1
        if self._n == 1 and history.iterations:
            self._pending = []  # a supervisor restarted mid-trial: the trial was judged before
            return []
        self._start_clocks(metrics)
        missing, left = [], []
        for item in self._pending:
            group, clocks, expected, names = item
            if not group.isdisjoint(metrics):
                continue  # arrived (NaN too: that is evidence): not blind, never judged again
            due = [self._started[c] + self._by - 1 for c in clocks if c in self._started]
            if not due or self._n < min(due):
                left.append(item)
            else:
                missing.append((expected, names))
        self._pending = left
        return [self._warn(iteration, missing)] if missing else []

    def _start_clocks(self, metrics) -> None:
        started, n = self._started, self._n
        if "iteration" not in started:
            started["iteration"] = n
            if not self._learning_starts:
                started["learner"] = n
        if "learner" not in started:
            steps = metrics.get("env_steps_lifetime")
            if (steps is not None and steps >= self._learning_starts) or not _LEARNER.isdisjoint(metrics):
                started["learner"] = n
        if "episodes" not in started and (metrics.get("num_episodes") or 0) > 0:
            started["episodes"] = n
        if "evaluation" not in started and (metrics.get("eval_num_episodes") or 0) > 0:
            started["evaluation"] = n

    def _warn(self, iteration: int, missing: list) -> Finding:
        keys = list(dict.fromkeys(m for expected, _ in missing for m in expected))
        blind: dict[str, list[str]] = {}
        for expected, names in missing:
            for d in names:
                blind.setdefault(d, []).extend(m for m in expected if m not in blind.get(d, []))
        paths = {k: result_path(k) for k in keys if k in RESULT_PATHS}
        what = "; ".join(" or ".join(f"{m} ({paths[m]})" if m in paths else m for m in expected)
                         for expected, _ in missing)
        return self.finding(
            iteration, "warning", keys[0], None,
            f"metrics missing by report {self._n}: {what}; blind: {', '.join(blind)}. A result key renamed (a Ray "
            f"upgrade?) or a statistic the config turned off: these detectors judge nothing until it arrives",
            float(self._by), keys=keys, detectors=list(blind), blind=blind, paths=paths)


def result_path(metric: str) -> str:
    """Where RLlib's result holds ``metric`` (and what it is derived from when RLlib does not report it)."""
    path = RESULT_PATHS[metric].replace("{m}", "<module>")
    src = DERIVED.get(metric)
    return f"{path}, or from {result_path(src[0])}" if src and src[0] in RESULT_PATHS else path


def blind_detectors(findings: Iterable[Mapping[str, Any]]) -> list[dict]:
    """A trial's blind detectors, from its stored ``metrics_missing`` findings (their ``details``, a dict or
    the store's JSON text): ``[{"detector", "metrics", "iteration", "module"}]``, in the order they were found
    (``module``: the stream it is blind in, as on the finding; a multi-agent trial's policies apart)."""
    out: dict[tuple, dict] = {}
    for f in findings:
        if f.get("detector") != MetricsMissing.name:
            continue
        details = f.get("details")
        if isinstance(details, str):
            try:
                details = json.loads(details)
            except ValueError:
                details = None
        blind = details.get("blind") if isinstance(details, Mapping) else None
        for det, metrics in (blind.items() if isinstance(blind, Mapping) else ()):
            out.setdefault((f.get("module"), str(det)), {"detector": str(det), "metrics": [str(m) for m in metrics or ()],
                                                         "iteration": f.get("iteration"), "module": f.get("module")})
    return list(out.values())


def blind_line(blind: list[dict]) -> str | None:
    """One line naming the blind detectors and the metrics they wait for (None when none is blind)."""
    if not blind:
        return None
    return "blind detectors (metrics never arrived, metrics_missing): " + ", ".join(
        f"{_in(b.get('module'))}{b['detector']} ({' or '.join(b['metrics'])})" for b in blind)


def _in(module: Any) -> str:
    """A multi-agent trial's policy before the detector (``p1/entropy_collapse``); nothing for a single-agent
    trial's one module or the trial's own stream."""
    return f"{module}/" if module is not None and module != "default_policy" else ""
