"""Synthetic PPO metric streams: healthy runs, and each fault planted at a known onset.

The streams use the normalized metric names of :mod:`supervisor.metrics` and
imitate an RLlib PPO run on CartPole-v1 (return 1 per step, capped at 500;
two actions, so entropy starts at ln 2 = 0.693; kl_target 0.01 with RLlib's
adaptive KL coefficient; ``vf_loss`` clipped elementwise at vf_clip_param=10).
Each seed draws its own learning speed, noise levels and scales, so a test
over many seeds covers fast, slow, noisy and quiet runs.

Healthy runs: return rising noisily (logistic) towards the cap, with noise
and occasional short dips; entropy decaying slowly to 0.15-0.5; losses with
noise and early-training transients; KL lognormal around its target (and the
KL coefficient following RLlib's rule); gradient norms lognormal with an
early transient; explained variance rising, with a lag while returns move.

Faults (:data:`FAULTS`) start at ``onset``: abrupt (full strength at once)
or ``gradual`` (growing over ``ramp`` iterations, full at onset + ramp - 1).

    healthy_stream(n, seed) -> list[dict[str, float]]
    faulty_stream(fault, n, onset, seed, gradual=False, ...) -> list[dict]
    run_detectors(detectors, stream) -> list[Finding]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Iterable

import numpy as np

from supervisor.detectors import Detector, DetectorSuite
from supervisor.findings import Finding
from supervisor.history import History

LN2 = math.log(2.0)

# fault -> its modes (variants); the first is the default.
FAULTS: dict[str, tuple[str, ...]] = {
    "loss_explosion": ("explode",),
    "gradient_explosion": ("explode",),
    "gradient_vanishing": ("vanish", "zero"),
    "kl_spike": ("spike",),
    "kl_controller_stuck": ("down", "up", "zero"),
    "entropy_collapse": ("low", "zero"),
    "value_collapse": ("ev", "pinned"),
    "advantage_anomaly": ("std_collapse", "std_zero", "std_explosion", "bias", "shape"),
    "reward_collapse": ("min", "partial"),
    "plateau": ("stall",),
    "nan": ("persistent", "once"),
    "divergence": ("ray",),  # the RLlib 2.60 PPO divergence signature (see shared/ray-notes.md)
}


@dataclass(frozen=True)
class RunParams:
    """One synthetic run's character; every field is drawn per seed unless overridden."""

    cap: float = 500.0          # return cap (CartPole-v1: 500)
    r0: float = 22.0            # initial return
    r_min: float = 9.0          # the environment's minimum return (CartPole: ~9 steps)
    mid: float = 25.0           # iteration of fastest learning (logistic midpoint)
    width: float = 8.0          # logistic width (iterations)
    ret_noise: float = 0.05     # multiplicative noise sigma of the return
    dip_rate: float = 0.02      # chance per iteration that a healthy dip starts
    ent_end: float = 0.3        # entropy the run decays towards
    ent_tau: float = 60.0       # entropy decay time (iterations)
    kl_target: float = 0.01
    kl_level: float = 1.0       # KL median / kl_target
    kl_noise: float = 0.3       # lognormal sigma of the KL
    kl_boost: float = 1.0       # early-training KL transient (x(1 + boost))
    kl_coeff0: float = 0.2
    g0: float = 1.0             # typical gradient norm
    g_trans: float = 2.0        # early-training gradient transient (x(1 + g_trans))
    g_tau: float = 6.0
    g_growth: float = 0.5       # gradient growth with progress (value targets grow)
    g_noise: float = 0.25       # lognormal sigma of the gradient norm
    pol_mean: float = -0.01
    pol_noise: float = 0.01
    vts0: float = 5.0           # value target scale at start / when solved
    vts1: float = 20.0
    ev_start: float = 0.0
    ev_end: float = 0.8
    ev_tau: float = 15.0
    ev_lag: float = 0.15        # explained-variance dip while the return moves fast
    ev_noise: float = 0.05
    vf_clip: float = 10.0
    vf_coeff: float = 1.0
    lr: float = 3e-4
    ent_coeff: float = 0.0
    adv_bias0: float = 0.8      # |mean|/std of raw advantages at start (critic not trained yet)
    adv_bias_tau: float = 10.0
    skew0: float = -0.3
    kurt0: float = 3.0
    batch: int = 4000
    iter_time: float = 1.0


def sample_params(rng: np.random.Generator, **overrides) -> RunParams:
    """Draw a run's character (fast/slow learner, noisy/quiet); ``overrides`` fix fields."""
    u = rng.uniform
    p = RunParams(
        r0=u(15, 30), mid=u(10, 45), width=u(4, 12), ret_noise=u(0.03, 0.08), dip_rate=u(0.0, 0.04),
        ent_end=u(0.15, 0.5), ent_tau=u(25, 90), kl_level=u(0.7, 1.4), kl_noise=u(0.2, 0.35),
        kl_boost=u(0.5, 2.0), g0=10 ** u(-0.5, 0.5), g_trans=u(1.0, 3.0), g_tau=u(4, 10), g_growth=u(0, 1),
        g_noise=u(0.15, 0.3), pol_mean=-u(0.002, 0.02), pol_noise=u(0.004, 0.015), vts0=u(4, 7),
        vts1=u(15, 30), ev_start=u(-0.1, 0.1), ev_end=u(0.5, 0.95), ev_tau=u(5, 25), ev_lag=u(0, 0.3),
        ev_noise=u(0.03, 0.08), lr=float(rng.choice([5e-5, 1e-4, 3e-4])), adv_bias0=u(0.3, 1.2),
        adv_bias_tau=u(5, 20), skew0=u(-0.8, 0.3), kurt0=u(1, 6), iter_time=u(0.8, 1.2),
    )
    unknown = set(overrides) - {f.name for f in fields(RunParams)}
    if unknown:
        raise ValueError(f"unknown run parameter(s): {', '.join(sorted(unknown))}")
    return replace(p, **overrides)


def _progress(clock: np.ndarray, p: RunParams) -> np.ndarray:
    s = 1.0 / (1.0 + np.exp(-(clock - p.mid) / p.width))
    s0 = 1.0 / (1.0 + math.exp(p.mid / p.width))
    return (s - s0) / (1.0 - s0)


def _erf(x: np.ndarray) -> np.ndarray:
    return np.array([math.erf(v) for v in np.ravel(x)]).reshape(np.shape(x))


def clipped_vf_loss(u: np.ndarray, clip: float) -> np.ndarray:
    """E[min(e^2, clip)] for Gaussian errors with E[e^2] = u: RLlib's elementwise-clipped value loss."""
    u = np.maximum(u, 1e-12)
    x = clip / u
    f1 = _erf(np.sqrt(x / 2))
    f3 = f1 - np.sqrt(2 * x / math.pi) * np.exp(-x / 2)
    return u * f3 + clip * (1 - f1)


class _Stream:
    """Latent and observed arrays of one run, built in stages so faults can edit them."""

    def __init__(self, n: int, p: RunParams, rng: np.random.Generator):
        self.n, self.p, self.rng = n, p, rng
        self.t = np.arange(n, dtype=float)
        self.clock = self.t.copy()  # learning time (a plateau freezes it)
        # Draw every noise term up front so a fault changes the stream only from its onset.
        N = lambda s=1.0: rng.normal(0.0, s, n)  # noqa: E731
        self.z = {k: N() for k in ("ret", "ent", "kl", "akl", "clip", "g", "gl", "gmax", "gp", "gv", "pol",
                                    "vts", "ev", "vf", "vfn", "astd", "abias", "skew", "kurt", "time")}
        self.gmax_f = rng.uniform(1.5, 2.5, n)
        self.pol_frac = rng.uniform(0.2, 0.5)
        self.pol_spike = (rng.random(n) < 0.02) * rng.normal(0, 2.5 * p.pol_noise, n)
        dips = np.ones(n)
        i = 0
        while i < n:
            if rng.random() < p.dip_rate:
                dur = int(rng.integers(1, 4))
                dips[i:i + dur] *= 1 - rng.uniform(0.1, 0.3)
                i += dur
            else:
                i += 1
        self.dips = dips
        self.ret_max_f = rng.uniform(1.3, 2.5, n)
        self.ret_min_f = rng.uniform(0.2, 0.6, n)
        self.kl_override: np.ndarray | None = None  # set by faults that pin kl_coeff behaviour
        self.vf_pinned = np.zeros(n, dtype=bool)
        self.nonfinite: dict[str, np.ndarray] = {}
        self.build_latent()

    def build_latent(self) -> None:
        p, t, z = self.p, self.t, self.z
        prog = _progress(self.clock, p)
        self.prog = prog
        level = p.r0 + (p.cap - p.r0) * prog
        self.ret = np.clip(level * np.exp(p.ret_noise * z["ret"]) * self.dips, p.r_min, p.cap)
        ent0 = LN2 - 0.005
        self.ent = np.clip(p.ent_end + (ent0 - p.ent_end) * np.exp(-t / p.ent_tau) + 0.01 * z["ent"], 0.0, LN2)
        self.kl = p.kl_target * p.kl_level * (1 + p.kl_boost * np.exp(-t / 4)) * np.exp(p.kl_noise * z["kl"])
        gm = p.g0 * (1 + p.g_trans * np.exp(-t / p.g_tau)) * (1 + p.g_growth * prog) * np.exp(p.g_noise * z["g"])
        self.g_mean = gm
        self.g_last = gm * np.exp(0.15 * z["gl"])
        self.g_max = gm * self.gmax_f * np.exp(0.1 * z["gmax"])
        self.g_pol = gm * self.pol_frac * np.exp(0.15 * z["gp"])
        self.g_val = gm * math.sqrt(1 - self.pol_frac ** 2) * np.exp(0.15 * z["gv"])
        early = np.exp(-t / 5)
        self.pol = p.pol_mean * (1 + 2 * early) + p.pol_noise * (1 + early) * z["pol"] + self.pol_spike
        self.vts = (p.vts0 + (p.vts1 - p.vts0) * math.sqrt(p.cap / 500.0) * prog) * np.exp(0.05 * z["vts"])
        pv = 1 - np.exp(-t / p.ev_tau)
        self.ev_true = p.ev_start * (1 - pv) + p.ev_end * pv - p.ev_lag * 4 * prog * (1 - prog)
        self.ev = np.minimum(self.ev_true + p.ev_noise * z["ev"], 0.99)
        resid = np.maximum(1 - self.ev_true, 0.03)
        self.vf_unclipped = resid * self.vts ** 2 * np.exp(0.15 * z["vf"])
        self.adv_std = 0.6 * np.sqrt(np.maximum(resid, 0.05)) * self.vts * np.exp(0.08 * z["astd"])
        self.adv_mean = (p.adv_bias0 * np.exp(-t / p.adv_bias_tau) + 0.1 * z["abias"]) * self.adv_std
        self.skew = p.skew0 + 0.25 * z["skew"]
        self.kurt = p.kurt0 * np.exp(0.3 * z["kurt"])

    def to_dicts(self) -> list[dict[str, float]]:
        p, n, z = self.p, self.n, self.z
        # RLlib's adaptive KL coefficient, updated after each iteration's KL; the KL penalty feeds
        # back on the KL (a larger coefficient keeps the policy closer), which keeps a healthy
        # controller wandering around its start instead of drifting away.
        kl = self.kl.copy()
        coeff = np.empty(n)
        c = p.kl_coeff0
        for i in range(n):
            if math.isfinite(kl[i]) and kl[i] > 0:
                kl[i] *= (p.kl_coeff0 / c) ** 0.5
            if kl[i] > 2 * p.kl_target:
                c *= 1.5
            elif kl[i] < 0.5 * p.kl_target:
                c *= 0.5
            coeff[i] = c
        akl = kl * np.exp(0.1 * z["akl"])
        clip_frac = np.clip(0.15 * np.sqrt(np.maximum(kl, 0) / p.kl_target) * np.exp(0.1 * z["clip"]), 0, 1)
        model = clipped_vf_loss(self.vf_unclipped, p.vf_clip)
        vf = p.vf_clip - (p.vf_clip - model) * np.exp(0.1 * z["vfn"])  # noisy, never exactly on the clip
        vf = np.where(self.vf_pinned, p.vf_clip, vf)
        with np.errstate(over="ignore", invalid="ignore"):
            total = self.pol + p.vf_coeff * vf + coeff * kl - p.ent_coeff * self.ent
        steps = np.full(n, float(p.batch))
        out = []
        for i in range(n):
            r = float(self.ret[i])
            m = {
                "episode_return_mean": r,
                "episode_return_max": float(min(p.cap, r * self.ret_max_f[i])),
                "episode_return_min": float(max(p.r_min, r * self.ret_min_f[i])),
                "episode_len_mean": r,
                "num_episodes": float(max(1, round(p.batch / max(r, 1.0)))),
                "policy_loss": float(self.pol[i]),
                "vf_loss": float(vf[i]),
                "vf_loss_unclipped": float(self.vf_unclipped[i]),
                "total_loss": float(total[i]),
                "entropy": float(self.ent[i]),
                "kl": float(kl[i]),
                "approx_kl": float(akl[i]),
                "clip_fraction": float(clip_frac[i]),
                "kl_coeff": float(coeff[i]),
                "entropy_coeff": p.ent_coeff,
                "lr": p.lr,
                "grad_norm": float(self.g_last[i]),
                "grad_norm_mean": float(self.g_mean[i]),
                "grad_norm_max": float(self.g_max[i]),
                "grad_norm_policy": float(self.g_pol[i]),
                "grad_norm_value": float(self.g_val[i]),
                "grad_norm_ratio": float(self.g_pol[i] / self.g_val[i]) if self.g_val[i] > 0 else 0.0,
                "explained_variance": float(self.ev[i]),
                "advantage_mean": float(self.adv_mean[i]),
                "advantage_std": float(self.adv_std[i]),
                "advantage_skew": float(self.skew[i]),
                "advantage_kurtosis": float(self.kurt[i]),
                "value_target_scale": float(self.vts[i]),
                "time_this_iter_s": float(p.iter_time * math.exp(0.05 * z["time"][i])),
                "env_steps": float(steps[i]),
                "env_steps_lifetime": float(steps[: i + 1].sum()),
            }
            for name, mask in self.nonfinite.items():
                if not math.isfinite(mask[i]):
                    m[name] = float(mask[i])
            out.append(m)
        return out


def healthy_stream(n: int = 150, seed: int = 0, **params) -> list[dict[str, float]]:
    """A healthy PPO run of ``n`` iterations; ``params`` fix :class:`RunParams` fields."""
    rng = np.random.default_rng(seed)
    return _Stream(n, sample_params(rng, **params), rng).to_dicts()


def _ramp(n: int, onset: int, gradual: bool, ramp: int) -> np.ndarray:
    """0 before onset, then 1 (abrupt) or rising linearly to 1 at onset + ramp - 1 (gradual)."""
    t = np.arange(n)
    r = np.zeros(n)
    after = t >= onset
    r[after] = np.clip((t[after] - onset + 1) / ramp, 0, 1) if gradual else 1.0
    return r


def faulty_stream(fault: str, n: int = 150, onset: int = 80, seed: int = 0, gradual: bool = False,
                  ramp: int = 8, mode: str | None = None, magnitude: float | None = None,
                  duration: int = 3, **params) -> list[dict[str, float]]:
    """A run that is healthy until ``onset``, then develops ``fault`` (see :data:`FAULTS`).

    Args:
        fault: one of FAULTS.
        onset: first iteration (0-based index into the stream) showing the fault.
        gradual: grow over ``ramp`` iterations instead of appearing at once.
        mode: a variant of the fault (FAULTS[fault]); default its first.
        magnitude: fault strength (a multiplier for explosions/collapses);
            default per fault.
        duration: iterations a kl_spike lasts at full strength.
        params: fix :class:`RunParams` fields.
    """
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
    mode = mode or FAULTS[fault][0]
    if mode not in FAULTS[fault]:
        raise ValueError(f"fault {fault}: unknown mode {mode!r}; known: {', '.join(FAULTS[fault])}")
    if not 0 <= onset < n:
        raise ValueError(f"onset {onset} outside the stream (n={n})")
    rng = np.random.default_rng(seed)
    s = _Stream(n, sample_params(rng, **params), rng)
    p = s.p
    r = _ramp(n, onset, gradual, ramp)
    on = r > 0
    frng = np.random.default_rng([seed, 7919])  # the fault's own noise: the healthy part stays identical

    def grads(factor):
        for name in ("g_mean", "g_last", "g_max", "g_pol", "g_val"):
            setattr(s, name, getattr(s, name) * factor)

    if fault == "loss_explosion":
        f = (magnitude or 1e3) ** r
        s.pol = s.pol + (f - 1) * max(abs(p.pol_mean), p.pol_noise)
        s.vf_unclipped = s.vf_unclipped * f
        grads(np.sqrt(f))
    elif fault == "gradient_explosion":
        grads((magnitude or 1e3) ** r)
    elif fault == "gradient_vanishing":
        grads((magnitude or 1e-3) ** r)
        if mode == "zero":
            grads(np.where(r >= 1, 0.0, 1.0))
    elif fault == "kl_spike":
        end = onset + (ramp if gradual else 0) + duration
        active = on & (np.arange(n) < end)
        s.kl = s.kl * np.where(active, (magnitude or 300.0) ** r, 1.0)
    elif fault == "kl_controller_stuck":
        if mode == "down":
            s.kl = s.kl * (magnitude or 1e-3) ** r
        elif mode == "up":
            s.kl = s.kl * (magnitude or 30.0) ** r
        else:  # zero: a frozen policy
            s.kl = np.where(r >= 1, 0.0, s.kl * 1e-3 ** r)
    elif fault == "entropy_collapse":
        s.ent = s.ent * (magnitude or 0.05) ** r
        if mode == "zero":
            s.ent = np.where(r >= 1, 0.0, s.ent)
    elif fault == "value_collapse":
        if mode == "ev":
            level = magnitude if magnitude is not None else -0.7
            s.ev = (1 - r) * s.ev + r * (level + 0.1 * frng.normal(0, 1, n))
        else:  # pinned: every sample clipped, critic output constant
            s.vf_pinned = r >= 1
            s.vf_unclipped = np.where(on, s.vf_unclipped * 1e3 ** r, s.vf_unclipped)
            s.ev = np.where(on, (1 - r) * s.ev + r * 0.02 * frng.normal(0, 1, n), s.ev)
    elif fault == "advantage_anomaly":
        if mode == "std_collapse":
            f = (magnitude or 1e-4) ** r
            s.adv_std, s.adv_mean = s.adv_std * f, s.adv_mean * f
        elif mode == "std_zero":
            s.adv_std = np.where(r >= 1, 0.0, s.adv_std * 1e-4 ** r)
            s.adv_mean = np.where(r >= 1, 0.0, s.adv_mean * 1e-4 ** r)
        elif mode == "std_explosion":
            f = (magnitude or 1e3) ** r
            s.adv_std, s.adv_mean = s.adv_std * f, s.adv_mean * f
        elif mode == "bias":
            b = magnitude or 5.0
            s.adv_mean = (1 - r) * s.adv_mean + r * b * s.adv_std
        else:  # shape
            s.skew = (1 - r) * s.skew + r * (magnitude or 25.0)
            s.kurt = (1 - r) * s.kurt + r * (magnitude or 25.0) ** 2
    elif fault == "reward_collapse":
        if mode == "min":
            floor = p.r_min * np.exp(0.03 * frng.normal(0, 1, n))
            s.ret = (1 - r) * s.ret + r * floor
        else:  # partial: keep (magnitude or 0.35) of the return
            s.ret = s.ret * (1 - r * (1 - (magnitude or 0.35)))
    elif fault == "plateau":
        # learning's clock stops (gradual: slows to a stop over the ramp); noise and dips go on.
        rate = 1 - r
        clock = np.arange(n, dtype=float)
        clock[onset:] = onset + np.cumsum(rate[onset:]) - rate[onset]
        s.clock = clock
        prog = _progress(clock, p)
        level = p.r0 + (p.cap - p.r0) * prog
        s.ret = np.clip(level * np.exp(p.ret_noise * s.z["ret"]) * s.dips, p.r_min, p.cap)
    elif fault == "nan":
        names = ("policy_loss", "vf_loss", "total_loss", "kl", "entropy", "grad_norm")
        mask = np.ones(n)
        if mode == "once":
            mask[onset] = np.nan
        else:
            mask[onset:] = np.nan
        s.nonfinite = {k: mask for k in names}
    elif fault == "divergence":
        # shared/ray-notes.md: iteration 1 after blow-up reports total_loss=inf and mean_kl_loss=inf;
        # then entropy 0, gradient norm 0, vf_loss pinned at its clip, curr_kl_coeff halving,
        # the return collapsing to the environment's minimum.
        after = np.arange(n) > onset
        s.kl = np.where(after, 0.0, s.kl)
        s.kl[onset] = np.inf
        s.ent = np.where(after, 0.0, s.ent)
        grads(np.where(after, 0.0, 1.0))
        s.vf_pinned = after
        s.vf_unclipped = np.where(after, s.vf_unclipped * 1e4, s.vf_unclipped)
        s.ev = np.where(after, 0.01 * frng.normal(0, 1, n), s.ev)
        k = np.arange(n) - onset
        s.ret = np.where(after, np.maximum(p.r_min, s.ret[onset] * 0.3 ** np.maximum(k, 0)), s.ret)
        s.ret = np.where(after, np.maximum(s.ret, p.r_min * np.exp(0.02 * frng.normal(0, 1, n))), s.ret)
        s.nonfinite = {"total_loss": np.where(np.arange(n) == onset, np.inf, 0.0)}
    return s.to_dicts()


def run_detectors(detectors: Iterable[Detector], stream: Iterable[dict], history: History | None = None,
                  start: int = 0) -> list[Finding]:
    """Feed ``stream`` through ``detectors`` as the supervisor does (:class:`DetectorSuite`: judge
    each iteration against the history *before* it, then append it), except that a detector that
    raises is an error here, not an info finding. Iterations are numbered from ``start``."""
    suite = DetectorSuite(detectors, catch_errors=False)
    history = history if history is not None else History()
    out: list[Finding] = []
    for i, metrics in enumerate(stream, start):
        out.extend(suite.observe(i, metrics, history))
    return out
