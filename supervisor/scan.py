"""``supervise scan``: offline forensics of training logs nobody supervised.

Reads what trainers already write, maps it onto the normalized metric names
of :mod:`supervisor.metrics`, and runs the very detectors the live supervisor
runs (judge each iteration against the history before it, then append it).
Findings are reported at the log's own step numbers.

Inputs (:func:`load`):

* a Ray Tune experiment folder: every trial folder below it with a
  ``result.json`` (preferred) or a ``progress.csv``; a folder with neither
  but with ``*.jsonl`` files is scanned file by file;
* a ``result.json``: one RLlib result dict per line (new API stack via
  :func:`supervisor.metrics.normalize_result`; old API stack keys through the
  alias table);
* a ``progress.csv``: Tune's flattened columns (``env_runners/episode_return_mean``,
  ``learners/default_policy/entropy``), or any CSV whose columns the alias
  table knows (Stable-Baselines3 writes one too);
* a JSONL file of one metrics object per line, as TRL-, CleanRL-, RLDK- or
  Stable-Baselines3-style loggers write them (also a JSON array of such
  objects, and a Hugging Face ``trainer_state.json``'s ``log_history``).

Keys are matched case-insensitively on their flattened form (nested objects
joined with ``/``): first exactly against :data:`ALIASES`, then with one
common prefix (:data:`PREFIXES`, e.g. ``train/``, ``losses/``, ``charts/``)
stripped. Unknown keys are ignored (the scan lists a few of them). Step:
the first of :data:`STEP_KEYS` the log has, else the line index.
Consecutive lines with the same step are merged into one iteration.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from supervisor.errors import InputError
from supervisor.metrics import RESULT_PATHS, module_id_of, normalize_result

# The step column, best first; without any, the line index.
STEP_KEYS = ("step", "global_step", "training_iteration", "_step", "iteration", "train/global_step",
             "time/total_timesteps")

# normalized name -> the keys that mean it, best first (lowercase; matched on the flattened key
# as is, then with one PREFIXES prefix stripped). A leading "-" negates the value
# (Stable-Baselines3 logs ``train/entropy_loss`` = -entropy).
ALIASES: dict[str, tuple[str, ...]] = {
    "episode_return_mean": ("episode_return_mean", "episode_reward_mean", "episodic_return", "ep_rew_mean",
                            "reward_mean", "mean_reward", "return_mean", "mean_return", "episode_return",
                            "ep_return", "mean_scores", "scores", "rlhf_reward", "reward"),
    "episode_return_max": ("episode_return_max", "episode_reward_max", "reward_max", "return_max"),
    "episode_return_min": ("episode_return_min", "episode_reward_min", "reward_min", "return_min"),
    "episode_len_mean": ("episode_len_mean", "episodic_length", "ep_len_mean", "episode_length_mean",
                         "episode_length"),
    "total_loss": ("total_loss", "loss", "ppo/loss/total", "loss/total"),
    "policy_loss": ("policy_loss", "pg_loss", "policy_gradient_loss", "actor_loss", "ppo/loss/policy",
                    "loss/policy_avg", "loss/policy"),
    "vf_loss": ("vf_loss", "value_loss", "critic_loss", "v_loss", "value_function_loss", "ppo/loss/value",
                "loss/value_avg", "loss/value"),
    "vf_loss_unclipped": ("vf_loss_unclipped",),
    "entropy": ("entropy", "policy_entropy", "entropy_mean", "ent", "ppo/policy/entropy", "policy/entropy_avg",
                "policy/entropy", "-train/entropy_loss"),
    "kl": ("kl", "mean_kl", "kl_mean", "mean_kl_loss", "kl_divergence", "kl_div", "ppo/mean_kl"),
    "approx_kl": ("approx_kl", "approxkl", "ppo/policy/approxkl", "policy/approxkl_avg", "policy/approx_kl"),
    "clip_fraction": ("clip_fraction", "clipfrac", "clip_frac", "ppo/policy/clipfrac", "policy/clipfrac_avg",
                      "policy/clipfrac"),
    "kl_coeff": ("kl_coeff", "kl_coef", "curr_kl_coeff", "cur_kl_coeff", "kl_ctl_value", "kl_ctl"),
    "entropy_coeff": ("entropy_coeff", "ent_coef", "entropy_coef", "curr_entropy_coeff"),
    "lr": ("lr", "learning_rate", "cur_lr", "default_optimizer_learning_rate", "ppo/learning_rate"),
    "grad_norm": ("grad_norm", "gradient_norm", "global_grad_norm", "grad_gnorm", "total_grad_norm",
                  "gradients_default_optimizer_global_norm"),
    "grad_norm_max": ("grad_norm_max", "sup_grad_norm_max"),
    "grad_norm_mean": ("grad_norm_mean", "sup_grad_norm_mean"),
    "grad_norm_policy": ("grad_norm_policy", "policy_grad_norm", "actor_grad_norm", "sup_grad_norm_policy"),
    "grad_norm_value": ("grad_norm_value", "value_grad_norm", "critic_grad_norm", "sup_grad_norm_value"),
    "explained_variance": ("explained_variance", "explained_var", "vf_explained_var", "ppo/val/var_explained",
                           "val/var_explained"),
    "advantage_mean": ("advantage_mean", "advantages_mean", "adv_mean", "ppo/policy/advantages_mean",
                       "advantages/mean", "sup_advantage_mean"),
    "advantage_std": ("advantage_std", "advantages_std", "adv_std", "ppo/policy/advantages_std", "advantages/std",
                      "sup_advantage_std"),
    "advantage_skew": ("advantage_skew", "sup_advantage_skew"),
    "advantage_kurtosis": ("advantage_kurtosis", "sup_advantage_kurtosis"),
    "value_target_scale": ("value_target_scale", "sup_value_target_scale"),
    "time_this_iter_s": ("time_this_iter_s",),
}

# One of these is stripped before a second lookup ("losses/approx_kl" -> "approx_kl").
PREFIXES = ("train/", "training/", "trainer/", "losses/", "charts/", "objective/", "ppo/", "rollout/", "metrics/",
            "learner/", "stats/", "env/", "env_runners/", "sampler_results/")
# RLlib's per-module prefixes (new and old API stack), stripped the same way.
_MODULE_PREFIX = re.compile(r"^(?:info/learner/[^/]+/learner_stats/|info/learner/[^/]+/|learners/[^/]+/)")

_LOOKUP: dict[str, tuple[str, int, bool]] = {}
for _name, _keys in ALIASES.items():
    for _i, _k in enumerate(_keys):
        _neg = _k.startswith("-")
        _LOOKUP.setdefault(_k.lstrip("-"), (_name, _i, _neg))

_RLLIB_ROOTS = ("learners", "env_runners", "fault_tolerance", "timers")
_MAX_IGNORED = 20


def lookup(key: str) -> tuple[str, int, bool] | None:
    """The normalized name a log key means: ``(name, rank, negate)``, or None for an unknown key."""
    k = key.strip().lower()
    hit = _LOOKUP.get(k)
    if hit is not None:
        return hit
    m = _MODULE_PREFIX.match(k)
    if m:
        hit = _LOOKUP.get(k[m.end():])
        if hit is not None:
            return hit[0], hit[1] + 100, hit[2]
    for p in PREFIXES:
        if k.startswith(p):
            hit = _LOOKUP.get(k[len(p):])
            if hit is not None:
                return hit[0], hit[1] + 100, hit[2]
    return None


def number(x: Any) -> float | None:
    """A log value as float (NaN and inf kept: they are evidence), or None if it is not a number."""
    if x is None or isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str):
        s = x.strip().lower()
        if not s or len(s) > 40:
            return None
        try:
            return float(s)  # "nan", "inf", "-inf", "infinity", "1e-3"
        except ValueError:
            return None
    try:
        return float(x)  # numpy scalars
    except (TypeError, ValueError):
        return None


def flatten(obj: Mapping, prefix: str = "", out: dict | None = None) -> dict[str, Any]:
    out = {} if out is None else out
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flatten(v, key + "/", out)
        else:
            out[key] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict:
    out: dict = {}
    for key, v in flat.items():
        parts = str(key).split("/")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        node[parts[-1]] = v
    return out


def _is_rllib(flat: Mapping[str, Any]) -> bool:
    return any(str(k).split("/", 1)[0] in _RLLIB_ROOTS for k in flat)


def map_record(flat: Mapping[str, Any], nested: Mapping | None = None) -> tuple[dict[str, float], list[str]]:
    """One flattened log record -> (normalized metrics, keys that meant nothing to us).

    RLlib result dicts go through :func:`normalize_result` first; the alias
    table then fills what is still missing (old API stack, other loggers).
    """
    metrics: dict[str, float] = {}
    rllib = _is_rllib(flat)
    handled: set[str] = set()
    if rllib:
        result = nested if nested is not None else unflatten(flat)
        metrics.update(normalize_result(result, "scan")["metrics"])
        mid = module_id_of(result)
        # what normalize_result read (or deliberately dropped: a NaN return with no episode) is settled
        handled = {name for name, path in RESULT_PATHS.items() if path.format(m=mid) in flat}
    best: dict[str, tuple[int, float]] = {}
    ignored: list[str] = []
    steps = set(STEP_KEYS)
    for key, raw in flat.items():
        if key in steps:
            continue
        v = number(raw)
        if v is None:
            continue
        hit = lookup(key)
        if hit is None:
            if not rllib:
                ignored.append(key)
            continue
        name, rank, neg = hit
        if name in metrics or name in handled:
            continue
        if name not in best or rank < best[name][0]:
            best[name] = (rank, -v if neg else v)
    for name, (_, v) in best.items():
        metrics[name] = v
    return metrics, ignored


# --------------------------------------------------------------------------------------- loading


@dataclass
class Log:
    """One trial's metric stream as read from a log."""

    trial_id: str
    source: str
    format: str
    step_key: str | None = None
    steps: list = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    error: str | None = None

    def names(self) -> list[str]:
        seen: dict[str, None] = {}
        for m in self.metrics:
            seen.update(dict.fromkeys(m))
        return list(seen)


def _step_value(x: Any):
    v = number(x)
    if v is None or not math.isfinite(v):
        return None
    return int(v) if v == int(v) else v


def _build(trial_id: str, source: str, fmt: str, records: Iterable[tuple[dict, dict | None]]) -> Log:
    """Records (flattened, nested-or-None) -> a Log: map keys, pick the step, merge same-step lines."""
    records = list(records)
    log = Log(trial_id, source, fmt)
    if not records:
        log.error = "no records (empty log)"
        return log
    key = next((k for k in STEP_KEYS if any(k in flat for flat, _ in records)), None)
    log.step_key = key
    ignored: dict[str, None] = {}
    prev = None
    for i, (flat, nested) in enumerate(records):
        step = _step_value(flat.get(key)) if key else None
        if step is None:
            step = prev if (key and prev is not None) else i
        m, ign = map_record(flat, nested)
        ignored.update(dict.fromkeys(ign))
        if log.steps and step == log.steps[-1]:
            log.metrics[-1].update(m)  # one iteration logged over several lines
        elif m:
            log.steps.append(step)
            log.metrics.append(m)
        prev = step
    # keys that never mapped anywhere (a key mapped in one line is not "ignored")
    log.ignored = sorted(k for k in ignored if k not in STEP_KEYS)[:_MAX_IGNORED]
    if not log.metrics:
        seen = sorted({k for flat, _ in records for k in flat})
        log.error = f"no known metric keys (saw: {', '.join(seen[:8])}{', ...' if len(seen) > 8 else ''})"
    return log


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(str(path), None, "not a text file (unrecognized format)") from None
    except OSError as e:
        raise InputError(str(path), None, f"cannot read: {e.strerror or e}") from None


def _json_lines(path: Path, text: str) -> list[dict]:
    lines = text.splitlines()
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    out = []
    for i, ln in enumerate(lines):
        if not ln.strip():
            continue
        try:
            obj = json.loads(ln)
        except json.JSONDecodeError as e:
            if i == last and out:
                break  # a truncated last line: the trainer died mid-write
            raise InputError(str(path), f"line {i + 1}", f"not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(str(path), f"line {i + 1}", f"expected a JSON object per line, got {type(obj).__name__}")
        out.append(obj)
    return out


def _json_records(path: Path, text: str) -> list[dict]:
    s = text.lstrip()
    if s.startswith("["):
        try:
            data = json.loads(s)
        except json.JSONDecodeError as e:
            raise InputError(str(path), None, f"not valid JSON ({e.msg} at line {e.lineno})") from None
        if not all(isinstance(r, dict) for r in data):
            raise InputError(str(path), None, "a JSON array of metric objects must hold only objects")
        return data
    if s.startswith("{") and "\n" in s.strip():
        try:  # one pretty-printed document, e.g. Hugging Face trainer_state.json
            data = json.loads(s)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            hist = data.get("log_history")
            if isinstance(hist, list) and all(isinstance(r, dict) for r in hist):
                return hist
            return [data]
    return _json_lines(path, text)


def _csv_records(path: Path, text: str) -> list[dict]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # Tune's hist_stats columns are long
    try:
        reader = csv.DictReader(text.splitlines())
        rows = []
        for row in reader:
            rows.append({k: v for k, v in row.items() if k is not None and v not in (None, "")})
    except csv.Error as e:
        raise InputError(str(path), None, f"malformed CSV ({e})") from None
    if not reader.fieldnames:
        raise InputError(str(path), None, "empty CSV (no header)")
    return rows


def _kind(path: Path, text: str) -> str:
    name = path.name.lower()
    if name.endswith(".csv"):
        return "csv"
    s = text.lstrip()
    if s.startswith("{") or s.startswith("["):
        return "json"
    first = s.splitlines()[0] if s else ""
    if "," in first and any(lookup(c) or c.strip() in STEP_KEYS for c in first.split(",")):
        return "csv"
    return "unknown"


def load_file(path: Path, trial_id: str | None = None) -> Log:
    """One log file -> a Log (``error`` set when it holds nothing we can judge)."""
    text = _read_text(path)
    if not text.strip():
        log = Log(trial_id or path.stem, str(path), "empty")
        log.error = "empty file"
        return log
    kind = _kind(path, text)
    if kind == "csv":
        rows = _csv_records(path, text)
        tune = path.name == "progress.csv"
        tid = trial_id or (path.parent.name if tune else path.stem)
        return _build(tid, str(path), "progress.csv" if tune else "csv", ((r, None) for r in rows))
    if kind == "json":
        objs = _json_records(path, text)
        flats = [flatten(o) for o in objs]
        rllib = any(_is_rllib(f) for f in flats[:5])
        fmt = "result.json" if path.name == "result.json" or rllib else "jsonl"
        tid = trial_id or (path.parent.name if path.name == "result.json" else path.stem)
        return _build(tid, str(path), fmt, zip(flats, objs))
    raise InputError(str(path), None, "unrecognized format: expected a Tune folder, result.json, progress.csv or "
                                      "a JSONL file of metric objects")


def _discover(root: Path) -> list[tuple[str, list[Path]]]:
    """Trial folders below ``root``: (trial id, candidate files best first)."""
    by_dir: dict[Path, list[Path]] = {}
    for name in ("result.json", "progress.csv"):
        for p in sorted(root.rglob(name)):
            if p.is_file():
                by_dir.setdefault(p.parent, []).append(p)
    if by_dir:
        return [(d.relative_to(root).as_posix() if d != root else root.name, files)
                for d, files in sorted(by_dir.items())]
    files = sorted(p for pat in ("*.jsonl", "*.ndjson") for p in root.rglob(pat) if p.is_file())
    return [(p.relative_to(root).as_posix(), [p]) for p in files]


def load(path: str | Path) -> tuple[str, list[Log]]:
    """``path`` -> (kind, logs): kind is "tune" for a folder, else the file's format."""
    p = Path(path)
    if not p.exists():
        raise InputError(str(path), None, "no such file or directory")
    if p.is_dir():
        trials = _discover(p)
        if not trials:
            hint = " (a supervised run folder: use 'supervise report')" if (p / "supervisor.db").exists() else ""
            raise InputError(str(path), None, f"no result.json, progress.csv or *.jsonl found below it{hint}")
        logs = []
        for tid, files in trials:
            log = None
            for f in files:  # result.json first; its progress.csv if it holds nothing
                try:
                    log = load_file(f, tid)
                except InputError as e:
                    log = Log(tid, str(f), "error", error=e.problem if e.key is None else f"{e.key}: {e.problem}")
                if log.error is None:
                    break
            logs.append(log)
        if all(lg.error for lg in logs):
            first = logs[0]
            raise InputError(first.source, None, f"{first.error} (and so for every log below {path})"
                             if len(logs) > 1 else first.error)
        return "tune", logs
    if not p.is_file():
        raise InputError(str(path), None, "not a regular file or folder")
    log = load_file(p)
    if log.error:
        raise InputError(str(path), None, log.error)
    return log.format, [log]


# --------------------------------------------------------------------------------------- judging


def _clean(x: Any) -> Any:
    """JSON-safe: non-finite floats become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def analyze(log: Log, overrides: Mapping | None = None, profile: Mapping | None = None,
            history: int | None = None) -> dict:
    """Run the live detectors over one log; return its findings (at the log's steps) and health."""
    from supervisor.config import SupervisorConfig
    from supervisor.detectors import DetectorSuite
    from supervisor.health import HealthScore
    from supervisor.history import History

    out = {"trial_id": log.trial_id, "source": log.source, "format": log.format, "step_key": log.step_key,
           "steps": len(log.steps), "first_step": log.steps[0] if log.steps else None,
           "last_step": log.steps[-1] if log.steps else None, "metrics": log.names(), "ignored_keys": log.ignored}
    if log.error:
        out.update(error=log.error, findings=[], health={"score": None, "worst_severity": "ok", "components": {},
                                                          "counts": {}}, final={})
        return out
    try:
        detectors = DetectorSuite.build(overrides, profile)
    except ValueError as e:
        raise InputError("--profile" if profile else "detectors", None, str(e)) from None
    hist = History(history or SupervisorConfig().history)
    health = HealthScore()
    findings = []
    for i, metrics in enumerate(log.metrics):
        fs = detectors.observe(i, metrics, hist)  # as the engine: a detector bug never stops the scan
        health.observe(i, fs)
        for f in fs:
            findings.append({"step": log.steps[i], "detector": f.detector, "severity": f.severity,
                             "metric": f.metric, "value": f.value, "message": f.message,
                             "threshold": f.threshold})
    counts: dict[str, int] = {}
    for f in findings:
        counts[f["severity"]] = counts.get(f["severity"], 0) + 1
    last = len(log.metrics) - 1
    snap = health.snapshot(last)
    final = {k: log.metrics[last].get(k) for k in ("episode_return_mean", "entropy", "kl", "grad_norm")
             if k in log.metrics[last]}
    out.update(findings=findings, health={**snap, "counts": counts}, final=final)
    return _clean(out)


def scan(path: str | Path, overrides: Mapping | None = None, profile: Mapping | None = None) -> dict:
    """Scan ``path``; the JSON of ``supervise scan --format json``.

    Top level: ``source``, ``format``, ``findings`` (every trial's, each with
    its ``trial``), ``health`` (the worst trial's score and severity), and
    ``trials`` (per trial: its own findings, health, steps, metrics found).
    """
    from supervisor.findings import worst

    kind, logs = load(path)
    trials = [analyze(lg, overrides, profile) for lg in logs]
    findings = [{**f, "trial": t["trial_id"]} for t in trials for f in t["findings"]]
    judged = [t for t in trials if not t.get("error")]
    scores = [t["health"]["score"] for t in judged if t["health"]["score"] is not None]
    counts: dict[str, int] = {}
    for t in judged:
        for s, n in t["health"]["counts"].items():
            counts[s] = counts.get(s, 0) + n
    health = {"score": min(scores) if scores else None,
              "worst_severity": worst(t["health"]["worst_severity"] for t in judged),
              "counts": counts, "trials": len(trials),
              "unhealthy_trials": sum(t["health"]["worst_severity"] in ("warning", "critical") for t in judged)}
    return _clean({"source": str(path), "format": kind, "findings": findings, "health": health, "trials": trials})


def render_text(res: dict) -> str:
    from supervisor.detectors._common import fmt

    trials = res["trials"]
    h = res["health"]
    head = f"scan {res['source']} ({res['format']}"
    head += f", {len(trials)} trials)" if res["format"] == "tune" else ")"
    score = "-" if h["score"] is None else f"{h['score']:.2f}"
    lines = [head, f"health {score} (worst {h['worst_severity']})", ""]
    for t in trials:
        if t.get("error"):
            lines += [f"trial {t['trial_id']}: skipped: {t['error']}  [{t['source']}]", ""]
            continue
        th = t["health"]
        step = t["step_key"] or "line index"
        score = "-" if th["score"] is None else f"{th['score']:.2f}"
        ret = t["final"].get("episode_return_mean")
        lines.append(f"trial {t['trial_id']}: {t['format']}, {t['steps']} iterations (step '{step}' "
                     f"{t['first_step']}..{t['last_step']}), {len(t['metrics'])} metrics, "
                     f"final return {fmt(ret) if ret is not None else '-'}, health {score} "
                     f"(worst {th['worst_severity']})")
        if t["findings"]:
            lines.append("  findings:")
            for f in t["findings"]:
                lines.append(f"    step {f['step']!s:>8}  {f['severity']:<8} {f['detector']:<20} {f['message']}")
        else:
            lines.append("  findings: none")
        if t["ignored_keys"]:
            lines.append(f"  ignored keys: {', '.join(t['ignored_keys'])}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
