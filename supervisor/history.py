"""Bounded per-trial metric history: the last ``capacity`` values of each metric.

Memory is fixed by ``capacity`` whatever the run length, which is what keeps a
long-running supervisor with many trials bounded. Values are kept in compact
``array('d')`` buffers (8 bytes a value), oldest first.

This is on the supervisor's hot path (one ``append`` per report, ~30
metrics; a dozen detectors read it per report), so besides the raw series it
keeps, for the metrics detectors ask about:

* derived views (``view(metric, "log" | "abs")``): the stored values
  log-transformed or absolute, updated as values arrive instead of being
  recomputed by every detector on every call;
* rolling medians (``rolling(metric, width)``).

Views and rolling medians are created on first request and always agree with
the raw series (they are copied along with the history by ``copy.deepcopy``).
"""

from __future__ import annotations

import math
from array import array
from itertools import repeat
from operator import delitem
from math import log
from typing import Iterable, Mapping

import numpy as np

from supervisor.stats import median

# Floor for log-space values: log(0) would be -inf.
LOG_EPS = 1e-12
LOG_LOG_EPS = math.log(LOG_EPS)


class _TransformView:
    """A metric's stored values, transformed: ``kind`` "log" (floored at LOG_EPS) or "abs"."""

    __slots__ = ("kind", "out")

    def __init__(self, kind: str, base: array):
        self.kind = kind
        self.out = array("d", (self.f(v) for v in base))

    def f(self, v: float) -> float:
        if self.kind == "abs":
            return abs(v)
        return math.log(v) if v > LOG_EPS else LOG_LOG_EPS

    def push(self, x: float, base: array) -> None:
        out = self.out
        if self.kind == "log":
            out.append(math.log(x) if x > LOG_EPS else LOG_LOG_EPS)
        else:
            out.append(abs(x))
        if len(out) > len(base):
            del out[0]


class _RollingView:
    """Medians of every full window of ``width`` stored values, oldest first; ``pushed`` counts the
    values taken in since the view was created (for readers that fold them incrementally)."""

    __slots__ = ("width", "out", "pushed")

    def __init__(self, width: int, base: array):
        self.width = width
        w = width
        self.out = [median(base[i:i + w]) for i in range(max(len(base) - w + 1, 0))]
        self.pushed = len(base)

    def push(self, x: float, base: array) -> None:
        w = self.width
        n = len(base)
        self.pushed += 1
        out = self.out
        if n >= w:
            out.append(median(base[n - w:]))
            if len(out) > n - w + 1:
                del out[0]


class History:
    """The run's own past, per metric, as detectors see it.

    Detectors are called with the history *before* the current iteration is
    appended, so "the past" never contains the value being judged.
    Non-finite values are not stored: they would poison medians and slopes,
    and ``non_finite`` already reports them.
    """

    def __init__(self, capacity: int = 256):
        if capacity < 1:
            raise ValueError("history capacity must be >= 1")
        self.capacity = capacity
        self._vals: dict[str, array] = {}
        self._derived: dict[str, list] = {}  # metric -> views to update on append
        self._views: dict[tuple, object] = {}  # (metric, kind or width) -> view
        self.iterations = 0
        self._schema: tuple | None = None  # the key order of the last report, and its buffers
        self._cols: tuple = ()
        self._dvs: tuple = ()
        self._whole = False  # every metric of the schema has a buffer
        self._lens = (0, 0)  # then: the shortest and longest of their buffers
        self._with_views: tuple = ()  # (position in the schema, views) of its metrics with views

    def append(self, metrics: Mapping[str, float | None]) -> None:
        keys = tuple(metrics)
        if keys == self._schema and keys:
            self._append_known(metrics)
        else:
            self._append_any(metrics)
            # a trial reports the same metrics in the same order every iteration: remember this
            # order's buffers, so the next report skips the per-name lookups
            vals, derived = self._vals, self._derived
            self._schema = keys
            self._cols = tuple(vals.get(k) for k in keys)
            self._dvs = tuple(derived.get(k) for k in keys)
            self._whole = bool(keys) and None not in self._cols
            if self._whole:
                self._lens = (min(map(len, self._cols)), max(map(len, self._cols)))
            self._with_views = tuple((i, dv) for i, dv in enumerate(self._dvs) if dv)
        self.iterations += 1

    def _append_any(self, metrics) -> None:
        for name, x in metrics.items():
            if x.__class__ is float:
                if x - x != 0.0:  # NaN or +-inf
                    continue
            elif x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
                continue
            else:
                x = float(x)
            a = self._vals.get(name)
            if a is None:
                a = self._vals[name] = array("d")
            self._push(name, a, x, self._derived.get(name))

    def _append_known(self, metrics) -> None:
        values = metrics.values()
        if self._whole:
            # the normal report: every value a finite number of a metric with a buffer. Appended and
            # trimmed at C speed; only the metrics with views are visited one by one
            try:
                s = sum(values)
                whole = s - s == 0.0  # NaN or +-inf (or a sum that overflowed: the slow path decides)
            except (TypeError, OverflowError):
                whole = False
            if whole:
                cols, cap = self._cols, self.capacity
                list(map(_APPEND, cols, values))
                lo, hi = self._lens
                if lo >= cap:  # all full: the oldest out of each
                    list(map(_DEL, cols, repeat(0, len(cols))))
                elif hi >= cap:
                    for a in cols:
                        if len(a) > cap:
                            del a[0]
                    self._lens = (min(map(len, cols)), cap)
                else:
                    self._lens = (lo + 1, hi + 1)
                if self._with_views:
                    xs = tuple(values)
                    for i, dv in self._with_views:
                        self._push_views(cols[i], float(xs[i]), dv)
                return
        cap = self.capacity
        for a, x, dv, name in zip(self._cols, values, self._dvs, self._schema):
            if x.__class__ is float:
                if x - x != 0.0:  # NaN or +-inf
                    continue
            elif x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
                continue
            else:
                x = float(x)
            if a is None:  # first finite value of this metric: a new buffer, and a new schema
                a = self._vals[name] = array("d")
                self._schema = None
                self._push(name, a, x, dv)
            elif dv:
                self._push(name, a, x, dv)
            else:  # _push without views, inline: ~30 metrics a report
                a.append(x)
                if len(a) > cap:
                    del a[0]
        if self._whole:
            self._lens = (min(map(len, self._cols)), max(map(len, self._cols)))

    def _push(self, name: str, a: array, x: float, dv) -> None:
        a.append(x)
        if len(a) > self.capacity:
            del a[0]
        if dv:
            self._push_views(a, x, dv)

    @staticmethod
    def _push_views(a: array, x: float, dv) -> None:
        """``x``, just stored in ``a``, into the metric's views."""
        for v in dv:
            if v.__class__ is _TransformView:
                out = v.out
                if v.kind == "log":
                    out.append(log(x) if x > LOG_EPS else LOG_LOG_EPS)
                else:
                    out.append(abs(x))
                if len(out) > len(a):
                    del out[0]
            else:
                v.push(x, a)

    # ---- reading -----------------------------------------------------------------------------
    def values(self, metric: str):
        """The stored values of ``metric``, oldest first, as the live buffer (do not modify it)."""
        a = self._vals.get(metric)
        return a if a is not None else _EMPTY

    def last(self, metric: str) -> float | None:
        """The newest stored value of ``metric``, or None."""
        a = self._vals.get(metric)
        return a[-1] if a else None

    def series(self, metric: str, last: int | None = None) -> np.ndarray:
        """The stored values as a new numpy array, oldest first (the last ``last`` of them)."""
        a = self._vals.get(metric)
        if a is None:
            return np.empty(0)
        if last is not None:
            a = a[-last:] if last > 0 else a[:0]
        return np.array(a, dtype=float)

    def count(self, metric: str) -> int:
        a = self._vals.get(metric)
        return len(a) if a is not None else 0

    def metrics(self) -> Iterable[str]:
        return self._vals.keys()

    def view(self, metric: str, kind: str | bool | None = None):
        """The stored values of ``metric`` as they are (``kind`` None/False), log-transformed and
        floored at LOG_EPS (``"log"`` or True), or absolute (``"abs"``); a live buffer, oldest first."""
        if not kind:
            a = self._vals.get(metric)
            return a if a is not None else _EMPTY
        if kind is True:
            kind = "log"
        v = self._views.get((metric, kind))
        if v is not None:
            return v.out
        return self._new_view(metric, kind)

    def _new_view(self, metric: str, kind: str):
        v = self._views.get((metric, kind))
        if v is None:
            if kind not in ("log", "abs"):
                raise ValueError(f"unknown view kind {kind!r}")
            base = self._vals.get(metric)
            if base is None:
                return _EMPTY
            v = self._views[(metric, kind)] = _TransformView(kind, base)
            self._derived.setdefault(metric, []).append(v)
            self._schema = None
        return v.out

    def rolling(self, metric: str, width: int) -> _RollingView | None:
        """The rolling-median view of ``metric`` (width ``width``), or None while nothing is stored."""
        v = self._views.get((metric, width))
        if v is None:
            base = self._vals.get(metric)
            if base is None:
                return None
            v = self._views[(metric, width)] = _RollingView(width, base)
            self._derived.setdefault(metric, []).append(v)
            self._schema = None
        return v

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored values and their derived views."""
        n = sum(a.itemsize * len(a) for a in self._vals.values())
        for v in self._views.values():
            n += v.out.itemsize * len(v.out) if isinstance(v.out, array) else 8 * len(v.out)
        return n


_EMPTY = array("d")
_APPEND, _DEL = array.append, delitem
