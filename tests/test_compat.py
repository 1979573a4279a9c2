"""Canaries: one per Ray internal in ``actors/compat.py``, on the installed Ray, each failing with one sentence
that names the Ray version, the item and what stops working (``compat.moved``). Built on real RLlib and Tune
objects (a PPO learner and env runner built in this process, a real Trial, a real Ray node), with no training.
Also: the tested range is declared once (pyproject, README, compat agree), and ``supervise`` says when it is
outside it."""

import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.rllib")

from actors import compat  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODULE = "default_policy"


def canary(item: str, ok: bool, how: str = "is gone") -> None:
    if not ok:
        pytest.fail(compat.moved(item, how), pytrace=False)


def reach(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or the test fails with the RayMoved sentence alone."""
    try:
        return fn(*args, **kwargs)
    except compat.RayMoved as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="module")
def ppo_config():
    from ray.rllib.algorithms.ppo import PPOConfig

    return (PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=0)
            .training(train_batch_size_per_learner=64, minibatch_size=32, num_epochs=1))


@pytest.fixture(scope="module")
def learner(ppo_config):
    """The supervised PPO learner, built in this process (no Ray cluster)."""
    import gymnasium as gym

    from actors.learner import use_supervised_learner

    cfg = use_supervised_learner(ppo_config.copy(copy_frozen=False))
    return cfg.build_learner(env=gym.make("CartPole-v1"))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    yield
    ray.shutdown()


# ---- AlgorithmConfig ----------------------------------------------------------------------------------


def test_frozen_config_takes_a_change(ppo_config):
    cfg = ppo_config.copy(copy_frozen=False)
    cfg.freeze()
    with reach(compat.unfrozen, cfg):
        cfg.lr = 0.25
    canary("AlgorithmConfig._is_frozen", cfg.lr == 0.25, "no longer unfreezes a config")
    with pytest.raises(AttributeError):  # frozen again
        cfg.lr = 0.5


def test_per_module_override_config(ppo_config):
    cfg = ppo_config.copy(copy_frozen=False)
    cfg.algorithm_config_overrides_per_module = {"a": {"lr": 0.125}}
    cached = cfg.get_config_for_module("a")
    canary("AlgorithmConfig._per_module_overrides",
           reach(compat.per_module_config, cfg, "a") is cached and cached.lr == 0.125,
           "no longer caches get_config_for_module()'s per-module configs")
    assert reach(compat.per_module_config, cfg, "b") is None


def test_learner_class(ppo_config):
    from actors.learner import SupervisedPPOTorchLearner

    cfg = ppo_config.copy(copy_frozen=False)
    canary("AlgorithmConfig._learner_class", reach(compat.explicit_learner_class, cfg) is None,
           "no longer holds only a class the user set")
    reach(compat.set_learner_class, cfg, SupervisedPPOTorchLearner)
    canary("AlgorithmConfig.learners(learner_class=)", cfg.learner_class is SupervisedPPOTorchLearner,
           "no longer sets the class the algorithm builds its learners with")
    canary("AlgorithmConfig._learner_class", compat.explicit_learner_class(cfg) is SupervisedPPOTorchLearner,
           "no longer holds the class set through learners(learner_class=)")


def test_learner_config_dict(ppo_config):
    cfg = ppo_config.copy(copy_frozen=False)
    reach(compat.set_learner_options, cfg, learner_config_dict={"supervisor": {"run_id": "r1"}})
    canary("AlgorithmConfig.learners(learner_config_dict=)",
           cfg.copy().learner_config_dict.get("supervisor") == {"run_id": "r1"},
           "no longer carries a value to every learner's config")


# ---- Learner ------------------------------------------------------------------------------------------


def _optimizer(learner):
    (_name, opt), = learner.get_optimizers_for_module(MODULE)
    return opt


def test_lr_schedule_sets_the_lr_after_every_update(learner):
    from ray.rllib.utils.schedules.scheduler import Scheduler

    opt = _optimizer(learner)
    canary("Learner._optimizer_lr_schedules", isinstance(reach(compat.lr_scheduler, learner, opt), Scheduler),
           "no longer maps optimizers to their lr Schedulers")
    reach(compat.replace_lr_scheduler, learner, opt,
          Scheduler(fixed_value_or_schedule=0.0125, framework="torch", device=compat.learner_device(learner)))
    learner.after_gradient_based_update(timesteps={"num_env_steps_sampled_lifetime": 0})  # what update() calls
    canary("Learner._optimizer_lr_schedules", opt.param_groups[0]["lr"] == pytest.approx(0.0125),
           "no longer sets the optimizer's lr after an update")


def test_optimizer_lr_get_and_set(learner):
    opt = _optimizer(learner)
    reach(compat.set_optimizer_lr, learner, opt, 0.003)
    canary("Learner._set_optimizer_lr", opt.param_groups[0]["lr"] == pytest.approx(0.003),
           "no longer sets the optimizer's lr")
    canary("Learner._get_optimizer_lr", float(reach(compat.optimizer_lr, learner, opt)) == pytest.approx(0.003),
           "no longer reads the optimizer's lr")


def test_learner_device(learner):
    import torch

    dev = reach(compat.learner_device, learner)
    canary("Learner._device", isinstance(dev, torch.device) and dev.type == "cpu", "is no longer a torch.device")


def test_named_optimizers(learner):
    named = reach(compat.named_optimizers, learner)
    canary("Learner._named_optimizers", list(named.values()) == [_optimizer(learner)],
           "no longer names the learner's optimizers")


def test_learner_connector_reached_gae(learner):
    from actors.learner import SupervisedGeneralAdvantageEstimation

    pieces = getattr(reach(compat.learner_connector, learner), "connectors", [])
    canary("Learner._learner_connector",
           any(isinstance(p, SupervisedGeneralAdvantageEstimation) for p in pieces) and learner._sup_gae is not None,
           "no longer holds PPO's GAE connector piece")


def test_grad_scalers(learner):
    import torch

    canary("TorchLearner._grad_scalers", reach(compat.grad_scaler, learner, MODULE) is None
           and "_grad_scalers" in vars(learner), "is gone")
    # With a scaler class configured, each module gets one (what the gradient norms are divided by).
    learner._grad_scalers = {MODULE: torch.amp.GradScaler("cpu")}
    try:
        canary("TorchLearner._grad_scalers",
               isinstance(getattr(compat.grad_scaler(learner, MODULE), "_scale", None), (torch.Tensor, type(None))),
               "no longer holds torch GradScalers")
    finally:
        learner._grad_scalers = None


def test_learner_weights_seq_no(learner):
    before = reach(compat.weights_seq_no, learner)
    try:
        reach(compat.set_weights_seq_no, learner, 7)
        canary("Learner._weights_seq_no", learner.get_state(not_components="rl_module").get("weights_seq_no") == 7,
               "is no longer the weights_seq_no of the learner's state")
    finally:
        compat.set_weights_seq_no(learner, before)


def test_metrics_log_per_iteration():
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    got = {}
    for reduce in ("mean", "max"):
        m = MetricsLogger()
        got[reduce] = []
        for values in ([1.0, 3.0], [2.0], [5.0, 7.0]):
            for v in values:
                compat.log_per_iteration(m, (MODULE, "k"), v, reduce, 1000 if reduce == "mean" else None)
            stats = m.reduce()[MODULE]["k"]
            got[reduce].append(float(stats.peek() if hasattr(stats, "peek") else stats))
    canary("MetricsLogger.log_value(clear_on_reduce=)", got == {"mean": [2.0, 2.0, 6.0], "max": [3.0, 2.0, 7.0]},
           f"no longer gives one iteration's values per reduce (got {got})")


# ---- EnvRunner, MultiRLModule -------------------------------------------------------------------------


def test_env_runner_takes_pushed_weights_after_a_reset(ppo_config):
    import numpy as np
    import torch

    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    def zeroed(x):
        if isinstance(x, dict):
            return {k: zeroed(v) for k, v in x.items()}
        return np.zeros_like(x) if isinstance(x, np.ndarray) else torch.zeros_like(x) if torch.is_tensor(x) else x

    def all_zero(er):
        return all(not p.detach().abs().sum() for p in er.module.parameters())

    er = SingleAgentEnvRunner(config=ppo_config)
    try:
        push = {"rl_module": zeroed(er.get_state(components="rl_module")["rl_module"]), "weights_seq_no": 3}
        reach(compat.set_weights_seq_no, er, 5)
        er.set_state(push)  # older than what the runner holds: RLlib skips it
        canary("EnvRunner._weights_seq_no", not all_zero(er), "is no longer what RLlib's weight pushes compare")
        compat.set_weights_seq_no(er, 0)  # what a rollback does before its push
        er.set_state(push)
        canary("EnvRunner._weights_seq_no", all_zero(er) and compat.weights_seq_no(er) == 3,
               "reset to 0 no longer lets the next weight push in")
    finally:
        er.stop()


def test_restored_lifetime_counts_count_once(ppo_config):
    """An algorithm's training iteration with its local env runner (sample, merge the runner's metrics into the
    root logger, reduce, sync the count back), then the restore Tune does on a restart: a new runner and root
    logger from their saved states. The first iteration after it adds what it sampled, once."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    key = (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)

    def iteration(algo) -> float:
        algo.env_runner.sample(num_timesteps=50, random_actions=True)
        algo.metrics.aggregate([algo.env_runner.get_metrics()], key=ENV_RUNNER_RESULTS)
        algo.metrics.reduce()
        count = algo.metrics.peek(key)
        algo.env_runner.set_state({NUM_ENV_STEPS_SAMPLED_LIFETIME: count})  # EnvRunnerGroup's sync
        return float(count)

    first = SimpleNamespace(env_runner=SingleAgentEnvRunner(config=ppo_config), metrics=MetricsLogger(root=True),
                            env_runner_group=None)
    again = None
    try:
        assert [iteration(first), iteration(first)] == [50.0, 100.0]
        saved = first.metrics.get_state(), first.env_runner.get_state(not_components="rl_module")
        again = SimpleNamespace(env_runner=SingleAgentEnvRunner(config=ppo_config), metrics=MetricsLogger(root=True),
                                env_runner_group=None)
        again.metrics.set_state(saved[0])
        again.env_runner.set_state(saved[1])
        reach(compat.settle_restored_lifetime_counts, again)
        got = [iteration(again), iteration(again)]
        canary("Stats._prev_merge_values", got == [150.0, 200.0],
               f"no longer makes a restored algorithm count its env steps once (got {got})")
    finally:
        first.env_runner.stop()
        if again is not None:
            again.env_runner.stop()


def test_multi_rl_module_members(ppo_config):
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec

    import gymnasium as gym

    env = gym.make("CartPole-v1")
    spec = ppo_config.get_rl_module_spec(env=env)
    multi = MultiRLModuleSpec(rl_module_specs={"a": spec, "b": spec}).build()
    subs = reach(compat.sub_modules, multi)
    canary("MultiRLModule._rl_modules", subs is not None and set(subs) == {"a", "b"}
           and all(subs[k] is multi[k] for k in subs), "no longer holds the modules by id")
    assert compat.sub_modules(multi["a"]) is None  # a single module


# ---- Tune ---------------------------------------------------------------------------------------------


def test_trainable_trial_info():
    from ray.tune import Trainable

    class Idle(Trainable):
        def step(self):
            return {}

    t = Idle(config={})
    try:
        reach(compat.set_trial_info, t, SimpleNamespace(trial_id="abc12_00003", trial_name="Idle_abc12_00003",
                                                        trial_resources=None))
        canary("Trainable._trial_info", t.trial_id == "abc12_00003", "no longer gives the trainable its trial id")
    finally:
        t.stop()


def test_combined_stopper_parts():
    from ray.tune.stopper import CombinedStopper, MaximumIterationStopper

    parts = [MaximumIterationStopper(3), MaximumIterationStopper(5)]
    canary("CombinedStopper._stoppers", reach(compat.combined_stoppers, CombinedStopper(*parts)) == parts,
           "no longer holds the stoppers it combines")
    assert compat.combined_stoppers(parts[0]) == []


def test_tune_error_file_names_the_latest_failure(local_ray, tmp_path):
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    from actors.callback import RestartRequested

    trial = Trial("__fake", stub=True, storage=StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp",
                                                              trial_dir_name="t0"))
    trial.init_local_path()
    trial.handle_error(RestartRequested("the supervisor asked"))  # what Tune does with a trial's exception
    canary("Tune's error file", compat.trial_failed_with(trial, "RestartRequested"),
           "no longer names the trial's exception")
    trial.handle_error(ValueError("a real crash"))
    canary("Tune's error file", not compat.trial_failed_with(trial, "RestartRequested"),
           f"no longer marks each failure with {compat.ERROR_FILE_MARK!r}")


def test_tune_hands_the_trainable_its_trial_info(local_ray, tmp_path):
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial
    from ray.tune.experiment.trial import _get_trainable_kwargs

    trial = Trial("__fake", stub=True, config={"lr": 0.1},
                  storage=StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp", trial_dir_name="t1"))
    config = dict(_get_trainable_kwargs(trial)["config"])  # what Tune starts the trainable with
    info = reach(compat.pop_trial_info, config)
    canary("tune.result.TRIAL_INFO", getattr(info, "trial_id", None) == trial.trial_id,
           "no longer carries the trial id in the trainable's config")
    assert config.get("lr") == 0.1


# ---- the cluster --------------------------------------------------------------------------------------


def test_head_node_resource(local_ray):
    (node,) = [n for n in ray.nodes() if n["Alive"]]
    canary("node:__internal_head__", compat.is_head_node(node["Resources"]), "is no longer on the head node")


def test_internal_kv_round_trip(local_ray):
    reach(compat.kv_put, b"canary", b"1", "rl_supervisor_canary")
    canary("ray.experimental.internal_kv", compat.kv_get(b"canary", "rl_supervisor_canary") == b"1",
           "no longer reads back what it stored")
    compat.kv_del(b"canary", "rl_supervisor_canary")
    canary("ray.experimental.internal_kv", compat.kv_get(b"canary", "rl_supervisor_canary") is None,
           "no longer deletes")


# ---- result keys -------------------------------------------------------------------------------------


def test_result_keys_of_later_releases():
    """``fault_tolerance/num_env_runners_dropped_lifetime`` comes from ``EnvRunnerGroup``'s counter of the same
    name (Ray >= 2.57); the supervisor reads it where it exists (``supervisor/metrics.py``)."""
    from ray.rllib.env.env_runner_group import EnvRunnerGroup

    from supervisor.metrics import RESULT_PATHS

    key = "fault_tolerance/num_env_runners_dropped_lifetime"
    assert key in RESULT_PATHS.values()
    has = callable(getattr(EnvRunnerGroup, "num_env_runners_dropped_lifetime", None))
    if compat.reports_result_key(key):
        canary("fault_tolerance/num_env_runners_dropped_lifetime", has, "is no longer counted")
    assert not compat.reports_result_key(key, "2.56.0") and compat.reports_result_key(key, "2.57.0")


# ---- the registry itself, the tested range ------------------------------------------------------------


def test_every_item_has_a_canary():
    checked = set(re.findall(r'canary\(\s*"([^"]+)"', Path(__file__).read_text()))
    assert checked == set(compat.ITEMS), f"items without a canary: {sorted(set(compat.ITEMS) - checked)}"


def test_moved_names_version_item_and_consequence():
    msg = str(compat.RayMoved("Learner._optimizer_lr_schedules"))
    assert msg == f"Ray {compat.ray_version()}: Learner._optimizer_lr_schedules is gone: lr changes cannot stick"
    with pytest.raises(compat.RayMoved, match=r"^Ray .*: MultiRLModule._rl_modules is gone: "):
        compat._attr(object(), "_rl_modules", "MultiRLModule._rl_modules")


def test_the_range_is_declared_once():
    toml = (ROOT / "pyproject.toml").read_text()
    (spec,) = re.findall(r'"ray\[default,rllib,tune\]([^"]*)"', toml)
    assert spec == compat.TESTED_RANGE, f"pyproject.toml says ray{spec}, actors/compat.py {compat.TESTED_RANGE}"
    readme = (ROOT / "README.md").read_text()
    assert f"Ray {compat.FLOOR}" in readme and f"{compat.NEXT}" in readme, "README.md does not state the range"
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"ray[default,rllib,tune]=={compat.FLOOR}" in ci, ".ci/run does not test the floor"


def test_range_check():
    assert compat.in_tested_range(compat.FLOOR)
    assert not compat.in_tested_range(compat.NEXT + ".0")
    assert not compat.in_tested_range("2.49.2")
    assert compat.in_tested_range("2.60.0") and not compat.in_tested_range("garbage")


def test_supervise_warns_once_outside_the_range(tmp_path):
    """``supervise`` on a Ray the range does not cover: one line on stderr, and the command goes on (here to
    its own input error). The version is what the installed metadata says: a distribution on the path plays
    another release; no Ray is imported for it."""
    fake = tmp_path / "ray-9.0.0.dist-info"
    fake.mkdir()
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: ray\nVersion: 9.0.0\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}

    def supervise(*args):
        return subprocess.run([sys.executable, "-m", "supervisor", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    out = supervise("run", "missing.yaml")
    assert out.returncode == 2, out
    warn, err = out.stderr.strip().splitlines()
    assert warn.startswith(f"supervise: Ray 9.0.0 is outside the tested range {compat.TESTED_RANGE}; "), warn
    assert "missing.yaml" in err
    out = supervise("scan", "missing.jsonl")  # offline commands need no Ray: nothing to say
    assert out.returncode == 2 and "outside the tested range" not in out.stderr, out
    assert compat.warn_if_untested() is (not compat.in_tested_range())
    assert compat.warn_if_untested() is False  # once per process


def test_appo_learner_results_queue():
    import gymnasium as gym
    from ray.rllib.algorithms.appo import APPOConfig

    from actors.learner_results import NewestResults

    cfg = (APPOConfig().environment("CartPole-v1").env_runners(num_env_runners=0)
           .training(train_batch_size_per_learner=64))
    learner = cfg.build_learner(env=gym.make("CartPole-v1"))
    try:
        q = reach(compat.learner_results_queue, learner)
        # RLlib 2.60 queues a result per update (a backlog: actors/learner_results.py); a release with no such
        # queue keeps no backlog and is left alone
        canary("IMPALALearner._learner_thread_out_queue",
               q is not None or not hasattr(learner, "_learner_thread_out_queue"), "is no longer a queue")
        if q is not None:
            new = NewestResults()
            compat.set_learner_results_queue(learner, new)
            canary("IMPALALearner._learner_thread_out_queue",
                   reach(compat.learner_results_queue, learner) is new, "cannot be replaced")
        # a rollback pauses the thread around its restore: the thread's next update waits for the resume
        # (unpaused, a restore landing mid-update killed the thread: autograd's in-place check)
        canary("_LearnerThread._update_method", reach(compat.guard_learner_thread, learner) is True,
               "cannot be guarded")
        thread = learner._learner_thread
        # a thread that died is told as a crash (RLlib samples on without learning): a live one is no death
        canary("IMPALALearner._learner_thread", thread.is_alive() and reach(compat.learner_thread_death, learner) is None,
               "is no longer the running thread the supervisor watches")
        canary("_LearnerThread.step", "step" in vars(thread), "cannot be watched")  # its death is seen from there
        update = thread._update_method
        lock = learner._supervisor_update_lock
        assert compat.guard_learner_thread(learner) and thread._update_method is update  # idempotent
        assert compat.pause_learner_thread(learner) and lock.locked()
        waited = threading.Event()
        t = threading.Thread(target=lambda: (lock.acquire(), lock.release(), waited.set()))  # as the next update
        t.start()
        assert not waited.wait(0.5)  # held while paused
        assert compat.resume_learner_thread(learner)
        assert waited.wait(30)
        t.join()
        assert not compat.resume_learner_thread(learner)  # nothing paused
    finally:
        # its learner thread, left running, polls its empty buffer every 0.1 ms (~15 % of a core here) for the
        # rest of the session and is still running Python code while the interpreter shuts down
        if hasattr(learner, "shutdown"):
            learner.shutdown()
            assert compat.learner_thread_death(learner) is None  # stopped by RLlib: no death
        else:  # RLlib 2.50: no shutdown; the thread stops at its next item
            learner._learner_thread.stopped = True
            learner._learner_thread_in_queue.add(object())
            learner._learner_thread.join(5)
