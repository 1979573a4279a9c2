"""supervisor.salvage.no_learning: the evidence for giving up on a trial, on synthetic streams."""

import math

from supervisor.priors import Priors
from supervisor.salvage import no_learning

DISCRETE = Priors(action_kind="discrete", max_entropy=math.log(2))


def test_non_finite_values_that_persist():
    why = no_learning([20, 21, 22], [20, 21, 22, math.nan], {"total_loss": math.inf, "lr": 1e-3}, DISCRETE)
    assert why == "non-finite values persist (total_loss)"


def test_a_return_that_never_left_its_start():
    assert "never left the level it started at (21" in no_learning([20, 21, 22], [20, 21, 22, 23, 21, 20],
                                                                     {"entropy": 0.6}, DISCRETE)
    # negative returns (Pendulum): -1300 -> -1250 is less than 10 % of the magnitude
    assert no_learning([-1300, -1310, -1290], [-1300, -1310, -1290, -1260, -1250, -1240], {}) is not None


def test_a_trial_that_learned_then_fell_has_something_to_save():
    returns = [20, 21, 22, 60, 80, 95, 90, 15, 12, 10]  # rose to ~90, collapsed after the fault
    assert no_learning([20, 21, 22], returns, {"entropy": 0.5}, DISCRETE) is None
    assert no_learning([-1300, -1310, -1290], [-1300, -1310, -1290, -1000, -900, -950], {}) is None


def test_collapsed_entropy_of_a_discrete_policy():
    returns = [20, 21, 22, 60, 80, 95]
    assert no_learning([20, 21, 22], returns, {"entropy": 0.05}, DISCRETE).startswith("entropy 0.05 collapsed")
    # a Gaussian policy's entropy says nothing here (it can be negative in a healthy run)
    assert no_learning([20, 21, 22], returns, {"entropy": -2.0}, Priors(action_kind="continuous")) is None


def test_back_at_the_start_after_a_rollback():
    """Learned (to ~90), fell back to the start; a rollback to the learned state did not hold: nothing left
    to try. Without the rollback tried, the same stream keeps its ladder (the rollback may save it)."""
    returns = [20, 21, 22, 60, 80, 95, 90, 21, 19, 22]
    why = no_learning([20, 21, 22], returns, {"entropy": 0.5}, DISCRETE, rolled_back=True)
    assert why.startswith("return 21 is back at the level it started at (21") and "after a rollback" in why
    assert no_learning([20, 21, 22], returns, {"entropy": 0.5}, DISCRETE, rolled_back=False) is None
    # rolled back and learning again: not given up on
    assert no_learning([20, 21, 22], returns[:7] + [70, 75, 80], {}, DISCRETE, rolled_back=True) is None
