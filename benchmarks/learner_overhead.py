"""Overhead of SupervisedPPOTorchLearner over RLlib's stock PPOTorchLearner.

Builds two PPO algorithms on CartPole-v1 with the same config and seed, one with
each learner, in one process (num_learners=0, num_env_runners=0), and measures
the learner update three ways:

A. ``algo.train()`` alternately (ABBA order, so drift and a neighbour's load hit
   both alike), reading ``timers/learner_update_timer`` from each result. RLlib
   2.60 logs that timer with ``reduce="ema"`` (coefficient 0.01) at the
   algorithm's root logger, so the raw field is a slow moving average dominated
   by the first iterations; the per-iteration value is recovered exactly as
   ``x_t = (E_t - 0.99 E_{t-1}) / 0.01``. A ``perf_counter`` around
   ``algo.learner_group.update`` (the same span) is recorded alongside.
B. Controlled: one batch of episodes is sampled per repetition and a copy of it
   is given to each learner group's ``update`` (same call PPO makes), in
   alternating order. No sampling between the two timed calls, many more
   repetitions: the figure to trust on a busy machine.
C. Where the cost goes: the three supervised hooks are timed inside the
   supervised learner.

    python benchmarks/learner_overhead.py [--reps-train 20] [--reps-update 100]
        [--batch 1000 --minibatch 250 --epochs 2] [--threads N]

Prints markdown tables. Starts (and shuts down) its own local Ray with 2 CPUs.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

EMA = 0.01  # RLlib's default EMA coefficient for MetricsLogger.log_time()


def build(learner_cls, args):
    from ray.rllib.algorithms.ppo import PPOConfig

    cfg = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0)
        .training(
            train_batch_size_per_learner=args.batch,
            minibatch_size=args.minibatch,
            num_epochs=args.epochs,
        )
        .learners(learner_class=learner_cls)
        .debugging(seed=args.seed)
    )
    algo = cfg.build_algo()
    wall = []
    orig = algo.learner_group.update

    @functools.wraps(orig)
    def timed_update(*a, **kw):
        t0 = time.perf_counter()
        try:
            return orig(*a, **kw)
        finally:
            wall.append(time.perf_counter() - t0)

    algo.learner_group.update = timed_update
    return algo, wall


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def geo_mean(xs):
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else float("nan")


def row(label, a, b, ratios):
    r = median(ratios)
    return (f"| {label} | {len(ratios)} | {a * 1e3:.1f} | {b * 1e3:.1f} | {r:.4f} | "
            f"{geo_mean(ratios):.4f} | {b / a:.4f} | {100 * (r - 1):+.2f}% |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps-train", type=int, default=20, help="section A: measured train() calls per learner")
    ap.add_argument("--reps-update", type=int, default=100, help="section B: measured update() calls per learner")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--minibatch", type=int, default=250)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    ap.add_argument("--profile-iters", type=int, default=10)
    args = ap.parse_args(argv)

    import ray
    import torch
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    from actors.learner import SupervisedPPOTorchLearner

    if args.threads:
        torch.set_num_threads(args.threads)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        algos = {"stock": build(PPOTorchLearner, args), "supervised": build(SupervisedPPOTorchLearner, args)}
        names = list(algos)

        # ---- A: full training iterations -------------------------------------------
        ema_prev = {k: None for k in algos}
        timer = {k: [] for k in algos}
        wall_a = {k: [] for k in algos}
        for rep in range(args.warmup + args.reps_train):
            for name in (names if rep % 2 == 0 else names[::-1]):
                algo, w = algos[name]
                n_before = len(w)
                result = algo.train()
                ema = float(result["timers"]["learner_update_timer"])
                prev = ema_prev[name]
                ema_prev[name] = ema
                if rep >= args.warmup:
                    timer[name].append((ema - (1.0 - EMA) * prev) / EMA)
                    wall_a[name].extend(w[n_before:])

        # ---- B: same episodes to both learners ---------------------------------------
        sampler = algos["stock"][0].env_runner_group.local_env_runner
        wall_b = {k: [] for k in algos}
        lifetime = 0
        for rep in range(args.warmup + args.reps_update):
            episodes = sampler.sample(num_timesteps=args.batch)
            lifetime += sum(len(e) for e in episodes)
            copies = {k: copy.deepcopy(episodes) for k in names}
            for name in (names if rep % 2 == 0 else names[::-1]):
                algo, w = algos[name]
                n_before = len(w)
                algo.learner_group.update(
                    episodes=copies[name],
                    timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: lifetime},
                    num_epochs=args.epochs,
                    minibatch_size=args.minibatch,
                    shuffle_batch_per_epoch=True,
                )
                if rep >= args.warmup:
                    wall_b[name].extend(w[n_before:])

        # ---- C: cost of the hooks --------------------------------------------------
        algo, w = algos["supervised"]
        learner = algo.learner_group._learner
        hooks = {}

        def timed(obj, attr, label):
            f = getattr(obj, attr)
            hooks[label] = [0.0, 0]

            def g(*a, **kw):
                t0 = time.perf_counter()
                try:
                    return f(*a, **kw)
                finally:
                    hooks[label][0] += time.perf_counter() - t0
                    hooks[label][1] += 1

            setattr(obj, attr, g)

        timed(learner, "_sup_loss_stats", "clip fraction, approx KL (per minibatch)")
        timed(learner, "_sup_grad_stats", "gradient norms (per minibatch)")
        if learner._sup_gae is not None:
            timed(learner._sup_gae, "_log_raw_stats", "raw advantage, value-target stats (per update)")
        n0 = len(w)
        for _ in range(args.profile_iters):
            algo.train()
        prof_update = sum(w[n0:])

        # ---- report --------------------------------------------------------------
        print()
        print(f"PPO CartPole-v1, train_batch_size_per_learner={args.batch}, minibatch_size="
              f"{args.minibatch}, num_epochs={args.epochs}, num_env_runners=0, num_learners=0, "
              f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
              f"load average at end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print()
        print("| measure | pairs | stock median (ms) | supervised median (ms) | median paired ratio | "
              "geo-mean paired ratio | ratio of medians | overhead (median paired) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        pairs = lambda d: [s / b for s, b in zip(d["supervised"], d["stock"])]  # noqa: E731
        print(row("A: timers/learner_update_timer (de-EMA'd), train()", median(timer["stock"]),
                  median(timer["supervised"]), pairs(timer)))
        print(row("A: wall of learner_group.update, train()", median(wall_a["stock"]),
                  median(wall_a["supervised"]), pairs(wall_a)))
        print(row("B: wall of learner_group.update, same episodes", median(wall_b["stock"]),
                  median(wall_b["supervised"]), pairs(wall_b)))
        q = sorted(pairs(wall_b))
        if q:
            print()
            print(f"B paired ratios: min {q[0]:.3f}, p10 {q[len(q) // 10]:.3f}, p25 {q[len(q) // 4]:.3f}, "
                  f"median {median(q):.3f}, p75 {q[(3 * len(q)) // 4]:.3f}, p90 {q[(9 * len(q)) // 10]:.3f}, "
                  f"max {q[-1]:.3f}")
        print()
        print(f"C: time inside the supervised hooks ({args.profile_iters} train() iterations, "
              f"{prof_update * 1e3:.0f} ms of learner update time):")
        print()
        print("| hook | calls | total (ms) | per call (us) | share of update time |")
        print("| --- | ---: | ---: | ---: | ---: |")
        tot = 0.0
        for label, (t, n) in hooks.items():
            if n:
                tot += t
                print(f"| {label} | {n} | {t * 1e3:.2f} | {t / n * 1e6:.0f} | {100 * t / prof_update:.2f}% |")
        print(f"| all hooks | | {tot * 1e3:.2f} | | {100 * tot / prof_update:.2f}% |")
        print()
        print("(C leaves out RLlib reducing the ~15 extra metric keys once per update.)")
        for algo, _ in algos.values():
            algo.stop()
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
