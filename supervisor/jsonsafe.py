"""The one JSON-safe cleaner: non-finite floats (NaN, +-inf), which strict JSON cannot hold, replaced.

By default with None (null: the report, scan and status JSON; the finding's
message keeps the evidence); ``nonfinite=js_name`` gives the strings
"NaN"/"Infinity"/"-Infinity" the dashboard's client maps back; the store
writes ``str`` ("nan", "inf", "-inf") so that its ``loads`` gets them back.
Dict keys become strings, tuples lists.
"""

from __future__ import annotations

import math
from typing import Any, Callable


def js_name(x: float) -> str:
    """JavaScript's name of a non-finite number."""
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def json_safe(o: Any, nonfinite: Callable[[float], Any] | None = None) -> Any:
    if isinstance(o, float):
        if math.isfinite(o):
            return o
        return None if nonfinite is None else nonfinite(o)
    if isinstance(o, dict):
        return {str(k): json_safe(v, nonfinite) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v, nonfinite) for v in o]
    return o
