"""Hugging Face ``Trainer`` (and TRL's trainers, which are ``Trainer`` subclasses): a callback.

    from supervisor.integrations.hf import SupervisorCallback
    args = TrainingArguments("out", logging_steps=1, ...)       # the supervisor judges what is logged
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[SupervisorCallback("runs/sft")])
    trainer.train()

When it reports: ``on_log``, with what the Trainer logs (``loss``, ``grad_norm``, ``learning_rate``; TRL's
``objective/kl``, ``objective/entropy``, ``rewards/...``, ... any key style ``supervise scan`` knows) at
``state.global_step``; evaluation logs and the closing summary carry no training metric and are skipped.
``logging_steps`` sets how often that is (the default 500 is too rare to catch a blow-up; 1-10 is cheap):
one report per log, and the Trainer's logged ``loss`` is already the mean over the optimizer steps since
the previous log, so the detectors' warm-ups and windows count logs (``logging_steps`` x batch tokens each),
not gradient steps.

What it does with a verdict, before the Trainer goes on (``on_log`` runs inside the Trainer's
log/evaluate/save step): stop sets ``control.should_training_stop``; a healthy verdict sets
``control.should_save``, and the checkpoint the Trainer then writes (``checkpoint-<step>``, seen in
``on_save``) becomes the rollback target; ``on_step_end`` re-asserts a pending stop.

What the applier reaches (:class:`HFApplier`): ``lr`` through the optimizer's param groups and the
lr scheduler's ``base_lrs`` (scaled by the same factor, so warm-up and decay keep their shape at the new
level: the Trainer's LambdaLR schedules recompute the lr from ``base_lrs`` every step); the next log
verifies it exactly with ``logging_steps=1`` or a constant schedule, while a decaying schedule logged
every N steps has moved on by then (reported "NOT verified"). ``grad_clip`` through
``args.max_grad_norm`` (read every step). Rollback restores weights, optimizer and scheduler state
from the Trainer checkpoint (keep it: ``save_total_limit`` may delete it, and the rollback is then
recorded as not applied). The Trainer has no entropy or KL coefficient the callback can reach, and no
restart: those actions are recorded as not applied.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from transformers import TrainerCallback

from supervisor.api import Supervisor
from supervisor.findings import severity_rank
from supervisor.integrations.torch import TorchApplier

log = logging.getLogger(__name__)


class HFApplier(TorchApplier):
    """The applier protocol on a running Trainer: its optimizer, lr scheduler, model and arguments."""

    def __init__(self, args, model, optimizer, lr_scheduler):
        super().__init__(optimizer, model, scheduler=getattr(lr_scheduler, "scheduler", lr_scheduler),
                         load=self._load)
        self.args = args
        self.lr_scheduler = self.scheduler

    def hparams(self) -> dict[str, float | None]:
        out = super().hparams()
        out["grad_clip"] = float(self.args.max_grad_norm) if self.args.max_grad_norm else None
        return out

    def set_hparams(self, new: Mapping[str, float | None]) -> dict[str, float | None]:
        new = dict(new)
        clip = new.pop("grad_clip", None)
        for k in ("entropy_coeff", "kl_coeff"):
            if k in new:
                raise NotImplementedError(f"the Trainer has no {k} the supervisor can reach")
        if clip is not None and not float(clip) > 0:
            raise ValueError(f"grad_clip: not a usable value ({clip!r})")
        super().set_hparams(new)
        if clip is not None:
            self.args.max_grad_norm = float(clip)
        return self.hparams()

    def _load(self, path: str) -> None:
        """A Trainer checkpoint folder: weights (safetensors or .bin), optimizer.pt, scheduler.pt."""
        p = Path(path)
        if (p / "model.safetensors").is_file():
            from safetensors.torch import load_file

            state = load_file(str(p / "model.safetensors"), device="cpu")
        elif (p / "pytorch_model.bin").is_file():
            state = torch.load(p / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin (a sharded or deleted "
                                    "checkpoint cannot be rolled back to)")
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        tied = set(getattr(self.model, "_tied_weights_keys", None) or ())
        if unexpected or [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]:
            raise ValueError(f"{path}: weights do not match the model (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        if (p / "optimizer.pt").is_file():
            self.optimizer.load_state_dict(torch.load(p / "optimizer.pt", map_location="cpu", weights_only=True))
        if (p / "scheduler.pt").is_file() and self.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(torch.load(p / "scheduler.pt", weights_only=True))

    def request_restart(self, reason: str) -> None:
        raise NotImplementedError("the Trainer cannot be restarted by the supervisor; it rolls back or stops")


class SupervisorCallback(TrainerCallback):
    """Args:
        run_dir: the run folder (``supervisor.db``). Checkpoints stay where the Trainer writes them.
        algorithm: recorded with the run (default ``sft``; e.g. ``grpo``, ``dpo``, ``ppo`` for TRL).
        settings, profile, address, trial_id, name: as for :class:`supervisor.Supervisor`.
    """

    def __init__(self, run_dir: str | Path, *, algorithm: str = "sft", settings: Any = None, profile: Any = None,
                 address: str | None = None, trial_id: str | None = None, name: str | None = None):
        self.run_dir = Path(run_dir)
        self.algorithm = algorithm
        self.options = dict(settings=settings, profile=profile, address=address, trial_id=trial_id, name=name)
        self.sup: Supervisor | None = None
        self.applier: HFApplier | None = None
        self.verdicts: list = []
        self.stop = False
        self._healthy_step: int | None = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kw):
        keys = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps",
                "num_train_epochs", "weight_decay", "max_grad_norm", "warmup_steps", "seed")
        config = {k: getattr(args, k) for k in keys if isinstance(getattr(args, k, None), (int, float))}
        config["lr_scheduler_type"] = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
        self.sup = Supervisor(self.run_dir, algorithm=self.algorithm, kind="hf", config=config, **self.options)
        self.applier = HFApplier(args, model, optimizer, lr_scheduler)

    def on_log(self, args, state, control, logs=None, model=None, optimizer=None, lr_scheduler=None, **kw):
        if self.sup is None or not logs or self.sup.closed:
            return control
        if self.applier.optimizer is None and optimizer is not None:  # created after on_train_begin
            self.applier = HFApplier(args, model, optimizer, lr_scheduler)
        from supervisor.api import normalize_metrics

        if not normalize_metrics(logs):
            return control  # an evaluation log or the closing summary: nothing the detectors judge
        v = self.sup.observe(state.global_step, logs)
        self.verdicts.append(v)
        self.sup.apply(v, self.applier)
        self.stop |= v.stop or self.applier.stop_requested
        trouble = any(severity_rank(f["severity"]) >= severity_rank("warning") for f in v.findings)
        self._healthy_step = state.global_step if not trouble and not v.actions else None
        if v.checkpoint and not v.actions:
            control.should_save = True  # the Trainer saves right after this log: the rollback target
        if self.stop:
            control.should_training_stop = True
        return control

    def on_step_end(self, args, state, control, **kw):
        if self.stop:
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kw):
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.sup is not None and self._healthy_step == state.global_step and path.is_dir():
            self.sup.checkpoint_saved(state.global_step, path, self.applier.hparams())
        return control

    def on_train_end(self, args, state, control, **kw):
        if self.sup is not None and not self.sup.closed:
            self.sup.close("stopped" if self.stop else None)
        return control
