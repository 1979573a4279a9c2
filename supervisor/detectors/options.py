"""Detector options, declared: one frozen pydantic model per detector (``Detector.Options``).

The model is the one place for an option's default and its allowed range; a
detector copies the validated values onto itself. An invalid value becomes a
:class:`DetectorOptionError` naming the detector and the option, e.g.
``detector kl_spike: option window must be > 0 (got -1)``.
"""

from __future__ import annotations

from typing import Annotated, Any, Mapping

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, ValidationError


class DetectorOptionError(ValueError):
    """A detector option that is unknown or out of range. ``option`` is None for a rule between options."""

    def __init__(self, detector: str, option: str | None, problem: str):
        self.detector, self.option, self.problem = detector, option, problem
        super().__init__(f"detector {detector}: option {option} {problem}" if option
                         else f"detector {detector}: {problem}")


def _not_bool(v: Any) -> Any:
    if isinstance(v, bool):  # pydantic would read true as 1.0
        raise ValueError("must be a number")
    return v


def _band(v: Any) -> Any:
    from supervisor.detectors._common import check_band  # _common imports the base class, which imports this

    try:
        check_band(v, "band")
    except ValueError as e:
        msg = str(e).split(": ", 1)[1].removeprefix("band ")
        raise ValueError(msg if msg.startswith("must") else f"is not a valid band: {msg}") from None
    return v


Number = Annotated[float, BeforeValidator(_not_bool)]
Count = StrictInt  # 3.0 and true are not counts
BandOption = Annotated[Any, BeforeValidator(_band)]
Metrics = tuple[str, ...] | None


def positive(default: Any, **kw) -> Any:
    return Field(default, gt=0, **kw)


def at_least(lo: float, default: Any) -> Any:
    return Field(default, ge=lo)


def fraction(default: float) -> Any:
    """Strictly between 0 and 1."""
    return Field(default, gt=0, lt=1)


class DetectorOptions(BaseModel):
    """Base of every detector's options (none in common)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(cls.model_fields)

    @classmethod
    def build(cls, detector: str, values: Mapping[str, Any]) -> "DetectorOptions":
        """Validate ``values`` (unknown keys, types, ranges, rules between options)."""
        bad = sorted(k for k in values if k not in cls.model_fields)
        if bad:
            accepted = f"(accepted: {', '.join(('enabled',) + cls.names())})"
            if len(bad) == 1:
                raise DetectorOptionError(detector, bad[0], f"is unknown {accepted}")
            raise DetectorOptionError(detector, None, f"unknown options {', '.join(bad)} {accepted}")
        try:
            return cls(**values)
        except ValidationError as e:
            raise _option_error(detector, e) from None


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else repr(x)


_RANGES = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_TYPES = {"int_type": "must be an integer", "int_parsing": "must be an integer",
          "int_from_float": "must be an integer", "float_type": "must be a number",
          "float_parsing": "must be a number", "finite_number": "must be a finite number",
          "bool_type": "must be true or false", "bool_parsing": "must be true or false",
          "tuple_type": "must be a list of metric names", "string_type": "must be a metric name"}


def _option_error(detector: str, exc: ValidationError) -> DetectorOptionError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    option = loc[0] if loc else None
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _RANGES:
        limit = next(iter(ctx.values()))
        problem = f"must be {_RANGES[kind]} {_num(limit)}"
    elif kind in _TYPES:
        problem = _TYPES[kind]
    else:
        problem = err["msg"]
        if problem.startswith("Value error, "):
            problem = problem[len("Value error, "):]
    if option is not None and "input" in err and "got" not in problem:
        problem += f" (got {err['input']!r})"
    return DetectorOptionError(detector, option, problem)


__all__ = ["BandOption", "Count", "DetectorOptionError", "DetectorOptions", "Metrics", "Number", "StrictBool",
           "at_least", "fraction", "positive"]
