"""Supervisor actions on a live RLlib ``Algorithm`` (new API stack, torch), one concern a module:

- ``applier.py``: ``RLlibApplier``, the applier protocol (``supervisor.actions.Applier``) every action uses.
- ``hparams.py``: lr, entropy and KL coefficients, gradient and value clips, target-network settings,
  SAC's temperature and target entropy: read where each learner keeps them, set so they stick.
- ``exploration.py``: DQN's epsilon on the env runners (``extend_exploration``), and the values RLlib
  keeps off the result (``extra_metrics``).
- ``checkpoints.py``: health-gated checkpoints (``save_checkpoint``) and the hyperparameters saved with them.
- ``rollback.py``: ``rollback`` to a checkpoint, in-process, with the weights pushed to every env runner.
- ``weights.py``: learner and env-runner weights, finiteness, and whether a rollback reached the runners.
- ``remote.py``: the plumbing: running a function on every learner / env runner, never raising there.

All of it runs in the process that owns the algorithm, between two ``algo.train()`` calls, with a local
learner (``num_learners=0``) or remote learner actors (``num_learners>=1``).
"""

from actors.appliers.rllib.applier import RLlibApplier
from actors.appliers.rllib.checkpoints import checkpoint_hparams, save_checkpoint
from actors.appliers.rllib.exploration import exploration_epsilon, extra_metrics, set_exploration
from actors.appliers.rllib.hparams import (HPARAM_KEYS, current_hparams, learner_hparams, modules_of, set_hparams,
                                          trained_modules)
from actors.appliers.rllib.rollback import rollback
from actors.appliers.rllib.weights import (env_runner_weights, learners_equal, module_weights, rollback_reached_runners,
                                          weights_finite)

__all__ = ["HPARAM_KEYS", "RLlibApplier", "checkpoint_hparams", "current_hparams", "env_runner_weights",
           "exploration_epsilon", "extra_metrics", "learner_hparams", "learners_equal", "module_weights", "modules_of",
           "rollback", "rollback_reached_runners", "save_checkpoint", "set_exploration", "set_hparams",
           "trained_modules", "weights_finite"]
