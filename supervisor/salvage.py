"""Can this trial still be saved? The evidence for stopping it at once instead of climbing its ladder.

A ladder's later rungs are worth their compute only for a trial that has something to save. Once a
repair has proved ineffective, a trial that also shows no learning is
stopped without trying the rest: in a sweep its slot is better spent on the next sample. "No
learning" is one of:

- non-finite values persist: the newest report still has a NaN/inf (after the no-data NaNs are
  dropped, ``supervisor.metrics.drop_no_data``), so the repair did not even make the numbers finite;
- the return is at the level it started at (the median of the newest ``RECENT`` finite returns is not
  ``MARGIN``, of the larger magnitude, above the median of the first ``FIRST``) and either it never
  left it (no median of ``RECENT`` consecutive returns in the history was) or the failed repair was
  a rollback: the trial went back to a state that had learned, and it did not hold, so the fault is
  outside the weights (a broken env, a broken reward pipeline);
- the policy's entropy collapsed: below ``ENTROPY_FRACTION`` of the action space's maximum (a
  discrete space's log n, from the trial's priors), the point where ``premature_convergence`` calls
  a policy deterministic.

A trial that learned before its fault and has not been rolled back yet keeps its ladder: the rollback
may still save it (an lr that jumped, a KL that blew up).
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
                priors: Priors | None = None, rolled_back: bool = False) -> str | None:
    """Why the trial shows no learning (one line, with the figures), or None if it does.

    Args:
        first_returns: the trial's first finite ``episode_return_mean`` values, oldest first.
        returns: its ``episode_return_mean`` history (NaN allowed), oldest first, the newest last.
        newest: the newest report's metrics.
        priors: the trial's priors (``supervisor.priors.Priors``): ``max_entropy`` and ``action_kind``.
        rolled_back: the repair that failed rolled the trial back to a healthy checkpoint.
    """
    bad = sorted(k for k, v in newest.items() if not math.isfinite(v))
    if bad:
        return f"non-finite values persist ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
    finite = [r for r in returns if math.isfinite(r)]
    if finite and first_returns:
        start = median(list(first_returns[:FIRST]))
        medians = [median(finite[i:i + RECENT]) for i in range(max(len(finite) - RECENT + 1, 1))]
        best, now = max(medians), medians[-1]

        def flat(x):
            return x - start <= MARGIN * max(abs(start), abs(x), 1e-9)

        if flat(best):
            return f"return {now:.4g} never left the level it started at ({start:.4g}; best {best:.4g})"
        if rolled_back and flat(now):
            return (f"return {now:.4g} is back at the level it started at ({start:.4g}; best {best:.4g}) "
                    "after a rollback to a healthy state")
    top, ent = getattr(priors, "max_entropy", None), newest.get("entropy")
    if getattr(priors, "action_kind", None) == "discrete" and top and top > 0 and ent is not None \
            and ent < ENTROPY_FRACTION * top:
        return f"entropy {ent:.3g} collapsed (< {ENTROPY_FRACTION:g} x max {top:.3g})"
    return None
