"""Can this trial still be saved? The evidence for stopping it at once instead of climbing its ladder.

A ladder's later rungs are worth their compute only for a trial that has something to save. Once a
repair has proved ineffective (and none before it worked), a trial that also shows no learning is
stopped without trying the rest: in a sweep its slot is better spent on the next sample. "No
learning" is one of:

- non-finite values persist: the newest report still has a NaN/inf (after the no-data NaNs are
  dropped, ``supervisor.metrics.drop_no_data``), so the repair did not even make the numbers finite;
- the return never left the level it started at: no median of ``RECENT`` consecutive finite returns
  (the trial's whole history) is ``MARGIN`` (of the larger magnitude) above the median of its first
  ``FIRST`` ones, and the newest is not either;
- the policy's entropy collapsed: below ``ENTROPY_FRACTION`` of the action space's maximum (a
  discrete space's log n, from the trial's priors), the point where ``premature_convergence`` calls
  a policy deterministic.

A trial that learned before its fault (its return rose, its numbers are finite) keeps its ladder: a
rollback has a good state to go back to.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from supervisor.priors import Priors
from supervisor.stats import median

FIRST = 3  # returns that define the level a trial starts from
RECENT = 3  # returns that say where it is now
MARGIN = 0.1  # progress below this fraction of the return's magnitude is no progress
ENTROPY_FRACTION = 0.15


def no_learning(first_returns: Sequence[float], returns: Sequence[float], newest: Mapping[str, float],
                priors: Priors | None = None) -> str | None:
    """Why the trial shows no learning (one line, with the figures), or None if it does.

    Args:
        first_returns: the trial's first finite ``episode_return_mean`` values, oldest first.
        returns: its ``episode_return_mean`` history (NaN allowed), oldest first, the newest last.
        newest: the newest report's metrics.
        priors: the trial's priors (``supervisor.priors.Priors``): ``max_entropy`` and ``action_kind``.
    """
    bad = sorted(k for k, v in newest.items() if not math.isfinite(v))
    if bad:
        return f"non-finite values persist ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
    finite = [r for r in returns if math.isfinite(r)]
    if finite and first_returns:
        start = median(list(first_returns[:FIRST]))
        medians = [median(finite[i:i + RECENT]) for i in range(max(len(finite) - RECENT + 1, 1))]
        best = max(medians)
        if best - start <= MARGIN * max(abs(start), abs(best), 1e-9):
            return f"return {medians[-1]:.4g} never left the level it started at ({start:.4g}; best {best:.4g})"
    top, ent = getattr(priors, "max_entropy", None), newest.get("entropy")
    if getattr(priors, "action_kind", None) == "discrete" and top and top > 0 and ent is not None \
            and ent < ENTROPY_FRACTION * top:
        return f"entropy {ent:.3g} collapsed (< {ENTROPY_FRACTION:g} x max {top:.3g})"
    return None
