"""``quarantine`` on a live RLlib algorithm: every env runner's data guard drops what it flags.

The guard lives in the supervisor callback's instance on each env runner (``actors/data_guard.py``);
this sets its quarantine on the local env runner and every remote one (``foreach_env_runner``). Env
runners RLlib recreates later get it from ``SupervisorCallback.on_env_runners_recreated``.
"""

from __future__ import annotations

from actors.appliers.rllib.remote import foreach_env_runner


def _set_quarantine(env_runner, on: bool = True) -> bool:
    done = False
    for cb in getattr(env_runner, "_callbacks", None) or ():
        guard_for = getattr(cb, "guard_for", None)  # the supervisor's callback (actors.callback)
        if guard_for is not None:
            guard = guard_for(env_runner)
            guard.set_quarantine(on)
            done |= guard.enabled
    return done


def quarantine(algo, on: bool = True) -> dict:
    """Quarantine (or release) every env runner of ``algo``; returns how many guards took it."""
    group = getattr(algo, "env_runner_group", None)
    if group is None:
        raise NotImplementedError("this algorithm has no env runners to quarantine")
    took = foreach_env_runner(group, _set_quarantine, on=on)
    n = sum(bool(t) for t in took)
    if not n:
        raise RuntimeError("no env runner has a data guard (supervisor.data_guard.enabled is false?)")
    return {"quarantined_env_runners": n, "quarantine": bool(on)}
