"""Escalation policy, in the spirit of an Erlang/OTP supervisor.

Per detector, an ordered ladder (defaults per algorithm: PPO's below, the others'
differences in ``supervisor.algorithms``; the experiment file's ``ladders`` win) of steps (each step one or more actions).
Each time a detector's finding calls for action the trial climbs one rung of
that detector's ladder. Explicit limits instead of ad-hoc retries:

- cooldown: after any action, wait this many iterations so its effect shows
  before acting again;
- intensity: at most ``max_interventions`` in ``intensity_window``
  iterations; past that, escalate straight to ``stop_trial``;
- an action judged ineffective on a trial is not tried on it again (the
  ladder skips it);
- a trial whose repair proved ineffective and that shows no learning is
  stopped at once (``give_up``; the evidence is ``supervisor.salvage``);
- ``info`` findings never trigger actions.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from supervisor import algorithms
from supervisor.actions import ACTIONS
from supervisor.findings import Finding, severity_rank

ROLLBACK_REDUCE = ["rollback", "reduce_lr"]
DEFAULT_LADDERS: dict[str, list[list[str]]] = {
    "non_finite": [ROLLBACK_REDUCE, ROLLBACK_REDUCE, ["stop_trial"]],
    "loss_explosion": [["reduce_lr"], ROLLBACK_REDUCE, ["stop_trial"]],
    "gradient_explosion": [["tighten_grad_clip"], ["reduce_lr"], ROLLBACK_REDUCE, ["restart_trial"], ["stop_trial"]],
    "gradient_vanishing": [ROLLBACK_REDUCE, ["stop_trial"]],
    "kl_spike": [["raise_kl_coeff"], ["reduce_lr"], ROLLBACK_REDUCE, ["stop_trial"]],
    # A KL coefficient walking down is also what a healthy low-lr run looks like: alert only;
    # the root-cause detectors (non_finite, kl_spike, ...) act when the run is really broken.
    "kl_controller_stuck": [["alert"]],
    "entropy_collapse": [["boost_entropy"], ["rollback", "boost_entropy"], ["stop_trial"]],
    "value_collapse": [["reduce_lr"], ROLLBACK_REDUCE, ["stop_trial"]],
    "advantage_anomaly": [["alert"]],
    "reward_collapse": [ROLLBACK_REDUCE, ROLLBACK_REDUCE, ["stop_trial"]],
    "plateau": [["alert"]],
    # Priors (the trial's config and spaces): faults present from iteration 1.
    "update_too_large": [["reduce_lr"], ROLLBACK_REDUCE, ["stop_trial"]],
    "value_loss_clipped": [["raise_vf_clip"], ["alert"]],
    "entropy_saturated": [["reduce_entropy"], ["reduce_entropy"], ["stop_trial"]],
    "no_learning": [["increase_lr"], ["increase_lr"], ["stop_trial"]],
    "premature_convergence": [["rollback", "boost_entropy"], ["stop_trial"]],
    "worker_fault": [["alert"]],
    # The data guard (env runners): hold the poisoned episodes out, then stop if the env goes on producing them
    # (outside the weights: no rollback or lr can help).
    "data_poisoned": [["quarantine"], ["stop_trial"]],
    "obs_out_of_range": [["quarantine"], ["stop_trial"]],
    # Events (Engine.crash, Engine.hung): a crash the supervisor can act on (non-finite values in the update,
    # an update blow-up) restarts with a lower lr; one it cannot (an env that raises) is retried once and
    # stopped if it repeats the same way. A hung trial is restarted through Tune.
    "trial_crashed": [["reduce_lr", "restart_trial"], ["reduce_lr", "restart_trial"], ["stop_trial"]],
    "trial_hung": [["restart_trial"], ["stop_trial"]],
    # The fix (early stopping at the best evaluation, more env variety) is the experimenter's call: alert.
    "generalization_gap": [["alert"]],
    # The cluster detectors (node_down, memory_pressure, gpu_fault, straggler) have no ladder: their
    # findings are stored and alerted on, and there is no trial-side actuator they could drive.
}
# When several detectors fire at once, act on the root cause first.
# A crash or a hang first (the trial is dead or stuck), then poisoned data (what the learner is fed), then the
# learner. update_too_large (the trial's own config against its kl_target) before kl_spike (the KL against its
# history): at iteration 1 both fire on a config bad from the start, and the config is the cause.
PRIORITY = ["trial_crashed", "trial_hung", "data_poisoned", "obs_out_of_range", "non_finite", "loss_explosion",
            "gradient_explosion", "q_divergence", "td_error_explosion", "update_too_large", "kl_spike",
            "value_collapse", "gradient_vanishing", "entropy_saturated", "entropy_collapse",
            "alpha_collapse", "alpha_runaway", "premature_convergence", "no_learning", "value_loss_clipped",
            "reward_collapse", "exploration_too_short", "kl_controller_stuck",
            "advantage_anomaly", "worker_fault", "straggler", "memory_pressure", "gpu_fault", "node_down", "generalization_gap",
            "plateau"]


@dataclass
class Decision:
    actions: list[str]
    finding: Finding
    escalated: bool = False  # chosen by the intensity limit, not the ladder
    rung: int = 0
    why: str | None = None  # the reason, when it is not the finding's own message


@dataclass
class PolicyState:
    rungs: dict[str, int] = field(default_factory=dict)
    action_seqs: deque = field(default_factory=deque)
    last_action_seq: int | None = None
    last_cooldown: int | None = None  # the last action's own cooldown (ActionSpec.cooldown), if it has one
    ineffective: set = field(default_factory=set)


class EscalationPolicy:
    """Decides what to do about one iteration's findings for one trial.

    Args:
        ladders: per detector, ordered steps (lists of action ids); merged over DEFAULT_LADDERS.
        cooldown: iterations to wait after an action before the next.
        max_interventions, intensity_window: at most N interventions in K iterations, then stop_trial.
    """

    def __init__(self, ladders: dict[str, list[list[str]]] | None = None, cooldown: int = 2,
                 max_interventions: int = 4, intensity_window: int = 20):
        self.custom = dict(ladders or {})
        self.ladders = {**DEFAULT_LADDERS, **self.custom}
        self.cooldown = cooldown
        self.max_interventions = max_interventions
        self.intensity_window = intensity_window

    def ladder(self, detector: str, algorithm: str | None = None) -> list[list[str]]:
        """The experiment file's ladder for ``detector``, else the algorithm's default, else PPO's."""
        if detector in self.custom:
            return self.custom[detector]
        return algorithms.ladders(algorithm).get(detector) or self.ladders.get(detector, [["alert"]])

    def decide(self, state: PolicyState, seq: int, findings: list[Finding],
               algorithm: str | None = None, event: bool = False) -> Decision | None:
        """``event``: the findings are an event between iterations (a crash, a hang), not an iteration's:
        no cooldown (the trial is dead or stuck; there is no effect to wait for)."""
        actionable = [f for f in findings if severity_rank(f.severity) >= severity_rank("warning")]
        if not actionable:
            return None
        cooldown = self.cooldown if state.last_cooldown is None else state.last_cooldown
        if not event and state.last_action_seq is not None and seq - state.last_action_seq <= cooldown:
            return None
        order = {d: i for i, d in enumerate(PRIORITY)}
        actionable.sort(key=lambda f: (-severity_rank(f.severity), order.get(f.detector, len(order))))
        finding = actionable[0]
        while state.action_seqs and state.action_seqs[0] <= seq - self.intensity_window:
            state.action_seqs.popleft()
        if len(state.action_seqs) >= self.max_interventions:
            return self._commit(state, seq, Decision(["stop_trial"], finding, escalated=True))
        ladder = self.ladder(finding.detector, algorithm)
        rung = state.rungs.get(finding.detector, 0)
        while rung < len(ladder):
            step = [a for a in ladder[rung] if a not in state.ineffective or ACTIONS[a].retry_if_ineffective]
            if any(ACTIONS[a].standalone for a in step):
                break
            rung += 1
        else:
            # Exhausted: give up cleanly (unless the ladder ends in alert: may_stop).
            step = ["stop_trial"] if self.may_stop(finding.detector, algorithm) else ["alert"]
            rung = len(ladder)
        state.rungs[finding.detector] = rung + 1
        return self._commit(state, seq, Decision(step, finding, rung=rung))

    def may_stop(self, detector: str, algorithm: str | None = None) -> bool:
        """Whether this detector's findings may end a trial: a ladder ending in alert only ever alerts
        (those findings are worth a human's eye, never a reason to kill a trial)."""
        ladder = self.ladder(detector, algorithm)
        return not ladder or any(ACTIONS[a].counts_toward_limit for a in ladder[-1])

    def give_up(self, state: PolicyState, seq: int, finding: Finding, why: str) -> Decision:
        """Stop a trial that cannot be saved, whatever rungs its ladder has left."""
        return self._commit(state, seq, Decision(["stop_trial"], finding, rung=state.rungs.get(finding.detector, 0),
                                                   why=why))

    @staticmethod
    def _commit(state: PolicyState, seq: int, d: Decision) -> Decision:
        if any(ACTIONS[a].counts_toward_limit for a in d.actions):  # alerts are free
            state.action_seqs.append(seq)
            state.last_action_seq = seq
            state.last_cooldown = action_cooldown(d.actions)
        return d


def action_cooldown(names) -> int | None:
    """The cooldown a step of actions sets: the longest of its actions' own (None: the policy's)."""
    own = [ACTIONS[a].cooldown for a in names if ACTIONS[a].counts_toward_limit]
    return None if not own or any(c is None for c in own) else max(own)
