"""advantage_anomaly: the advantage estimates (GAE, before normalization) going wrong."""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from supervisor.detectors._common import Alarm, fmt, median, reference_from, value_of, window_of
from supervisor.detectors.base import Detector
from supervisor.detectors.options import BandOption, Count, DetectorOptions, Number, at_least, fraction, positive
from supervisor.findings import Finding


class AdvantageAnomalyOptions(DetectorOptions):
    collapse_fraction: Number = fraction(0.01)
    zero: Number = at_least(0, 1e-8)
    z: Number = positive(6.0)
    ratio: Number = Field(10.0, gt=1)
    critical_ratio: Number = 100.0
    bias_ratio: Number = positive(3.0)
    bias_factor: Number = positive(3.0)
    skew_max: Number = positive(10.0)
    kurtosis_max: Number = positive(100.0)
    shape_factor: Number = positive(3.0)
    patience: Count = at_least(1, 2)
    window: Count = positive(30)
    warmup: Count = at_least(0, 10)
    exit: Count = at_least(1, 3)
    repeat: Count = positive(10)
    band: BandOption = None

    @model_validator(mode="after")
    def _ratios(self):
        if self.critical_ratio < self.ratio:
            raise ValueError(f"need critical_ratio >= ratio (got critical_ratio={self.critical_ratio:g}, "
                             f"ratio={self.ratio:g})")
        return self


class AdvantageAnomaly(Detector):
    """Warn when the advantage statistics of the train batch go wrong.

    Reads ``advantage_std``, ``advantage_mean``, ``advantage_skew`` and
    ``advantage_kurtosis`` (excess kurtosis) from the instrumented learner;
    each rule needs only its own metrics and has its own hysteresis.

    * std collapse: ``advantage_std`` below ``collapse_fraction`` x the
      median of its last ``window`` values (after ``warmup`` values, or a
      learned band) on ``patience`` iterations: warning. At or below ``zero``
      (no warm-up needed): critical, there is no learning signal left.
    * std explosion: log(``advantage_std``) robust z >= ``z`` AND std >=
      ``ratio`` x its median: warning; >= ``critical_ratio`` x: critical.
    * bias: |mean| / std >= ``bias_ratio`` AND >= ``bias_factor`` x the
      median of that ratio over the last ``window`` iterations, on
      ``patience`` iterations: warning (the critic is far off the returns).
    * shape: |skew| >= ``skew_max`` or kurtosis >= ``kurtosis_max``, AND >=
      ``shape_factor`` x its recent median, on ``patience`` iterations:
      warning (a few samples dominate the update).

    Args:
        collapse_fraction: Default 0.01.  zero: Default 1e-8.
        z: Default 6.  ratio: Default 10.  critical_ratio: Default 100.
        bias_ratio: Default 3.0.  bias_factor: Default 3.0.
        skew_max: Default 10.  kurtosis_max: Default 100.  shape_factor: Default 3.
        patience: consecutive iterations for collapse, bias and shape. Default 2.
        window: iterations of history in references. Default 30.
        warmup: history values needed. Default 10.
        exit, repeat: Latch hysteresis. Default 3, 10.
        band: learned healthy band for ``advantage_std``, used until ``warmup``
            values exist (its median for explosions, its low for collapses).
            Default None.
    """

    name = "advantage_anomaly"
    needs = (("advantage_std",),)
    band_metrics = ("advantage_std",)
    Options = AdvantageAnomalyOptions

    def __init__(self, **options):
        super().__init__(**options)
        self._latch_args = (self.exit, self.repeat)
        self._log_collapse, self._log_ratio = math.log(self.collapse_fraction), math.log(self.ratio)
        self.reset()

    def reset(self) -> None:
        exit, repeat = self._latch_args
        self._alarms = {"collapse": Alarm(self.patience, exit, repeat), "explosion": Alarm(1, exit, repeat),
                        "bias": Alarm(self.patience, exit, repeat), "skew": Alarm(self.patience, exit, repeat),
                        "kurtosis": Alarm(self.patience, exit, repeat)}
        self._streak = {k: 0 for k in self._alarms}

    def _fire(self, key: str, triggered: bool, sev: str = "warning") -> bool:
        self._streak[key] = self._streak[key] + 1 if triggered else 0
        return self._alarms[key].update(triggered, sev)

    def _quiet(self, key: str) -> None:
        """``_fire(key, False)``, cheaply."""
        if self._streak[key]:
            self._streak[key] = 0
        self._alarms[key].quiet()

    def _std_rules(self, iteration, std, history, metrics) -> list[Finding]:
        out = []
        vals = history.view("advantage_std", "log")
        exclude = max(self._streak["collapse"], self._streak["explosion"])
        if std > self.zero:
            window = self.window
            if exclude:
                w = window_of(vals, window, exclude)
            else:
                n = len(vals)
                w = vals[n - window:] if n > window else vals
            lv = math.log(std)
            if len(w) >= max(self.warmup, 1) and lv >= self._log_collapse + max(w) and lv - min(w) < self._log_ratio:
                # within [collapse_fraction x max, ratio x min] of the window: neither rule can trigger
                self._quiet("collapse")
                self._quiet("explosion")
                return []
        ref = reference_from(vals, "advantage_std", window=self.window, warmup=self.warmup, band=self.band,
                             log=True, exclude_last=exclude)
        src = "" if ref is None else (" (learned profile band)" if ref.source == "profile"
                                      else f" (last {ref.n} iterations)")
        cref = ref
        if ref is not None and ref.source == "profile":  # a band spans whole runs: judge a fall against its low
            cref = reference_from(vals, "advantage_std", window=self.window, warmup=self.warmup, band=self.band,
                                  log=True, exclude_last=exclude, band_at="low")
        dead = std <= self.zero
        collapsed = dead or (cref is not None and std < self.collapse_fraction * cref.typical)
        sev = "critical" if dead else "warning"
        if self._fire("collapse", collapsed, sev):
            typ = f"; typical {fmt(cref.typical)}{src}" if cref is not None else ""
            out.append(self.finding(
                iteration, sev, "advantage_std", std,
                f"advantage anomaly: advantage_std={fmt(std)} collapsed "
                f"({'<= ' + fmt(self.zero) if dead else 'below ' + fmt(self.collapse_fraction) + 'x its typical'}) "
                f"for {self._streak['collapse']} iterations{typ}: no learning signal",
                self.zero if dead else self.collapse_fraction * cref.typical, rule="std_collapse"))
        exploded, r, z = False, 1.0, 0.0
        if ref is not None:
            z, r = ref.z(std), std / ref.typical
            exploded = z >= self.z and r >= self.ratio
        sev = "critical" if r >= self.critical_ratio else "warning"
        if self._fire("explosion", exploded, sev):
            thr = (self.critical_ratio if sev == "critical" else self.ratio) * ref.typical
            out.append(self.finding(
                iteration, sev, "advantage_std", std,
                f"advantage anomaly: advantage_std={fmt(std)} is {fmt(r)}x its typical {fmt(ref.typical)}{src}, "
                f"robust z={fmt(z)} (needs z>={fmt(self.z)} and ratio>={fmt(self.ratio)}; critical at "
                f"{fmt(self.critical_ratio)}x)", thr, rule="std_explosion", ratio=r, z=z))
        return out

    def _bias_rule(self, iteration, mean, std, history) -> list[Finding]:
        b = abs(mean) / std
        if b < self.bias_ratio:  # cannot trigger: skip the history
            self._quiet("bias")
            return []
        ms = history.values("advantage_mean")[-self.window:]
        ss = history.values("advantage_std")[-self.window:]
        k = min(len(ms), len(ss))
        typical = None
        if k >= self.warmup:
            # the two series are aligned from the end when both are reported every iteration
            past = [abs(m) / s for m, s in zip(ms[-k:], ss[-k:]) if s > 0]
            if past:
                typical = median(past)
        need = max(self.bias_ratio, self.bias_factor * typical) if typical is not None else self.bias_ratio
        triggered = typical is not None and b >= need
        if not self._fire("bias", triggered):
            return []
        return [self.finding(
            iteration, "warning", "advantage_mean", mean,
            f"advantage anomaly: advantage_mean={fmt(mean)} is {fmt(b)} advantage_std ({fmt(std)}) from 0 for "
            f"{self._streak['bias']} iterations (needs >= {fmt(self.bias_ratio)} and >= {fmt(self.bias_factor)}x "
            f"its recent median {fmt(typical)}): the critic is far off the returns",
            need, rule="bias", bias=b, typical=typical)]

    def _shape_rule(self, iteration, key, metric, value, limit, history, metrics) -> list[Finding]:
        if abs(value) < limit:  # cannot trigger: skip the median
            self._quiet(key)
            return []
        past = history.view(metric, "abs")[-self.window:]
        typical = median(past) if len(past) >= self.warmup else None
        need = max(limit, self.shape_factor * typical) if typical is not None else limit
        triggered = typical is not None and abs(value) >= need
        if not self._fire(key, triggered):
            return []
        return [self.finding(
            iteration, "warning", metric, value,
            f"advantage anomaly: {metric}={fmt(value)} for {self._streak[key]} iterations (needs |x| >= "
            f"{fmt(limit)} and >= {fmt(self.shape_factor)}x its recent median {fmt(typical)}): a few samples "
            f"dominate the update", need, rule=key, typical=typical)]

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        out: list[Finding] = []
        std = value_of(metrics, "advantage_std")
        mean = value_of(metrics, "advantage_mean")
        if std is not None and std >= 0:
            out += self._std_rules(iteration, std, history, metrics)
            if mean is not None and std > 0:
                if abs(mean) / std < self.bias_ratio:  # the bias rule's shortcut, inlined
                    self._quiet("bias")
                else:
                    out += self._bias_rule(iteration, mean, std, history)
        skew = value_of(metrics, "advantage_skew")
        if skew is not None:
            if abs(skew) < self.skew_max:  # the shape rule's shortcut, inlined
                self._quiet("skew")
            else:
                out += self._shape_rule(iteration, "skew", "advantage_skew", skew, self.skew_max, history, metrics)
        kurt = value_of(metrics, "advantage_kurtosis")
        if kurt is not None:
            if abs(kurt) < self.kurtosis_max:
                self._quiet("kurtosis")
            else:
                out += self._shape_rule(iteration, "kurtosis", "advantage_kurtosis", kurt, self.kurtosis_max,
                                        history, metrics)
        return out
