"""Stable-Baselines3: a callback that puts ``model.learn`` under supervision.

    from supervisor.integrations.sb3 import SupervisorCallback
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=256)
    model.learn(50_000, callback=SupervisorCallback("runs/sb3-ppo"))

When it reports: SB3 records ``train/*`` inside ``train()``, which runs after the rollout (and after
``_on_rollout_end``), so each update is reported at the start of the next rollout, and the last one
when training ends. A report carries that update's ``train/*`` values (read from
``logger.name_to_value``), the episode return and length over SB3's episode window (``rollout/*``,
computed from ``ep_info_buffer`` as ``dump_logs`` does, whatever ``log_interval``) and the entropy
coefficient. Actions then apply before the next rollout is collected.

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
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import ConstantSchedule

from supervisor.actions import HPARAMS, changed
from supervisor.api import Supervisor

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
    """

    def __init__(self, run_dir: str | Path, *, algorithm: str | None = None, settings: Any = None,
                 profile: Any = None, address: str | None = None, trial_id: str | None = None,
                 name: str | None = None, checkpoints: bool = True, verbose: int = 0):
        super().__init__(verbose)
        self.run_dir = Path(run_dir)
        self.options = dict(settings=settings, profile=profile, address=address, trial_id=trial_id, name=name)
        self.algorithm = algorithm
        self.checkpoints = checkpoints
        self.sup: Supervisor | None = None
        self.applier: SB3Applier | None = None
        self.verdicts: list = []  # every verdict this learn() got, oldest first
        self.iteration = 0  # updates reported
        self._updates_seen = 0
        self._saved: list[Path] = []

    # ------------------------------------------------------------------ SB3 hooks
    def _on_training_start(self) -> None:
        m = self.model
        # a second learn() on the same folder resumes the trial (its seq and checkpoint carry on)
        self.sup = Supervisor(self.run_dir, algorithm=self.algorithm or type(m).__name__.lower(), kind="sb3",
                              config=_hyperparams(m), **self.options)
        self.applier = SB3Applier(m)
        self.iteration = max(self.iteration, self.sup.seq)
        self._updates_seen = m._n_updates
        if self.checkpoints and self.sup.checkpoint is None:
            self._save()  # the starting point is the first known-good state: rollback always has a target

    def _on_rollout_start(self) -> None:
        self._report()

    def _on_step(self) -> bool:
        if self.applier is None:
            return True
        if self.applier.stop_requested:
            return False
        r = self.locals.get("rewards")
        if r is not None and not np.isfinite(r).all():
            self._poisoned(r)
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
        self._report()
        self.sup.close("stopped" if self.applier.stop_requested else None)

    # ------------------------------------------------------------------ reporting
    def _report(self) -> None:
        m = self.model
        if self.sup is None or m._n_updates == self._updates_seen:
            return  # no train() since the last report (the first rollout, or a stop)
        self._updates_seen = m._n_updates
        self.iteration += 1
        v = self.sup.observe(self.iteration, self._metrics())
        self.verdicts.append(v)
        self.sup.apply(v, self.applier)
        if v.checkpoint and not v.actions and self.checkpoints:
            self._save()

    def _metrics(self) -> dict[str, float]:
        m = self.model
        out = {k: v for k, v in self.logger.name_to_value.items() if k.startswith("train/")}
        buf = m.ep_info_buffer
        if buf:
            out["rollout/ep_rew_mean"] = float(np.mean([e["r"] for e in buf]))
            out["rollout/ep_len_mean"] = float(np.mean([e["l"] for e in buf]))
        ent = getattr(m, "ent_coef", None)
        if _is_num(ent):
            out["entropy_coeff"] = float(ent)
        out["env_steps_lifetime"] = float(m.num_timesteps)
        return out

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


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _hyperparams(m) -> dict:
    keys = ("learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "ent_coef", "vf_coef",
            "max_grad_norm", "target_kl", "seed")
    return {k: getattr(m, k) for k in keys if _is_num(getattr(m, k, None))}
