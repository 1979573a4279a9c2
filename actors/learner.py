"""An instrumented PPO learner: the per-update statistics RLlib does not report.

``SupervisedPPOTorchLearner`` subclasses RLlib 2.60's ``PPOTorchLearner`` and
logs, under ``learners/<module_id>/`` in each training result:

========================  ===================================================
key                       meaning (one value per training iteration)
========================  ===================================================
sup_grad_norm_mean        global L2 norm of the module's gradients after
                          ``backward()`` and before any clipping, mean over
                          all minibatches of the iteration (all epochs)
sup_grad_norm_max         the same norm, max over those minibatches
sup_grad_norm_policy      norm over the actor parameters
                          (``encoder.actor_encoder.*``, ``pi.*``), mean over
                          minibatches
sup_grad_norm_value       norm over the critic parameters
                          (``encoder.critic_encoder.*``, ``vf.*``), mean
sup_grad_norm_ratio       sup_grad_norm_policy / sup_grad_norm_value (ratio
                          of the iteration means)
sup_grad_norm_shared      only when the module has parameters in neither
                          branch (``vf_share_layers=True``: ``encoder.encoder.*``)
sup_clip_fraction         CleanRL's clipfrac, mean(|ratio - 1| > clip_param),
                          mean over minibatches
sup_approx_kl             CleanRL's approx_kl, mean((ratio - 1) - log ratio),
                          mean over minibatches
sup_advantage_mean        advantages before RLlib's standardization (see
sup_advantage_std         below), over the whole train batch (loss-masked
sup_advantage_skew        rows only); std with ddof=0, kurtosis is excess
sup_advantage_kurtosis    kurtosis (0 for a normal distribution)
sup_advantage_standardized  0.0: the four above are raw (pre-standardization);
                          1.0: raw ones were not accessible and they describe
                          the standardized advantages the loss reads
sup_value_target_scale    mean |value target| over the train batch
sup_value_target_std      std of the value targets (ddof=0)
========================  ===================================================

Advantages. RLlib 2.60 always standardizes advantages over the whole train
batch inside its ``GeneralAdvantageEstimation`` learner connector
(``(A - mean) / max(1e-4, std)``, no option to turn it off), so the advantages
``compute_loss_for_module`` reads from ``batch[Postprocessing.ADVANTAGES]``
have mean 0 and std 1 by construction. The raw advantages are
``value_targets - vf_preds``; the learner swaps RLlib's GAE connector piece
for a subclass that records the value predictions RLlib computes anyway (no
extra forward pass) and logs the raw statistics once per update. When that
is impossible (a custom learner pipeline without the default GAE piece, or
aggregator actors building the batch elsewhere) the learner falls back to
the standardized advantages seen in the loss, per minibatch, and says so in
``sup_advantage_standardized``. Skew and kurtosis are unchanged by
standardization, so only mean and std differ between the two.

Aggregation. Per-minibatch values are pushed with ``reduce="mean"`` (or
``"max"``) and a window larger than any realistic number of minibatches per
update; RLlib clears a stats object's values when the learner reduces its
metrics at the end of ``update()``, so each result holds exactly one
iteration. (``window=None`` would not do: RLlib's "mean" then becomes a
pairwise running mean that overweights the last minibatch.) Several learners
are merged by RLlib as the mean of their means and the max of their maxes;
their gradients are all-reduced before we read them, so they agree.

Non-finite gradients: RLlib's mean/max reducers skip NaN, so a NaN gradient
norm is logged as +inf to stay visible. With a torch GradScaler (mixed
precision) the norms are divided by the current scale, i.e. they are the
unscaled norms. With ``vf_share_layers=True`` the shared encoder's gradient
counts in the global norm and in sup_grad_norm_shared, not in the branch norms.

Cost: the norms are one ``torch._foreach_norm`` over the module's gradients
plus a handful of tensor ops per minibatch, under ``torch.no_grad()``, with no
host synchronization until RLlib reduces the metrics once per update.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Optional

import torch

from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

logger = logging.getLogger(__name__)

# Larger than the number of minibatches (times updates) between two metric
# reduces of any sane config; RLlib empties the window at every reduce.
_WINDOW = 1_000_000

POLICY_PREFIXES = ("encoder.actor_encoder.", "pi.")
VALUE_PREFIXES = ("encoder.critic_encoder.", "vf.")
# Wrappers that prefix parameter names (DDP, torch.compile).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

KEY_GRAD_NORM_MEAN = "sup_grad_norm_mean"
KEY_GRAD_NORM_MAX = "sup_grad_norm_max"
KEY_GRAD_NORM_POLICY = "sup_grad_norm_policy"
KEY_GRAD_NORM_VALUE = "sup_grad_norm_value"
KEY_GRAD_NORM_RATIO = "sup_grad_norm_ratio"
KEY_GRAD_NORM_SHARED = "sup_grad_norm_shared"
KEY_CLIP_FRACTION = "sup_clip_fraction"
KEY_APPROX_KL = "sup_approx_kl"
KEY_ADV_MEAN = "sup_advantage_mean"
KEY_ADV_STD = "sup_advantage_std"
KEY_ADV_SKEW = "sup_advantage_skew"
KEY_ADV_KURTOSIS = "sup_advantage_kurtosis"
KEY_ADV_STANDARDIZED = "sup_advantage_standardized"
KEY_VT_SCALE = "sup_value_target_scale"
KEY_VT_STD = "sup_value_target_std"

# The keys every update produces for a default PPO module.
SUP_KEYS = (
    KEY_GRAD_NORM_MAX, KEY_GRAD_NORM_MEAN, KEY_GRAD_NORM_POLICY, KEY_GRAD_NORM_VALUE,
    KEY_GRAD_NORM_RATIO, KEY_APPROX_KL, KEY_CLIP_FRACTION, KEY_ADV_MEAN, KEY_ADV_STD,
    KEY_ADV_SKEW, KEY_ADV_KURTOSIS, KEY_ADV_STANDARDIZED, KEY_VT_SCALE, KEY_VT_STD,
)


def _branch_of(name: str) -> int:
    """0 policy, 1 value, 2 neither (shared or unknown), by parameter name."""
    stripped = True
    while stripped:
        stripped = False
        for w in _WRAPPER_PREFIXES:
            if name.startswith(w):
                name, stripped = name[len(w):], True
    if name.startswith(POLICY_PREFIXES):
        return 0
    if name.startswith(VALUE_PREFIXES):
        return 1
    return 2


def _moments(x: "torch.Tensor") -> List["torch.Tensor"]:
    """mean, std (ddof=0), skew, excess kurtosis of a 1-D float tensor, as 0-d tensors.

    Skew and kurtosis are 0 when the spread is (numerically) zero rather than NaN,
    so a constant batch is not mistaken for a non-finite run.
    """
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    mean = x.mean()
    d = x - mean
    d2 = d * d
    var = d2.mean()
    std = var.sqrt()
    ok = var > 1e-12
    safe_var = torch.where(ok, var, torch.ones_like(var))
    skew = torch.where(ok, (d2 * d).mean() / (safe_var * safe_var.sqrt()), torch.zeros_like(var))
    kurt = torch.where(ok, (d2 * d2).mean() / (safe_var * safe_var) - 3.0, torch.zeros_like(var))
    return [mean, std, skew, kurt]


def _log_mean(metrics, module_id, key, value) -> None:
    metrics.log_value((module_id, key), value, reduce="mean", window=_WINDOW)


class SupervisedGeneralAdvantageEstimation(GeneralAdvantageEstimation):
    """RLlib's GAE piece, plus statistics of the advantages before standardization.

    It records the value predictions RLlib's own piece computes (by observing its
    ``rl_module.foreach_module`` call, restored right after), so it costs no extra
    forward pass. Logs into the learner's MetricsLogger (the pipeline passes it
    as ``metrics``).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Module ids whose raw statistics were logged since the learner last cleared this.
        self.logged_modules: set = set()

    def __call__(self, *, rl_module, episodes, batch, metrics=None, **kwargs):
        captured: Dict[str, Any] = {}
        had_own_attr = "foreach_module" in vars(rl_module)
        original = rl_module.foreach_module

        def _capturing_foreach_module(*a, **kw):
            out = original(*a, **kw)
            if not captured and isinstance(out, dict):
                captured.update(out)
            return out

        try:
            rl_module.foreach_module = _capturing_foreach_module
        except Exception:  # pragma: no cover - exotic module types
            return super().__call__(
                rl_module=rl_module, episodes=episodes, batch=batch, metrics=metrics, **kwargs
            )
        try:
            out = super().__call__(
                rl_module=rl_module, episodes=episodes, batch=batch, metrics=metrics, **kwargs
            )
        finally:
            if had_own_attr:
                rl_module.foreach_module = original
            else:
                try:
                    del rl_module.foreach_module
                except AttributeError:  # pragma: no cover
                    pass
        if metrics is not None:
            try:
                self._log_raw_stats(out, captured, metrics)
            except Exception as e:  # never break training for a statistic
                logger.warning("supervised learner: raw advantage statistics failed: %r", e)
        return out

    @torch.no_grad()
    def _log_raw_stats(self, batch, vf_preds, metrics) -> None:
        for module_id, preds in vf_preds.items():
            if not isinstance(preds, torch.Tensor) or module_id not in batch:
                continue
            mb = batch[module_id]
            vt = mb.get(Postprocessing.VALUE_TARGETS)
            if not isinstance(vt, torch.Tensor) or vt.shape != preds.shape:
                continue
            vt = vt.detach()
            raw_adv = vt - preds.detach()
            mask = mb.get(Columns.LOSS_MASK)
            if isinstance(mask, torch.Tensor) and mask.shape == vt.shape:
                mask = mask.bool()
                raw_adv, vt = raw_adv[mask], vt[mask]
            raw_adv, vt = raw_adv.reshape(-1), vt.reshape(-1).float()
            if raw_adv.numel() == 0:
                continue
            mean, std, skew, kurt = _moments(raw_adv)
            _log_mean(metrics, module_id, KEY_ADV_MEAN, mean)
            _log_mean(metrics, module_id, KEY_ADV_STD, std)
            _log_mean(metrics, module_id, KEY_ADV_SKEW, skew)
            _log_mean(metrics, module_id, KEY_ADV_KURTOSIS, kurt)
            _log_mean(metrics, module_id, KEY_ADV_STANDARDIZED, 0.0)
            _log_mean(metrics, module_id, KEY_VT_SCALE, vt.abs().mean())
            _log_mean(metrics, module_id, KEY_VT_STD, vt.std(correction=0))
            self.logged_modules.add(module_id)


class SupervisedPPOTorchLearner(PPOTorchLearner):
    """PPOTorchLearner that logs gradient, clipping, KL and advantage statistics.

    See the module docstring for the keys. Behaviour of the update is unchanged:
    the loss, gradients and optimizer step are RLlib's.
    """

    def build(self) -> None:
        super().build()
        # module_id -> (params ordered policy, value, shared; grouping matrix [3, P])
        self._sup_param_groups: Dict[str, tuple] = {}
        self._sup_gae: Optional[SupervisedGeneralAdvantageEstimation] = None
        pipeline = getattr(self, "_learner_connector", None)
        pieces = getattr(pipeline, "connectors", None)
        if pieces is not None:
            for i, piece in enumerate(pieces):
                if type(piece) is GeneralAdvantageEstimation:
                    new = SupervisedGeneralAdvantageEstimation(
                        piece.input_observation_space,
                        piece.input_action_space,
                        gamma=piece.gamma,
                        lambda_=piece.lambda_,
                    )
                    pieces[i] = new
                    self._sup_gae = new
                    break
                if isinstance(piece, SupervisedGeneralAdvantageEstimation):
                    self._sup_gae = piece
                    break
        if self._sup_gae is None:
            logger.info(
                "supervised learner: no default GAE connector piece found; "
                "sup_advantage_* will describe the standardized advantages."
            )

    # ---- parameter grouping -------------------------------------------------

    def add_module(self, *args, **kwargs):
        out = super().add_module(*args, **kwargs)
        self._sup_param_groups = {}
        return out

    def remove_module(self, *args, **kwargs):
        out = super().remove_module(*args, **kwargs)
        self._sup_param_groups = {}
        return out

    def _sup_groups(self) -> Dict[str, tuple]:
        if not self._sup_param_groups:
            groups = {}
            for module_id in self.module.keys():
                mod = self.module[module_id]
                mod = mod.unwrapped() if hasattr(mod, "unwrapped") else mod
                if not isinstance(mod, torch.nn.Module):
                    continue
                by_branch: List[list] = [[], [], []]
                for name, p in mod.named_parameters():
                    if p.requires_grad:
                        by_branch[_branch_of(name)].append(p)
                params = by_branch[0] + by_branch[1] + by_branch[2]
                if not params:
                    continue
                counts = [len(b) for b in by_branch]
                g = torch.zeros(3, len(params), device=params[0].device)
                start = 0
                for row, n in enumerate(counts):
                    g[row, start:start + n] = 1.0
                    start += n
                groups[module_id] = (params, g, counts)
            self._sup_param_groups = groups
        return self._sup_param_groups

    # ---- per-update bookkeeping -------------------------------------------------

    def before_gradient_based_update(self, *, timesteps: Dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        if self._sup_gae is not None:
            self._sup_gae.logged_modules.clear()

    def after_gradient_based_update(self, *, timesteps: Dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        # Ratio of the iteration means (not a mean of per-minibatch ratios), so that
        # sup_grad_norm_ratio == sup_grad_norm_policy / sup_grad_norm_value exactly.
        for module_id in list(self._sup_param_groups):
            kp, kv = (module_id, KEY_GRAD_NORM_POLICY), (module_id, KEY_GRAD_NORM_VALUE)
            if kp not in self.metrics or kv not in self.metrics:
                continue
            try:
                p = float(self.metrics.peek(kp))
                v = float(self.metrics.peek(kv))
            except Exception:  # pragma: no cover
                continue
            if math.isnan(p) or math.isnan(v):
                continue  # no minibatch of this module in this update
            ratio = p / v if v > 0 else (math.inf if p > 0 else 0.0)
            self.metrics.log_value((module_id, KEY_GRAD_NORM_RATIO), ratio, window=1)

    # ---- loss-side statistics ---------------------------------------------------

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        loss = super().compute_loss_for_module(
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        )
        try:
            self._sup_loss_stats(module_id, config, batch, fwd_out)
        except Exception as e:  # never break training for a statistic
            logger.warning("supervised learner: loss statistics failed: %r", e)
        return loss

    @torch.no_grad()
    def _sup_loss_stats(self, module_id, config, batch, fwd_out) -> None:
        module = self.module[module_id].unwrapped()
        dist = module.get_train_action_dist_cls().from_logits(
            fwd_out[Columns.ACTION_DIST_INPUTS].detach()
        )
        log_ratio = dist.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP]
        mask = batch.get(Columns.LOSS_MASK)
        if mask is not None:
            log_ratio = log_ratio[mask]
        ratio_m1 = torch.exp(log_ratio) - 1.0
        clip_fraction = (ratio_m1.abs() > config.clip_param).float().mean()
        approx_kl = (ratio_m1 - log_ratio).mean()
        _log_mean(self.metrics, module_id, KEY_CLIP_FRACTION, clip_fraction)
        _log_mean(self.metrics, module_id, KEY_APPROX_KL, approx_kl)

        gae = self._sup_gae
        if gae is None or module_id not in gae.logged_modules:
            # Fallback: the (standardized) advantages the loss reads, per minibatch.
            adv = batch[Postprocessing.ADVANTAGES]
            vt = batch[Postprocessing.VALUE_TARGETS]
            if mask is not None:
                adv, vt = adv[mask], vt[mask]
            vt = vt.float()
            mean, std, skew, kurt = _moments(adv.reshape(-1))
            _log_mean(self.metrics, module_id, KEY_ADV_MEAN, mean)
            _log_mean(self.metrics, module_id, KEY_ADV_STD, std)
            _log_mean(self.metrics, module_id, KEY_ADV_SKEW, skew)
            _log_mean(self.metrics, module_id, KEY_ADV_KURTOSIS, kurt)
            _log_mean(self.metrics, module_id, KEY_ADV_STANDARDIZED, 1.0)
            _log_mean(self.metrics, module_id, KEY_VT_SCALE, vt.abs().mean())
            _log_mean(self.metrics, module_id, KEY_VT_STD, vt.std(correction=0))

    # ---- gradient-side statistics -------------------------------------------------

    def compute_gradients(self, loss_per_module, **kwargs):
        grads = super().compute_gradients(loss_per_module, **kwargs)
        if grads:
            try:
                self._sup_grad_stats(grads)
            except Exception as e:  # never break training for a statistic
                logger.warning("supervised learner: gradient statistics failed: %r", e)
        return grads

    @torch.no_grad()
    def _sup_grad_stats(self, grads) -> None:
        for module_id, (params, g, counts) in self._sup_groups().items():
            grad_list = [grads.get(p) for p in params]
            if any(x is None for x in grad_list):
                # Parameters without a gradient this step (a module not in this
                # minibatch, an unused branch) are left out of the norms.
                keep = [i for i, x in enumerate(grad_list) if x is not None]
                if not keep:
                    continue
                grad_list = [grad_list[i] for i in keep]
                g = g[:, keep]
            sq = torch.stack(torch._foreach_norm(grad_list))
            sq = sq * sq
            per_group = torch.mv(g, sq)  # [policy², value², shared²]
            norms = torch.cat([per_group, per_group.sum().reshape(1)]).sqrt()
            scaler = self._grad_scalers.get(module_id) if self._grad_scalers else None
            scale = getattr(scaler, "_scale", None)
            if isinstance(scale, torch.Tensor):
                # Mixed precision: the gradients are still scaled here; report true norms.
                norms = norms / scale.to(norms.dtype)
            # RLlib's reducers skip NaN: make a NaN norm visible as +inf.
            norms = torch.nan_to_num(norms, nan=float("inf"))
            total = norms[3]
            self.metrics.log_value((module_id, KEY_GRAD_NORM_MEAN), total, reduce="mean", window=_WINDOW)
            self.metrics.log_value((module_id, KEY_GRAD_NORM_MAX), total, reduce="max", window=_WINDOW)
            if counts[0]:
                _log_mean(self.metrics, module_id, KEY_GRAD_NORM_POLICY, norms[0])
            if counts[1]:
                _log_mean(self.metrics, module_id, KEY_GRAD_NORM_VALUE, norms[1])
            if counts[2]:
                _log_mean(self.metrics, module_id, KEY_GRAD_NORM_SHARED, norms[2])


def use_supervised_learner(config):
    """Make a PPOConfig train with ``SupervisedPPOTorchLearner``; returns the config.

    RLlib 2.60 takes the learner class through ``config.learners(learner_class=...)``
    (``config.training(learner_class=...)`` still works but is deprecated and warns).
    A config that already names a subclass of ``SupervisedPPOTorchLearner`` is left
    as it is; one that names another custom learner raises ``ValueError`` (subclass
    ``SupervisedPPOTorchLearner`` instead, or the sup_ metrics would silently vanish).
    """
    from ray.rllib.algorithms.ppo import PPOConfig

    if not isinstance(config, PPOConfig):
        raise ValueError(f"use_supervised_learner needs a PPOConfig, got {type(config).__name__}")
    if getattr(config, "framework_str", "torch") != "torch":
        raise ValueError(f"use_supervised_learner needs framework='torch', got {config.framework_str!r}")
    current = getattr(config, "_learner_class", None)
    if current is not None and not (
        isinstance(current, type) and issubclass(current, SupervisedPPOTorchLearner)
    ):
        if current is not PPOTorchLearner:
            raise ValueError(
                f"config already uses learner class {getattr(current, '__name__', current)!r}; "
                "make it subclass actors.learner.SupervisedPPOTorchLearner"
            )
    if current is None or current is PPOTorchLearner:
        config.learners(learner_class=SupervisedPPOTorchLearner)
    return config
