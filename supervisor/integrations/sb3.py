"""Stable-Baselines3: a callback that puts ``model.learn`` under supervision.

    from supervisor.integrations.sb3 import SupervisorCallback
    model = PPO("MlpPolicy", "CartPole-v1")
    model.learn(50_000, callback=SupervisorCallback("runs/sb3-ppo"))

When it reports (:mod:`supervisor.integrations.cadence`): on-policy algorithms (PPO, A2C) once per
rollout, rollouts shorter than 256 env steps merged (A2C's default 5-step rollouts: one report per 256
env steps); off-policy ones (DQN, SAC, TD3) once every 1,000 env steps, not per gradient step
(``report_every`` sets the env steps instead). SB3 records ``train/*`` inside ``train()``, after the
rollout, so a report goes out at the start of the rollout that follows the update that completed it,
and the last one when training ends. It carries the mean of each ``train/*`` value over the updates
since the previous report (the last value for the learning rate and other settings), on-policy the
explained variance of every sample of the rollouts since the previous report, pooled
(:func:`pooled_explained_variance`: SB3 logs it per rollout, and A2C's 5-step rollouts make that a ratio
of two near-zero variances; NaN, a constant return, is no data), the
episodes that finished since the previous report (their mean return and length, and ``num_episodes``:
how many back it; SB3's own ``rollout/ep_rew_mean`` is a 100-episode window, which would count old
episodes again in every report), the env steps, the entropy coefficient, and what the detectors judge
the losses against: ``value_target_scale`` (mean |return target| of the newest rollout: PPO's and A2C's unclipped
value loss grows with it), ``value_target_rms`` (their root mean square: what a critic predicting 0 scores, large
where a few targets are, BipedalWalker's -100 for a fall) and, off-policy, ``q_mean`` / ``q_max`` / ``q_min`` of
the greedy action on a sample of the replay buffer (a TD loss grows with its Q-values; they also let
``q_divergence`` compare them with the returns). The trial registers its priors: the algorithm (PPO, DQN, SAC; A2C
and TD3 run every detector), the action space, PPO's clip range. Actions then apply
before the next rollout is collected.

What the applier reaches (:class:`SB3Applier`): ``lr`` (``model.learning_rate`` and ``model.lr_schedule``,
which becomes a constant: SB3 sets the optimizer's lr from the schedule at every ``train()``),
``entropy_coeff`` (``model.ent_coef``, when it is a number: PPO, A2C), ``grad_clip``
(``model.max_grad_norm``: PPO, A2C), rollback (``model.set_parameters`` from the newest healthy save:
policy and optimizer state) and stop (``_on_step`` returns False, which ends ``learn``). SB3's PPO has
no KL penalty (``target_kl`` only ends an update's epochs early), so ``raise_kl_coeff`` is recorded as
not applied, as is ``restart_trial``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.utils import ConstantSchedule

from supervisor.actions import HPARAMS, changed
from supervisor.api import Supervisor
from supervisor.integrations.cadence import MIN_ON_POLICY_STEPS, OFF_POLICY_EVERY, ReportWindow

log = logging.getLogger(__name__)


class SB3Applier:
    """The applier protocol on a live SB3 algorithm (between two rollouts)."""

    def __init__(self, model):
        self.model = model
        self.stop_requested = False
        self.alerts: list[str] = []

    def hparams(self) -> dict[str, float | None]:
        m = self.model
        ent = getattr(m, "ent_coef", None)
        clip = getattr(m, "max_grad_norm", None)
        return {"lr": float(m.lr_schedule(m._current_progress_remaining)),
                "entropy_coeff": float(ent) if _is_num(ent) else None,
                "kl_coeff": None,
                "grad_clip": float(clip) if _is_num(clip) else None}

    def set_hparams(self, new: Mapping[str, float | None]) -> dict[str, float | None]:
        m = self.model
        for k, v in new.items():  # everything checked before anything changes
            if k not in HPARAMS:
                raise ValueError(f"unknown hyperparameter {k!r}")
            if k == "kl_coeff":
                raise NotImplementedError("Stable-Baselines3 has no KL penalty coefficient "
                                          "(PPO's target_kl only ends an update early)")
            if k == "entropy_coeff" and not _is_num(getattr(m, "ent_coef", None)):
                raise NotImplementedError(f"{type(m).__name__}'s ent_coef is not a number the supervisor can set "
                                          f"({getattr(m, 'ent_coef', None)!r})")
            if k == "grad_clip" and not _is_num(getattr(m, "max_grad_norm", None)):
                raise NotImplementedError(f"{type(m).__name__} has no max_grad_norm")
            if v is None or not math.isfinite(float(v)) or (k == "lr" and float(v) <= 0):
                raise ValueError(f"{k}: not a usable value ({v!r})")
        for k, v in new.items():
            v = float(v)
            if k == "lr":
                m.learning_rate = v
                m.lr_schedule = ConstantSchedule(v)  # replaces any schedule: the next train() uses it
            elif k == "entropy_coeff":
                m.ent_coef = v
            elif k == "grad_clip":
                m.max_grad_norm = v
        return self.hparams()

    def rollback(self, checkpoint: str, hparams: Mapping[str, Any] | None) -> dict:
        before = self.hparams()
        self.model.set_parameters(checkpoint, exact_match=True, device=self.model.device)
        # set_parameters restores weights and optimizer state, not the schedule or coefficients:
        # re-apply what was in effect, the supervisor's hparams on top.
        target = {k: v for k, v in before.items() if v is not None}
        target.update({k: v for k, v in (hparams or {}).items() if k in target and v is not None})
        after = self.set_hparams(target)
        finite = all(bool(np.isfinite(p.detach().cpu().numpy()).all()) for p in self.model.policy.parameters())
        return {"checkpoint": str(checkpoint), "before": before, "after": after,
                "changed": changed(before, after), "verified": finite}

    def request_stop(self, reason: str) -> None:
        self.stop_requested = True

    def request_restart(self, reason: str) -> None:
        raise NotImplementedError("a Stable-Baselines3 learn() cannot be restarted by the supervisor; "
                                  "it rolls back or stops instead")

    def quarantine(self, reason: str) -> dict:
        raise NotImplementedError("Stable-Baselines3 has no data guard on its sampling: the supervisor cannot drop "
                                  "poisoned episodes; it stops the trial instead")

    def alert(self, reason: str) -> None:
        self.alerts.append(reason)
        log.warning("supervisor alert: %s", reason)


class SupervisorCallback(BaseCallback):
    """Args:
        run_dir: the run folder (``supervisor.db``, ``checkpoints/``).
        algorithm: recorded with the run (default: the model's class, lowercased).
        settings, profile, address, trial_id, name: as for :class:`supervisor.Supervisor`.
        checkpoints: save the model when a verdict says it is healthy (the rollback targets), keeping
            the newest ``settings.keep_checkpoints``. Default True.
        report_every: env steps between reports (default: on-policy one rollout, at least 256 env steps;
            off-policy 1,000).
    """

    def __init__(self, run_dir: str | Path, *, algorithm: str | None = None, settings: Any = None,
                 profile: Any = None, address: str | None = None, trial_id: str | None = None,
                 name: str | None = None, checkpoints: bool = True, report_every: int | None = None,
                 verbose: int = 0):
        super().__init__(verbose)
        if report_every is not None and (isinstance(report_every, bool) or not isinstance(report_every, int)
                                         or report_every < 1):
            raise ValueError(f"report_every must be a positive number of env steps (got {report_every!r})")
        self.run_dir = Path(run_dir)
        self.options = dict(settings=settings, profile=profile, address=address, trial_id=trial_id, name=name)
        self.algorithm = algorithm
        self.checkpoints = checkpoints
        self.report_every = report_every
        self.sup: Supervisor | None = None
        self.applier: SB3Applier | None = None
        self.window: ReportWindow | None = None
        self.verdicts: list = []  # every verdict this learn() got, oldest first
        self.iteration = 0  # reports sent
        self._updates_seen = 0
        self._steps_seen = 0
        self._targets: dict[str, float] = {}  # the newest rollout's value-target scale and RMS (on-policy)
        self._ev_parts: list[tuple[np.ndarray, np.ndarray]] = []  # (values, returns) of each rollout since
                                                                   # the last report (on-policy)
        self._rng = np.random.default_rng(0)  # replay samples for the Q statistics (not SB3's RNG)
        self._saved: list[Path] = []

    # ------------------------------------------------------------------ SB3 hooks
    def _on_training_start(self) -> None:
        m = self.model
        # a second learn() on the same folder resumes the trial (its seq and checkpoint carry on)
        self.sup = Supervisor(self.run_dir, algorithm=self.algorithm or type(m).__name__.lower(), kind="sb3",
                              config={**_hyperparams(m), "priors": _priors(m)}, **self.options)
        self.applier = SB3Applier(m)
        self.iteration = max(self.iteration, self.sup.seq)
        self._updates_seen = m._n_updates
        self._steps_seen = m.num_timesteps
        if self.report_every is not None:
            every = self.report_every
        elif isinstance(m, OnPolicyAlgorithm):
            every = max(m.n_steps * m.n_envs, MIN_ON_POLICY_STEPS)
        else:
            every = OFF_POLICY_EVERY
        self.window = ReportWindow(every)
        if self.checkpoints and self.sup.checkpoint is None:
            self._save()  # the starting point is the first known-good state: rollback always has a target

    def _on_rollout_start(self) -> None:
        self._collect()
        if self.window is not None and self.window.due:
            self._report()

    def _on_rollout_end(self) -> None:
        buf = getattr(self.model, "rollout_buffer", None)
        returns = getattr(buf, "returns", None)
        if isinstance(self.model, OnPolicyAlgorithm) and isinstance(returns, np.ndarray) and returns.size:
            self._targets = {"value_target_scale": float(np.mean(np.abs(returns))),
                             "value_target_rms": float(np.sqrt(np.mean(np.square(returns, dtype=float))))}
            values = getattr(buf, "values", None)
            if isinstance(values, np.ndarray) and values.shape == returns.shape:
                self._ev_parts.append((values.ravel().copy(), returns.ravel().copy()))

    def _on_step(self) -> bool:
        if self.applier is None:
            return True
        if self.applier.stop_requested:
            return False
        r = self.locals.get("rewards")
        if r is not None and not np.isfinite(r).all():
            self._poisoned(r)
        for info in self.locals.get("infos") or ():
            ep = info.get("episode") if isinstance(info, dict) else None
            if isinstance(ep, dict) and "r" in ep:
                self.window.episode(float(ep["r"]), float(ep.get("l", 0)))
        return not self.applier.stop_requested

    def _poisoned(self, rewards) -> None:
        """A non-finite reward is in the rollout: SB3's next train() would turn it into NaN weights and
        crash on the first NaN logits, before any report. Tell the supervisor now (a report with the
        non-finite return) and end learn() here, the stop recorded with the verdict."""
        self.iteration += 1
        self.sup.request("stop_trial", reason="non-finite reward in the rollout: Stable-Baselines3 cannot "
                                              "train on it (the update would crash)")
        bad = [float(x) for x in np.asarray(rewards).ravel() if not math.isfinite(float(x))]
        v = self.sup.observe(self.iteration, {"rollout/ep_rew_mean": bad[0], "env_steps_lifetime":
                                              float(self.model.num_timesteps)})
        self.verdicts.append(v)
        self.sup.apply(v, self.applier)
        self.applier.stop_requested = True  # whatever the verdict: this rollout cannot be trained on

    def _on_training_end(self) -> None:
        if self.sup is None:
            return
        self._collect()
        if self.window.updates:
            self._report()
        self.sup.close("stopped" if self.applier.stop_requested else None)

    # ------------------------------------------------------------------ reporting
    def _collect(self) -> None:
        """Fold what happened since the last call into the window: env steps, and the statistics of
        the update SB3 made in between (``train/*``, read from ``logger.name_to_value``), if any."""
        m = self.model
        if self.window is None:
            return
        self.window.step(m.num_timesteps - self._steps_seen)
        self._steps_seen = m.num_timesteps
        if m._n_updates == self._updates_seen:
            return  # no train() since the last call (the first rollouts, learning_starts, a stop)
        self._updates_seen = m._n_updates
        stats = {k: v for k, v in self.logger.name_to_value.items() if k.startswith("train/")}
        ent = getattr(m, "ent_coef", None)
        if _is_num(ent):
            stats["entropy_coeff"] = float(ent)
        stats.update(self._targets)
        self.window.add(stats)

    def _report(self) -> None:
        m = self.model
        if self.sup is None or self.applier.stop_requested:
            return
        metrics = self.window.pop()
        if self._ev_parts:
            metrics["train/explained_variance"] = pooled_explained_variance(self._ev_parts)
            self._ev_parts = []
        metrics.update(_q_stats(m, self._rng))
        metrics["env_steps_lifetime"] = float(m.num_timesteps)
        self.iteration += 1
        v = self.sup.observe(self.iteration, metrics)
        self.verdicts.append(v)
        self.sup.apply(v, self.applier)
        if v.checkpoint and not v.actions and self.checkpoints:
            self._save()

    def _save(self) -> None:
        path = self.run_dir / "checkpoints" / f"update_{self.iteration:06d}.zip"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.model.save(path)
        except Exception:
            log.exception("checkpoint failed; training continues")
            return
        self.sup.checkpoint_saved(self.iteration, path, self.applier.hparams())
        self._saved.append(path)
        while len(self._saved) > self.sup.settings.keep_checkpoints:
            self._saved.pop(0).unlink(missing_ok=True)


def pooled_explained_variance(parts) -> float:
    """1 - Var(returns - values) / Var(returns) over every sample of the rollouts since the last report
    (``parts``: their (values, returns) arrays, the values the critic predicted when the rollout was
    collected), SB3's own formula; NaN (no data) when the returns do not vary. SB3 logs it per rollout:
    A2C's default rollout is 5 env steps, whose returns hardly vary (no episode ends in most of them), so
    each one is a ratio of two near-zero variances (medians of -2 to -50 on FrozenLake, Pendulum and a
    CartPole after a dip, all learning). Pooled over a report's ~256 samples it is the statistic it is
    for PPO's 2,048-step rollouts (identical there: one rollout a report)."""
    values = np.concatenate([v for v, _ in parts]).astype(float)
    returns = np.concatenate([r for _, r in parts]).astype(float)
    var = float(np.var(returns))
    return float("nan") if var == 0 else float(1.0 - np.var(returns - values) / var)


Q_SAMPLE = 256  # replay transitions the Q statistics are measured on


def _q_stats(m, rng: np.random.Generator) -> dict[str, float]:
    """Q-values of the greedy (deterministic) action on a sample of the replay buffer: ``q_mean``,
    ``q_max``, ``q_min``; empty for an on-policy model or anything unexpected (never breaks training)."""
    rb = getattr(m, "replay_buffer", None)
    obs = getattr(rb, "observations", None)
    if not isinstance(obs, np.ndarray) or isinstance(m, OnPolicyAlgorithm):
        return {}
    try:
        n = rb.buffer_size if rb.full else rb.pos
        if n < 1:
            return {}
        rows = rng.integers(0, n, size=min(Q_SAMPLE, n))
        x = obs[rows].reshape((-1,) + obs.shape[2:])
        with torch.no_grad():
            t, _ = m.policy.obs_to_tensor(x)
            if hasattr(m, "q_net"):  # DQN: the greedy action's value
                q = m.q_net(t).max(dim=1).values
            else:  # SAC, TD3: the first critic at the deterministic action
                q = m.critic(t, m.policy._predict(t, deterministic=True))[0].flatten()
        q = q.detach().cpu().numpy().astype(float)
    except Exception:
        log.debug("no Q statistics for this model", exc_info=True)
        return {}
    return {"q_mean": float(q.mean()), "q_max": float(q.max()), "q_min": float(q.min())}


def _priors(m) -> dict:
    """What the model's own configuration and spaces say (``supervisor.priors.Priors``)."""
    out: dict[str, Any] = {}
    name = type(m).__name__.upper()
    if name in ("PPO", "DQN", "SAC"):  # the algorithms supervisor.algorithms knows; others run every detector
        out["algorithm"] = name
    space = getattr(m, "action_space", None)
    if isinstance(space, spaces.Discrete):
        out.update(action_kind="discrete", action_dim=int(space.n))
    elif isinstance(space, spaces.Box):
        out.update(action_kind="continuous", action_dim=int(np.prod(space.shape)))
    clip = getattr(m, "clip_range", None)
    if callable(clip):
        try:
            out["clip_param"] = float(clip(1.0))
        except Exception:
            pass
    if _is_num(getattr(m, "gamma", None)):
        out["gamma"] = float(m.gamma)
    if name == "PPO":
        out["use_kl_loss"] = False
        if _is_num(getattr(m, "target_kl", None)):
            out["kl_target"] = float(m.target_kl)
    return out


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _hyperparams(m) -> dict:
    keys = ("learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "ent_coef", "vf_coef",
            "max_grad_norm", "target_kl", "seed")
    return {k: getattr(m, k) for k in keys if _is_num(getattr(m, k, None))}
