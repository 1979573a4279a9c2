"""The modules of a trial: its policies (RLlib RLModules), each supervised as its own stream.

A single-agent trial has one module, ``default_policy``, and reports its metrics under their plain
names (``lr``, ``entropy``, ``episode_return_mean``), as every integration does. A multi-agent trial
reports, in the same flat ``{name: float}`` dict:

- its own metrics under plain names: the team return (``episode_return_mean``, the sum over its
  agents), env runners, timers, evaluation;
- each module's under ``modules/<module_id>/<name>``: its learner statistics and its own return
  (RLlib's ``module_episode_returns_mean``) as ``episode_return_mean``;
- each agent's return under ``agents/<agent_id>/episode_return_mean`` (recorded and shown, not judged:
  an agent is not a policy).

Hyperparameters of several modules travel as ``{"modules": {module_id: {name: value}}}``; a flat
``{name: value}`` is the only module's (single-agent). Nothing here imports Ray.
"""

from __future__ import annotations

from operator import methodcaller
from typing import Any, Mapping

DEFAULT = "default_policy"
MODULES = "modules/"
AGENTS = "agents/"
# key tests at C speed (``any(map(...))``): every report goes through them, once per stream
_IS_MODULE_KEY = methodcaller("startswith", MODULES)
_IS_PREFIXED = methodcaller("startswith", (MODULES, AGENTS))


def key(module: str, name: str) -> str:
    """The flat key of module ``module``'s metric ``name``."""
    return f"{MODULES}{module}/{name}"


def agent_key(agent: Any, name: str = "episode_return_mean") -> str:
    return f"{AGENTS}{agent}/{name}"


def parse(k: str) -> tuple[str, str] | None:
    """``(module, name)`` of a module key; None for any other key."""
    if not k.startswith(MODULES):
        return None
    module, sep, name = k[len(MODULES):].rpartition("/")
    return (module, name) if sep and module and name else None


def plain(metrics: Mapping[str, Any]) -> bool:
    """Whether a report has plain names only (no module or agent keys): a single-agent trial's. The names
    are searched as one string (a tenth of the time of a test per name); a name with a line break in it may
    make a plain report look otherwise, never the other way round."""
    try:
        names = "\n".join(metrics)
    except TypeError:  # a name that is no string: the tests per name decide
        return False
    return not (names.startswith((MODULES, AGENTS)) or f"\n{MODULES}" in names or f"\n{AGENTS}" in names)


def is_multi(metrics: Mapping[str, Any]) -> bool:
    """Whether a report is a multi-agent trial's (it has per-module keys)."""
    return any(map(_IS_MODULE_KEY, metrics))


def ids(metrics: Mapping[str, Any]) -> list[str]:
    """The modules a report speaks of, in the order it names them (``[DEFAULT]`` for single-agent)."""
    if not is_multi(metrics):
        return [DEFAULT]
    out: dict[str, None] = {}
    for k in metrics:
        p = parse(k)
        if p is not None:
            out.setdefault(p[0])
    return list(out)


def trial_view(metrics: Mapping[str, float]) -> dict[str, float]:
    """The trial's own metrics: plain names only (single-agent: all of them)."""
    return {k: v for k, v in metrics.items() if not k.startswith((MODULES, AGENTS))}


def views(metrics: Mapping[str, float], streams, multi: bool | None = None, is_plain: bool = False
          ) -> dict[str | None, dict[str, float]]:
    """What each of ``streams`` (module ids; None: the trial's own) sees of one report, each view made once:
    :func:`module_view` of each module, :func:`trial_view` for None (``multi``: :func:`is_multi` of the
    report, when known; ``is_plain``: :func:`plain`, when known, and then the views are ``metrics`` itself).
    A single-agent report's views of the trial and of its module are the same; none is to be modified."""
    if is_plain or not (is_multi(metrics) if multi is None else multi):
        own = metrics if is_plain else trial_view(metrics)
        return {m: own if m is None or m == DEFAULT else {} for m in streams}
    return {m: trial_view(metrics) if m is None else module_view(metrics, m) for m in streams}


def module_view(metrics: Mapping[str, float], module: str) -> dict[str, float]:
    """What module ``module``'s detectors see, under plain names. Single-agent: every metric (the trial
    is its one module); multi-agent: the module's own statistics and return."""
    if not is_multi(metrics):
        return trial_view(metrics) if module == DEFAULT else {}
    pre = f"{MODULES}{module}/"
    return {k[len(pre):]: v for k, v in metrics.items() if k.startswith(pre) and "/" not in k[len(pre):]}


def by_module(hparams: Mapping[str, Any] | None) -> dict[str, dict]:
    """``{module: {name: value}}`` from either form (flat: the default module's)."""
    if not isinstance(hparams, Mapping):
        return {}
    out: dict[str, dict] = {}
    flat = {k: v for k, v in hparams.items() if k != "modules"}
    if flat:
        out[DEFAULT] = dict(flat)
    per = hparams.get("modules")
    if isinstance(per, Mapping):
        for m, hp in per.items():
            if isinstance(hp, Mapping):
                out.setdefault(str(m), {}).update(hp)
    return out


def packed(per: Mapping[str, Mapping[str, Any]]) -> dict:
    """The wire form of per-module values: flat when only the default module has any."""
    per = {m: dict(v) for m, v in per.items() if v}
    if not per:
        return {}
    if set(per) == {DEFAULT}:
        return per[DEFAULT]
    return {"modules": per}


def merged(*parts: Mapping[str, Any] | None) -> dict:
    """Per-module values merged left to right (later wins per module and name), in wire form."""
    out: dict[str, dict] = {}
    for p in parts:
        for m, hp in by_module(p).items():
            out.setdefault(m, {}).update(hp)
    return packed(out)
