"""Experiment and sweep files: load, apply ``--set`` overrides, validate.

Every problem becomes one ``InputError`` naming the file, the dotted key and
what is wrong. RLlib-specific checks (is this a PPOConfig key?) live on the
Ray side, in ``actors/algo_config.py``, because this package does not import Ray.
"""

from __future__ import annotations

import copy
import importlib
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from supervisor import actions, algorithms
from supervisor.errors import InputError

# NaN and infinity are refused in every float field: ``report_timeout_s: .inf`` would hang a trial,
# a NaN stop target never stops it.
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
_BIG = 10**9  # iteration counts and windows beyond this are typos, not settings


class StopConfig(BaseModel):
    model_config = _STRICT
    iterations: int | None = Field(None, gt=0)
    timesteps: int | None = Field(None, gt=0)
    episode_return_mean: float | None = None
    eval_return_mean: float | None = Field(None, description="evaluation return (needs evaluation_interval)")
    time_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _at_least_one(self):
        if all(v is None for v in self.model_dump().values()):
            raise ValueError("give at least one of iterations, timesteps, episode_return_mean, eval_return_mean, time_s")
        return self


ACTIONS = actions.NAMES
SEVERITIES = ("info", "warning", "critical")


class AlertDestination(BaseModel):
    """One place findings are sent: an Apprise URL (``${ENV_VAR}`` allowed, expanded where it is sent)."""

    model_config = _STRICT
    url: str = Field(min_length=1)
    min_severity: Literal["info", "warning", "critical"] = "warning"
    detectors: list[str] | None = Field(None, description="default: all detectors")

    @field_validator("url")
    @classmethod
    def _apprise_url(cls, v):
        from supervisor.alerts import check_url

        check_url(v)  # ValueError naming what is wrong, never the secret
        return v


class HangConfig(BaseModel):
    """``supervisor.hang``: when an iteration counts as hung (``trial_hung``)."""

    model_config = _STRICT
    enabled: bool = True
    factor: float = Field(10.0, ge=1, le=10_000, description="an iteration may take this many times the trial's "
                                                               "median iteration time")
    floor_s: float = Field(300.0, gt=0, le=10**7, description="... and never less than this (seconds)")
    heartbeat_s: float = Field(5.0, gt=0, le=3600, description="how often a trial tells the supervisor its phase")


class DataGuardConfig(BaseModel):
    """``supervisor.data_guard``: the env runners' check of every sampled batch (``data_poisoned``,
    ``obs_out_of_range``, the ``quarantine`` action)."""

    model_config = _STRICT
    enabled: bool = True
    hold: bool = Field(True, description="hold non-finite episodes out of the train batch and replay buffer from "
                                         "the iteration they appear, before any decision")
    range_factor: float = Field(10.0, gt=0, le=10**6, description="an observation feature this many range widths "
                                                                  "beyond its range seen so far is out of range")
    warmup_steps: int = Field(1000, ge=0, le=_BIG, description="clean steps seen before the range is judged")


class SupervisorConfig(BaseModel):
    """The ``supervisor:`` section. Every key has a default."""

    model_config = _STRICT
    enabled: bool = True
    checkpoint_every: int = Field(5, gt=0, le=_BIG, description="health-gated checkpoint every N iterations")
    keep_checkpoints: int = Field(3, gt=0, le=10_000)
    history: int = Field(256, ge=16, le=100_000, description="iterations of in-memory history per trial")
    report_timeout_s: float = Field(2.0, gt=0, le=3600, description="a trial waits at most this long for a verdict")
    retry_after_s: float = Field(5.0, gt=0, le=3600, description="after finding the supervisor unreachable, a "
                                                                  "trial buffers its reports this long before "
                                                                  "trying again")
    cooldown: int = Field(2, ge=0, le=_BIG, description="iterations after an action before another for the same "
                                                         "finding")
    outcome_window: int = Field(3, gt=0, le=_BIG, description="iterations after which an action's outcome is judged")
    confirm: int = Field(2, gt=0, le=_BIG, description="consecutive reports a warning's alarm must hold before it "
                         "acts alone (a second detector in alarm confirms it at once); a stop needs a critical "
                         "finding or this")
    max_interventions: int = Field(4, gt=0, le=_BIG, description="intensity limit: at most N interventions ...")
    stop_unsalvageable: bool = Field(True, description="a trial whose repair proved ineffective and that shows "
                                                        "no learning is stopped at once, not after its ladder's "
                                                        "last rung (supervisor.salvage)")
    intensity_window: int = Field(20, gt=0, le=_BIG, description="... in K iterations, then escalate to stop_trial")
    ladders: dict[str, list[list[str]]] = Field(default_factory=dict,
                                                description="per detector: ordered steps, each a list of actions")
    action_params: dict[str, dict[str, float]] = Field(default_factory=dict)
    detectors: dict[str, dict[str, Any]] = Field(default_factory=dict)
    profile: str | None = None
    default_profile: bool = Field(True, description="without a profile, use the shipped one "
                                                    "(supervisor/profiles/default.yaml)")
    alerts: list[AlertDestination] = Field(default_factory=list, description="where findings are sent")
    alert_quiet: int = Field(10, gt=0, description="a detector quiet this many iterations on a trial ends "
                                                   "its alert latch: the next finding alerts again")
    dashboard_url: str | None = Field(None, description="base URL of `supervise dashboard`, linked in alerts")
    tensorboard: bool = Field(True, description="write TensorBoard event files in the run folder (and the "
                                                "run storage)")
    store_snapshot_s: float = Field(60.0, ge=1, le=86_400, description="with a run storage other than the run "
                                                                      "folder: copy supervisor.db there at most "
                                                                      "this often (and at the run's end)")
    lost_after_s: float = Field(600.0, gt=0, le=30 * 86400,
                                description="a run none of whose trials reported for max(10 x their median "
                                            "iteration time, this) seconds is closed as lost (its driver died)")
    hang: HangConfig = Field(default_factory=HangConfig)
    data_guard: DataGuardConfig = Field(default_factory=DataGuardConfig)

    @field_validator("ladders")
    @classmethod
    def _known_actions(cls, v):
        from supervisor.policy import RECORD_ONLY

        for det, steps in v.items():
            if det in RECORD_ONLY:
                raise ValueError(f"{det} records only (it never acts): it takes no ladder")
            for step in steps:
                for a in step:
                    if a not in ACTIONS:
                        raise ValueError(f"unknown action {a!r} in ladder of {det!r} (known: {', '.join(ACTIONS)})")
        return v

    @field_validator("detectors")
    @classmethod
    def _detector_options(cls, v):
        # checked when the file is loaded, not only when the engine builds the detectors
        from supervisor.detectors import DetectorOptionError, check_overrides

        for det, opts in v.items():  # NaN/inf thresholds never fire (or always do)
            for k, x in (opts or {}).items() if isinstance(opts, dict) else ():
                if isinstance(x, float) and not math.isfinite(x):
                    raise ValueError(f"supervisor.detectors.{det}.{k}: must be a finite number (got {x})")
        try:
            check_overrides(v)
        except DetectorOptionError as e:
            key = ".".join(["supervisor.detectors", e.detector] + ([e.option] if e.option else []))
            raise ValueError(f"{key}: {e.problem}") from None
        return v

    @field_validator("action_params")
    @classmethod
    def _known_param_actions(cls, v):
        for a, params in v.items():
            if a not in ACTIONS:
                raise ValueError(f"unknown action {a!r} (known: {', '.join(ACTIONS)})")
            for k, x in params.items():  # factors, values, lr bounds: all finite and >= 0
                if not math.isfinite(x) or x < 0 or (k == "factor" and x == 0):
                    raise ValueError(f"supervisor.action_params.{a}.{k}: must be a finite number "
                                     f"{'> 0' if k == 'factor' else '>= 0'} (got {x})")
        return v


# Range checks on the PPOConfig keys people set most; the Ray side then
# checks that every key exists on PPOConfig at all.
_POSITIVE = {"lr", "train_batch_size_per_learner", "train_batch_size", "minibatch_size", "num_epochs",
             "clip_param", "vf_clip_param", "grad_clip", "rollout_fragment_length"}
_NON_NEGATIVE = {"num_env_runners", "num_learners", "num_envs_per_env_runner", "entropy_coeff",
                 "kl_coeff", "kl_target", "vf_loss_coeff", "num_cpus_per_env_runner", "num_gpus_per_learner"}
_UNIT = {"gamma", "lambda_"}
# Counts: a fraction is a typo (``num_env_runners: 1.5``); a whole float (``2.0``, ``1e3``) is taken as an int.
_INTEGER = {"num_env_runners", "num_learners", "num_envs_per_env_runner", "train_batch_size_per_learner",
            "train_batch_size", "minibatch_size", "num_epochs", "rollout_fragment_length", "evaluation_interval",
            "num_steps_sampled_before_learning_starts", "target_network_update_freq", "n_step",
            "num_aggregator_actors_per_learner", "broadcast_interval", "circular_buffer_num_batches"}


def _check_config_values(config: dict[str, Any]) -> None:
    for key, val in config.items():
        num = isinstance(val, (int, float)) and not isinstance(val, bool)
        if key in _POSITIVE | _NON_NEGATIVE | _UNIT and not num and not (key == "lr" and isinstance(val, list)):
            if not (key == "grad_clip" and val is None):
                raise ValueError(f"config.{key}: must be a number (got {val!r})")
        if not num:
            continue
        if key in _POSITIVE | _NON_NEGATIVE | _UNIT and not math.isfinite(val):
            raise ValueError(f"config.{key}: must be a finite number (got {val})")
        if key in _POSITIVE and not val > 0:
            raise ValueError(f"config.{key}: must be > 0 (got {val})")
        if key in _NON_NEGATIVE and val < 0:
            raise ValueError(f"config.{key}: must be >= 0 (got {val})")
        if key in _UNIT and not 0 <= val <= 1:
            raise ValueError(f"config.{key}: must be between 0 and 1 (got {val})")
        if key in _INTEGER and isinstance(val, float):
            if val != int(val):
                raise ValueError(f"config.{key}: must be a whole number (got {val})")
            config[key] = int(val)


POLICY_LAYOUTS = ("per_agent", "shared")
SHARED_POLICY = "shared"


class MultiAgentConfig(BaseModel):
    """The ``multi_agent:`` section: the trial's policies (RLlib RLModules), which agent each one acts for,
    and which ones learn. Every policy is supervised as its own stream.

    - ``policies``: ``per_agent`` (one policy per agent, named after the agent id), ``shared`` (one policy,
      ``shared``, for every agent: self-play), a list of policy ids, or a mapping of policy id to that
      policy's own config values (RLlib's ``algorithm_config_overrides_per_module``; ``{}`` for none);
    - ``mapping``: agent id -> policy id, or ``package.module:function`` (RLlib's
      ``policy_mapping_fn(agent_id, episode, **kwargs)``); not needed when each agent has a policy of its
      own id or when there is one policy;
    - ``policies_to_train``: the policies that learn (default: all); the others are frozen (an opponent):
      recorded, never judged nor changed.
    """

    model_config = _STRICT
    policies: str | list[str] | dict[str, dict[str, Any] | None] = "per_agent"
    mapping: dict[str | int, str] | str | None = None
    policies_to_train: list[str] | None = None

    @field_validator("policies")
    @classmethod
    def _policies(cls, v):
        if isinstance(v, str):
            if v not in POLICY_LAYOUTS:
                raise ValueError(f"must be per_agent, shared, a list of policy ids or a mapping of policy id to "
                                 f"its config (got {v!r})")
            return v
        ids = list(v)
        if not ids:
            raise ValueError("must name at least one policy")
        for pid in ids:
            if not isinstance(pid, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", pid):
                raise ValueError(f"policy id {pid!r}: must be letters, digits, _ . - only")
        if isinstance(v, list):
            if len(set(ids)) != len(ids):
                raise ValueError("a policy is listed twice")
            return v
        out = {}
        for pid, over in v.items():
            over = dict(over or {})
            try:
                _check_config_values(over)
            except ValueError as e:
                raise ValueError(f"multi_agent.policies.{pid}.{str(e).removeprefix('config.')}") from None
            out[pid] = over
        return out

    @field_validator("mapping")
    @classmethod
    def _mapping(cls, v):
        if isinstance(v, str) and ":" not in v:
            raise ValueError(f"give agent: policy pairs, or package.module:function (got {v!r})")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        ids = self.policy_ids()
        if isinstance(self.policies, str) and self.mapping is not None:
            raise ValueError(f"multi_agent.mapping: not with policies: {self.policies} (it maps the agents itself)")
        if isinstance(self.mapping, dict):
            for agent, pid in self.mapping.items():
                if ids is not None and pid not in ids:
                    raise ValueError(f"multi_agent.mapping.{agent}: unknown policy {pid!r} (policies: "
                                     f"{', '.join(ids)})")
        if self.policies_to_train is not None and ids is not None:
            for pid in self.policies_to_train:
                if pid not in ids:
                    raise ValueError(f"multi_agent.policies_to_train: unknown policy {pid!r} (policies: "
                                     f"{', '.join(ids)})")
        return self

    def policy_ids(self) -> list[str] | None:
        """The policy ids the file names (None for ``per_agent``: the env's agent ids)."""
        if self.policies == "shared":
            return [SHARED_POLICY]
        return None if self.policies == "per_agent" else list(self.policies)

    def overrides(self) -> dict[str, dict[str, Any]]:
        """Per policy, its own config values."""
        return {p: dict(o) for p, o in self.policies.items() if o} if isinstance(self.policies, dict) else {}


class Experiment(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    env: str = Field(min_length=1)
    env_config: dict[str, Any] = Field(default_factory=dict)
    algorithm: str = algorithms.DEFAULT
    config: dict[str, Any] = Field(default_factory=dict)
    stop: StopConfig
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    seed: int | None = Field(None, ge=0, lt=2**31)  # what every seeded library takes
    multi_agent: MultiAgentConfig | None = None
    # where checkpoints, TensorBoard files and store snapshots are kept (supervisor.storage); None: the run folder
    storage: str | None = None

    @field_validator("storage")
    @classmethod
    def _storage(cls, v):
        from supervisor.storage import storage_problem

        problem = None if v is None else storage_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("algorithm", mode="before")
    @classmethod
    def _algorithm(cls, v):
        return algorithms.check(v)

    @field_validator("config")
    @classmethod
    def _config(cls, v):
        _check_config_values(v)
        return v


_SEARCH_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")


class Sweep(Experiment):
    search: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # per algorithm of a ``search.algorithm`` grid: config values on top of ``config:`` (e.g. DQN's epsilon)
    algorithm_config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    num_samples: int = Field(1, gt=0)
    scheduler: Literal["none", "asha"] = "none"
    max_concurrent: int | None = Field(None, gt=0)
    max_failures: int = Field(2, ge=0)

    @field_validator("algorithm_config")
    @classmethod
    def _algorithm_config(cls, v):
        out = {}
        for name, cfg in v.items():
            try:
                algo = algorithms.check(name)
            except ValueError as e:
                raise ValueError(f"algorithm_config.{name}: {e}")
            if not isinstance(cfg, dict):
                raise ValueError(f"algorithm_config.{name}: must be a mapping of config keys")
            try:
                _check_config_values(cfg)
            except ValueError as e:
                raise ValueError(f"algorithm_config.{name}.{str(e).removeprefix('config.')}")
            out[algo] = cfg
        return out

    @field_validator("search")
    @classmethod
    def _search(cls, v):
        if "algorithm" in v:
            spec = v["algorithm"]
            if not isinstance(spec, dict) or set(spec) != {"grid"} or not isinstance(spec["grid"], list) \
                    or not spec["grid"]:
                raise ValueError("search.algorithm: give grid: [...] (one Tune experiment per algorithm)")
            for a in spec["grid"]:
                try:
                    algorithms.check(a)
                except ValueError as e:
                    raise ValueError(f"search.algorithm.grid: {e}")
            if len(set(map(str.upper, spec["grid"]))) != len(spec["grid"]):
                raise ValueError("search.algorithm.grid: an algorithm is listed twice")
        for key, spec in v.items():
            if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in _SEARCH_KINDS:
                raise ValueError(f"search.{key}: give exactly one of {', '.join(_SEARCH_KINDS)}")
            kind, arg = next(iter(spec.items()))
            if kind in ("grid", "choice") and not (isinstance(arg, list) and arg):
                raise ValueError(f"search.{key}.{kind}: must be a non-empty list")
            if kind in ("uniform", "loguniform", "randint"):
                if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(a, (int, float)) for a in arg)
                        and arg[0] < arg[1]):
                    raise ValueError(f"search.{key}.{kind}: must be [low, high] with low < high")
                if kind == "loguniform" and arg[0] <= 0:
                    raise ValueError(f"search.{key}.{kind}: bounds must be > 0")
        return v

    def algorithms(self) -> list[str]:
        """The algorithms this sweep trains: ``search.algorithm.grid``, else ``algorithm``."""
        spec = self.search.get("algorithm")
        return [algorithms.check(a) for a in spec["grid"]] if spec else [self.algorithm]

    def for_algorithm(self, name: str) -> "Sweep":
        """This sweep for one algorithm: ``algorithm_config[name]`` on top of ``config``, no algorithm search."""
        return self.model_copy(update={
            "algorithm": name, "config": {**self.config, **self.algorithm_config.get(name, {})},
            "search": {k: v for k, v in self.search.items() if k != "algorithm"}})


def _parse_set(item: str, source: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise InputError("--set", item, "expected KEY=VALUE")
    key, raw = item.split("=", 1)
    if not key:
        raise InputError("--set", item, "empty key")
    try:
        value = load_yaml(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, sets: list[str], source: str) -> dict:
    data = copy.deepcopy(data)
    for item in sets or ():
        path, value = _parse_set(item, source)
        node = data
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise InputError(source, ".".join(path), f"cannot set inside {part!r}, which is not a mapping")
            node = nxt
        node[path[-1]] = value
    return data


_NO_ECHO = {"storage"}  # its messages quote what they need; echoing a URI with credentials would leak them

# pydantic's error types in the project's one wording: "<file>: <key>: <what is wrong> (got <value>)".
_PYDANTIC_WORDS = {
    "greater_than": "must be > {gt}", "greater_than_equal": "must be >= {ge}", "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}", "int_from_float": "must be a whole number",
    "int_parsing": "must be an integer", "int_type": "must be an integer", "float_parsing": "must be a number",
    "float_type": "must be a number", "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false", "bool_type": "must be true or false",
    "string_type": "must be a string", "string_too_short": "must not be empty",
    "string_pattern_mismatch": "must be letters, digits, _ . - only", "literal_error": "must be one of {expected}",
    "dict_type": "must be a mapping", "list_type": "must be a list", "enum": "must be one of {expected}",
    "too_short": "must have at least {min_length} item(s)", "too_long": "must have at most {max_length} item(s)",
}


def _first_error(exc: ValidationError, source: str) -> InputError:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or None
    msg = err["msg"]
    words = _PYDANTIC_WORDS.get(err["type"])
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif words is not None:
        try:
            msg = words.format(**(err.get("ctx") or {}))
        except (KeyError, IndexError):
            msg = words.split(" {")[0]
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
        # our own validators already name a nested key ("config.lr: ...", "search.config.lr.uniform: ...")
        if ": " in msg and msg.split(": ", 1)[0].startswith(("config.", "search.", key or "\0")):
            key, msg = msg.split(": ", 1)
    if "input" in err and err["type"] not in ("missing", "extra_forbidden") and "got" not in msg \
            and key not in _NO_ECHO:
        inp = err["input"]
        if not isinstance(inp, (dict, list)) and "(got " not in msg:
            msg = f"{msg} (got {inp!r})"
    return InputError(source, key, msg)


class Loader(yaml.SafeLoader):
    """The one YAML loader of the project (experiment, sweep and profile files, ``--set`` values).

    Floats as YAML 1.2 (and JSON, and every RL config) write them: PyYAML follows YAML 1.1, where
    ``3e-4``, ``1e-09`` or ``5E-5`` (an exponent without a dot, or without a sign) are strings.
    Underscores in numbers (``1_000``) keep meaning what YAML 1.1 says (1000), as people write them.
    Aliases (``*name``) are refused: a few hundred bytes of nested aliases expand to gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            ev = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", ev.start_mark)
        return super().compose_node(parent, index)


Loader.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != "tag:yaml.org,2002:float"] for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
                  |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))

MAX_YAML_BYTES = 4 << 20  # an experiment or profile file is a few KB


def load_yaml(text: str) -> Any:
    """Parse with ``Loader``; ``yaml.YAMLError`` for anything that is not a sane YAML document."""
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


def yaml_problem(e: yaml.YAMLError) -> str:
    """``malformed YAML at line L, column C: problem`` for one error line."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(e, "problem", None) or (str(e) if e.args else "") or "malformed YAML"
    return f"malformed YAML{where}: {problem}"


def read_yaml(path: str | Path, what: str = "mapping of keys") -> dict:
    source = str(path)
    p = Path(path)
    if not p.is_file():
        raise InputError(source, None, "no such file" if not p.exists() else "not a file")
    try:
        if p.stat().st_size > MAX_YAML_BYTES:
            raise InputError(source, None, f"file too large ({p.stat().st_size} bytes; at most {MAX_YAML_BYTES})")
        raw = p.read_bytes()
        if b"\0" in raw:
            raise InputError(source, None, "not a text file (NUL bytes)")
        text = raw.decode("utf-8-sig")
    except OSError as e:
        raise InputError(source, None, f"cannot read: {e.strerror or e.__class__.__name__}")
    except UnicodeDecodeError as e:
        raise InputError(source, None, f"not UTF-8 text (byte {e.start})")
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        raise InputError(source, None, yaml_problem(e))
    if not isinstance(data, dict):
        raise InputError(source, None, f"expected a {what} at the top level")
    return data


def check_import(path: str, source: str, key: str) -> None:
    """``package.module:name`` imports and has ``name``."""
    mod, _, name = path.partition(":")
    try:
        module = importlib.import_module(mod)
    except Exception as e:  # any import failure is the user's code, not our crash
        raise InputError(source, key, f"cannot import module {mod!r} ({e.__class__.__name__}: {e})")
    if not hasattr(module, name):
        raise InputError(source, key, f"module {mod!r} has no {name!r}")


# gymnasium's own extras, by where a registered env lives
GYM_EXTRAS = (("gymnasium.envs.mujoco.", "mujoco"), ("gymnasium.envs.box2d.", "box2d"), ("ale_py", "atari"))


def check_env(env: str, source: str) -> None:
    """A registered gymnasium id, or an importable ``package.module:ClassName`` (a gymnasium env, an RLlib
    ``MultiAgentEnv``, or a PettingZoo env class or constructor)."""
    if ":" in env:
        check_import(env, source, "env")
        return
    import gymnasium

    try:
        spec = gymnasium.spec(env)
    except Exception:
        raise InputError(source, "env", f"unknown environment {env!r} (not a registered gymnasium id, "
                                        "nor package.module:ClassName)")
    # A registered id whose package is missing (MuJoCo, Box2D, Atari) would only fail inside an env runner,
    # once Ray is up: its module is imported here (not the env made), as gymnasium.make would.
    if isinstance(spec.entry_point, str):
        from gymnasium.envs.registration import load_env_creator

        try:
            load_env_creator(spec.entry_point)
        except Exception as e:
            extra = next((x for prefix, x in GYM_EXTRAS if spec.entry_point.startswith(prefix)), None)
            hint = f"; pip install 'gymnasium[{extra}]'" if extra and "pip install" not in str(e) else ""
            raise InputError(source, "env", f"environment {env!r} is registered but cannot be loaded here "
                                            f"({e.__class__.__name__}: {e}){hint}")


def _blame_set(err: InputError, sets: list[str]) -> InputError:
    """An error on a key that ``--set`` gave is ``--set``'s, not the file's: it names the item as given."""
    key = err.key or ""
    for item in reversed(sets):
        path = item.split("=", 1)[0]
        if key == path or key.startswith(path + ".") or path.startswith(key + ".") and key:
            return InputError("--set", item, f"{key}: {err.problem}" if key != path else err.problem)
    return err


def blame_set_key(err: InputError, source: str, sets: list[str]) -> InputError:
    """An error found later, once RLlib reads the config (an unknown parameter), on a key that ``--set`` gave
    exactly: ``--set``'s, as :func:`load_experiment`'s are. An error on any other key stays the file's."""
    if err.source == str(source) and err.key and any(err.key == item.split("=", 1)[0] for item in sets):
        return _blame_set(err, sets)
    return err


def load_experiment(path: str | Path, sets: list[str] | None = None, model: type[Experiment] = Experiment) -> Experiment:
    source = str(path)
    sets = list(sets or [])
    data = apply_overrides(read_yaml(path), sets, source)
    try:
        exp = model.model_validate(data)
    except ValidationError as e:
        raise _blame_set(_first_error(e, source), sets) from None
    try:
        check_env(exp.env, source)
        if exp.multi_agent is not None and isinstance(exp.multi_agent.mapping, str):
            check_import(exp.multi_agent.mapping, source, "multi_agent.mapping")
    except InputError as e:
        raise _blame_set(e, sets) from None
    if exp.supervisor.profile:  # read and checked now, before Ray starts
        from supervisor.calibrate import load_profile

        prof = Path(exp.supervisor.profile)
        prof = prof if prof.is_absolute() else Path(source).parent / prof
        if not prof.is_file():
            raise InputError(source, "supervisor.profile", f"no such file: {prof}")
        load_profile(prof)
    return exp


def with_storage(exp: Experiment, storage: str | None) -> Experiment:
    """``--storage`` over the file's ``storage:``; ``InputError`` naming the flag when it is unusable."""
    if storage is None:
        return exp
    from supervisor.storage import storage_problem

    problem = storage_problem(storage)
    if problem:
        raise InputError("--storage", None, problem)
    return exp.model_copy(update={"storage": storage})


def load_sweep(path: str | Path, sets: list[str] | None = None) -> Sweep:
    return load_experiment(path, sets, Sweep)  # type: ignore[return-value]
