"""Robust statistics over a run's own history (median/MAD, EWMA, slopes)."""

from __future__ import annotations

import math

import numpy as np

# 1.4826 * MAD estimates sigma for normal data.
MAD_TO_SIGMA = 1.4826


def finite(x) -> float | None:
    """``x`` as a finite float, or None if absent, boolean, non-numeric or non-finite."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def robust_center_scale(x: np.ndarray, rel_floor: float = 0.05, abs_floor: float = 1e-8) -> tuple[float, float]:
    """Median and MAD-based sigma, floored so that a flat history does not make every change infinite."""
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med))) * MAD_TO_SIGMA
    return med, max(mad, rel_floor * abs(med), abs_floor)


def robust_z(value: float, x: np.ndarray, rel_floor: float = 0.05, abs_floor: float = 1e-8) -> tuple[float, float, float]:
    """(z, center, scale) of ``value`` against history ``x``."""
    med, scale = robust_center_scale(x, rel_floor, abs_floor)
    return (value - med) / scale, med, scale


def ewma(x: np.ndarray, alpha: float) -> float:
    if len(x) == 0:
        return math.nan
    acc = float(x[0])
    for v in x[1:]:
        acc = alpha * float(v) + (1.0 - alpha) * acc
    return acc


def slope(x: np.ndarray) -> float:
    """Least-squares slope per step; 0 for fewer than two points."""
    n = len(x)
    if n < 2:
        return 0.0
    t = np.arange(n, dtype=float)
    t -= t.mean()
    return float(np.dot(t, x - x.mean()) / np.dot(t, t))
