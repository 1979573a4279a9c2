"""Multi-agent trials in the Ray-free core: every module its own stream (issue 24).

Results are RLlib 2.60's layout for two policies on MultiAgentCartPole (keys as measured), built here
so that each test says what it feeds."""

from __future__ import annotations

import math

from supervisor.metrics import normalize_result


def ma_result(it: int = 1, p0: dict | None = None, p1: dict | None = None, ret0: float = 20.0, ret1: float = 25.0):
    """One iteration's result dict of a two-policy trial (p0, p1; agents 0 and 1)."""
    def learner(lr, extra):
        return {"policy_loss": -0.05, "vf_loss": 9.0, "total_loss": 9.0, "entropy": 0.69, "mean_kl_loss": 1e-4,
                "curr_kl_coeff": 0.2, "curr_entropy_coeff": 0.0, "default_optimizer_learning_rate": lr,
                "gradients_default_optimizer_global_norm": 2.0, "vf_explained_var": 0.1, **(extra or {})}
    return {"training_iteration": it,
            "learners": {"__all_modules__": {"num_env_steps_trained": 800},
                         "p0": learner(3e-4, p0), "p1": learner(5.0, p1)},
            "env_runners": {"episode_return_mean": ret0 + ret1, "num_episodes": 10, "episode_len_mean": 25.0,
                            "num_env_steps_sampled": 400,
                            "module_episode_returns_mean": {"p0": ret0, "p1": ret1},
                            "agent_episode_returns_mean": {0: ret0, 1: ret1}},
            "fault_tolerance": {"num_healthy_workers": 1}}


def test_normalize_result_reads_every_module():
    """Today's ``module_id_of`` reads the first module only: p1's divergence would be invisible."""
    m = normalize_result(ma_result(p0={"total_loss": 1.0}, p1={"total_loss": math.inf}), "t")["metrics"]
    assert m["modules/p0/total_loss"] == 1.0
    assert m["modules/p1/total_loss"] == math.inf
    assert m["modules/p0/lr"] == 3e-4 and m["modules/p1/lr"] == 5.0
    # each module's own return, the per-agent returns, and the team return at the trial level
    assert m["modules/p0/episode_return_mean"] == 20.0 and m["modules/p1/episode_return_mean"] == 25.0
    assert m["agents/0/episode_return_mean"] == 20.0 and m["agents/1/episode_return_mean"] == 25.0
    assert m["episode_return_mean"] == 45.0
    assert "total_loss" not in m and "lr" not in m  # no module's statistic passes for the trial's
