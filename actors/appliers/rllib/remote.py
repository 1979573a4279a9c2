"""Running code on an RLlib algorithm's learners and env runners: the plumbing every RLlib operation uses.

Everything in ``actors/appliers/rllib/`` runs in the process that owns the ``Algorithm`` (the trial
driver / Tune trainable), between two ``algo.train()`` calls, with a local learner
(``num_learners=0``) or remote learner actors (``num_learners>=1``): a change is shipped through
``algo.learner_group.foreach_learner(fn)``, which calls ``fn(learner)`` directly on the local
learner or runs it inside each learner actor (``FaultTolerantActorManager.foreach_actor``; it
returns ``RemoteCallResults`` of ``CallResult``: ``.ok``, ``.get()``), and
``env_runner_group.foreach_env_runner(fn)`` likewise.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional

from actors import compat

_ERR_TAG = "__supervisor_intervention_error__"


def _guarded(fn: Callable, kwargs: Dict[str, Any], target):
    """Runs on the learner / env runner. Never raise there: RLlib's actor
    manager takes an actor that raised out of service (marks it unhealthy),
    so an exception is returned as a tagged tuple and re-raised by the caller."""
    try:
        return fn(target, **kwargs)
    except Exception as e:  # noqa: BLE001
        import traceback

        return (_ERR_TAG, type(e).__name__, str(e), traceback.format_exc())


def _unwrap(values: List[Any], where: str) -> List[Any]:
    for v in values:
        if isinstance(v, tuple) and len(v) == 4 and v[0] == _ERR_TAG:
            raise RuntimeError(f"{where}: {v[1]}: {v[2]}\n{v[3]}")
    return values


def foreach_learner(algo, fn: Callable, **kwargs) -> List[Any]:
    """Run ``fn(learner, **kwargs)`` on every healthy learner, one result each in the learner group's order;
    raise on an error inside ``fn``. A learner actor that died is skipped (RLlib's actor manager marks it
    unhealthy and leaves it out from then on): a dead learner never blocks a change on the others, and
    ``learner_fleet`` reports it (the ``worker_fault`` detector)."""
    from ray.exceptions import RayActorError

    _ensure_pickle_by_value()
    results = algo.learner_group.foreach_learner(functools.partial(_guarded, fn, kwargs))
    out = []
    for r in results:
        if not r.ok:
            err = r.get()
            if isinstance(err, RayActorError):
                continue  # dead: skipped, reported through learner_fleet
            if isinstance(err, BaseException):
                raise err
            raise RuntimeError(f"learner call failed: {err!r}")
        out.append(r.get())
    if not out:
        raise RuntimeError("no healthy learner answered")
    return _unwrap(out, f"learner call {getattr(fn, '__name__', fn)}")


def learner_fleet(algo) -> tuple[int, int]:
    """(healthy learners, learners): remote learner actors as RLlib's actor manager counts them; a local
    learner is (1, 1)."""
    manager = getattr(algo.learner_group, "_worker_manager", None)
    if manager is None:
        return 1, 1
    return manager.num_healthy_actors(), manager.num_actors()


def foreach_env_runner(group, fn: Callable, *, local: bool = True, remote_ids=None, timeout_s=None, **kwargs) -> List[Any]:
    """Run ``fn(env_runner, **kwargs)`` on the env runners of ``group``
    (local first, if requested and present); raise on any error."""
    _ensure_pickle_by_value()
    out = group.foreach_env_runner(
        functools.partial(_guarded, fn, kwargs),
        local_env_runner=local,
        remote_worker_ids=remote_ids,
        timeout_seconds=timeout_s,
    )
    return _unwrap(list(out), f"env runner call {getattr(fn, '__name__', fn)}")


_PICKLE_BY_VALUE_DONE = False


def _ensure_pickle_by_value() -> None:
    """Functions shipped to learner / env runner actors are pickled by
    reference by default, which needs this package importable in every Ray
    worker. Ship this package's functions by value instead."""
    global _PICKLE_BY_VALUE_DONE
    if _PICKLE_BY_VALUE_DONE:
        return
    import sys

    from ray import cloudpickle

    for pkg in (sys.modules.get(__name__.rpartition(".")[0]), compat):
        if pkg is not None:
            try:
                cloudpickle.register_pickle_by_value(pkg)
            except Exception:  # pragma: no cover - already registered or odd import
                pass
    _PICKLE_BY_VALUE_DONE = True


def module_ids(learner, module_id: Optional[str] = None) -> List[str]:
    ids = list(learner.module.keys())
    if module_id is not None:
        if module_id not in ids:
            raise KeyError(f"unknown module {module_id!r}; learner has {ids}")
        return [module_id]
    return ids


def main_module_id(learner) -> str:
    from ray.rllib.core import DEFAULT_MODULE_ID

    ids = list(learner.module.keys())
    return DEFAULT_MODULE_ID if DEFAULT_MODULE_ID in ids else ids[0]


def to_float(v) -> Optional[float]:
    if v is None:
        return None
    try:
        return float(v.item()) if hasattr(v, "item") else float(v)
    except (TypeError, ValueError):
        return None


def config_set(cfg, key: str, value) -> None:
    """Set ``cfg.key = value`` even if the AlgorithmConfig is frozen."""
    with compat.unfrozen(cfg):
        setattr(cfg, key, value)


def learner_config_set(learner, module_id: str, key: str, value) -> None:
    """Set a config key for ``module_id`` where ``get_config_for_module`` reads it. With one module: the
    learner's config (and its cached per-module copy, if any). With several: that module's own entry in
    ``algorithm_config_overrides_per_module`` (and its cached copy), never the config the other modules
    share."""
    cfg = learner.config
    if len(list(learner.module.keys())) > 1:
        cfg.algorithm_config_overrides_per_module.setdefault(module_id, {})[key] = value
    else:
        config_set(cfg, key, value)
    override = compat.per_module_config(cfg, module_id)
    if override is not None:
        config_set(override, key, value)


def driver_config_set(algo, key: str, value, module_id: Optional[str] = None) -> None:
    """Mirror a change into ``algo.config`` (frozen) so that checkpoints and rebuilt learners see it; a
    change of one module of several into that module's ``algorithm_config_overrides_per_module``. Best
    effort."""
    try:
        if module_id is not None:
            algo.config.algorithm_config_overrides_per_module.setdefault(module_id, {})[key] = value
        else:
            config_set(algo.config, key, value)
    except Exception:  # pragma: no cover - never fail an intervention on this
        pass
