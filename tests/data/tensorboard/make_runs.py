"""Write the TensorBoard fixtures of tests/test_scan_logs.py: real CleanRL-style PPO runs on CartPole.

    python tests/data/tensorboard/make_runs.py

The training is real (``tests/envs/cleanrl_ppo.py``, after cleanrl/ppo.py) and
so is the writer: ``torch.utils.tensorboard.SummaryWriter`` with CleanRL's
calls, in CleanRL's order (a ``hyperparameters`` text, each finished episode's
``charts/episodic_return`` and ``charts/episodic_length`` at the global step
it ended, then once per update ``charts/learning_rate``, the ``losses/*`` and
``charts/SPS`` at the update's global step), into CleanRL's run folder names
``runs/{env_id}__{exp_name}__{seed}__{time}``.

* ``cleanrl/CartPole-v1__ppo__1__1700000000``: healthy, 24 updates;
* ``cleanrl/CartPole-v1__ppo_lr_jump__1__1700000001``: the same, with the
  learning rate set to 10.0 before update :data:`FAULT_UPDATE` (global step
  ``FAULT_UPDATE * 512``): the fault ``supervise scan`` must place there.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

UPDATES = 24
FAULT_UPDATE = 14
STEPS_PER_UPDATE = 4 * 128  # num_envs x num_steps
FAULT_STEP = FAULT_UPDATE * STEPS_PER_UPDATE


def write_run(folder: Path, fault: bool) -> None:
    from torch.utils.tensorboard import SummaryWriter

    from tests.envs.cleanrl_ppo import Args, train

    shutil.rmtree(folder, ignore_errors=True)
    writer = SummaryWriter(str(folder))
    args = Args(learning_rate=2.5e-4)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
        f"|{k}|{v}|" for k, v in vars(args).items()))

    def on_episode(step, ret, length):
        writer.add_scalar("charts/episodic_return", ret, step)
        writer.add_scalar("charts/episodic_length", length, step)

    def before_update(update, ctx):
        if fault and update == FAULT_UPDATE:
            for g in ctx.optimizer.param_groups:
                g["lr"] = 10.0

    def on_update(update, m, ctx):
        step = m["global_step"]
        for tag in ("charts/learning_rate", "losses/value_loss", "losses/policy_loss", "losses/entropy",
                    "losses/old_approx_kl", "losses/approx_kl", "losses/clipfrac", "losses/explained_variance"):
            writer.add_scalar(tag, m[tag], step)
        writer.add_scalar("charts/SPS", int(step / max(sum(ctx.update_s), 1e-9)), step)

    train(UPDATES, on_update=on_update, before_update=before_update, args=args, on_episode=on_episode)
    writer.close()


def main() -> None:
    write_run(HERE / "cleanrl" / "CartPole-v1__ppo__1__1700000000", fault=False)
    write_run(HERE / "cleanrl" / "CartPole-v1__ppo_lr_jump__1__1700000001", fault=True)


if __name__ == "__main__":
    main()
