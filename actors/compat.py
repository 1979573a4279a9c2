"""Every Ray, RLlib and Tune internal the supervisor relies on, in one place, and the Ray releases it is tested on.

RLlib's Learner API is alpha, and what the supervisor must touch to change a live run (an lr that sticks, a
rollback the env runners see) is private. Each such item is read or written here, and nowhere else
(``tests/test_structure.py`` enforces it), under a name that says what it is for; ``tests/test_compat.py``
holds one canary per item, on the installed Ray. When a release moves an item, the accessor raises
``RayMoved`` with one sentence that names the Ray version, the item and what stops working, e.g.
``Ray 2.61.0: Learner._optimizer_lr_schedules is gone: lr changes cannot stick``.

Tested range: ``TESTED_RANGE`` (pyproject.toml declares the same). CI runs the whole suite on the newest
release and the Ray-facing tests (``tests/conftest.py``: ``RAY_FACING``) on ``FLOOR``.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import threading
from pathlib import Path

# The tested range (FLOOR, NEXT) and the installed release, read without Ray: the CLI checks them too.
from supervisor.ray_release import (FLOOR, NEXT, TESTED_RANGE, in_tested_range, ray_version,  # noqa: F401
                                    warn_if_untested)

#: Each private item -> what stops working without it (the second half of every ``RayMoved`` sentence).
ITEMS = {
    "AlgorithmConfig._is_frozen": "hyperparameter changes cannot be written into a built algorithm's config",
    "AlgorithmConfig._per_module_overrides": "hyperparameter changes miss modules with per-module overrides",
    "AlgorithmConfig._learner_class": "a config's own learner class cannot be checked: sup_ metrics may vanish",
    "AlgorithmConfig.learners(learner_class=)": "the supervised learner cannot be installed: no sup_ metrics",
    "AlgorithmConfig.learners(learner_config_dict=)": "trials cannot carry their run id: they train unsupervised",
    "Learner._optimizer_lr_schedules": "lr changes cannot stick",
    "Learner._get_optimizer_lr": "the lr in effect cannot be read",
    "Learner._set_optimizer_lr": "an lr change waits for the next update",
    "Learner._device": "new schedulers cannot be placed on the learner's device",
    "Learner._weights_seq_no": "a rollback cannot keep the weights' sequence number monotonic",
    "Learner._named_optimizers": "the learner's optimizers cannot be listed by name",
    "Learner._learner_connector": "sup_advantage_* describe standardized advantages, not raw ones",
    "MetricsLogger.log_value(clear_on_reduce=)": "sup_ metrics pile up over the run instead of one iteration",
    "Stats._prev_merge_values": "a trial Tune restores from a checkpoint counts its env steps twice",
    "TorchLearner._grad_scalers": "gradient norms under mixed precision are reported scaled",
    "MultiRLModule._rl_modules": "env runners' per-module weights and exploration cannot be read",
    "EnvRunner._weights_seq_no": "a rollback cannot make the env runners take the restored weights",
    "Trainable._trial_info": "a supervised trainable cannot learn its Tune trial id",
    "tune.result.TRIAL_INFO": "a supervised trainable cannot learn its Tune trial id",
    "CombinedStopper._stoppers": "the stability stopper inside a combined stopper cannot be found",
    "Tune's error file": "a supervisor-requested restart is counted as a crash",
    "node:__internal_head__": "the head node cannot be found: the supervisor actor is not pinned there",
    "ray.experimental.internal_kv": "trials cannot find their run's settings in the cluster store",
    "fault_tolerance/num_env_runners_dropped_lifetime": "worker_fault cannot see sample requests lost to env runners",
    "IMPALALearner._learner_thread_out_queue": "APPO's and IMPALA's reports trail their learner by a growing backlog",
    "IMPALALearner._learner_thread": "a learner thread that died goes unnoticed: the trial samples on, learns "
                                     "nothing, and RLlib 2.60's next wait for its results never ends",
    "_LearnerThread.step": "what killed a learner thread outside its update goes unseen, and the waits on it stay "
                           "closed",
    "_LearnerThread._update_method": "a rollback can land while APPO's or IMPALA's learner thread is mid-update: "
                                     "autograd's in-place check kills the thread and the trial stops learning",
}

#: Result keys the supervisor reads (``supervisor/metrics.py``) that RLlib reports only from a release on. On an
#: older supported Ray the metric is absent (no data), and the detector reading it judges without it.
RESULT_KEYS_SINCE = {"fault_tolerance/num_env_runners_dropped_lifetime": "2.57"}


def reports_result_key(path: str, v: str | None = None) -> bool:
    from packaging.version import Version

    since = RESULT_KEYS_SINCE.get(path)
    return since is None or Version(v or ray_version()) >= Version(since)


class RayMoved(RuntimeError):
    """A Ray internal the supervisor relies on moved; the message is one sentence."""

    def __init__(self, item: str, how: str = "is gone"):
        self.item = item
        super().__init__(moved(item, how))


def moved(item: str, how: str = "is gone") -> str:
    return f"Ray {ray_version()}: {item} {how}: {ITEMS[item]}"


def _attr(obj, name: str, item: str):
    try:
        return getattr(obj, name)
    except AttributeError:
        raise RayMoved(item) from None


# ---------------------------------------------------------------------------
# AlgorithmConfig
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def unfrozen(cfg):
    """Lets a frozen AlgorithmConfig (a built algorithm's, a learner's) take a change, then freezes it again."""
    frozen = _attr(cfg, "_is_frozen", "AlgorithmConfig._is_frozen")
    if frozen:
        cfg._is_frozen = False  # AlgorithmConfig.__setattr__ allows this key
    try:
        yield cfg
    finally:
        if frozen:
            cfg._is_frozen = True


def per_module_config(cfg, module_id):
    """The config ``cfg.get_config_for_module(module_id)`` has cached for a module with overrides, or None."""
    return _attr(cfg, "_per_module_overrides", "AlgorithmConfig._per_module_overrides").get(module_id)


def explicit_learner_class(cfg):
    """The learner class the user set on the config (None: the algorithm's default)."""
    return _attr(cfg, "_learner_class", "AlgorithmConfig._learner_class")


def set_learner_class(cfg, cls) -> None:
    set_learner_options(cfg, learner_class=cls)


def set_learner_options(cfg, **options) -> None:
    """``config.learners(**options)`` for the learner options Ray 2.51 moved there from ``config.training``
    (``learner_class``, ``learner_config_dict``); ``config.training(...)`` on older releases."""
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    for name, value in options.items():
        if name in inspect.signature(AlgorithmConfig.learners).parameters:
            cfg.learners(**{name: value})
        elif name in inspect.signature(AlgorithmConfig.training).parameters:
            cfg.training(**{name: value})  # PPOConfig.training passes it on through **kwargs
        else:
            raise RayMoved(f"AlgorithmConfig.learners({name}=)", "is gone from learners() and training()")


# ---------------------------------------------------------------------------
# Learner
# ---------------------------------------------------------------------------


def lr_scheduler(learner, optimizer):
    """The Scheduler RLlib rewrites ``optimizer``'s lr from after every update (None: no schedule)."""
    return _attr(learner, "_optimizer_lr_schedules", "Learner._optimizer_lr_schedules").get(optimizer)


def replace_lr_scheduler(learner, optimizer, scheduler) -> None:
    _attr(learner, "_optimizer_lr_schedules", "Learner._optimizer_lr_schedules")[optimizer] = scheduler


def optimizer_lr(learner, optimizer):
    """The lr the optimizer holds now (a float or a 0-d tensor)."""
    return _attr(learner, "_get_optimizer_lr", "Learner._get_optimizer_lr")(optimizer)


def set_optimizer_lr(learner, optimizer, lr: float) -> None:
    _attr(learner, "_set_optimizer_lr", "Learner._set_optimizer_lr")(optimizer, lr)


def learner_device(learner):
    return _attr(learner, "_device", "Learner._device")


def named_optimizers(learner) -> dict:
    """``{name: optimizer}`` of every optimizer the learner steps (names are ``<module_id>_<optimizer>``)."""
    return dict(_attr(learner, "_named_optimizers", "Learner._named_optimizers"))


def learner_connector(learner):
    """The learner's connector pipeline (GAE for PPO), or None when the learner has none."""
    return _attr(learner, "_learner_connector", "Learner._learner_connector")


def grad_scaler(learner, module_id):
    """The module's torch GradScaler under mixed precision, else None."""
    scalers = _attr(learner, "_grad_scalers", "TorchLearner._grad_scalers")
    return scalers.get(module_id) if scalers else None


def weights_seq_no(obj) -> int:
    """The weights' sequence number of a Learner or an EnvRunner (RLlib pushes weights only forward)."""
    return int(_attr(obj, "_weights_seq_no", _seq_item(obj)))


def set_weights_seq_no(obj, seq_no: int) -> int:
    _attr(obj, "_weights_seq_no", _seq_item(obj))
    obj._weights_seq_no = int(seq_no)
    return int(obj._weights_seq_no)


def learner_results_queue(learner):
    """The queue through which an APPO/IMPALA learner's thread hands the driver a result per update
    (``actors/learner_results.py``), or None: a learner without one (not APPO/IMPALA; RLlib before the queue,
    e.g. 2.50, keeps no backlog). RayMoved when the learner has it but its thread no longer writes into it."""
    old = getattr(learner, "_learner_thread_out_queue", None)
    if old is None:
        return None
    thread = getattr(learner, "_learner_thread", None)
    if not (hasattr(old, "put") and hasattr(old, "get")) or getattr(thread, "_out_queue", None) is not old:
        raise RayMoved("IMPALALearner._learner_thread_out_queue", "is no longer what the learner thread writes into")
    return old


def guard_learner_thread(learner) -> bool:
    """APPO's and IMPALA's learner thread, guarded (installed when the algorithm starts, before any update):

    * a lock around each of its updates, which :func:`pause_learner_thread` takes: the thread updates the weights
      while a restore (a rollback) writes them in place from the learner's own calls; RLlib does not serialize
      the two, and a restore landing mid-update fails the update's backward pass and kills the thread;
    * its death watched: what killed it is kept (:func:`learner_thread_death`), and the learner's waits on it
      (:func:`_release_waits`) are released, or the next update would wait forever.

    False where the learner has no such thread. Idempotent. RayMoved when the thread no longer updates through
    ``_update_method`` or no longer loops over ``step``."""
    thread = getattr(learner, "_learner_thread", None)
    if thread is None:
        return False
    if getattr(learner, "_supervisor_update_lock", None) is not None:
        return True
    update = getattr(thread, "_update_method", None)
    if not callable(update):
        raise RayMoved("_LearnerThread._update_method", "is no longer how the learner thread updates")
    step = getattr(thread, "step", None)
    if not callable(step):
        raise RayMoved("_LearnerThread.step", "is no longer what the learner thread loops over")
    lock = threading.Lock()  # released by resume, maybe from another thread of the learner's actor

    def locked_update(*args, **kwargs):
        with lock:
            return update(*args, **kwargs)

    def watched_step(*args, **kwargs):  # the whole step: an error after the update kills the thread too
        try:
            return step(*args, **kwargs)
        except BaseException as e:
            _thread_died(learner, e)
            raise

    thread._update_method = locked_update
    thread.step = watched_step  # looked up on every turn of the thread's loop (RLlib 2.50 and 2.60)
    learner._supervisor_update_lock = lock
    return True


def _thread_died(learner, exc: BaseException) -> None:
    """In the dying thread: keep its crash report (not the exception: its traceback would pin the batch), then
    release what waits on the thread."""
    if getattr(learner, "_supervisor_thread_crash", None) is None:
        learner._supervisor_thread_crash = _thread_report(exc)
    _release_waits(learner)


def _thread_report(exc: BaseException) -> dict:
    """The learner thread's crash report of ``exc`` (``actors/crash.py``), or its bare type and message where
    describing it fails: the death is told in any case."""
    try:
        from actors.crash import crash_report

        return crash_report(exc, phase="learner thread")
    except Exception:  # noqa: BLE001
        return {"exception": type(exc).__name__, "message": str(exc)[:2000], "frames": [], "phase": "learner thread"}


class _Open:
    """An event that stays set (what waits on a dead learner thread's results get)."""

    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass

    def is_set(self) -> bool:
        return True

    def wait(self, timeout: float | None = None) -> bool:
        return True


class _Discard:
    """A queue that takes every batch and keeps none (what a dead learner thread's bounded in-queues become)."""

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        pass

    def put_nowait(self, item) -> None:
        pass

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def full(self) -> bool:
        return False


_OPEN = _Open()


def _release_waits(learner) -> None:
    """RLlib 2.60's ``update`` waits on the learner thread twice: for its results every ``broadcast_interval``
    updates (``_agg_event``), and for room in its bounded in-queues (IMPALA's ``learner_queue_size`` queue, the GPU
    loaders' queue). Once the thread is dead both waits are forever, on the driver's learner and in a learner
    actor alike (the actor, stuck in one update, answers nothing else). Opened, the updates return and the trial
    tells the death. RLlib 2.50's queues never block (a deque, a circular buffer) and it has no such event."""
    import queue

    event = getattr(learner, "_agg_event", None)
    if hasattr(event, "wait") and event is not _OPEN:
        event.set()  # a wait in progress returns
        learner._agg_event = _OPEN
    for name in ("_learner_thread_in_queue", "_gpu_loader_in_queue"):
        old = getattr(learner, name, None)
        if isinstance(old, queue.Queue):
            setattr(learner, name, _Discard())
            while True:  # an update blocked on a full queue in this moment: its put now completes
                try:
                    old.get_nowait()
                except queue.Empty:
                    break


def learner_thread_death(learner) -> dict | None:
    """The crash report of APPO's or IMPALA's dead learner thread (``actors/crash.py``, from the guard,
    :func:`guard_learner_thread`; a RuntimeError's where it ended without one); None while it runs, where the
    learner has no such thread, or where RLlib stopped it (``Learner.shutdown``). RLlib itself never looks: the
    algorithm samples on and its learner learns nothing."""
    thread = getattr(learner, "_learner_thread", None)
    if thread is None or not hasattr(thread, "is_alive"):
        return None
    if thread.is_alive() or getattr(thread, "stopped", False):
        return None
    report = getattr(learner, "_supervisor_thread_crash", None) or _thread_report(
        RuntimeError("RLlib's learner thread (_LearnerThread) ended without an error the supervisor saw"))
    return dict(report)


def pause_learner_thread(learner) -> bool:
    """Wait for the guarded learner thread's update in progress to end and hold the next until
    :func:`resume_learner_thread`; False where there is no guard (nothing to pause)."""
    lock = getattr(learner, "_supervisor_update_lock", None)
    if lock is None:
        return False
    lock.acquire()
    return True


def resume_learner_thread(learner) -> bool:
    lock = getattr(learner, "_supervisor_update_lock", None)
    if lock is None or not lock.locked():
        return False
    lock.release()
    return True


def set_learner_results_queue(learner, new) -> None:
    """Make ``new`` the queue the learner's thread writes into and the learner reads from."""
    learner._learner_thread_out_queue = learner._learner_thread._out_queue = new


def _seq_item(obj) -> str:
    from ray.rllib.core.learner.learner import Learner

    return "Learner._weights_seq_no" if isinstance(obj, Learner) else "EnvRunner._weights_seq_no"


_CLEAR_ON_REDUCE = None


def log_per_iteration(metrics, key, value, reduce: str, window=None) -> None:
    """Log a value into a MetricsLogger so that each result holds only the values logged since the last
    reduce (``reduce`` "mean" over ``window``, or "max"). Ray >= 2.51 clears a key's values at every reduce;
    before, that needs ``clear_on_reduce=True`` (without it the values pile up over the whole run)."""
    global _CLEAR_ON_REDUCE
    if _CLEAR_ON_REDUCE is None:
        param = inspect.signature(type(metrics).log_value).parameters.get("clear_on_reduce")
        _CLEAR_ON_REDUCE = param is not None and param.default is False
    kw = {"reduce": reduce}
    if window is not None:
        kw["window"] = window
    if _CLEAR_ON_REDUCE:
        kw["clear_on_reduce"] = True
    metrics.log_value(key, value, **kw)


def settle_restored_lifetime_counts(algo) -> int:
    """After a restore (Tune restarting a trial from its checkpoint), make the algorithm count each env runner's
    lifetime env steps once; returns how many baselines it set (0 where Ray needs none).

    Before RLlib's ``LifetimeSumStats`` (Ray 2.50.1), an EnvRunner keeps ``num_env_steps_sampled_lifetime`` in its
    own MetricsLogger, and ``SingleAgentEnvRunner.set_state`` restores the checkpoint's count there; the
    algorithm's root logger restores the same count (``env_runners/...``), and on each merge adds how much a
    runner's count grew since it last merged that runner's ``Stats`` (``_prev_merge_values``, keyed by the Stats'
    id, 0 for one not yet seen: every one after a restore). So the first iteration after a restore adds the
    whole restored count a second time (2,500 env steps reported for 1,500 sampled). The baseline of each
    runner's lifetime sums is set to what that runner holds now. Later releases keep no such baseline."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS

    root = getattr(algo, "metrics", None)
    under = getattr(root, "stats", {}).get(ENV_RUNNER_RESULTS)
    if not isinstance(under, dict) or not any(
            _is_lifetime_sum(s) and hasattr(s, "_prev_merge_values") for _, s in _walk_stats(under)):
        return 0  # this Ray's root logger merges lifetime sums without per-runner baselines
    held = []
    group = getattr(algo, "env_runner_group", None)
    if getattr(algo, "env_runner", None) is not None:
        held.append(_lifetime_sums(algo.env_runner))
    if group is not None and group.num_remote_env_runners() > 0:
        held += group.foreach_env_runner(_lifetime_sums, local_env_runner=False)
    n = 0
    for sums in held:
        for path, (stats_id, value) in (sums or {}).items():
            node = under
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None and _is_lifetime_sum(node):
                _attr(node, "_prev_merge_values", "Stats._prev_merge_values")[stats_id] = value
                n += 1
    return n


def _walk_stats(tree: dict, path: tuple = ()):
    for key, node in tree.items():
        if isinstance(node, dict):
            yield from _walk_stats(node, path + (key,))
        else:
            yield path + (key,), node


def _is_lifetime_sum(stats) -> bool:
    # Ray <= 2.50: ``Stats(reduce="sum", clear_on_reduce=False)`` with an infinite window is a lifetime count
    return (getattr(stats, "_reduce_method", None) == "sum" and getattr(stats, "_clear_on_reduce", True) is False
            and getattr(stats, "_inf_window", False))


def _lifetime_sums(env_runner) -> dict:
    """``{path: (Stats id, count)}`` of an env runner's lifetime sums (runs on the env runner)."""
    return {path: (s.id_, s.peek()) for path, s in _walk_stats(env_runner.metrics.stats)
            if _is_lifetime_sum(s) and hasattr(s, "id_")}


# ---------------------------------------------------------------------------
# RLModules
# ---------------------------------------------------------------------------


def sub_modules(module) -> dict | None:
    """``{module_id: RLModule}`` of a MultiRLModule without a copy of the modules; None for a single RLModule."""
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule

    if not isinstance(module, MultiRLModule):
        return None
    return dict(_attr(module, "_rl_modules", "MultiRLModule._rl_modules"))


# ---------------------------------------------------------------------------
# Tune
# ---------------------------------------------------------------------------


def pop_trial_info(config: dict):
    """Take Tune's trial info (the real trial id and name) out of the config dict Tune hands a trainable."""
    try:
        from ray.tune.result import TRIAL_INFO
    except ImportError:
        raise RayMoved("tune.result.TRIAL_INFO") from None
    return config.pop(TRIAL_INFO, None)


def trial_info(trainable):
    return _attr(trainable, "_trial_info", "Trainable._trial_info")


def set_trial_info(trainable, info) -> None:
    """Give a trainable the Tune trial info (its real trial id) when Tune did not."""
    if trial_info(trainable) is None:
        trainable._trial_info = info


def combined_stoppers(stopper) -> list:
    """The stoppers a CombinedStopper ORs; [] for any other stopper."""
    from ray.tune.stopper import CombinedStopper

    if not isinstance(stopper, CombinedStopper):
        return []
    return list(_attr(stopper, "_stoppers", "CombinedStopper._stoppers"))


ERROR_FILE_MARK = "Failure #"  # Tune appends "Failure # N (occurred at ...)" and str(exception) per failure


def latest_failure(trial) -> str:
    """The text of the trial's latest failure: the last entry of Tune's error file, else its pickled error
    formatted; "" when there is neither."""
    try:
        path = trial.error_file
        if path and Path(path).is_file():
            text = Path(path).read_text(errors="replace")
            return text[text.rfind(ERROR_FILE_MARK):] if ERROR_FILE_MARK in text else text
    except Exception:
        pass
    try:
        err = trial.get_pickled_error()
        if err is not None:
            import traceback

            return "".join(traceback.format_exception(err))
    except Exception:
        pass
    return ""


def trial_failed_with(trial, name: str) -> bool:
    """Did the trial's latest failure name ``name`` (an exception class)? From Tune's pickled error, else from
    the last failure in Tune's error file."""
    try:
        err = trial.get_pickled_error()
        if err is not None and name in f"{type(err).__name__} {err}":
            return True
    except Exception:
        pass
    try:
        path = trial.error_file
        if path and Path(path).is_file():
            text = Path(path).read_text(errors="replace")
            return name in (text[text.rfind(ERROR_FILE_MARK):] if ERROR_FILE_MARK in text else text)
    except Exception:
        pass
    return False


# ---------------------------------------------------------------------------
# the cluster
# ---------------------------------------------------------------------------

HEAD_NODE_RESOURCE = "node:__internal_head__"  # the resource only the head node carries


def is_head_node(resources) -> bool:
    return HEAD_NODE_RESOURCE in (resources or {})


def kv_put(key: bytes, value: bytes, namespace: str) -> None:
    """Write ``key`` in the GCS's internal key-value store (what Ray's own libraries keep cluster state in)."""
    _kv("_internal_kv_put")(key, value, overwrite=True, namespace=namespace)


def kv_get(key: bytes, namespace: str) -> bytes | None:
    return _kv("_internal_kv_get")(key, namespace=namespace)


def kv_del(key: bytes, namespace: str) -> None:
    _kv("_internal_kv_del")(key, namespace=namespace)


def _kv(name: str):
    try:
        from ray.experimental import internal_kv
    except ImportError:
        raise RayMoved("ray.experimental.internal_kv") from None
    return _attr(internal_kv, name, "ray.experimental.internal_kv")
