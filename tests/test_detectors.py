"""Detectors against synthetic PPO streams with known fault onsets, and healthy runs.

Latency conventions (``ONSET`` is the first iteration that shows the fault):

* abrupt faults must be reported at or within 2 iterations after the onset
  (0 for NaN/inf), except where the rule itself needs a run of iterations:
  kl_controller_stuck needs ``patience`` (10) same-way moves, so its first
  possible report is onset + 9; a pinned vf_loss needs ``pin_window`` (5)
  identical values, so onset + 4; a plateau needs ``window`` (50) iterations
  without improvement.
* gradual faults grow over ``RAMP`` iterations (full strength at onset +
  RAMP - 1) and must be reported within the abrupt latency after that.
* no detector may report a warning or critical before the onset.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.detectors import (DETECTORS, Detector, DetectorOptionError, DetectorSuite, KLSpike, LossExplosion,
                                  NonFinite, build_detectors, check_overrides, detector_options)
from supervisor.detectors._common import Alarm, fmt
from supervisor.detectors.base import Latch
from supervisor.detectors.gradient_explosion import GradientExplosion
from supervisor.detectors.plateau import Plateau
from benchmarks.synthetic import FAULTS, faulty_stream, healthy_stream, run_detectors
from supervisor.findings import SEVERITIES
from supervisor.history import History

N, ONSET, RAMP = 150, 80, 8
CAP = 500.0

# (fault, mode, magnitude, detector, severity expected within the latency (None: warning or critical),
#  abrupt latency)
CASES = [
    ("loss_explosion", "explode", None, "loss_explosion", "critical", 2),
    ("loss_explosion", "explode", 30.0, "loss_explosion", "warning", 2),
    ("gradient_explosion", "explode", None, "gradient_explosion", "critical", 2),
    ("gradient_explosion", "explode", 30.0, "gradient_explosion", "warning", 2),
    ("gradient_vanishing", "vanish", None, "gradient_vanishing", "warning", 2),
    ("gradient_vanishing", "zero", None, "gradient_vanishing", "critical", 2),
    ("kl_spike", "spike", None, "kl_spike", "critical", 2),
    ("kl_spike", "spike", 30.0, "kl_spike", "warning", 2),
    ("kl_controller_stuck", "down", None, "kl_controller_stuck", None, 9 + 2),
    ("kl_controller_stuck", "up", None, "kl_controller_stuck", "warning", 9 + 2),
    ("kl_controller_stuck", "zero", None, "kl_controller_stuck", "critical", 9 + 2),
    ("entropy_collapse", "low", None, "entropy_collapse", "warning", 2),
    ("entropy_collapse", "zero", None, "entropy_collapse", "critical", 2),
    ("value_collapse", "ev", None, "value_collapse", "warning", 2),
    ("value_collapse", "ev", -1.5, "value_collapse", "critical", 2),
    ("value_collapse", "pinned", None, "value_collapse", "critical", 4),
    ("advantage_anomaly", "std_collapse", None, "advantage_anomaly", "warning", 2),
    ("advantage_anomaly", "std_zero", None, "advantage_anomaly", "critical", 2),
    ("advantage_anomaly", "std_explosion", None, "advantage_anomaly", "critical", 2),
    ("advantage_anomaly", "std_explosion", 30.0, "advantage_anomaly", "warning", 2),
    ("advantage_anomaly", "bias", None, "advantage_anomaly", "warning", 2),
    ("advantage_anomaly", "shape", None, "advantage_anomaly", "warning", 2),
    ("reward_collapse", "min", None, "reward_collapse", "critical", 2),
    ("reward_collapse", "partial", None, "reward_collapse", "warning", 2),
    ("nan", "persistent", None, "non_finite", "critical", 0),
    ("nan", "once", None, "non_finite", "critical", 0),
    ("divergence", "ray", None, "non_finite", "critical", 0),
]


def _id(case):
    fault, mode, mag, *_ = case
    return f"{fault}-{mode}" + (f"-x{mag:g}" if mag is not None else "")


def _check_findings(findings):
    for f in findings:
        assert f.severity in SEVERITIES[1:]
        assert f.detector in DETECTORS
        assert f.message
        if f.detector != "non_finite":
            assert f.threshold is not None and math.isfinite(f.threshold), f
            assert f.metric and f.metric in f.message, f
            assert fmt(f.value) in f.message, f


@pytest.mark.parametrize("gradual", [False, True], ids=["abrupt", "gradual"])
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_fault_detected_at_onset(case, gradual):
    fault, mode, magnitude, detector, severity, latency = case
    if gradual and fault in ("nan", "divergence"):
        pytest.skip("no gradual form")
    seed = 100 + CASES.index(case) + (1000 if gradual else 0)
    stream = faulty_stream(fault, N, ONSET, seed, gradual=gradual, ramp=RAMP, mode=mode, magnitude=magnitude)
    findings = run_detectors(build_detectors({"plateau": {"target": CAP}}), stream)
    _check_findings(findings)

    early = [f for f in findings if f.iteration < ONSET and f.severity != "info"]
    assert not early, f"fired before the onset: {early[:3]}"

    deadline = ONSET + latency + (RAMP - 1 if gradual else 0)
    mine = [f for f in findings if f.detector == detector]
    assert mine, f"{detector} never fired"
    assert ONSET <= mine[0].iteration <= deadline, (mine[0].iteration, mine[0].message)
    in_time = {f.severity for f in mine if f.iteration <= deadline}
    if gradual or severity is None:
        assert in_time & {"warning", "critical"}
    else:
        assert severity in in_time, (in_time, [f.message for f in mine[:3]])
        if latency == 2 and severity == "warning":  # a warning-level fault does not claim critical
            assert "critical" not in in_time


@pytest.mark.parametrize("gradual", [False, True], ids=["abrupt", "gradual"])
def test_plateau_reported_one_window_after_the_stall(gradual):
    onset, window = 45, 50
    for seed in (3, 4, 5):
        # learning half done at the onset, then the return stalls short of the cap
        stream = faulty_stream("plateau", N, onset, seed, gradual=gradual, mid=45.0, width=10.0)
        findings = run_detectors(build_detectors({"plateau": {"target": CAP, "window": window}}), stream)
        _check_findings(findings)
        assert not [f for f in findings if f.severity != "info"]
        plateau = [f for f in findings if f.detector == "plateau"]
        assert plateau and all(f.severity == "info" for f in plateau)
        extra = RAMP if gradual else 0
        assert onset + window - 3 <= plateau[0].iteration <= onset + window + extra + 15, plateau[0].iteration


def _healthy_findings(seeds):
    bad = []
    for seed in seeds:
        stream = healthy_stream(N, seed)
        findings = run_detectors(build_detectors({"plateau": {"target": CAP}}), stream)
        bad += [(seed, f.iteration, f.detector, f.severity, f.message) for f in findings]
    return bad


def test_healthy_runs_raise_nothing():
    """200 healthy noisy runs of 150 iterations: no finding at all from any detector.

    ``plateau`` gets the run's known target (the CartPole cap); without one, see
    test_plateau_without_target_only_marks_solved_runs. (Split over two processes
    where fork is available: it is the slow test of this file.)
    """
    seeds = list(range(200))
    try:
        ctx = multiprocessing.get_context("fork")
    except ValueError:
        ctx = None
    if ctx is not None and (os.cpu_count() or 1) > 1:
        with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
            bad = [b for part in pool.map(_healthy_findings, [seeds[0::2], seeds[1::2]]) for b in part]
    else:
        bad = _healthy_findings(seeds)
    assert not bad, f"{len(bad)} findings on healthy runs, e.g. {bad[:3]}"


def test_plateau_without_target_only_marks_solved_runs():
    """Without a target, plateau (info) is allowed on a healthy run only once it has held its best
    level for a whole window: a solved CartPole run sitting at the cap *is* a plateau, and only a
    known target can tell 'done' from 'stuck'."""
    for seed in range(20):
        stream = healthy_stream(N, seed)
        for f in run_detectors([Plateau()], stream):
            assert f.severity == "info"
            assert f.iteration >= Plateau().window  # never during the first window
            assert f.details["best_recent"] >= 0.9 * CAP, f.message


def test_cartpole_entropy_decline_is_healthy():
    """Entropy falling gradually from 0.69 to 0.2 while solving is not a collapse."""
    stream = healthy_stream(N, 7, ent_end=0.15, ent_tau=25.0)
    assert min(m["entropy"] for m in stream) < 0.25
    assert not run_detectors(build_detectors({"plateau": {"target": CAP}}), stream)


def test_ray_divergence_signature_from_the_start():
    """shared/ray-notes.md: with a huge lr, iteration 1 reports total_loss=inf and mean_kl_loss=inf,
    then entropy 0, grad norm 0, vf_loss pinned at 10, kl_coeff halving, return at the minimum."""
    stream = faulty_stream("divergence", 40, onset=0, seed=11)
    assert stream[1]["entropy"] == 0 and stream[1]["grad_norm"] == 0 and stream[1]["vf_loss"] == 10.0
    findings = run_detectors(build_detectors(), stream)
    _check_findings(findings)
    first = {}
    for f in findings:
        if f.severity == "critical":
            first.setdefault(f.detector, f.iteration)
    assert first["non_finite"] == 0
    assert first["gradient_vanishing"] <= 2
    assert first["entropy_collapse"] <= 2
    assert first["value_collapse"] <= 5
    assert first["kl_controller_stuck"] <= 11


def test_ray_divergence_signature_mid_run():
    stream = faulty_stream("divergence", N, ONSET, seed=12)
    findings = run_detectors(build_detectors(), stream)
    crit = {}
    for f in findings:
        if f.severity == "critical":
            crit.setdefault(f.detector, f.iteration - ONSET)
    assert crit["non_finite"] == 0
    assert crit["gradient_vanishing"] <= 2 and crit["entropy_collapse"] <= 2
    assert crit["reward_collapse"] <= 4  # return collapses over ~2 iterations, then patience 3
    assert crit["value_collapse"] <= 5 and crit["kl_controller_stuck"] <= 11
    assert not [f for f in findings if f.iteration < ONSET]


def test_long_runs_outlive_the_history_ring():
    """600 iterations: the History ring (256) forgets the early run; nothing may fire on a healthy
    run, and a collapse late in a long run is still measured against the run's start level."""
    for seed in (41, 42):
        findings = run_detectors(build_detectors({"plateau": {"target": CAP}}), healthy_stream(600, seed))
        assert not findings, findings[:2]
    stream = faulty_stream("reward_collapse", 400, onset=350, seed=43)
    mine = [f for f in run_detectors(build_detectors(), stream) if f.detector == "reward_collapse"]
    assert mine and 350 <= mine[0].iteration <= 352 and mine[0].severity == "critical"
    assert mine[0].details["base"] < 50  # the start level, long gone from the ring


def test_incremental_state_matches_the_history():
    """The History's log view and RollingMedian (the detectors' incremental copies of a metric's
    history) stay equal to the History through gaps, non-finite values and ring wrap-around."""
    import random

    from supervisor.detectors._common import RollingMedian, median

    h = History(capacity=20)
    rolling = RollingMedian("a", 5)
    rng = random.Random(0)
    for i in range(200):
        r = rng.random()
        m = {} if r < 0.1 else {"a": float("nan")} if r < 0.2 else {"a": rng.random() + 0.1}
        got, sm = h.view("a", True), rolling.update(h, m)
        ser = h.series("a").tolist()
        assert list(got) == [math.log(v) for v in ser], i
        assert sm == [median(ser[j:j + 5]) for j in range(len(ser) - 4)], i
        h.append(m)


def test_history_keeps_each_metrics_last_finite_values_whatever_the_report():
    """History.append takes a whole report of finite numbers at C speed and anything else value by value:
    either way every metric keeps its last ``capacity`` finite values (ints as floats), and its views agree,
    through reports of another shape, NaN/inf/None, metrics that start late, views made mid-run and the ring
    wrapping."""
    import copy
    import random

    rng = random.Random(3)
    names = ["a", "b", "c", "d"]
    h, want, viewed = History(capacity=7), {}, set()
    for i in range(300):
        keys = names if rng.random() < 0.8 else rng.sample(names, rng.randint(0, 4))
        m = {}
        for k in keys:
            r = rng.random()
            m[k] = (float("nan") if r < 0.04 else -math.inf if r < 0.06 else None if r < 0.08
                    else rng.randint(1, 3) if r < 0.12 else rng.uniform(1e-3, 5.0))
        if i < 5:
            m.pop("d", None)  # "d" starts late
        h.append(m)
        for k, x in m.items():
            if x is not None and math.isfinite(x):
                want[k] = (want.get(k, []) + [float(x)])[-7:]
        if i in (20, 150):
            viewed.add(names[i % 4])
        if i == 100:
            h = copy.deepcopy(h)
        for k in names:
            assert list(h.values(k)) == want.get(k, []) and all(type(x) is float for x in h.values(k)), (i, k)
            if k in viewed:
                assert list(h.view(k, "abs")) == [abs(x) for x in want.get(k, [])], (i, k)


def test_entropy_of_continuous_policies_is_left_alone():
    """Gaussian policies report negative entropies; there is no 'collapse to 0' to detect."""
    entropies = np.linspace(1.4, -2.0, 60)
    first_negative = int(np.argmax(entropies < 0))
    for continuous in (True, None):
        det = DETECTORS["entropy_collapse"](continuous=continuous)
        h = History()
        out = []
        for i, e in enumerate(entropies):
            m = {"entropy": float(e)}
            out += det(i, m, h)
            h.append(m)
        if continuous:
            assert not out
        else:  # inferred from the first negative value: silent from then on
            assert all(f.iteration < first_negative for f in out)


# --- hysteresis --------------------------------------------------------------------------------

def test_latch_enter_exit_repeat():
    latch = Latch(enter=2, exit=3, repeat=4)
    seq = [1, 0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 1, 1]
    due = [latch.update(bool(x)) for x in seq]
    # on at the 2nd consecutive trigger (index 3); again 4 iterations later (index 7); a gap of
    # 2 clears (indices 8, 9) does not turn it off; 3 clears (11-13) do; then 2 triggers re-enter.
    assert [i for i, d in enumerate(due) if d] == [3, 7, 15]
    latch.reset()
    assert not latch.on and not latch.update(True) and latch.update(True)


def test_alarm_escalates_at_once():
    a = Alarm(enter=1, exit=3, repeat=10)
    assert a.update(True, "warning")
    assert not a.update(True, "warning")
    assert a.update(True, "critical")   # escalation is reported without waiting for `repeat`
    assert not a.update(True, "critical")
    assert not a.update(True, "warning")  # de-escalation is not news
    for _ in range(3):
        a.update(False)
    assert not a.on and a.update(True, "warning")


def test_detector_does_not_flap():
    """A metric hovering around the threshold yields a few findings, not one per trigger."""
    det = GradientExplosion(metrics=("grad_norm",), warmup=10, window=30)
    h = History()
    findings = []
    rng = np.random.default_rng(0)
    for i in range(60):
        g = float(np.exp(rng.normal(0, 0.1)))
        if i >= 20 and i % 2 == 0:
            g *= 50.0  # every other iteration exploded
        m = {"grad_norm": g}
        findings += det(i, m, h)
        h.append(m)
    assert 1 <= len(findings) <= 5, [f.iteration for f in findings]
    assert findings[0].iteration == 20


def test_reset_forgets_state():
    stream = faulty_stream("entropy_collapse", 60, 30, seed=5)
    dets = build_detectors()
    first = run_detectors(dets, stream)
    for d in dets:
        d.reset()
    second = run_detectors(dets, stream)
    assert [(f.detector, f.iteration, f.severity) for f in first] == \
           [(f.detector, f.iteration, f.severity) for f in second]


# --- registry, overrides, profile -----------------------------------------------------------------

def test_registry_and_defaults():
    dets = build_detectors()
    assert [d.name for d in dets] == list(DETECTORS)
    for name in ("non_finite", "loss_explosion", "gradient_explosion", "gradient_vanishing", "kl_spike",
                 "kl_controller_stuck", "entropy_collapse", "value_collapse", "advantage_anomaly",
                 "reward_collapse", "plateau"):
        assert name in DETECTORS
        cls = DETECTORS[name]
        assert cls.__doc__ and "Default" in cls.__doc__ or name == "non_finite"
        assert callable(getattr(cls, "reset"))


def test_build_detectors_overrides():
    dets = {d.name: d for d in build_detectors({"kl_spike": {"ratio": 20.0}, "plateau": {"enabled": False},
                                                "entropy_collapse": {"enabled": True, "fraction": 0.2}})}
    assert "plateau" not in dets and dets["kl_spike"].ratio == 20.0 and dets["entropy_collapse"].fraction == 0.2
    assert "ratio" in detector_options("kl_spike")


def test_build_detectors_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="no_such_detector"):
        build_detectors({"no_such_detector": {}})
    with pytest.raises(ValueError, match="kl_spike.*bogus_option"):
        build_detectors({"kl_spike": {"bogus_option": 1}})
    with pytest.raises(ValueError, match="enabled"):
        build_detectors({"kl_spike": {"enabled": "no"}})
    with pytest.raises(ValueError, match="ratio"):
        build_detectors({"gradient_explosion": {"ratio": 0.5}})
    with pytest.raises(ValueError, match="band"):
        build_detectors(profile={"grad_norm": {"low": 1.0}})


@pytest.mark.parametrize("overrides,message", [
    ({"gradient_vanishing": {"window": -1}}, "detector gradient_vanishing: option window must be > 0 (got -1)"),
    ({"kl_spike": {"window": 1}}, "detector kl_spike: option window must be >= 2 (got 1)"),
    ({"entropy_collapse": {"fraction": 1.5}}, "detector entropy_collapse: option fraction must be < 1 (got 1.5)"),
    ({"plateau": {"smooth": 2.5}}, "detector plateau: option smooth must be an integer (got 2.5)"),
    ({"kl_spike": {"z": True}}, "detector kl_spike: option z must be a number (got True)"),
    ({"kl_spike": {"z": float("inf")}}, "detector kl_spike: option z must be a finite number (got inf)"),
    ({"entropy_collapse": {"continuous": "yes"}}, "detector entropy_collapse: option continuous must be true or false"),
    ({"loss_explosion": {"metrics": "total_loss"}}, "detector loss_explosion: option metrics must be a list"),
    ({"loss_explosion": {"sustain": 3}}, "detector loss_explosion: option sustain is unknown (accepted: enabled, "),
    ({"kl_spike": {"critical_ratio": 5.0}}, "detector kl_spike: need critical_ratio >= ratio (got critical_ratio=5, "
                                            "ratio=10)"),
    ({"reward_collapse": {"drop_fraction": 0.95}}, "detector reward_collapse: need drop_fraction < critical_fraction"),
    ({"plateau": {"enabled": "no"}}, "detector plateau: option enabled must be true or false (got 'no')"),
])
def test_bad_options_are_named_in_one_clear_message(overrides, message):
    with pytest.raises(ValueError) as e:
        build_detectors(overrides)
    assert str(e.value).startswith(message), str(e.value)
    with pytest.raises(DetectorOptionError, match=message.split(": ", 1)[1].split(" (")[0]):
        check_overrides(overrides)  # what the experiment file's loader runs


def test_options_are_declared_once_with_their_defaults():
    for name, cls in DETECTORS.items():
        det = cls()
        assert detector_options(name) == list(cls.Options.model_fields)
        for opt, info in cls.Options.model_fields.items():
            assert getattr(det.options, opt) == info.default
            if opt != "metrics":  # metrics None: the detector's own default list
                assert getattr(det, opt) == info.default, (name, opt)
    assert KLSpike().sustain == 3 and LossExplosion().sustain == 0  # only kl_spike has the sustained rule
    assert build_detectors({"kl_spike": {"window": 40}})[4].window == 40


def test_plateau_warmup_is_the_history_its_rule_needs():
    """A full window of rolling medians: window + smooth - 1 values (not the window itself)."""
    assert Plateau().warmup == 54 and Plateau(window=10, smooth=3).warmup == 12
    stream = [{"episode_return_mean": 20.0}] * 13
    fired = [f.iteration for f in run_detectors([Plateau(window=10, smooth=3)], stream)]
    assert fired == [12]  # the first iteration with 12 values behind it


class _Broken(Detector):
    """A detector with a bug: it fails on every iteration that reports ``kl``."""

    name = "broken"

    def __call__(self, iteration, metrics, history):
        if "kl" in metrics:
            raise ZeroDivisionError("a bug")
        return []

    def reset(self):
        self.resets = getattr(self, "resets", 0) + 1


def test_suite_survives_a_detector_bug_and_appends_the_history_once():
    suite = DetectorSuite([_Broken(), NonFinite()])
    h = History()
    found = suite.observe(7, {"kl": float("nan")}, h)
    assert [(f.detector, f.severity) for f in found] == [("broken", "info"), ("non_finite", "critical")]
    assert found[0].message == "detector error: ZeroDivisionError: a bug" and found[0].iteration == 7
    assert h.iterations == 1 and suite.observe(8, {"x": 1.0}, h) == [] and h.iterations == 2
    suite.reset()
    assert suite[0].resets == 1 and suite.names == ["broken", "non_finite"] and len(suite) == 2
    with pytest.raises(ZeroDivisionError):  # benchmarks and tests see the bug itself
        run_detectors([_Broken()], [{"kl": 1.0}])


def test_the_engine_and_scan_run_the_same_suite(tmp_path):
    """A detector bug in the engine is an info finding in the stored report, not a crash."""
    from supervisor.engine import Engine
    from supervisor.store import Store

    eng = Engine(Store(str(tmp_path / "s.db")))
    eng.register_trial("t", "r")
    assert isinstance(eng.trials["t"].detectors, DetectorSuite)
    eng.trials["t"].detectors.detectors.insert(0, _Broken())
    v = eng.observe({"trial_id": "t", "seq": 0, "iteration": 0, "metrics": {"kl": 0.01}})
    assert [f["message"] for f in v.findings] == ["detector error: ZeroDivisionError: a bug"]
    assert eng.trials["t"].history.iterations == 1


def test_experiment_file_detector_options_are_checked_on_load(tmp_path):
    from supervisor.config import load_experiment
    from supervisor.errors import InputError

    path = tmp_path / "e.yaml"
    path.write_text("name: t\nenv: CartPole-v1\nstop: {iterations: 2}\n"
                    "supervisor: {detectors: {kl_spike: {ratio: 20}, plateau: {enabled: false}}}\n")
    assert load_experiment(path).supervisor.detectors["kl_spike"] == {"ratio": 20}
    for bad, key, problem in [("kl_spike: {window: -1}", "supervisor.detectors.kl_spike.window", "must be >= 2 (got -1)"),
                              ("kl_spike: {bogus: 1}", "supervisor.detectors.kl_spike.bogus", "is unknown"),
                              ("nope: {}", "supervisor.detectors.nope", "unknown detector"),
                              ("reward_collapse: {drop_fraction: 0.95}", "supervisor.detectors.reward_collapse",
                               "need drop_fraction < critical_fraction")]:
        path.write_text(f"name: t\nenv: CartPole-v1\nstop: {{iterations: 2}}\nsupervisor: {{detectors: {{{bad}}}}}\n")
        with pytest.raises(InputError) as e:
            load_experiment(path)
        assert e.value.key == key and e.value.problem.startswith(problem), (e.value.key, e.value.problem)


def test_cluster_detectors_return_findings_and_latch():
    from supervisor.cluster import ClusterSettings, NodeView
    from supervisor.detectors import CLUSTER_DETECTORS, MemoryPressure
    from supervisor.detectors._cluster import Conditions
    from supervisor.findings import Finding

    assert set(CLUSTER_DETECTORS) == {"node_down", "memory_pressure", "gpu_fault", "straggler"}
    conds = Conditions(repeat_s=60)
    det = MemoryPressure(ClusterSettings(), conds)
    node = NodeView("n1", address="10.0.0.1")
    (f,) = det(0.0, node, {"memory_percent": 95.0})
    assert isinstance(f, Finding) and (f.detector, f.severity, f.threshold) == ("memory_pressure", "warning", 90.0)
    assert f.details == {"since": 0.0, "node_id": "n1", "address": "10.0.0.1"}
    assert det(1.0, node, {"memory_percent": 95.0}) == []  # latched
    assert [g.severity for g in det(2.0, node, {"memory_percent": 98.0})] == ["critical"]  # escalated
    det(3.0, node, {"memory_percent": 50.0})
    assert not conds.active  # cleared below the hysteresis band


def _profile(seeds, n=N):
    values: dict[str, list[float]] = {}
    for seed in seeds:
        for m in healthy_stream(n, seed):
            for k, v in m.items():
                values.setdefault(k, []).append(v)
    return {k: {"low": float(np.percentile(v, 1)), "high": float(np.percentile(v, 99)),
                "median": float(np.median(v))} for k, v in values.items()}


def test_profile_band_judges_before_warmup():
    profile = _profile(range(500, 510))
    dets = {d.name: d for d in build_detectors(profile=profile)}
    assert "grad_norm" in dets["gradient_explosion"].band
    assert "episode_return_mean" in dets["plateau"].band and dets["plateau"].target == profile[
        "episode_return_mean"]["high"]

    stream = faulty_stream("gradient_explosion", 30, onset=3, seed=21)
    seeded = [f for f in run_detectors(build_detectors(profile=profile), stream) if f.detector == "gradient_explosion"]
    assert seeded and seeded[0].iteration == 3 and seeded[0].details["source"] == "profile"
    unseeded = [f for f in run_detectors(build_detectors(), stream) if f.detector == "gradient_explosion"]
    assert not unseeded or unseeded[0].iteration >= 10  # no history to judge against before warm-up

    for seed in range(600, 620):  # a band from other healthy runs raises nothing on healthy runs
        findings = run_detectors(build_detectors(profile=profile), healthy_stream(N, seed))
        assert not [f for f in findings if f.severity != "info"], findings[:2]


# --- robustness ------------------------------------------------------------------------------------

_value = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10),
                   st.just(0.0), st.just(-1.0), st.text(max_size=3))
_names = st.sampled_from(["episode_return_mean", "policy_loss", "vf_loss", "total_loss", "entropy", "kl",
                          "approx_kl", "kl_coeff", "grad_norm", "grad_norm_max", "grad_norm_policy",
                          "explained_variance", "advantage_mean", "advantage_std", "advantage_skew",
                          "advantage_kurtosis", "vf_loss_unclipped"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.dictionaries(_names, _value, max_size=8), min_size=1, max_size=25))
def test_detectors_survive_arbitrary_metrics(stream):
    findings = run_detectors(build_detectors(), stream)
    for f in findings:
        assert f.severity in SEVERITIES[1:]


def test_synthetic_api():
    assert set(FAULTS) >= {"loss_explosion", "gradient_explosion", "gradient_vanishing", "kl_spike",
                           "kl_controller_stuck", "entropy_collapse", "value_collapse", "advantage_anomaly",
                           "reward_collapse", "plateau", "nan"}
    a, b = healthy_stream(50, 1), healthy_stream(50, 1)
    assert a == b and a != healthy_stream(50, 2)
    f = faulty_stream("kl_spike", 50, 30, seed=1)
    assert f[:30] == a[:30]  # healthy until the onset
    with pytest.raises(ValueError):
        faulty_stream("nope", 50, 30)
    with pytest.raises(ValueError):
        faulty_stream("kl_spike", 50, 30, mode="nope")


def test_plateau_is_reported_once_per_plateau():
    """A long stall is one finding, not one per window; a new plateau at a higher level is a new one."""
    rng = np.random.default_rng(7)
    stall = [{"episode_return_mean": 100.0 + float(rng.normal(0, 1))} for _ in range(300)]
    found = [f for f in run_detectors(build_detectors(), stall) if f.detector == "plateau"]
    assert len(found) == 1, [f.iteration for f in found]
    climb = [{"episode_return_mean": 100.0 + 2.0 * i + float(rng.normal(0, 1))} for i in range(60)]
    higher = [{"episode_return_mean": 230.0 + float(rng.normal(0, 1))} for _ in range(120)]
    found = [f for f in run_detectors(build_detectors(), stall[:120] + climb + higher) if f.detector == "plateau"]
    assert len(found) == 2 and found[1].value > 200, [(f.iteration, f.value) for f in found]


def _probed(det: Detector) -> bool:
    """``Detector.alarmed`` as it was first written: any attribute (or dict value) that has ``reported`` at
    warning or worse and is ``on``, found by probing every attribute."""
    for v in det.__dict__.values():
        for a in (v.values() if isinstance(v, dict) else (v,)):
            if getattr(a, "reported", None) in ("warning", "critical") and getattr(a, "on", False):
                return True
    return False


@pytest.mark.parametrize("fault", ["loss_explosion", "advantage_anomaly", "kl_controller_stuck", "value_collapse"])
def test_alarm_table_agrees_with_probing_every_attribute(fault):
    """The suite reads its alarms from a table (the engine asks several times a report); it must name the
    same detectors as probing each one, through onset, alarm and a detector reset on its own."""
    suite, history = build_detectors(), History()
    seen = set()
    for i, m in enumerate(faulty_stream(fault, n=120, onset=60, seed=3)):
        suite.observe(i + 1, m, history)
        if i == 90:
            for d in suite:
                d.reset()  # not through the suite: its table must notice
        expect = {d.name for d in suite if _probed(d)}
        assert suite.alarmed() == expect == {d.name for d in suite if d.alarmed()}
        seen |= expect
    assert fault in seen  # the alarm did come on: the comparison covered it
