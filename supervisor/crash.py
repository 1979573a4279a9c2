"""Crash forensics, Ray-free: what killed a trial, from its exception and what the supervisor saw before.

A crash report is a plain dict the trial side builds from the exception (``actors/crash.py``) or, when the
trial could not tell, the driver builds from Tune's error text (:func:`report_from_text`):

    {"exception": "ZeroDivisionError", "message": str, "frames": [{"file", "line", "function", "code"}, ...],
     "chain": [exception type names, outermost first], "node_id": str|None, "iteration": int, "phase": str|None,
     "guard": {data guard counts of the failing iteration, when the trial had them}, "weights_finite": bool,
     "text": traceback (cut)}

``frames`` run from the outermost call to the innermost (Python's traceback order), remote frames (an env
runner's) after the local ones. :func:`classify` names the cause and its evidence:

==================  ====================================================================  ==========
cause               evidence                                                              actionable
==================  ====================================================================  ==========
out_of_memory       Ray's OutOfMemoryError, torch's CUDA OOM, MemoryError, "out of memory"  no
worker_died         an actor or worker died (ActorDiedError, RayActorError, ...)           no
collective_timeout  a timeout or a collective (NCCL/Gloo, GetTimeoutError, "timed out")    no
env_exception       the innermost frame outside the libraries is the env's (under an env   no
                    runner's step/reset)
user_exception      the innermost frame outside the libraries is other user code           no
non_finite_data     NaN/inf in the env's data: the data guard's counts, NaN rewards or     no
                    returns in the last reports
non_finite_update   NaN/inf in the learner: losses or gradients in the last reports, or     yes
                    the exception says so (torch's "found invalid values: nan")
update_blowup       a loss, gradient, KL or Q-value finding in the last reports            yes
rllib_assertion     an AssertionError raised inside RLlib                                  no
unknown             none of the above                                                      no
==================  ====================================================================  ==========

*Actionable*: the supervisor can change something (a lower lr) before the restart; the others either
repeat the same way (stopped after one retry) or are outside the weights.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

ORIGINS = ("user", "rllib", "ray", "torch", "library", "python", "supervisor")
SHOWN_ORIGINS = ("user", "rllib", "ray", "torch", "library")
FRAMES_PER_ORIGIN = 3
TEXT_LIMIT = 8000

_OOM_TYPES = {"OutOfMemoryError", "MemoryError", "OutOfMemory"}
_DIED_TYPES = {"ActorDiedError", "RayActorError", "WorkerCrashedError", "ActorUnavailableError", "NodeDiedError",
               "OwnerDiedError", "ObjectLostError", "LocalRayletDiedError", "ActorUnschedulableError"}
_TIMEOUT_TYPES = {"GetTimeoutError", "TimeoutError", "DistBackendError", "DistNetworkError", "DistStoreError"}
_COLLECTIVE = re.compile(r"\b(NCCL|nccl|Gloo|gloo|collective|all_reduce|allreduce|barrier)\b")
_TIMED_OUT = re.compile(r"timed? ?out|deadline exceeded", re.I)
_OOM = re.compile(r"out of memory|\bOOM\b|CUDA error: out of memory|running low on memory", re.I)
_DIED = re.compile(r"died unexpectedly|actor died|worker died|process died|SIGKILL|SIGSEGV", re.I)
_NONFINITE = re.compile(r"\b(nan|inf)\b|non-?finite|invalid values", re.I)
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>.+?)\s*$')
_LAST_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:\([\w.]+\))?)(?::\s?(?P<message>.*))?$")

# metric names (supervisor.metrics) by where a non-finite value in them comes from
ENV_DATA = ("episode_return_mean", "episode_return_max", "episode_return_min", "eval_return_mean")
LEARNER_DATA = ("total_loss", "policy_loss", "vf_loss", "q_loss", "q_twin_loss", "grad_norm", "grad_norm_max",
                "kl", "approx_kl", "entropy", "q_mean", "q_max", "td_error_mean", "alpha_loss")
BLOWUP_DETECTORS = ("loss_explosion", "gradient_explosion", "update_too_large", "kl_spike", "q_divergence",
                    "td_error_explosion", "non_finite")
GUARD_KEYS = ("nonfinite_rewards", "nonfinite_obs", "nonfinite_actions")


@dataclass
class Cause:
    """What the crash is put down to. ``evidence``: short sentences, the strongest first."""

    kind: str
    actionable: bool
    evidence: list[str] = field(default_factory=list)
    where: str | None = None  # "env data" / "learner" for non-finite values; "host" / "GPU" for OOM

    @property
    def summary(self) -> str:
        text = CAUSE_TEXT[self.kind] + (f" ({self.where})" if self.where else "")
        return text + (f": {self.evidence[0]}" if self.evidence else "")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "actionable": self.actionable, "where": self.where, "evidence": list(self.evidence),
                "summary": self.summary}


CAUSE_TEXT = {
    "out_of_memory": "out of memory",
    "worker_died": "a worker or actor died",
    "collective_timeout": "a collective operation or call timed out",
    "env_exception": "the environment raised",
    "user_exception": "user code raised",
    "non_finite_data": "the environment produces non-finite rewards/observations",
    "non_finite_update": "non-finite values in the update",
    "update_blowup": "the update blew up",
    "rllib_assertion": "an assertion inside RLlib failed",
    "unknown": "unexplained crash",
}


def origin(path: str, own_roots: Sequence[str] = ()) -> str:
    """Who a frame's file belongs to: ``user`` (the env, a callback, a script), ``rllib``, ``ray``, ``torch``,
    ``library`` (another installed package: gymnasium, numpy, ...), ``python`` (the standard library) or
    ``supervisor`` (this package, on the way between the two)."""
    p = path.replace("\\", "/")
    if any(p.startswith(r.rstrip("/") + "/") for r in own_roots if r):
        return "supervisor"
    if p.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return "python"
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in p:
            rest = p.split(marker, 1)[1]
            if rest.startswith("ray/rllib/"):
                return "rllib"
            if rest.startswith("ray/"):
                return "ray"
            if rest.startswith("torch/"):
                return "torch"
            return "library"
    if re.search(r"/lib/python3\.\d+/", p):
        return "python"
    return "user"


def by_origin(frames: Sequence[Mapping[str, Any]], own_roots: Sequence[str] = (),
              per_origin: int = FRAMES_PER_ORIGIN) -> dict[str, list[dict]]:
    """The innermost ``per_origin`` frames of each shown origin, innermost first."""
    out: dict[str, list[dict]] = {}
    for f in reversed(list(frames)):
        o = f.get("origin") or origin(str(f.get("file") or ""), own_roots)
        if o not in SHOWN_ORIGINS:
            continue
        lst = out.setdefault(o, [])
        if len(lst) < per_origin:
            lst.append({k: f.get(k) for k in ("file", "line", "function", "code") if f.get(k) is not None})
    return {o: out[o] for o in SHOWN_ORIGINS if o in out}


def tag(frames: Iterable[Mapping[str, Any]], own_roots: Sequence[str] = ()) -> list[dict]:
    """The frames with their ``origin``."""
    return [{**f, "origin": f.get("origin") or origin(str(f.get("file") or ""), own_roots)} for f in frames]


def frames_from_text(text: str) -> list[dict]:
    """``File "...", line N, in f`` lines of a traceback text (Ray's remote tracebacks included), in order."""
    out: list[dict] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _FRAME.match(line)
        if not m:
            continue
        code = lines[i + 1].strip() if i + 1 < len(lines) and not _FRAME.match(lines[i + 1]) else None
        out.append({"file": m["file"], "line": int(m["line"]), "function": m["function"],
                    **({"code": code} if code and not code.startswith(("^", "~")) else {})})
    return out


def report_from_text(text: str, node_id: str | None = None, iteration: int | None = None) -> dict:
    """A crash report from a traceback's text (Tune's error file): the last ``Type: message`` line names
    the exception; Ray's ``RayTaskError(Type)`` wrappers are unwrapped to ``Type``."""
    text = text or ""
    exc, msg, chain, told = "Exception", "", [], []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith(("File ", "Traceback", "^", "~", "The above", "During handling")) or line[:1] in " \t":
            continue
        m = _LAST_LINE.match(s)
        if m and (m["message"] is not None or m["type"].endswith(("Error", "Exception", "Interrupt", "Exit"))):
            t = m["type"]
            inner = re.match(r"^[\w.]*\((?P<t>[\w.]+)\)$", t)  # RayTaskError(ZeroDivisionError)
            chain.append(t)
            exc, msg = (inner["t"] if inner else t), (m["message"] or "")
            told.append((exc, msg))
    if not msg and len(told) > 1 and told[-2][1]:
        exc, msg = told[-2]  # a library's bare re-raise (RLlib: ``raise RuntimeError from e``): its cause tells
    return {"exception": exc.rsplit(".", 1)[-1], "exception_type": exc, "message": msg.strip(),
            "frames": frames_from_text(text), "chain": chain, "node_id": node_id, "iteration": iteration,
            "text": text[-TEXT_LIMIT:]}


def _nonfinite(metrics: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    out = []
    for k in keys:
        v = metrics.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
            out.append(f"{k}={v}")
    return out


def _innermost(frames: Sequence[Mapping[str, Any]], origins: Sequence[str]) -> dict | None:
    for f in reversed(frames):
        if f.get("origin") in origins:
            return dict(f)
    return None


def _where(f: Mapping[str, Any] | None) -> str:
    if not f:
        return "?"
    name = str(f.get("file") or "?").replace("\\", "/").rsplit("/", 1)[-1]
    return f"{name}:{f.get('line')} in {f.get('function')}"


def classify(report: Mapping[str, Any], recent_metrics: Sequence[Mapping[str, Any]] = (),
             recent_findings: Sequence[Mapping[str, Any]] = ()) -> Cause:
    """The cause of a crash and its evidence.

    Args:
        report: the crash report (frames tagged with ``origin``: :func:`tag`).
        recent_metrics: the trial's newest reports' metrics, oldest first (the newest last).
        recent_findings: the trial's findings of its newest reports (``detector``, ``severity``, ``metric``,
            ``iteration``).
    """
    exc = str(report.get("exception") or "Exception")
    msg = str(report.get("message") or "")
    chain = [str(c) for c in report.get("chain") or []]
    names = {exc, *(re.sub(r"^.*\(|\)$", "", c).rsplit(".", 1)[-1] for c in chain),
             *(c.rsplit(".", 1)[-1] for c in chain)}
    frames = list(report.get("frames") or [])
    text = f"{exc}: {msg}"
    said = f"{exc}: {msg[:200]}" if msg else exc

    # -- the process or its resources gave out: whatever the frames say
    if names & _OOM_TYPES or _OOM.search(text):
        qualified = str(report.get("exception_type") or exc)
        gpu = "cuda" in text.lower() or "gpu" in text.lower() or qualified.startswith("torch.cuda")
        return Cause("out_of_memory", False, [said], "GPU" if gpu else "host")
    if names & _DIED_TYPES or _DIED.search(text):
        return Cause("worker_died", False, [said])
    if names & _TIMEOUT_TYPES or _COLLECTIVE.search(text) or _TIMED_OUT.search(text):
        return Cause("collective_timeout", False, [said])

    # -- user code raised: the innermost frame that is not a library's, the supervisor's or Python's
    inner = frames[-1] if frames else None
    user = _innermost(frames, ("user",))
    if user is not None and inner is not None and inner.get("origin") in ("user", "library", "python"):
        env_runner = any(f.get("origin") == "rllib" and "/env/" in str(f.get("file") or "").replace("\\", "/")
                         for f in frames)
        envish = env_runner or any(str(f.get("function")) in ("step", "reset") for f in frames
                                   if f.get("origin") in ("user", "library"))
        kind = "env_exception" if envish else "user_exception"
        return Cause(kind, False, [f"{said} at {_where(user)}"])

    # -- non-finite data: the guard's counts of the failing iteration, then the newest reports
    guard = report.get("guard") or {}
    seen = [f"{k.replace('nonfinite_', 'non-finite ')} in {int(guard[k])} steps" for k in GUARD_KEYS
            if isinstance(guard.get(k), (int, float)) and guard[k] > 0]
    env_vals, learner_vals = [], []
    for m in list(recent_metrics)[-3:]:
        env_vals += _nonfinite(m, ENV_DATA)
        learner_vals += _nonfinite(m, LEARNER_DATA)
    guard_reported = [f"{int(m['data_guard_poisoned'])} poisoned episodes" for m in list(recent_metrics)[-3:]
                      if (m.get("data_guard_poisoned") or 0) > 0]
    rllib_assert = exc == "AssertionError" and inner is not None and inner.get("origin") == "rllib"
    tail = [f"AssertionError inside RLlib at {_where(inner)}"] if rllib_assert else []
    if seen or env_vals or guard_reported:
        ev = ([f"data guard: {', '.join(seen)} of the failing iteration"] if seen else []) + guard_reported[:1] + \
            ([f"in the newest reports: {', '.join(dict.fromkeys(env_vals))}"] if env_vals else [])
        return Cause("non_finite_data", False, ev + tail, "env data")
    weights_bad = report.get("weights_finite") is False
    if learner_vals or weights_bad or (_NONFINITE.search(msg) and exc not in ("AssertionError",)):
        ev = ([f"in the newest reports: {', '.join(dict.fromkeys(learner_vals))}"] if learner_vals else []) + \
            (["the policy's weights are non-finite"] if weights_bad else []) + \
            ([said] if _NONFINITE.search(msg) else [])
        return Cause("non_finite_update", True, ev + tail, "learner")
    blowups = [f for f in recent_findings if f.get("detector") in BLOWUP_DETECTORS
               and f.get("severity") in ("warning", "critical")]
    if blowups:
        f = blowups[-1]
        return Cause("update_blowup", True,
                     [f"{f['detector']} ({f['severity']}) at iteration {f.get('iteration')}: "
                      f"{str(f.get('message') or '')[:160]}"] + tail)
    if rllib_assert:
        return Cause("rllib_assertion", False, tail + ([msg[:200]] if msg else []))
    return Cause("unknown", False, [f"{said} at {_where(inner)}"] if inner else [said])


def signature(report: Mapping[str, Any], cause: Cause) -> str:
    """What makes two crashes "the same": the cause, the exception type and where it was raised (the
    innermost non-supervisor frame). Messages are left out: they often carry step counts or addresses."""
    frames = [f for f in report.get("frames") or [] if f.get("origin") != "supervisor"]
    inner = frames[-1] if frames else {}
    return f"{cause.kind}|{report.get('exception')}|{inner.get('file')}:{inner.get('line')}"


def message(report: Mapping[str, Any], cause: Cause) -> str:
    """The finding's message: the exception's type and message first (what a user greps for), then the cause."""
    msg = str(report.get("message") or "").strip().replace("\n", " ")
    if len(msg) > 300:
        msg = msg[:297] + "..."
    head = f"{report.get('exception') or 'Exception'}: {msg}" if msg else str(report.get("exception") or "Exception")
    it = report.get("iteration")
    where = f" in iteration {it}" if isinstance(it, int) else ""
    node = report.get("node_id")
    on = f" on node {str(node)[:12]}" if node else ""
    what = "RLlib's learner thread died" if report.get("source") == "learner_thread" else "crashed"
    return f"{head} ({what}{where}{on}; cause: {cause.summary})"
