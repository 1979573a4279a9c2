"""Training-health detectors, in the style of Ray Tune's ``tune/stopper`` package.

Each detector is a small class with one documented rule and one
``__call__(iteration, metrics, history) -> list[Finding]``; ``history`` is the
run's past *before* this iteration (see :mod:`supervisor.history`).

:data:`DETECTORS` maps detector ids to classes; :func:`build_detectors`
instantiates them with defaults, per-detector overrides and an optional
learned profile.
"""

from __future__ import annotations

import functools
import inspect
from typing import Mapping

from supervisor.detectors._common import check_band
from supervisor.detectors.advantage_anomaly import AdvantageAnomaly
from supervisor.detectors.base import Detector, Latch
from supervisor.detectors.entropy_collapse import EntropyCollapse
from supervisor.detectors.gradient_explosion import GradientExplosion
from supervisor.detectors.gradient_vanishing import GradientVanishing
from supervisor.detectors.kl_controller_stuck import KLControllerStuck
from supervisor.detectors.kl_spike import KLSpike
from supervisor.detectors.loss_explosion import LossExplosion
from supervisor.detectors.non_finite import NonFinite
from supervisor.detectors.plateau import Plateau
from supervisor.detectors.reward_collapse import RewardCollapse
from supervisor.detectors.value_collapse import ValueCollapse
from supervisor.detectors.worker_fault import WorkerFault

DETECTORS: dict[str, type[Detector]] = {cls.name: cls for cls in (
    NonFinite, LossExplosion, GradientExplosion, GradientVanishing, KLSpike, KLControllerStuck,
    EntropyCollapse, ValueCollapse, AdvantageAnomaly, RewardCollapse, Plateau, WorkerFault,
)}


def detector_options(name: str) -> list[str]:
    """The constructor keyword arguments detector ``name`` accepts (besides ``enabled``)."""
    return list(_options(DETECTORS[name]))


@functools.lru_cache(maxsize=None)
def _options(cls: type) -> tuple[str, ...]:
    params = inspect.signature(cls.__init__).parameters
    return tuple(p for p in params if p != "self" and params[p].kind in
                 (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))


def build_detectors(overrides: Mapping[str, Mapping] | None = None,
                    profile: Mapping[str, Mapping[str, float]] | None = None) -> list[Detector]:
    """Instantiate every registered detector, in registry order.

    Args:
        overrides: ``{detector_id: {kwarg: value}}``; the kwargs go to that
            detector's constructor, and ``"enabled": False`` drops it.
            Unknown detector ids or kwargs raise ValueError naming them.
        profile: ``{metric: {"low", "high", "median"}}`` learned from healthy
            runs (``supervise calibrate``). A detector that takes a ``band``
            gets the bands of the metrics it judges (``cls.band_metrics``),
            unless its overrides set ``band`` themselves; it uses them while
            its own history is still short.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DETECTORS))
    if unknown:
        raise ValueError(f"unknown detector(s): {', '.join(unknown)}; known: {', '.join(DETECTORS)}")
    if profile is not None:
        if not isinstance(profile, Mapping):
            raise ValueError(f"profile must be a mapping of metric -> band, got {type(profile).__name__}")
    out: list[Detector] = []
    for name, cls in DETECTORS.items():
        kw = overrides.get(name) or {}
        if not isinstance(kw, Mapping):
            raise ValueError(f"detector {name}: overrides must be a mapping of options, got {kw!r}")
        kw = dict(kw)
        enabled = kw.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise ValueError(f"detector {name}: 'enabled' must be true or false, got {enabled!r}")
        if not enabled:
            continue
        accepted = _options(cls)
        bad = sorted(k for k in kw if k not in accepted)
        if bad:
            raise ValueError(f"detector {name}: unknown option(s) {', '.join(bad)}; "
                             f"accepted: {', '.join(('enabled',) + accepted)}")
        if profile and "band" in accepted and "band" not in kw:
            bands = {m: profile[m] for m in getattr(cls, "band_metrics", ()) if m in profile}
            if bands:
                check_band(bands, f"profile (for detector {name})")
                kw["band"] = bands
        try:
            out.append(cls(**kw))
        except TypeError as e:  # e.g. a wrong type for an option
            raise ValueError(f"detector {name}: {e}") from None
    return out


__all__ = ["DETECTORS", "Detector", "Latch", "build_detectors", "detector_options",
           "AdvantageAnomaly", "EntropyCollapse", "GradientExplosion", "GradientVanishing",
           "KLControllerStuck", "KLSpike", "LossExplosion", "NonFinite", "Plateau", "RewardCollapse",
           "ValueCollapse", "WorkerFault"]
