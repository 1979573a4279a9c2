"""Training-health detectors, in the style of Ray Tune's ``tune/stopper`` package.

Each detector is a small class with one documented rule, its declared
``Options`` (defaults and ranges, :mod:`supervisor.detectors.options`) and one
``__call__(iteration, metrics, history) -> list[Finding]``; ``history`` is the
run's past *before* this iteration (see :mod:`supervisor.history`).

:data:`DETECTORS` maps detector ids to classes; :func:`build_detectors`
instantiates them with defaults, per-detector overrides and an optional
learned profile, as one :class:`DetectorSuite`. :data:`CLUSTER_DETECTORS`
(``node_down``, ``memory_pressure``, ``gpu_fault``, ``straggler``) judge the
cluster instead, for :class:`supervisor.cluster.ClusterState`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from supervisor.detectors._common import check_band
from supervisor.detectors.advantage_anomaly import AdvantageAnomaly
from supervisor.detectors.alpha_collapse import AlphaCollapse
from supervisor.detectors.alpha_runaway import AlphaRunaway
from supervisor.detectors.base import Detector, Latch
from supervisor.detectors.data_poisoned import DataPoisoned
from supervisor.detectors.entropy_collapse import EntropyCollapse
from supervisor.detectors.exploration_too_short import ExplorationTooShort
from supervisor.detectors.entropy_saturated import EntropySaturated
from supervisor.detectors.gradient_explosion import GradientExplosion
from supervisor.detectors.generalization_gap import GeneralizationGap
from supervisor.detectors.gpu_fault import GpuFault
from supervisor.detectors.gradient_vanishing import GradientVanishing
from supervisor.detectors.kl_controller_stuck import KLControllerStuck
from supervisor.detectors.kl_spike import KLSpike
from supervisor.detectors.loss_explosion import LossExplosion
from supervisor.detectors.memory_pressure import MemoryPressure
from supervisor.detectors.metrics_missing import MetricsMissing
from supervisor.detectors.no_learning import NoLearning
from supervisor.detectors.node_down import NodeDown
from supervisor.detectors.non_finite import NonFinite
from supervisor.detectors.obs_out_of_range import ObsOutOfRange
from supervisor.detectors.options import DetectorOptionError, DetectorOptions
from supervisor.detectors.plateau import Plateau
from supervisor.detectors.policy_lag import PolicyLag
from supervisor.detectors.premature_convergence import PrematureConvergence
from supervisor.detectors.q_divergence import QDivergence
from supervisor.detectors.reward_collapse import RewardCollapse
from supervisor.detectors.straggler import Straggler
from supervisor.detectors.suite import DetectorSuite
from supervisor.detectors.td_error_explosion import TDErrorExplosion
from supervisor.detectors.trial_crashed import TrialCrashed
from supervisor.detectors.trial_hung import TrialHung
from supervisor.detectors.update_too_large import UpdateTooLarge
from supervisor.detectors.value_collapse import ValueCollapse
from supervisor.detectors.value_loss_clipped import ValueLossClipped
from supervisor.detectors.worker_fault import WorkerFault
from supervisor.priors import Priors

DETECTORS: dict[str, type[Detector]] = {cls.name: cls for cls in (
    NonFinite, LossExplosion, GradientExplosion, GradientVanishing, KLSpike, KLControllerStuck,
    EntropyCollapse, ValueCollapse, AdvantageAnomaly, RewardCollapse, Plateau, WorkerFault,
    # priors: judged against the trial's own config and spaces from iteration 1
    UpdateTooLarge, ValueLossClipped, EntropySaturated, NoLearning, PrematureConvergence,
    # off-policy (DQN, SAC): supervisor.algorithms says which detectors run on which algorithm
    QDivergence, TDErrorExplosion, AlphaCollapse, AlphaRunaway, ExplorationTooShort,
    GeneralizationGap,  # only with evaluation results (evaluation_interval)
    DataPoisoned, ObsOutOfRange,  # the env runners' data guard (actors/data_guard.py)
    PolicyLag,  # APPO, IMPALA: env runners sampling with weights far behind the learner's
    MetricsMissing,  # the others' needed metrics never arrived: records only, never acts
)}
# Judging events between a trial's reports, not its metrics: a crash (Engine.crash) and an iteration that
# never ends (Engine.hung, on the supervisor's clock). Set through ``supervisor.hang``, not options here.
EVENT_DETECTORS = {cls.name: cls for cls in (TrialCrashed, TrialHung)}
# Judging the cluster (heartbeats, ray.nodes(), trials' iteration times), not one trial's metrics:
# run by supervisor.cluster.ClusterState.
CLUSTER_DETECTORS = {cls.name: cls for cls in (NodeDown, MemoryPressure, GpuFault, Straggler)}


def detector_options(name: str) -> list[str]:
    """The options detector ``name`` accepts (besides ``enabled``)."""
    return list(DETECTORS[name].Options.names())


def _enabled(overrides: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{detector_id: its options}`` for the enabled detectors, in registry order; unknown ids,
    a non-mapping or a non-boolean ``enabled`` raise :class:`DetectorOptionError`."""
    overrides = dict(overrides or {})
    for name in overrides:
        if name not in DETECTORS:
            raise DetectorOptionError(name, None, f"unknown detector (known: {', '.join(DETECTORS)})")
    out = {}
    for name in DETECTORS:
        kw = overrides.get(name) or {}
        if not isinstance(kw, Mapping):
            raise DetectorOptionError(name, None, f"options must be a mapping of option: value (got {kw!r})")
        kw = dict(kw)
        enabled = kw.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise DetectorOptionError(name, "enabled", f"must be true or false (got {enabled!r})")
        if enabled:
            out[name] = kw
    return out


def check_overrides(overrides: Mapping[str, Any] | None) -> None:
    """Validate per-detector overrides (the experiment file's ``supervisor.detectors``) without
    building anything: raise :class:`DetectorOptionError` on the first bad id or option."""
    for name, kw in _enabled(overrides).items():
        DETECTORS[name].Options.build(name, kw)


def build_detectors(overrides: Mapping[str, Mapping] | None = None,
                    profile: Mapping[str, Mapping[str, float]] | None = None,
                    priors: Priors | Mapping | None = None,
                    algorithm: str | None = None, scopes: Iterable[str] | None = None) -> DetectorSuite:
    """Instantiate every registered detector, in registry order, as one suite.

    Args:
        overrides: ``{detector_id: {option: value}}``; the options go to that
            detector's ``Options``, and ``"enabled": False`` drops it.
            Unknown ids, unknown options and invalid values raise
            :class:`DetectorOptionError` (a ValueError) naming them.
        profile: ``{metric: {"low", "high", "median"}}`` learned from healthy
            runs (``supervise calibrate``). A detector that takes a ``band``
            gets the bands of the metrics it judges (``cls.band_metrics``),
            unless its overrides set ``band`` themselves; it uses them while
            its own history is still short.
        priors: what the trial's config and spaces say (:class:`supervisor.priors.Priors`, or the plain
            mapping the Ray side sends); every detector reads them as ``self.priors``.
        algorithm: the trial's RLlib algorithm (default: the priors'): only the detectors that apply to it
            (``supervisor.algorithms``) are built; unknown: every one.
        scopes: only the detectors of these scopes (:attr:`Detector.scope`); None: every one (logs judged
            as one stream: ``supervise scan``, the benchmarks).
    """
    from supervisor import algorithms

    priors = priors if isinstance(priors, Priors) else Priors.from_dict(priors)
    algorithm = algorithm or priors.algorithm
    enabled = {n: kw for n, kw in _enabled(overrides).items() if algorithms.applies(n, algorithm)
               and (scopes is None or DETECTORS[n].scope in scopes)}
    if profile is not None and not isinstance(profile, Mapping):
        raise ValueError(f"profile must be a mapping of metric -> band, got {type(profile).__name__}")
    out: list[Detector] = []
    for name, kw in enabled.items():
        cls = DETECTORS[name]
        if profile and "band" in cls.Options.model_fields and "band" not in kw:
            bands = {m: profile[m] for m in getattr(cls, "band_metrics", ()) if m in profile}
            if bands:
                check_band(bands, f"profile (for detector {name})")
                kw["band"] = bands
        det = cls(**kw)
        det.priors = priors
        det.reset()  # state that depends on the priors
        out.append(det)
    for det in out:
        if isinstance(det, MetricsMissing):
            det.watch(out, algorithm)
    return DetectorSuite(out)


__all__ = ["CLUSTER_DETECTORS", "DETECTORS", "EVENT_DETECTORS", "DataPoisoned", "ObsOutOfRange", "TrialCrashed",
           "TrialHung", "Detector", "DetectorOptionError", "DetectorOptions", "DetectorSuite", "Latch",
           "build_detectors", "check_overrides", "detector_options",
           "AdvantageAnomaly", "EntropyCollapse", "GradientExplosion", "GradientVanishing",
           "KLControllerStuck", "KLSpike", "LossExplosion", "NonFinite", "Plateau", "RewardCollapse",
           "ValueCollapse", "WorkerFault", "GpuFault", "MemoryPressure", "NodeDown", "Straggler",
           "EntropySaturated", "NoLearning", "PrematureConvergence", "UpdateTooLarge", "ValueLossClipped",
           "QDivergence", "TDErrorExplosion", "AlphaCollapse", "AlphaRunaway", "ExplorationTooShort",
           "MetricsMissing", "PolicyLag"]
