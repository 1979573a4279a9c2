"""Readers for the log formats ``supervise scan`` knows beyond one-record-per-line.

* Stable-Baselines3 / OpenAI baselines ``monitor.csv``: a ``#{json}`` line
  (baselines' ResultsWriter writes ``# {json} ``, a space after ``#``),
  then one row per finished episode (``r`` return, ``l`` length, ``t``
  seconds since start, optional info keywords such as ``is_success``).
  Detectors judge iterations, not single episodes, so consecutive episodes
  are grouped :data:`MONITOR_EPISODES_PER_STEP` at a time into one record
  (mean/min/max return, mean length, success rate) stamped with the
  cumulative environment steps at the block's last episode
  (``total_timesteps``, SB3's own step axis). A last partial block is kept.
* RLDK's event stream (``rldk.emit.EventWriter``): one metric per line,
  ``{"step", "name", "value", "time", ...}``, pivoted into one record per
  step (a name logged twice at one step: the last value wins, and is counted).

:func:`source_kind` names the writer of a log from its keys, for the report.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

from supervisor.errors import InputError
from supervisor.keymaps import number

MONITOR_EPISODES_PER_STEP = 10
_MONITOR_HEADER = re.compile(r"\s*#[ \t]*\{")


def is_monitor(text: str) -> bool:
    """Monitor's signature is its first line, ``#{"t_start": ..., "env_id": ...}`` (any file name).

    OpenAI baselines' ResultsWriter writes it as ``# {...} `` (a space after ``#``), its rows CRLF.
    """
    return _MONITOR_HEADER.match(text) is not None


def read_monitor(path: Path, text: str, per_step: int = MONITOR_EPISODES_PER_STEP) -> list[dict]:
    """A monitor.csv -> one record per ``per_step`` episodes (see the module doc)."""
    lines = text.splitlines()
    start = 1 if lines and lines[0].startswith("#") else 0
    body = [ln for ln in lines[start:]]
    reader = csv.DictReader(body)
    cols = {c.strip() for c in (reader.fieldnames or [])}
    if not {"r", "l"} <= cols:
        raise InputError(str(path), f"line {start + 1}", "a monitor.csv header must have the columns r and l "
                                                        f"(got: {', '.join(sorted(cols)) or 'none'})")
    fused = [c for c in reader.fieldnames or [] if number(c) is not None]
    if fused:  # a lost newline: the first episode's numbers became column names (the episode would be lost)
        raise InputError(str(path), f"line {start + 1}", f"the header runs into a data row (numeric column names "
                                                        f"{', '.join(fused[:3])}): a newline is missing")
    last = max((i for i, ln in enumerate(body) if ln.strip()), default=-1)
    episodes: list[tuple[float, float, float | None]] = []
    try:
        for i, row in enumerate(reader, start=1):  # body line i (0 is the header)
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue
            r, n = number(row.get("r")), number(row.get("l"))
            if r is None or n is None:
                if i == last:
                    break  # a torn last line: the process died mid-write
                bad = "r" if r is None else "l"
                raise InputError(str(path), f"line {start + 1 + i}", f"{bad}={row.get(bad)!r} is not a number")
            ok = row.get("is_success")
            succ = None if ok is None else (1.0 if ok.strip().lower() in ("true", "1", "1.0") else 0.0)
            episodes.append((r, n, succ))
    except csv.Error as e:
        raise InputError(str(path), None, f"malformed CSV ({e})") from None
    out = []
    steps = 0.0
    for b in range(0, len(episodes), per_step):
        block = episodes[b:b + per_step]
        steps += sum(n for _, n, _ in block)
        rs = [r for r, _, _ in block]
        rec = {"total_timesteps": int(steps) if steps == int(steps) else steps,
               "episode_return_mean": math.fsum(rs) / len(rs), "episode_return_min": min(rs),
               "episode_return_max": max(rs),
               "episode_len_mean": math.fsum(n for _, n, _ in block) / len(block), "num_episodes": len(block)}
        succ = [s for _, _, s in block if s is not None]
        if succ:
            rec["success_rate"] = math.fsum(succ) / len(succ)
        out.append(rec)
    return out


def join_eval_dumps(records: list[tuple[dict, Any]]) -> tuple[list[tuple[dict, Any]], int]:
    """SB3's ``EvalCallback`` dumps the logger in the middle of a rollout: that row holds ``eval/*`` and the
    last update's ``train/*``, and the rollout's own row right after it holds ``rollout/*`` and no ``train/*``.
    Together they are one iteration, as every other row is (its rollout and the update before it): each such
    pair is joined at the rollout row's step. Returns the records and how many pairs were joined."""
    def has(flat: dict, prefix: str) -> bool:
        return any(str(k).startswith(prefix) for k in flat)

    out: list[tuple[dict, Any]] = []
    joined = i = 0
    while i < len(records):
        flat, nested = records[i]
        if (i + 1 < len(records) and has(flat, "eval/") and not has(flat, "rollout/")
                and has(records[i + 1][0], "rollout/") and not has(records[i + 1][0], "train/")):
            nxt, nxt_nested = records[i + 1]
            both = {**nested, **nxt_nested} if isinstance(nested, dict) and isinstance(nxt_nested, dict) else None
            out.append(({**flat, **nxt}, both))
            joined += 1
            i += 2
            continue
        out.append((flat, nested))
        i += 1
    return out, joined


def is_event_stream(objs: Sequence[dict]) -> bool:
    head = objs[:20]
    hits = sum(isinstance(o.get("name"), str) and "value" in o and "step" in o for o in head)
    return bool(head) and hits >= 0.8 * len(head)


def pivot_events(path: Path, objs: Sequence[dict]) -> tuple[list[dict], int, int]:
    """RLDK events -> (one flat record per step in first-seen order, values overwritten, run ids)."""
    by_step: dict[Any, dict] = {}
    dup = 0
    runs = set()
    for i, o in enumerate(objs, start=1):
        name = o.get("name")
        if not isinstance(name, str) or "value" not in o:
            raise InputError(str(path), f"event {i}", "an event needs a string 'name' and a 'value'")
        step = number(o.get("step"))
        if step is None or not math.isfinite(step):
            raise InputError(str(path), f"event {i}", f"step={o.get('step')!r} is not a number")
        step = int(step) if step == int(step) else step
        runs.add(o.get("run_id"))
        rec = by_step.setdefault(step, {"step": step})
        if name in rec:
            dup += 1
        rec[name] = o["value"]
    return list(by_step.values()), dup, len(runs - {None})


def source_kind(fmt: str, flats: Sequence[dict]) -> str:
    """Which library wrote this log, guessed from its keys (for the report only)."""
    keys = {str(k).lower() for f in flats[:20] for k in f}

    def has(*names: str) -> bool:
        return any(k in keys for k in names)

    def starts(*prefixes: str) -> bool:
        return any(k.startswith(prefixes) for k in keys)

    if fmt == "trainer_state.json":
        trl = starts("objective/", "rewards/", "completions/", "ppo/", "policy/", "clip_ratio") or has("kl", "reward")
        return "hf-trainer-state (TRL)" if trl else "hf-trainer-state"
    if fmt == "rldk-events":
        return "rldk"
    if fmt == "monitor.csv":
        return "sb3/baselines monitor"
    if has("_runtime", "_timestamp", "_wandb/runtime") and has("_step"):
        return "wandb"
    if starts("learners/"):
        return "rllib (new API stack)"
    if starts("info/learner/"):
        return "rllib (old API stack)"
    if fmt == "result.json" or starts("env_runners/", "timers/"):
        return "rllib"
    if starts("rollout/", "time/", "train/") and has("time/total_timesteps", "rollout/ep_rew_mean",
                                                      "train/approx_kl", "train/n_updates", "time/iterations"):
        return "stable-baselines3"
    if has("eprewmean", "nupdates", "serial_timesteps", "misc/nupdates", "test/success_rate",
           "mean 100 episode reward", "total/steps", "approxkl"):
        return "openai-baselines"
    if starts("charts/", "losses/"):
        return "cleanrl"
    if starts("objective/", "ppo/", "rewards/", "completions/"):
        return "trl"
    return "generic"


def trainer_state_history(text: str) -> list[dict] | None:
    """A Hugging Face trainer_state.json's log_history, or None if ``text`` is not one."""
    s = text.lstrip()
    if not s.startswith("{"):
        return None
    try:
        data = json.loads(s)
    except json.JSONDecodeError:
        return None
    hist = data.get("log_history") if isinstance(data, dict) else None
    if isinstance(hist, list) and all(isinstance(r, dict) for r in hist):
        return hist
    return None
