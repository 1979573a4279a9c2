"""The weights of an RLlib algorithm's learners and env runners: read, compared, checked finite.

What a rollback is verified with (``rollback_reached_runners``): every env runner holds the
learner's restored, finite weights.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from actors import compat
from actors.appliers.rllib.remote import foreach_env_runner, foreach_learner


# ---------------------------------------------------------------------------
# shipped to the learners / env runners
# ---------------------------------------------------------------------------


def _learner_weights(learner) -> Dict[str, np.ndarray]:
    out = {}
    for mid in learner.module.keys():
        m = learner.module[mid]
        m = m.unwrapped() if hasattr(m, "unwrapped") else m  # num_learners >= 2: the module inside DDP
        for k, v in m.state_dict().items():
            out[f"{mid}/{k}"] = v.detach().cpu().numpy().copy()
    return out


def _env_runner_weights(env_runner) -> Dict[str, np.ndarray]:
    module = getattr(env_runner, "module", None)
    if module is None:
        return {}
    out = {}
    # SingleAgentEnvRunner holds one RLModule, MultiAgentEnvRunner a MultiRLModule.
    subs = compat.sub_modules(module)
    if subs is not None:
        items = list(subs.items())
    else:
        from ray.rllib.core import DEFAULT_MODULE_ID

        items = [(DEFAULT_MODULE_ID, module)]
    for mid, m in items:
        for k, v in m.state_dict().items():
            out[f"{mid}/{k}"] = v.detach().cpu().numpy().copy()
    return out


# ---------------------------------------------------------------------------
# on the driver
# ---------------------------------------------------------------------------


def module_weights(algo) -> Dict[str, np.ndarray]:
    """Flat ``{"<module_id>/<param>": ndarray}`` of the first learner's RL
    module (full module: actor and critic)."""
    return foreach_learner(algo, _learner_weights)[0]


def env_runner_weights(algo, *, include_local: bool = True) -> Dict[str, Dict[str, np.ndarray]]:
    """``{"local": {...}, "remote_<id>": {...}}``: flat weights of the
    (inference-only) RL module on each env runner. Their keys are a subset of
    :func:`module_weights`' keys (no critic)."""
    group = algo.env_runner_group
    out: Dict[str, Dict[str, np.ndarray]] = {}
    if include_local and group.local_env_runner is not None:
        w = _env_runner_weights(group.local_env_runner)
        if w:
            out["local"] = w
    if group.num_remote_env_runners() > 0:
        ids = group.healthy_env_runner_ids()
        res = foreach_env_runner(group, _env_runner_weights, local=False, remote_ids=ids)
        for rid, w in zip(ids, res):
            out[f"remote_{rid}"] = w
    return out


def rollback_reached_runners(algo) -> bool:
    """True when every env runner holds exactly the learner's (restored, finite) weights."""
    learner = module_weights(algo)
    if not weights_finite(algo):
        return False
    runners = env_runner_weights(algo)
    for runner in runners.values():
        shared = [k for k in runner if k in learner]
        if not shared or any(not np.array_equal(runner[k], learner[k]) for k in shared):
            return False
    return bool(runners)


def weights_finite(algo, *, include_env_runners: bool = False) -> bool:
    """True when every learner weight (and optionally env runner weight) is finite."""
    dicts = foreach_learner(algo, _learner_weights)
    if include_env_runners:
        dicts += list(env_runner_weights(algo).values())
    return all(np.isfinite(a).all() for d in dicts for a in d.values() if np.issubdtype(a.dtype, np.number))


def learners_equal(algo) -> bool:
    """True when every learner holds the same weights (one learner: trivially). With ``num_learners >= 2``
    DDP keeps them equal step by step; a rollback must leave them so."""
    dicts = foreach_learner(algo, _learner_weights)
    first = dicts[0]
    return all(d.keys() == first.keys() and all(np.array_equal(d[k], first[k]) for k in first) for d in dicts[1:])
