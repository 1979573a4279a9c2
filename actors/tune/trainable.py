"""The trainables: RLlib's PPO, APPO, IMPALA, DQN and SAC as Tune trainables that know their real Tune trial id.

Trial ids. Inside RLlib callbacks under Tune, ``algorithm.trial_id`` and
``tune.get_context().get_trial_id()`` give "default"/None: Tune hands the
trainable its ``_TrialInfo`` inside the config dict (key ``TRIAL_INFO``), and
``Algorithm.__init__`` turns that dict into an ``AlgorithmConfig`` before
``Trainable.__init__`` can pop it, so it is lost. ``SupervisedPPO.__init__``
takes it out of the dict first and builds the algorithm inside
``actors.callback.trial_context`` (Tune's real trial id, the values sampled for
the trial), where the callback's ``on_algorithm_init`` reads it (and it restores
``algorithm.trial_id``). None of it goes into RLlib's config, so none of it into
a checkpoint.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.rllib.algorithms.appo import APPO
from ray.rllib.algorithms.dqn import DQN
from ray.rllib.algorithms.impala import IMPALA
from ray.rllib.algorithms.ppo import PPO
from ray.rllib.algorithms.sac import SAC

from actors import compat
from actors.callback import find_callback, run_id_of, trial_context

log = logging.getLogger(__name__)

SEARCH_KEY = "_supervisor_search"  # param_space key holding the sampled PPOConfig values of a sweep


class _Supervised:
    """Mixed into an RLlib algorithm class (``SupervisedPPO`` ...): the algorithm as a Tune trainable
    that knows its real Tune trial id.

    Behaves exactly like the algorithm (``tune.Tuner("PPO", ...)``) and, when the
    config is attached to a supervised run (``actors.callback.attach``):

    - the supervisor sees Tune's trial id (``algorithm.trial_id`` works too);
    - values a sweep samples under ``"_supervisor_search"`` are applied by their
      PPOConfig names (so ``train_batch_size_per_learner`` or ``lambda_`` need
      no knowledge of ``AlgorithmConfig.to_dict``'s renamed keys);
    - a healthy verdict asks Tune for a checkpoint (``should_checkpoint``);
    - after Tune restores a checkpoint (a restart), the supervisor's overrides
      are applied again.
    """

    def __init__(self, config=None, env=None, **kwargs):
        trial_info = trial = None
        if isinstance(config, dict):
            config, trial_info, trial = _prepare_trial_config(type(self), config)
        with trial_context(trial):
            super().__init__(config=config, env=env, **kwargs)
        if trial_info is not None:
            compat.set_trial_info(self, trial_info)

    def log_result(self, result: dict) -> None:
        # RLlib runs ``on_train_result`` (the supervisor's verdict) inside ``log_result``, after
        # ``step()``; Tune reads ``should_checkpoint`` from this same dict once ``train()`` returns.
        super().log_result(result)
        cb = find_callback(self)
        if cb is None or cb.client is None:
            return
        v = cb.last_verdict
        sup = result.get("supervisor")
        fresh = v is not None and isinstance(sup, dict) and sup.get("reported") and v.seq == cb.seq - 1
        if fresh and v.checkpoint and not v.actions:
            result["should_checkpoint"] = True  # Tune's checkpoints are the health-gated ones

    def save_checkpoint(self, checkpoint_dir: str):
        out = super().save_checkpoint(checkpoint_dir)
        cb = find_callback(self)
        if cb is not None and cb.client is not None:
            import pyarrow.fs as pafs

            from actors.appliers.rllib.checkpoints import write_hparams

            try:  # the hparams a rollback to this checkpoint re-applies, persisted with it by Tune
                write_hparams(self, pafs.LocalFileSystem(), checkpoint_dir)
            except Exception:
                log.exception("hparams sidecar not written; the checkpoint itself is saved")
        return out

    def save(self, checkpoint_dir=None):
        # Tune persisted the health-gated checkpoint into the run storage (storage_path/storage_filesystem):
        # that copy, which every node reaches, is the trial's rollback target. One save per checkpoint.
        result = super().save(checkpoint_dir)
        cb = find_callback(self)
        if cb is not None and cb.client is not None and result.checkpoint is not None:
            from supervisor.storage import StorageError

            from actors.appliers.rllib import current_hparams

            try:
                try:
                    where = cb.storage.uri_of(result.checkpoint.path)
                except StorageError:  # your own Tune script keeps Tune's storage elsewhere: its path there
                    where = result.checkpoint.path
                cb.record_checkpoint(cb.seq - 1, self.iteration, where, current_hparams(self))
            except Exception:
                log.exception("could not record Tune's checkpoint with the supervisor")
        return result

    def cleanup(self) -> None:
        # Tune stops the trial (``Trainable.stop``), after the driver's ``on_trial_complete``: reports
        # buffered while the supervisor was down, and what the last verdict made this trial apply,
        # would die with this process.
        cb = find_callback(self)
        if cb is not None and cb.client is not None:
            try:
                cb.flush()
            except Exception:
                log.exception("could not hand the supervisor what this trial still held")
        super().cleanup()

    def load_checkpoint(self, checkpoint) -> None:
        super().load_checkpoint(checkpoint)
        compat.settle_restored_lifetime_counts(self)  # Ray 2.50: else the env steps restored count twice
        cb = find_callback(self)
        if cb is None or cb.client is None:
            return
        overrides = cb.client.call("trial_overrides", cb.info["run_id"], cb.trial_id)
        if overrides:
            from actors.appliers.rllib import set_hparams

            try:
                after = set_hparams(self, overrides)
                log.info("trial %s restored with supervisor overrides %s", cb.trial_id, after)
            except Exception:
                log.exception("could not re-apply supervisor overrides after restore")


def _prepare_trial_config(algo_cls, config: dict) -> tuple[Any, Any, dict | None]:
    """Tune's dict config -> (PPOConfig with the sampled sweep values in place, Tune's trial info, the trial
    for ``trial_context``: its id, name and sampled values; None when not a supervised trial)."""
    config = dict(config)
    trial_info = compat.pop_trial_info(config)
    search = config.pop(SEARCH_KEY, None) or {}
    if not search and trial_info is None:
        return config, None, None
    cfg = algo_cls.get_default_config().update_from_dict(config)
    if search:
        search = dict(search)
        env_cfg = search.pop("env_config", None)
        if env_cfg:
            cfg.environment(env_config={**(cfg.env_config or {}), **env_cfg})
        if "seed" in search:
            cfg.debugging(seed=search.pop("seed"))
        cfg.update_from_dict(search)
        if env_cfg:
            search["env_config"] = env_cfg
    trial = None
    if run_id_of(cfg) is not None:
        trial = {"params": config, "search": search}
        if trial_info is not None:
            trial.update(trial_id=trial_info.trial_id, trial_name=trial_info.trial_name)
    return cfg, trial_info, trial


class SupervisedPPO(_Supervised, PPO):
    """PPO under supervision (see ``_Supervised``)."""


class SupervisedAPPO(_Supervised, APPO):
    """APPO under supervision (see ``_Supervised``)."""


class SupervisedIMPALA(_Supervised, IMPALA):
    """IMPALA under supervision (see ``_Supervised``)."""


class SupervisedDQN(_Supervised, DQN):
    """DQN under supervision (see ``_Supervised``)."""


class SupervisedSAC(_Supervised, SAC):
    """SAC under supervision (see ``_Supervised``)."""


#: algorithm name (``supervisor.algorithms``) -> its supervised trainable
TRAINABLES = {"PPO": SupervisedPPO, "APPO": SupervisedAPPO, "IMPALA": SupervisedIMPALA, "DQN": SupervisedDQN,
              "SAC": SupervisedSAC}


def trainable_for(algorithm: str) -> type:
    return TRAINABLES[algorithm.upper()]
