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
                          over the loss-masked rows of all minibatches of the
                          iteration (ratio = pi_new / pi_old exactly as in
                          RLlib's loss: that minibatch's forward pass)
sup_approx_kl             CleanRL's approx_kl, mean((ratio - 1) - log ratio),
                          over the same rows
sup_vf_clip_fraction      fraction of the same rows whose unclipped value
                          loss (vf_pred - value_target)^2 exceeds
                          vf_clip_param, i.e. where RLlib's clamp zeroes the
                          value gradient (vf_pred is the loss's own value
                          output; only with use_critic)
sup_advantage_mean        advantages before RLlib's standardization (see
sup_advantage_std         below), over the whole train batch (loss-masked
sup_advantage_skew        rows only); std with ddof=0, kurtosis is excess
sup_advantage_kurtosis    kurtosis (0 for a normal distribution)
sup_advantage_standardized  0.0: the four above are raw (pre-standardization);
                          1.0: raw ones were not accessible and they describe
                          the standardized advantages the loss reads
sup_value_target_scale    mean |value target| over the train batch (loss-masked rows)
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
the standardized advantages seen in the loss (pooled over the loss-masked
rows of the update's minibatches) and says so in ``sup_advantage_standardized``. Skew and kurtosis are unchanged by
standardization, so only mean and std differ between the two.

Aggregation. Per minibatch the learner does only what must happen then:
one ``torch._foreach_norm`` over the module's gradients right after
``backward()`` (before RLlib's clipping and the optimizer step), appended to
a per-module buffer, plus keeping references to the loss inputs it already
has (action-distribution inputs, actions, old log-probs, loss mask). No host
sync and no MetricsLogger call per minibatch. At the end of the update
(``after_gradient_based_update``, which RLlib calls once per ``update()``,
before it reduces the learner's metrics) the buffers are reduced over all
minibatches of all epochs (mean, or max for sup_grad_norm_max; clip
fraction and KL over all rows at once), moved to the host in one transfer,
and logged with ``log_value(..., reduce="mean", window=<large>)`` (or
``reduce="max"``, a running max, for sup_grad_norm_max; ``actors.compat.log_per_iteration``).
RLlib clears a stats object's values when the learner reduces its metrics at
the end of ``update()``, so each result holds exactly one iteration; several
updates between two reduces would give the mean of their means / max of
their maxes. (Not ``window=None``: RLlib's "mean" is then a pairwise running
mean that overweights the last value; not the default EMA either, which
carries over between iterations.) Several learners are merged by RLlib as the
mean of their means and the max of their maxes; their gradients are
all-reduced before we read them, so the gradient norms agree.

Cost (benchmarks/learner_overhead.py, 2-core CPU, CartPole, batch 1000,
minibatch 250, 2 epochs = 9 minibatches, ~90-105 ms per update): about 1 to
1.3% of the update's wall time and 2 to 2.7% of its CPU time, i.e. 1.4 ms
(idle machine) to 3 ms (busy one) per update: ~50-115 us per minibatch for
the gradient norms (mostly the norm itself) and, once per update, the clip
fraction/KL pass, the raw advantage statistics and RLlib's reduce of the 13
extra keys (~35-45 us each; 14 with sup_vf_clip_fraction). With 189 minibatches per update (batch 4000,
minibatch 128, 6 epochs) it is ~1.6%. Pushing every minibatch's values
through ``MetricsLogger.log_value`` instead gives the same numbers at several
times the cost (a log_value call ~3-6 us, reducing a key of tensor values
~50-70 us, each tensor op on these small tensors ~1.5 us).

Remote learners (``num_learners >= 1``) unpickle this class in their own
process: ``actors`` must be importable there (the package installed, or the
repository root on the workers' PYTHONPATH, e.g. through ``runtime_env``).

Non-finite gradients propagate: a NaN gradient norm in any minibatch makes the
iteration's mean and max NaN. With a torch GradScaler (mixed precision) the
norms are divided by the current scale, i.e. they are the unscaled norms. With
``vf_share_layers=True`` the shared encoder's gradient counts in the global
norm and in sup_grad_norm_shared, not in the branch norms.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Optional

import torch

from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical
from ray.rllib.evaluation.postprocessing import Postprocessing

from actors import compat

logger = logging.getLogger(__name__)

# Larger than the number of updates between two metric reduces of any sane
# config; RLlib empties the window at every reduce.
_WINDOW = 100_000

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
KEY_VF_CLIP_FRACTION = "sup_vf_clip_fraction"
KEY_ADV_MEAN = "sup_advantage_mean"
KEY_ADV_STD = "sup_advantage_std"
KEY_ADV_SKEW = "sup_advantage_skew"
KEY_ADV_KURTOSIS = "sup_advantage_kurtosis"
KEY_ADV_STANDARDIZED = "sup_advantage_standardized"
KEY_VT_SCALE = "sup_value_target_scale"

# The keys every update produces for a default PPO module.
SUP_KEYS = (
    KEY_GRAD_NORM_MAX, KEY_GRAD_NORM_MEAN, KEY_GRAD_NORM_POLICY, KEY_GRAD_NORM_VALUE,
    KEY_GRAD_NORM_RATIO, KEY_APPROX_KL, KEY_CLIP_FRACTION, KEY_VF_CLIP_FRACTION, KEY_ADV_MEAN, KEY_ADV_STD,
    KEY_ADV_SKEW, KEY_ADV_KURTOSIS, KEY_ADV_STANDARDIZED, KEY_VT_SCALE,
)
# Order of the per-batch statistics.
_BATCH_STAT_KEYS = (KEY_ADV_MEAN, KEY_ADV_STD, KEY_ADV_SKEW, KEY_ADV_KURTOSIS, KEY_VT_SCALE)


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


def _raw_batch_stats(adv: "torch.Tensor", vt: "torch.Tensor") -> "torch.Tensor":
    """[mean, m2, m3, m4 of adv (central moments), mean |vt|] as a 5-vector.

    Few tensor ops on purpose: the division into std, skew and kurtosis happens on
    the host, on five floats (``_finish_batch_stats``).
    """
    x = adv.reshape(-1)
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    mean = x.mean()
    d = x - mean
    d2 = d * d
    central = torch.stack([d2, d2 * d, d2 * d2]).mean(1)
    return torch.cat([mean.reshape(1), central, vt.reshape(-1).abs().mean().to(x.dtype).reshape(1)])


def _finish_batch_stats(mean, m2, m3, m4, vt_scale) -> List[float]:
    """mean, std (ddof=0), skew, excess kurtosis, value-target scale, as floats.

    Skew and kurtosis are 0 when the spread is (numerically) zero rather than NaN,
    so a constant batch is not mistaken for a non-finite run.
    """
    if m2 > 1e-12:
        skew, kurt = m3 / m2 ** 1.5, m4 / (m2 * m2) - 3.0
    elif m2 == m2:  # not NaN
        skew = kurt = 0.0
    else:
        skew = kurt = float("nan")
    return [mean, math.sqrt(m2) if m2 >= 0 else float("nan"), skew, kurt, vt_scale]


def _moments(x: "torch.Tensor") -> List[float]:
    """mean, std (ddof=0), skew, excess kurtosis of a tensor, as floats."""
    return _finish_batch_stats(*_raw_batch_stats(x, x.new_zeros(1)).tolist())[:4]


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
                with torch.no_grad():
                    self._log_raw_stats(out, captured, metrics)
            except Exception as e:  # never break training for a statistic
                logger.warning("supervised learner: raw advantage statistics failed: %r", e)
        return out

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
            if raw_adv.numel() == 0:
                continue
            values = _finish_batch_stats(*_raw_batch_stats(raw_adv, vt).tolist())  # one host transfer
            for key, v in zip(_BATCH_STAT_KEYS, values):
                compat.log_per_iteration(metrics, (module_id, key), v, "mean", _WINDOW)
            compat.log_per_iteration(metrics, (module_id, KEY_ADV_STANDARDIZED), 0.0, "mean", _WINDOW)
            self.logged_modules.add(module_id)


class SupervisedPPOTorchLearner(PPOTorchLearner):
    """PPOTorchLearner that logs gradient, clipping, KL and advantage statistics.

    See the module docstring for the keys. Behaviour of the update is unchanged:
    the loss, gradients and optimizer step are RLlib's.
    """

    def build(self) -> None:
        super().build()
        # module_id -> (params ordered policy, value, shared; grouping matrix [3, P]; counts)
        self._sup_param_groups: Dict[str, tuple] = {}
        # Per-minibatch buffers of this update, module_id -> list.
        self._sup_grad_buf: Dict[str, list] = {}  # (per-parameter norms, grouping matrix)
        self._sup_loss_buf: Dict[str, list] = {}  # references to the loss inputs
        self._sup_gae: Optional[SupervisedGeneralAdvantageEstimation] = None
        pipeline = compat.learner_connector(self)
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
        self._sup_grad_buf.clear()
        self._sup_loss_buf.clear()
        if self._sup_gae is not None:
            self._sup_gae.logged_modules.clear()

    def after_gradient_based_update(self, *, timesteps: Dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        try:
            with torch.no_grad():
                self._sup_flush()
        except Exception as e:  # never break training for a statistic
            logger.warning("supervised learner: logging statistics failed: %r", e)
        finally:
            self._sup_grad_buf.clear()
            self._sup_loss_buf.clear()

    def _sup_flush(self) -> None:
        """Reduce this update's minibatch buffers and log one value per key."""
        for module_id in set(self._sup_grad_buf) | set(self._sup_loss_buf):
            parts, names = [], []
            counts = self._sup_groups().get(module_id, (None, None, [1, 1, 0]))[2]
            gbuf = self._sup_grad_buf.get(module_id)
            if gbuf:
                norms = _grad_norms(gbuf)  # [minibatches, 4]
                parts += [norms.mean(0), norms[:, 0].max().reshape(1)]
                names += [KEY_GRAD_NORM_MEAN, KEY_GRAD_NORM_POLICY, KEY_GRAD_NORM_VALUE,
                          KEY_GRAD_NORM_SHARED, KEY_GRAD_NORM_MAX]
            lbuf = self._sup_loss_buf.get(module_id)
            fallback = False
            if lbuf:
                vec, fallback, has_vf = self._sup_loss_vector(module_id, lbuf)
                parts.append(vec)
                names += [KEY_CLIP_FRACTION, KEY_APPROX_KL] + ([KEY_VF_CLIP_FRACTION] if has_vf else [])
            if not parts:
                continue
            flat = torch.cat([t.to(torch.float64) for t in parts]).tolist()  # one host transfer
            values = dict(zip(names, flat))
            if fallback:
                values.update(zip(_BATCH_STAT_KEYS, _finish_batch_stats(*flat[len(names):])))
                values[KEY_ADV_STANDARDIZED] = 1.0
            if gbuf:
                for key, n in zip((KEY_GRAD_NORM_POLICY, KEY_GRAD_NORM_VALUE, KEY_GRAD_NORM_SHARED), counts):
                    if not n:  # no parameters in that group: no key rather than a 0
                        del values[key]
                if counts[0] and counts[1]:
                    p, v = values[KEY_GRAD_NORM_POLICY], values[KEY_GRAD_NORM_VALUE]
                    # Ratio of the iteration means (not a mean of per-minibatch ratios),
                    # so sup_grad_norm_ratio == sup_grad_norm_policy / sup_grad_norm_value.
                    values[KEY_GRAD_NORM_RATIO] = p / v if v > 0 else (float("inf") if p > 0 else 0.0)
            for key, value in values.items():
                if key == KEY_GRAD_NORM_MAX:
                    # "max" without a window is a running max, cleared at each reduce
                    # (and cheaper to reduce than a windowed one).
                    compat.log_per_iteration(self.metrics, (module_id, key), value, "max")
                else:
                    compat.log_per_iteration(self.metrics, (module_id, key), value, "mean", _WINDOW)

    # ---- loss-side statistics ---------------------------------------------------

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        # The value predictions the loss computes (and clamps), captured by observing
        # its module.compute_values call: no extra forward pass.
        values: list = []
        module = restore = None
        if config.use_critic:
            try:
                module = self.module[module_id].unwrapped()
                original = module.compute_values
                restore = original if "compute_values" in vars(module) else None

                def _capturing_compute_values(*a, **kw):
                    out = original(*a, **kw)
                    values.append(out)
                    return out

                module.compute_values = _capturing_compute_values
            except Exception:  # pragma: no cover - exotic module types
                module = None
        try:
            loss = super().compute_loss_for_module(
                module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
            )
        finally:
            if module is not None:
                if restore is not None:
                    module.compute_values = restore
                else:
                    try:
                        del module.compute_values
                    except AttributeError:  # pragma: no cover
                        pass
        try:
            self._sup_loss_stats(module_id, config, batch, fwd_out, values[-1] if values else None)
        except Exception as e:  # never break training for a statistic
            logger.warning("supervised learner: loss statistics failed: %r", e)
        return loss

    def _sup_loss_stats(self, module_id, config, batch, fwd_out, vf_preds=None) -> None:
        """Keep references to what the clip fraction and KL need; computed once per update.

        The action-distribution inputs are those of this minibatch's forward pass
        (before this minibatch's optimizer step), so the ratio is exactly the one
        in RLlib's loss.
        """
        gae = self._sup_gae
        fallback = gae is None or module_id not in gae.logged_modules
        self._sup_loss_buf.setdefault(module_id, []).append((
            fwd_out[Columns.ACTION_DIST_INPUTS].detach(),
            batch[Columns.ACTIONS],
            batch[Columns.ACTION_LOGP],
            batch.get(Columns.LOSS_MASK),
            config.clip_param,
            batch[Postprocessing.ADVANTAGES] if fallback else None,
            batch[Postprocessing.VALUE_TARGETS] if fallback else None,
            vf_preds.detach() if isinstance(vf_preds, torch.Tensor) else None,
            batch[Postprocessing.VALUE_TARGETS] if isinstance(vf_preds, torch.Tensor) else None,
            config.vf_clip_param,
        ))

    def _sup_loss_vector(self, module_id, entries):
        """[clip_fraction, approx_kl(, vf_clip_fraction)] (+ fallback raw batch statistics),
        pooled over the loss-masked rows of all minibatches of the update; also whether
        the fallback statistics and the vf clip fraction are in it."""
        logits, actions, old_logp, masks, clips, advs, vts, vf_preds, vf_targets, vf_clips = zip(*entries)
        logits, actions, old_logp = torch.cat(logits), torch.cat(actions), torch.cat(old_logp)
        dist_cls = self.module[module_id].unwrapped().get_train_action_dist_cls()
        if dist_cls is TorchCategorical:
            # Same value as TorchCategorical.from_logits(logits).logp(actions), cheaper.
            logp = torch.log_softmax(logits, dim=-1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        else:
            logp = dist_cls.from_logits(logits).logp(actions)
        log_ratio = logp - old_logp
        ratio_m1 = torch.exp(log_ratio) - 1.0
        clip = clips[-1]  # the module's config.clip_param (fixed within an update)
        # CleanRL: clipfrac = mean(|ratio - 1| > clip), approx_kl = mean((ratio - 1) - log ratio)
        rows = [(ratio_m1.abs() > clip).to(log_ratio.dtype), ratio_m1 - log_ratio]
        has_vf = all(v is not None and v.shape == t.shape for v, t in zip(vf_preds, vf_targets))
        if has_vf:
            # RLlib: vf_loss = clamp((vf_pred - value_target)^2, 0, vf_clip_param)
            sq = (torch.cat(vf_preds).reshape(-1) - torch.cat(vf_targets).reshape(-1)) ** 2
            rows.append((sq > vf_clips[-1]).to(log_ratio.dtype))
        per_row = torch.stack(rows)
        mask = None if any(m is None for m in masks) else torch.cat(masks).bool()
        if mask is None:
            vec = per_row.mean(1)
        else:
            # Masked mean without boolean indexing (no host sync); masked-out rows
            # (RLlib's artificial bootstrap step) may hold inf and are dropped.
            vec = torch.where(mask, per_row, 0.0).sum(1) / mask.sum()
        if advs[0] is None:
            return vec, False, has_vf
        adv, vt = torch.cat(advs), torch.cat(vts)
        if mask is not None:
            adv, vt = adv[mask], vt[mask]
        return torch.cat([vec.to(torch.float64), _raw_batch_stats(adv, vt).to(torch.float64)]), True, has_vf

    # ---- gradient-side statistics -------------------------------------------------

    def compute_gradients(self, loss_per_module, **kwargs):
        grads = super().compute_gradients(loss_per_module, **kwargs)
        if grads:
            try:
                self._sup_grad_stats(grads)
            except Exception as e:  # never break training for a statistic
                logger.warning("supervised learner: gradient statistics failed: %r", e)
        return grads

    def _sup_grad_stats(self, grads) -> None:
        """Per-parameter norms of this minibatch's gradients (pre-clip); reduced per update.

        Gradients do not require grad, so no autograd bookkeeping happens here even
        without ``torch.no_grad()`` (whose enter/exit would cost more than the ops).
        """
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
            norms = torch._foreach_norm(grad_list)  # list of 0-d tensors, stacked per update
            scale = getattr(compat.grad_scaler(self, module_id), "_scale", None)  # torch.amp.GradScaler's
            if isinstance(scale, torch.Tensor):
                # Mixed precision: the gradients are still scaled here; report true norms
                # (divide now: the scaler updates its scale in place after the step).
                norms = list(torch.stack(norms) / scale.to(norms[0].dtype))
            self._sup_grad_buf.setdefault(module_id, []).append((norms, g))


def _grad_norms(entries) -> "torch.Tensor":
    """[minibatches, 4] of [total, policy, value, shared] norms from per-parameter norms."""
    g0 = entries[0][1]
    if all(g is g0 for _, g in entries):
        flat = [n for norms, _ in entries for n in norms]
        sq = torch.stack(flat).float().reshape(len(entries), -1)  # [minibatches, P]
        per_group = (sq * sq) @ g0.t()  # [minibatches, 3]
    else:
        per_group = torch.stack([torch.mv(g, torch.stack(n).float() ** 2) for n, g in entries])
    return torch.cat([per_group.sum(1, keepdim=True), per_group], dim=1).sqrt()


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
    current = compat.explicit_learner_class(config)
    if current is not None and not (
        isinstance(current, type) and issubclass(current, SupervisedPPOTorchLearner)
    ):
        if current is not PPOTorchLearner:
            raise ValueError(
                f"config already uses learner class {getattr(current, '__name__', current)!r}; "
                "make it subclass actors.learner.SupervisedPPOTorchLearner"
            )
    if current is None or current is PPOTorchLearner:
        compat.set_learner_class(config, SupervisedPPOTorchLearner)
    return config
