"""The applier for a hand-written loop on a ``torch.optim.Optimizer`` (CleanRL style).

    applier = TorchApplier(optimizer, model, coefficients=coefs)   # coefs: {"entropy_coeff": 0.01, ...}
    sup.checkpoint_saved(0, applier.save(run_dir / "ckpt.pt"), applier.hparams())
    for update in range(n):
        ...                                   # the loop reads coefs["entropy_coeff"] every update
        verdict = sup.observe(update, metrics)
        sup.apply(verdict, applier)
        if verdict.checkpoint:
            sup.checkpoint_saved(update, applier.save(run_dir / "ckpt.pt"), applier.hparams())
        if applier.stop_requested:
            break

What it reaches: ``lr`` (every param group, scaled by the same factor, and a scheduler's ``base_lrs``
when one is given, so a schedule keeps its shape at the new level); ``entropy_coeff``, ``kl_coeff``
and ``grad_clip`` only through ``coefficients``, a dict the loop reads every update; rollback through
``load`` (your function) or ``model`` (a ``torch.save``'d ``{"model", "optimizer"}`` state, as
``save`` writes it). A loop that sets the lr itself every update (CleanRL's ``anneal_lr``) multiplies
by ``lr_scale``, the factor the supervisor's changes add up to.

When to report (the supervisor's unit of judgement is a report: its warm-ups, patience and windows
count reports). On-policy (PPO, A2C): once per rollout/update, as above, with the episodes that finished
in that rollout: ``episode_return_mean`` over them only (CleanRL's ``charts/episodic_return``) and
``num_episodes`` (how many back it), plus ``value_target_scale`` (mean |return target|) and
``value_target_rms`` (their root mean square) when the value loss is not clipped, so that its growth
with the returns, or a rollout whose few large targets (a rare terminal penalty) the critic has not
learned yet, is not read as an explosion. Off-policy (DQN,
SAC): once every N env steps (1,000 is RLlib's DQN iteration), not per gradient step, with the mean of
each loss over the gradient steps in between and the Q-values' scale (``q_mean``);
:class:`supervisor.integrations.cadence.ReportWindow` does the folding::

    window = ReportWindow(every=1000)                  # env steps per report
    ...                                                # every env step: window.step(num_envs)
    window.add({"losses/td_loss": loss.item()})        # every gradient step
    window.episode(ret, length)                        # every finished episode
    if window.due:
        verdict = sup.observe(it, {**window.pop(), "q_mean": q.mean().item()})
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Mapping, MutableMapping

import torch

from supervisor.actions import HPARAMS, changed

log = logging.getLogger(__name__)

COEFFICIENTS = ("entropy_coeff", "kl_coeff", "grad_clip")


class TorchApplier:
    """Args:
        optimizer: the loop's optimizer.
        model: the ``nn.Module`` it trains (for ``save`` and the built-in rollback).
        coefficients: a mutable dict with any of ``entropy_coeff``, ``kl_coeff``, ``grad_clip``; the
            loop must read it every update for a change to take effect.
        load: ``load(path)`` restores your own checkpoint format (then ``model`` is not needed).
        scheduler: a ``torch.optim.lr_scheduler`` whose ``base_lrs`` follow lr changes.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module | None = None, *,
                 coefficients: MutableMapping[str, float] | None = None,
                 load: Callable[[str], Any] | None = None, scheduler=None):
        self.optimizer, self.model, self.coefficients = optimizer, model, coefficients
        self.load, self.scheduler = load, scheduler
        self.lr_scale = 1.0
        self.stop_requested = False
        self.alerts: list[str] = []

    # ------------------------------------------------------------------ the applier protocol
    def hparams(self) -> dict[str, float | None]:
        c = self.coefficients or {}
        return {"lr": float(self.optimizer.param_groups[0]["lr"]),
                **{k: (float(c[k]) if c.get(k) is not None else None) for k in COEFFICIENTS}}

    def set_hparams(self, new: Mapping[str, float | None]) -> dict[str, float | None]:
        for k, v in new.items():  # check everything first: never half-applied
            if k not in HPARAMS:
                raise ValueError(f"unknown hyperparameter {k!r}")
            if k != "lr" and (self.coefficients is None or k not in self.coefficients):
                raise NotImplementedError(f"this loop has no {k} the supervisor can reach: pass "
                                          f"coefficients={{'{k}': ...}} and read it every update")
            if v is None or not math.isfinite(float(v)) or (k == "lr" and float(v) <= 0):
                raise ValueError(f"{k}: not a usable value ({v!r})")
        for k, v in new.items():
            if k == "lr":
                self._set_lr(float(v))
            else:
                self.coefficients[k] = float(v)
        return self.hparams()

    def _set_lr(self, lr: float) -> None:
        ratio = lr / float(self.optimizer.param_groups[0]["lr"])
        for g in self.optimizer.param_groups:  # groups keep their ratios to each other
            g["lr"] = g["lr"] * ratio
        if self.scheduler is not None and hasattr(self.scheduler, "base_lrs"):
            self.scheduler.base_lrs = [b * ratio for b in self.scheduler.base_lrs]
            if isinstance(getattr(self.scheduler, "_last_lr", None), list):  # get_last_lr(), what loggers read
                self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        self.lr_scale *= ratio

    def rollback(self, checkpoint: str, hparams: Mapping[str, Any] | None) -> dict:
        before = self.hparams()
        if self.load is not None:
            self.load(checkpoint)
        elif self.model is not None:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            if isinstance(state, Mapping) and "model" in state:
                self.model.load_state_dict(state["model"])
                if state.get("optimizer") is not None:
                    self.optimizer.load_state_dict(state["optimizer"])
            else:
                self.model.load_state_dict(state)
        else:
            raise NotImplementedError("rollback needs model= (to load a torch.save'd state) or load= "
                                      "(your own load function)")
        # The restored optimizer state brings back the checkpoint's lr: re-apply what was in effect,
        # with the supervisor's hparams on top, for whatever this loop can reach.
        target = {k: v for k, v in before.items() if v is not None}
        target.update({k: v for k, v in (hparams or {}).items() if k in target and v is not None})
        after = self.set_hparams(target)
        out = {"checkpoint": str(checkpoint), "before": before, "after": after, "changed": changed(before, after)}
        if self.model is not None:
            out["verified"] = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        return out

    def request_stop(self, reason: str) -> None:
        self.stop_requested = True

    def request_restart(self, reason: str) -> None:
        raise NotImplementedError("a hand-written loop cannot be restarted by the supervisor; "
                                  "it rolls back (rollback) or stops (stop_trial) instead")

    def quarantine(self, reason: str) -> dict:
        raise NotImplementedError("a hand-written loop has no data guard on its sampling: the supervisor cannot drop "
                                  "poisoned episodes; it stops the trial instead")

    def alert(self, reason: str) -> None:
        self.alerts.append(reason)
        log.warning("supervisor alert: %s", reason)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path) -> str:
        """``torch.save`` the model and optimizer state (what ``rollback`` restores); returns the path."""
        if self.model is None:
            raise ValueError("save needs the model (TorchApplier(optimizer, model))")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}, tmp)
        tmp.replace(path)  # a crash mid-save never leaves a torn checkpoint behind
        return str(path)
