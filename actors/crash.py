"""A crash, told by the trial itself: the report ``supervisor/crash.py`` judges, from the live exception.

``crash_report(exc)`` walks the exception: its type and message, its frames (``traceback.extract_tb``),
and, for an error raised in another Ray process (an env runner: ``RayTaskError``), the remote traceback's
frames after the local ones and the remote exception's own type and message. The supervisor's own frames
are tagged (``OWN_ROOTS``) and left out of the origins.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

from supervisor.crash import TEXT_LIMIT, frames_from_text

#: The folders of this package's own code (its frames sit between RLlib and the env; not the crash's origin).
OWN_ROOTS = tuple(str(Path(__file__).resolve().parents[1] / d) for d in ("actors", "supervisor"))


def _remote(exc: BaseException):
    """(root exception, remote traceback text) of a Ray error raised in another process, else (exc, None)."""
    try:
        from ray.exceptions import RayTaskError
    except Exception:  # pragma: no cover - Ray is always there on this side
        return exc, None
    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        text = getattr(exc, "traceback_str", None) or str(exc)
        return (cause if isinstance(cause, BaseException) else exc), text
    return exc, None


def _name(e: BaseException) -> tuple[str, str]:
    t = type(e)
    name = t.__name__
    if name.startswith("RayTaskError(") and name.endswith(")"):
        name = name[len("RayTaskError("):-1]
    mod = t.__module__
    return name, (name if mod in ("builtins", "__main__") else f"{mod}.{name}")


def _frames(e: BaseException) -> list[dict]:
    return [{"file": f.filename, "line": f.lineno, "function": f.name, **({"code": f.line} if f.line else {})}
            for f in traceback.extract_tb(e.__traceback__)]


def _unwrap(exc: BaseException) -> tuple[BaseException, list[dict]]:
    """The exception that tells, and the frames down to it. A library that re-raises a user's error as its own
    (RLlib's env runner: ``raise RuntimeError from e``) is looked through: while the exception was raised in a
    library frame and has an explicit cause, the cause is the crash, its frames after the wrapper's."""
    from supervisor.crash import origin

    frames = _frames(exc)
    while exc.__cause__ is not None:
        inner = frames[-1] if frames else None
        if inner is None or origin(inner["file"], OWN_ROOTS) in ("user", "supervisor"):
            break
        exc = exc.__cause__
        frames = frames + _frames(exc)
    return exc, frames


def crash_report(exc: BaseException, *, node_id: str | None = None, iteration: int | None = None,
                 phase: str | None = None, guard: dict | None = None) -> dict:
    """The crash report of ``exc`` (see ``supervisor.crash``)."""
    top = exc
    exc, frames = _unwrap(exc)
    root, remote_text = _remote(exc)
    if remote_text:
        frames += frames_from_text(remote_text)
    chain, e, seen = [], top, set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(_name(e)[1])
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    name, qualified = _name(root)
    msg = str(root) if root is not exc or not remote_text else str(getattr(exc, "cause", "") or exc)
    text = "".join(traceback.format_exception(top))
    return {"exception": name, "exception_type": qualified, "message": msg.strip()[:2000], "frames": frames,
            "chain": list(reversed(chain)), "node_id": node_id, "iteration": iteration, "phase": phase,
            "guard": dict(guard or {}), "pid": os.getpid(), "time": time.time(), "source": "trial",
            "text": text[-TEXT_LIMIT:]}


def probe(algorithm) -> dict:
    """Evidence a crash report can take from the live algorithm of the failing iteration (its own process):
    non-finite values in the last observations of the local env runner's episodes in progress (a NaN
    observation makes the policy's forward pass raise before the data guard sees the sample) and whether
    the local module's weights are still finite. Best effort: ``{}`` where there is nothing to read."""
    import numpy as np

    out: dict = {}
    er = getattr(algorithm, "env_runner", None)
    eps = getattr(er, "_ongoing_episodes", None) or []
    bad = 0
    for ep in eps:
        for sae in (getattr(ep, "agent_episodes", None) or {None: ep}).values():
            try:
                o = np.asarray(sae.get_observations(-1), dtype=np.float64)
            except Exception:
                continue
            bad += int(not np.isfinite(o).all())
    if eps:
        out["nonfinite_obs_now"] = bad
    module = getattr(er, "module", None)
    try:
        import torch

        params = list(module.parameters()) if module is not None and hasattr(module, "parameters") else []
        if params:
            out["weights_finite"] = all(bool(torch.isfinite(p).all()) for p in params)
    except Exception:
        pass
    return out
