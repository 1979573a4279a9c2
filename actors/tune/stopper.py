"""Stoppers: the supervisor's verdict, and the experiment file's ``stop:`` section.

``StabilityStopper`` ends exactly the trials the supervisor judged
unrecoverable. ``StopRule`` is the ``stop:`` section (iterations, timesteps,
episode_return_mean, time_s): Tune's stopper for every sweep trial, and what
``supervise run``'s training loop asks after each iteration.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

from ray.tune import Stopper

from supervisor.metrics import get_path

from actors import compat

RETURN_METRIC = "env_runners/episode_return_mean"
STOP_KEYS = {  # experiment file stop: key -> Tune result key (nested keys joined by "/")
    "iterations": "training_iteration",
    "timesteps": "num_env_steps_sampled_lifetime",
    "episode_return_mean": RETURN_METRIC,
    "eval_return_mean": "evaluation/env_runners/episode_return_mean",
    "time_s": "time_total_s",
}


class StabilityStopper(Stopper):
    """Stop trials that the supervisor judged unrecoverable.

    The supervisor's RLlib callback adds ``result["supervisor"]`` to every
    training result. When the supervisor's escalation policy decides
    ``stop_trial`` for a trial (its ladder is exhausted, or too many
    interventions in too short a time), that trial's result carries
    ``result["supervisor"]["stop"] = True`` and this stopper ends that trial,
    and only that one. It never stops the whole experiment.

    Args:
        key: The result key the supervisor's callback writes to.

    Examples:
        >>> from ray import tune
        >>> from ray.tune.stopper import CombinedStopper, MaximumIterationStopper
        >>> from actors.tune import StabilityStopper
        >>>
        >>> stopper = CombinedStopper(
        ...     StabilityStopper(),
        ...     MaximumIterationStopper(max_iter=50),
        ... )
        >>> tuner = tune.Tuner(
        ...     trainable,  # doctest: +SKIP
        ...     run_config=tune.RunConfig(stop=stopper),
        ... )

    ``stopped`` holds the ids of the trials it stopped.
    """

    def __init__(self, key: str = "supervisor"):
        self._key = key
        self.stopped: set[str] = set()

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        sup = result.get(self._key) if isinstance(result, Mapping) else None
        if isinstance(sup, Mapping) and bool(sup.get("stop")):
            self.stopped.add(trial_id)
            return True
        return False

    def stop_all(self) -> bool:
        return False


class ThresholdStopper(Stopper):
    """Stop a trial once any result value reaches its threshold, like Tune's ``stop={...}`` dict.

    Args:
        thresholds: result key (nested keys joined by ``/``) -> value; a trial
            stops when ``result[key] >= value``. Missing or non-finite values never stop.
    """

    def __init__(self, thresholds: Mapping[str, float]):
        self.thresholds = dict(thresholds)

    def reached(self, result: Mapping) -> str | None:
        """The first key whose value reached its threshold, else None."""
        for key, limit in self.thresholds.items():
            v = _nested(result, key)
            # numbers.Real: numpy scalars too (np.int64 is no int)
            if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v >= limit:
                return key
        return None

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.reached(result) is not None

    def stop_all(self) -> bool:
        return False


class StopRule(ThresholdStopper):
    """The experiment file's ``stop:`` section, on RLlib's result dict: a trial stops at the first condition met.

    One rule for both paths: Tune calls it as a stopper on every sweep trial,
    ``supervise run`` asks ``reason(result, elapsed_s)`` after each iteration.

    Args:
        stop: the file's ``stop:`` section (``supervisor.config.StopConfig``).
    """

    def __init__(self, stop):
        limits = {k: v for k, v in stop.model_dump().items() if v is not None}
        super().__init__({STOP_KEYS[k]: v for k, v in limits.items()})
        self.names = {STOP_KEYS[k]: k for k in limits}

    def reason(self, result: Mapping, elapsed_s: float | None = None) -> str | None:
        """The ``stop:`` key met (``"iterations"``, ...), else None.

        ``elapsed_s`` replaces the result's ``time_total_s`` for ``time_s``: a
        single run's budget is the driver's wall time, because outside Tune a
        restart starts a fresh algorithm whose clock starts at 0 again.
        """
        if elapsed_s is not None:
            result = {**result, STOP_KEYS["time_s"]: elapsed_s}
        key = self.reached(result)
        return self.names[key] if key is not None else None


def _nested(result: Mapping, key: str):
    """Tune's results may come flattened ("a/b" keys) or nested."""
    return result[key] if key in result else get_path(result, key)


def combine_stop(stop) -> Stopper:
    """StabilityStopper OR-ed with ``stop`` (None, a dict like Tune's, a Stopper or a callable)."""
    from ray.tune.stopper import CombinedStopper, FunctionStopper

    parts: list[Stopper] = [StabilityStopper()]
    if isinstance(stop, Mapping):
        parts.append(ThresholdStopper(stop))
    elif isinstance(stop, Stopper):
        parts.append(stop)
    elif callable(stop):
        parts.append(FunctionStopper(stop))
    elif stop is not None:
        raise TypeError(f"stop must be a dict, a Stopper or a callable, got {type(stop).__name__}")
    return CombinedStopper(*parts)


def stability_stopper_of(stopper) -> StabilityStopper | None:
    if isinstance(stopper, StabilityStopper):
        return stopper
    for s in compat.combined_stoppers(stopper):
        if isinstance(s, StabilityStopper):
            return s
    return None
