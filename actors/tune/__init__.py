"""Ray Tune pieces: every trial of a sweep supervised; failing trials stopped or restarted through Tune.

What is here
------------
``stopper``    ``StabilityStopper``: a ``tune.Stopper`` that ends exactly the trials the supervisor
               judged unrecoverable (``result["supervisor"]["stop"]``); ``StopRule``: the experiment
               file's ``stop:`` section (also what ``supervise run`` stops on); ``combine_stop``.
``trainable``  ``SupervisedPPO`` (and ``SupervisedAPPO``, ``SupervisedIMPALA``, ``SupervisedDQN``,
               ``SupervisedSAC``): the RLlib algorithm as a Tune trainable that knows its real Tune trial id.
``scheduler``  ``SupervisedASHA``: ASHA that defers its rung decision for a trial the supervisor is
               repairing (``scheduler: asha`` in a supervised sweep file uses it).
``callback``   ``SupervisorTuneCallback``: the driver side: opens the run in the supervisor actor,
               prints progress, and closes every trial with the right status (completed / recovered /
               stopped / errored).
``sweep``      ``supervised_trainable_config(config, run_dir)``: put your own Tune script under
               supervision; ``run_sweep(sweep, source, ...)``: what ``supervise sweep SWEEP.yaml`` runs.

Your own Tune script, in a few lines::

    from ray import tune
    from ray.rllib.algorithms.ppo import PPOConfig
    from actors.tune import supervised_trainable_config

    config = PPOConfig().environment("CartPole-v1").training(lr=tune.grid_search([3e-4, 1e-3, 5.0]))
    sup = supervised_trainable_config(config, run_dir="runs/my-sweep")
    tune.Tuner(sup.trainable, param_space=sup.param_space,
               run_config=sup.run_config(stop={"training_iteration": 30})).fit()
    # then: supervise report runs/my-sweep

Trial ids: see ``actors.tune.trainable``.

Restarts. ``restart_trial`` makes the RLlib callback raise
``RestartRequested``; with ``FailureConfig(max_failures=N)`` Tune restarts the
trial in a new process from its latest checkpoint. The new process registers
again under the same trial id and gets back the hyperparameters the supervisor
changed (``overrides``); ``SupervisedPPO.load_checkpoint`` re-applies them once
more after Tune's restore, because restoring the learner also restores the
optimizer's old learning rate.

Checkpoints. Tune's periodic checkpointing is off (``checkpoint_frequency=0``);
a trial asks Tune for a checkpoint (``result["should_checkpoint"] = True``)
exactly when the supervisor's verdict says the iteration is healthy enough to
checkpoint. So Tune's checkpoints are the supervisor's health-gated ones: a
restart never resumes from a state the supervisor would not have kept. The
supervisor's own copies (``RUN_DIR/checkpoints/<trial_id>/``) stay what
in-process ``rollback`` uses.
"""

from actors.tune.callback import SupervisorTuneCallback
from actors.tune.scheduler import SupervisedASHA
from actors.tune.stopper import (RETURN_METRIC, STOP_KEYS, StabilityStopper, StopRule, ThresholdStopper,
                                 combine_stop, stability_stopper_of)
from actors.tune.sweep import (SupervisedTune, build_sweep_space, run_sweep, search_domain,
                               supervised_trainable_config, sweep_tune_config)
from actors.tune.trainable import (SEARCH_KEY, TRAINABLES, SupervisedAPPO, SupervisedDQN, SupervisedIMPALA,
                                   SupervisedPPO, SupervisedSAC, _prepare_trial_config, trainable_for)

__all__ = [
    "RETURN_METRIC", "SEARCH_KEY", "STOP_KEYS", "StabilityStopper", "StopRule", "SupervisedPPO", "SupervisedAPPO", "SupervisedIMPALA",
    "SupervisedDQN", "SupervisedSAC", "SupervisedASHA", "TRAINABLES", "trainable_for", "SupervisedTune",
    "SupervisorTuneCallback", "ThresholdStopper", "build_sweep_space", "combine_stop", "run_sweep",
    "search_domain", "stability_stopper_of", "supervised_trainable_config", "sweep_tune_config",
]
