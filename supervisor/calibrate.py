"""``supervise calibrate``: learn per-metric healthy bands from healthy runs.

Inputs are supervised run folders (their ``supervisor.db``: every trial's
stored reports) or anything ``supervise scan`` reads (Tune folders,
``result.json``, ``progress.csv``, JSONL logs; judged by the same detectors
on the way in). A run with a critical finding is refused unless
``include_unhealthy``; then only its iterations before each trial's first
critical finding are used.

Per normalized metric, over every value of every trial (non-finite values
left out):

* ``median``: the median;
* ``low`` / ``high``: the ``quantile`` and 1 - ``quantile`` quantiles,
  widened by ``widen`` robust sigmas of the per-iteration noise (1.4826 x
  MAD of successive differences / sqrt 2), because a sample's extreme
  quantiles understate the healthy range. Scale metrics (gradient
  norms, KL, KL coefficient, lr, value loss, advantage std) are banded in
  log space when all their values are positive (``space: log``), so a band
  never reaches 0 or below. The ``high`` of a return is not widened: the
  plateau detector reads it as the level a healthy run reaches. Bounded
  metrics stay in their range (explained variance <= 1, fractions in
  [0, 1], non-negative metrics >= 0);
* ``n``: the number of values;
* ``change``: the same band for the per-iteration change within a trial (a
  difference, or for log-space metrics a ratio), for rate-of-change rules.

Written as YAML::

    version: 1
    source: [run folders / logs]
    metrics: {name: {low, high, median, n, space, change: {low, high, median, kind}}}

An experiment uses it with ``supervisor: {profile: PROFILE.yaml}``;
detectors use a metric's band until their own history of it is long enough.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from supervisor.errors import InputError
from supervisor.stats import center_scale

# Counters and cumulative totals: a band of them means nothing.
SKIP = frozenset({"env_steps_lifetime", "time_total_s", "num_episodes", "healthy_env_runners",
                  "env_runner_restarts", "env_runners_dropped"})
# Scale metrics: banded in log space when all values are positive.
LOG_METRICS = frozenset({"grad_norm", "grad_norm_max", "grad_norm_mean", "grad_norm_policy", "grad_norm_value",
                         "grad_norm_ratio", "kl", "approx_kl", "kl_coeff", "lr", "entropy_coeff", "vf_loss",
                         "vf_loss_unclipped", "advantage_std", "value_target_scale", "value_target_rms",
                         "advantage_kurtosis"})
# The high edge is "what a healthy run reaches" (the plateau target): not widened.
HIGHER_IS_BETTER = frozenset({"episode_return_mean", "episode_return_max", "episode_return_min", "episode_len_mean"})
BOUNDS = {"explained_variance": (None, 1.0), "clip_fraction": (0.0, 1.0)}

DEFAULT_QUANTILE = 0.01
DEFAULT_WIDEN = 1.0
DEFAULT_MIN_SAMPLES = 10


@dataclass
class Source:
    """One input: its trials' metric streams, oldest first."""

    path: str
    kind: str  # "run" | a scan format
    trials: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    critical: list[str] = field(default_factory=list)  # "detector at iteration/step N" per critical finding
    dropped: int = 0  # iterations left out (after a critical finding, with include_unhealthy)


def _is_run(p: Path) -> bool:
    return (p.is_dir() and (p / "supervisor.db").is_file()) or (p.is_file() and p.suffix == ".db")


def read_run(path: str | Path) -> Source:
    from supervisor.report import open_store

    src = Source(str(path), "run")
    try:
        store = open_store(path)
    except sqlite3.Error as e:
        raise InputError(str(path), None, f"unreadable supervisor.db ({e})") from None
    try:
        for t in store.trials():
            tid = t["trial_id"]
            crit = [f for f in store.findings(tid) if f["severity"] == "critical"]
            src.critical += [f"{f['detector']} at iteration {f['iteration']}" for f in crit]
            cut = min((f["seq"] for f in crit if f["seq"] is not None), default=None)
            reports = store.reports(tid)
            keep = [r["metrics"] for r in reports if cut is None or r["seq"] < cut]
            src.dropped += len(reports) - len(keep)
            src.trials[tid] = keep
    except sqlite3.Error as e:
        raise InputError(str(path), None, f"unreadable supervisor.db ({e})") from None
    finally:
        store.close()
    return src


def read_log(path: str | Path) -> Source:
    from supervisor.scan import analyze, load

    p = Path(path)
    if p.is_dir() and not any(p.iterdir()):
        raise InputError(str(path), None, "empty folder: no supervisor.db and no logs")
    try:
        kind, logs = load(p)
    except InputError as e:
        if p.is_dir() and e.source == str(path):
            raise InputError(str(path), None, "not a run folder (no supervisor.db) and no result.json, "
                                              "progress.csv or *.jsonl below it") from None
        raise
    src = Source(str(path), kind)
    for log in logs:
        if log.error:
            continue
        res = analyze(log)
        crit = [f for f in res["findings"] if f["severity"] == "critical"]
        src.critical += [f"{f['detector']} at step {f['step']}" for f in crit]
        cut = log.steps.index(crit[0]["step"]) if crit else len(log.metrics)
        src.dropped += len(log.metrics) - cut
        src.trials[log.trial_id] = log.metrics[:cut]
    return src


def collect(paths: Sequence[str | Path], include_unhealthy: bool = False) -> list[Source]:
    if not paths:
        raise InputError("calibrate", None, "give at least one run folder or log")
    out = []
    for path in paths:
        p = Path(path)
        if not p.exists():
            raise InputError(str(path), None, "no such file or directory")
        src = read_run(p) if _is_run(p) else read_log(p)
        if src.critical and not include_unhealthy:
            shown = ", ".join(src.critical[:3]) + (", ..." if len(src.critical) > 3 else "")
            raise InputError(str(path), None, f"not a healthy run: {len(src.critical)} critical finding(s) "
                                              f"({shown}); pass --include-unhealthy to use its iterations "
                                              "before them")
        if not any(src.trials.values()):
            raise InputError(str(path), None, "no reports to learn from")
        out.append(src)
    return out


def _sig(x: float, up: bool | None = None) -> float:
    """``x`` to 6 significant digits; rounded outward (``up``: towards +inf) for a band edge, so that
    the edge still holds the values it was computed from."""
    r = float(f"{x:.6g}")
    if up is None or r == x or x == 0 or not math.isfinite(x):
        return r
    if (r < x) == up:
        step = 10.0 ** (math.floor(math.log10(abs(x))) - 5)
        r = float(f"{r + step if up else r - step:.6g}")
    return r


def _robust(y: np.ndarray) -> tuple[float, float]:
    med, sigma = center_scale(y.tolist(), 0.0, 0.0)
    return float(med), float(sigma)


def band(metric: str, series: Sequence[Sequence[float]], quantile: float = DEFAULT_QUANTILE,
         widen: float = DEFAULT_WIDEN, min_samples: int = DEFAULT_MIN_SAMPLES) -> dict | None:
    """The healthy band of ``metric`` from its per-trial series; None with fewer than ``min_samples`` values.

    The quantile edges are widened by ``widen`` x the per-iteration noise sigma
    (1.4826 MAD of successive differences / sqrt 2, pooled over trials; the
    level's MAD sigma when there are too few differences): the margin a
    sample's extreme quantiles need, without the spread of a trending metric's
    whole trajectory (a return rising from 20 to 500) swamping it.
    """
    clean = [np.asarray([v for v in s if isinstance(v, (int, float)) and math.isfinite(v)], dtype=float)
             for s in series]
    clean = [s for s in clean if len(s)]
    if not clean:
        return None
    x = np.concatenate(clean)
    if len(x) < min_samples:
        return None
    log = metric in LOG_METRICS and bool(np.all(x > 0))
    f = np.log if log else (lambda a: a)
    y = f(x)
    q_lo, q_hi = (float(v) for v in np.quantile(y, [quantile, 1.0 - quantile]))
    med, level_sigma = _robust(y)
    diffs = [np.diff(f(s)) for s in clean if len(s) > 1]
    d = np.concatenate(diffs) if diffs else np.empty(0)
    sigma = _robust(d)[1] / math.sqrt(2.0) if len(d) >= 3 else level_sigma
    lo, hi = q_lo - widen * sigma, q_hi + widen * sigma
    if metric in HIGHER_IS_BETTER:
        hi = q_hi
    if log:
        lo, med, hi = math.exp(lo), math.exp(med), math.exp(hi)
    else:
        if np.all(x >= 0):
            lo = max(lo, 0.0)
        b_lo, b_hi = BOUNDS.get(metric, (None, None))
        lo = lo if b_lo is None else max(lo, b_lo)
        hi = hi if b_hi is None else min(hi, b_hi)
    out = {"low": _sig(lo, up=False), "high": _sig(hi, up=True), "median": _sig(med), "n": int(len(x)),
           "space": "log" if log else "linear"}
    if len(d) >= min_samples:
        c_lo, c_hi = (float(v) for v in np.quantile(d, [quantile, 1.0 - quantile]))
        c_med, c_sigma = _robust(d)
        c_lo, c_hi = c_lo - widen * c_sigma, c_hi + widen * c_sigma
        if log:
            out["change"] = {"low": _sig(math.exp(c_lo), up=False), "high": _sig(math.exp(c_hi), up=True),
                             "median": _sig(math.exp(c_med)), "kind": "ratio"}
        else:
            out["change"] = {"low": _sig(c_lo, up=False), "high": _sig(c_hi, up=True), "median": _sig(c_med),
                             "kind": "difference"}
    if not all(math.isfinite(out[k]) for k in ("low", "high", "median")):
        return None
    return out


def calibrate(paths: Sequence[str | Path], include_unhealthy: bool = False, quantile: float = DEFAULT_QUANTILE,
              widen: float = DEFAULT_WIDEN, min_samples: int = DEFAULT_MIN_SAMPLES) -> dict:
    """Learn a profile from ``paths``; returns the YAML document as a dict."""
    if not 0 < quantile < 0.5:
        raise InputError("--quantile", None, f"must be between 0 and 0.5 (got {quantile})")
    if not (0 <= widen < float("inf")):
        raise InputError("--widen", None, f"must be >= 0 (got {widen})")
    if min_samples < 2:
        raise InputError("--min-samples", None, f"must be >= 2 (got {min_samples})")
    sources = collect(paths, include_unhealthy)
    per_metric: dict[str, list[list[float]]] = {}
    for src in sources:
        for stream in src.trials.values():
            names = dict.fromkeys(k for m in stream for k in m)
            for name in names:
                if name in SKIP:
                    continue
                per_metric.setdefault(name, []).append([m[name] for m in stream if name in m])
    metrics = {}
    for name in sorted(per_metric):
        b = band(name, per_metric[name], quantile, widen, min_samples)
        if b is not None:
            metrics[name] = b
    if not metrics:
        raise InputError(str(paths[0]) if len(paths) == 1 else "calibrate", None,
                         f"no metric has {min_samples} finite values to learn a band from")
    return {
        "version": 1,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": [str(p) for p in paths],
        "settings": {"quantile": quantile, "widen": widen, "min_samples": min_samples,
                     "include_unhealthy": include_unhealthy},
        "runs": [{"path": s.path, "kind": s.kind, "trials": len(s.trials),
                  "iterations": sum(len(v) for v in s.trials.values()), "critical_findings": len(s.critical),
                  "iterations_left_out": s.dropped} for s in sources],
        "metrics": metrics,
    }


def write_profile(profile: dict, out: str | Path) -> None:
    p = Path(out)
    text = ("# learned by 'supervise calibrate'; use it with  supervisor: {profile: " + p.name + "}\n"
            + yaml.safe_dump(profile, sort_keys=False, default_flow_style=None, width=120))
    try:
        if p.parent and not p.parent.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    except OSError as e:
        raise InputError(str(out), None, f"cannot write: {e.strerror or e}") from None


DEFAULT_PROFILE = Path(__file__).resolve().parent / "profiles" / "default.yaml"


@functools.lru_cache(maxsize=1)
def _default_profile() -> dict:
    return load_profile(DEFAULT_PROFILE)


def default_profile() -> dict:
    """The profile the package ships (``benchmarks/make_default_profile.py``): healthy bands of the
    environment-free metrics (KL, clip fraction, explained variance, advantage shape), learned from
    recorded healthy runs of several environments; detectors use it until a run's own history exists."""
    return dict(_default_profile())


def load_profile(path: str | Path) -> dict:
    """A profile file -> its ``metrics`` mapping, checked as ``build_detectors(profile=...)`` needs it."""
    from supervisor.detectors._common import check_band

    from supervisor.config import read_yaml

    data = read_yaml(path, "mapping with 'metrics'")
    if not isinstance(data.get("metrics"), dict):
        raise InputError(str(path), "metrics", "a profile needs a 'metrics' mapping")
    for name, b in data["metrics"].items():
        try:
            check_band(b, "band")
        except ValueError as e:
            raise InputError(str(path), f"metrics.{name}", str(e).removeprefix("band: ")) from None
    return data["metrics"]


def summary(profile: dict, out: str | Path) -> str:
    runs = profile["runs"]
    trials = sum(r["trials"] for r in runs)
    its = sum(r["iterations"] for r in runs)
    lines = [f"wrote {out}: {len(profile['metrics'])} metric bands from {len(runs)} source(s), "
             f"{trials} trial(s), {its} iterations"]
    left = sum(r["iterations_left_out"] for r in runs)
    if left:
        lines.append(f"  ({left} iterations at or after a critical finding left out)")
    lines.append(f"  {'metric':<22} {'low':>11} {'median':>11} {'high':>11} {'n':>6}")
    for name, b in profile["metrics"].items():
        lines.append(f"  {name:<22} {b['low']:>11.4g} {b['median']:>11.4g} {b['high']:>11.4g} {b['n']:>6}")
    return "\n".join(lines) + "\n"
