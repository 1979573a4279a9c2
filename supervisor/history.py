"""Bounded per-trial metric history: one ring buffer per metric.

Memory is fixed by ``capacity`` whatever the run length, which is what keeps a
long-running supervisor with many trials bounded.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np


class Ring:
    """A fixed-size float ring buffer; ``values()`` returns oldest first."""

    __slots__ = ("_buf", "_n", "_i")

    def __init__(self, capacity: int):
        self._buf = np.full(capacity, np.nan)
        self._n = 0
        self._i = 0

    def append(self, x: float) -> None:
        self._buf[self._i] = x
        self._i = (self._i + 1) % len(self._buf)
        self._n = min(self._n + 1, len(self._buf))

    def values(self, last: int | None = None) -> np.ndarray:
        cap = len(self._buf)
        if self._n < cap:
            out = self._buf[: self._n]
        else:
            out = np.concatenate((self._buf[self._i :], self._buf[: self._i]))
        if last is not None:
            out = out[-last:] if last > 0 else out[:0]
        return out.copy()

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        return self._buf.nbytes


class History:
    """The run's own past, per metric, as detectors see it.

    Detectors are called with the history *before* the current iteration is
    appended, so "the past" never contains the value being judged.
    Non-finite values are not stored: they would poison medians and slopes,
    and ``non_finite`` already reports them.
    """

    def __init__(self, capacity: int = 256):
        self.capacity = capacity
        self._rings: dict[str, Ring] = {}
        self.iterations = 0

    def append(self, metrics: Mapping[str, float | None]) -> None:
        for name, x in metrics.items():
            if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
                continue
            ring = self._rings.get(name)
            if ring is None:
                ring = self._rings[name] = Ring(self.capacity)
            ring.append(float(x))
        self.iterations += 1

    def series(self, metric: str, last: int | None = None) -> np.ndarray:
        ring = self._rings.get(metric)
        return ring.values(last) if ring is not None else np.empty(0)

    def count(self, metric: str) -> int:
        ring = self._rings.get(metric)
        return len(ring) if ring is not None else 0

    def metrics(self) -> Iterable[str]:
        return self._rings.keys()

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self._rings.values())
