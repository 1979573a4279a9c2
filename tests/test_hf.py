"""Hugging Face Trainer under supervision: a real Trainer on a tiny random GPT-2 (built from a config, no
downloads), a real planted blow-up, the real report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from supervisor.integrations.hf import SupervisorCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def report(run_dir):
    p = subprocess.run([sys.executable, "-m", "supervisor", "report", str(run_dir), "--format", "json"],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


class Counting(torch.utils.data.Dataset):
    """Random starts, then +1 mod vocab: a pattern the tiny model learns (the loss falls)."""

    def __init__(self, n=512, length=16, vocab=64):
        g = torch.Generator().manual_seed(0)
        self.x = (torch.randint(0, vocab, (n, 1), generator=g) + torch.arange(length)) % vocab

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


class BrokenLr(TrainerCallback):
    """From step ``at`` on, something outside the supervisor's reach forces the lr to 50 every step."""

    def __init__(self, at):
        self.at = at

    def on_step_begin(self, args, state, control, optimizer=None, **kw):
        if state.global_step + 1 >= self.at:
            for g in optimizer.param_groups:
                g["lr"] = 50.0


def trainer(tmp_path, callbacks, max_steps=60, **kw):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32,
                                       bos_token_id=0, eos_token_id=0))
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=max_steps, per_device_train_batch_size=16,
                             logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, learning_rate=1e-3,
                             lr_scheduler_type="constant", disable_tqdm=True, seed=0, **kw)
    return Trainer(model=model, args=args, train_dataset=Counting(), callbacks=callbacks)


@pytest.mark.slow
def test_loss_blow_up_is_flagged_and_training_stopped(tmp_path):
    run = tmp_path / "run"
    # the lr stays forced at 50 (BrokenLr), so reduce_lr alone cannot help: roll back with it, then stop
    cb = SupervisorCallback(run, settings={"ladders": {"loss_explosion": [["rollback", "reduce_lr"], ["stop_trial"]]}})
    tr = trainer(tmp_path, [BrokenLr(at=20), cb])
    tr.train()
    assert cb.sup.status == "stopped"
    assert 21 < tr.state.global_step < 60  # stopped early
    (t,) = report(run)["trials"]
    assert t["status"] == "stopped" and t["iterations"] == tr.state.global_step
    crit = [f for f in t["findings"] if f["severity"] == "critical"]
    assert crit[0]["iteration"] == 21 and crit[0]["detector"] == "loss_explosion", t["findings"]
    acts = [(i["iteration"], i["action"]) for i in t["interventions"]]
    assert acts[:2] == [(21, "rollback"), (21, "reduce_lr")] and acts[-1][1] == "stop_trial", acts
    rb = [i for i in t["interventions"] if i["action"] == "rollback"]
    # the rollback restored a checkpoint the Trainer wrote when the supervisor asked it to save
    assert rb and rb[0]["verified"] is True and Path(rb[0]["params"]["checkpoint"]).name.startswith("checkpoint-")
    text = subprocess.run([sys.executable, "-m", "supervisor", "report", str(run)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert "loss_explosion" in text and "stop_trial" in text


@pytest.mark.slow
def test_healthy_run_is_saved_by_the_supervisor_and_lr_cuts_are_verified(tmp_path):
    run = tmp_path / "run"
    cb = SupervisorCallback(run)
    tr = trainer(tmp_path, [cb], max_steps=12)
    tr.train()
    assert cb.sup.status == "completed"
    saved = {p.name for p in (tmp_path / "out").glob("checkpoint-*")}
    assert {"checkpoint-5", "checkpoint-10"} <= saved  # health-gated saves (checkpoint_every 5)
    (t,) = report(run)["trials"]
    assert t["findings"] == [] and t["interventions"] == [] and t["iterations"] == 12
    # the applier on the live objects: lr through param groups and the scheduler, exactly what the next log shows
    ap = cb.applier
    from supervisor import actions

    e = actions.apply(ap, {"action": "reduce_lr", "params": {"factor": 0.5}})
    assert e["ok"] and e["after"]["lr"] == pytest.approx(5e-4)
    assert ap.lr_scheduler.get_last_lr()[0] == pytest.approx(5e-4)
    ap.lr_scheduler.step()
    assert ap.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)
    e = actions.apply(ap, {"action": "boost_entropy", "params": {"factor": 2.0, "value": 0.01}})
    assert not e["ok"] and "no entropy_coeff" in e["error"]
    assert actions.apply(ap, {"action": "tighten_grad_clip", "params": {"factor": 0.5}})["ok"]
    assert tr.args.max_grad_norm == pytest.approx(0.5)
