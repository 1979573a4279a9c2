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
    times = []  # (wall, process cpu) per learner_group.update call
    orig = algo.learner_group.update

    @functools.wraps(orig)
    def timed_update(*a, **kw):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return orig(*a, **kw)
        finally:
            times.append((time.perf_counter() - t0, time.process_time() - c0))

    algo.learner_group.update = timed_update
    return algo, times


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def row(label, stock, sup):
    """One table row from paired samples (stock[i] and sup[i] ran back to back)."""
    ratios = [b / a for a, b in zip(stock, sup)]
    a, b = median(stock), median(sup)
    r = median(ratios)
    return (f"| {label} | {len(ratios)} | {a * 1e3:.1f} | {b * 1e3:.1f} | {r:.4f} | "
            f"{b / a:.4f} | {quantile(sup, 0.1) / quantile(stock, 0.1):.4f} | {100 * (r - 1):+.2f}% |")


def _write_results(args, times_b, col) -> None:
    """Section B's paired medians into results/learner_overhead.json (one entry per config, merged)."""
    import json

    from benchmarks.results_io import RESULTS, write_results

    entry = {"batch": args.batch, "minibatch": args.minibatch, "epochs": args.epochs}
    for i, what in ((0, "wall"), (1, "cpu")):
        stock, sup = col(times_b, "stock", i), col(times_b, "supervised", i)
        entry[f"{what}_stock_ms"] = 1e3 * median(stock)
        entry[f"{what}_supervised_ms"] = 1e3 * median(sup)
        entry[f"{what}_overhead_percent"] = 100 * (median([b / a for a, b in zip(stock, sup)]) - 1)
        entry["pairs"] = len(stock)
    old = RESULTS / "learner_overhead.json"
    configs = json.loads(old.read_text())["figures"]["configs"] if old.exists() else []
    configs = [c for c in configs if (c["batch"], c["minibatch"], c["epochs"]) != (args.batch, args.minibatch,
                                                                                   args.epochs)] + [entry]
    configs.sort(key=lambda c: (c["batch"], c["minibatch"], c["epochs"]))
    md = ["| config | pairs | wall per update, stock / supervised | overhead | CPU per update, stock / supervised "
          "| overhead |", "|---|---:|---:|---:|---:|---:|"]
    md += [f"| batch {c['batch']}, minibatch {c['minibatch']}, {c['epochs']} epochs | {c['pairs']} | "
           f"{c['wall_stock_ms']:.1f} / {c['wall_supervised_ms']:.1f} ms | {c['wall_overhead_percent']:+.1f} % | "
           f"{c['cpu_stock_ms']:.1f} / {c['cpu_supervised_ms']:.1f} ms | {c['cpu_overhead_percent']:+.1f} % |"
           for c in configs]
    write_results("learner_overhead", "# Instrumented learner overhead (section B: the same episodes to both "
                  "learners, interleaved; median of paired ratios)\n\n" + "\n".join(md), {"configs": configs})


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

    # address="local": a fresh local Ray, never a cluster someone else started here.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        algos = {"stock": build(PPOTorchLearner, args), "supervised": build(SupervisedPPOTorchLearner, args)}
        names = list(algos)

        # ---- A: full training iterations -------------------------------------------
        ema_prev = {k: None for k in algos}
        timer = {k: [] for k in algos}
        times_a = {k: [] for k in algos}
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
                    times_a[name].extend(w[n_before:])

        # ---- B: same episodes to both learners ---------------------------------------
        sampler = algos["stock"][0].env_runner_group.local_env_runner
        times_b = {k: [] for k in algos}
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
                    times_b[name].extend(w[n_before:])

        # ---- C: cost of the hooks --------------------------------------------------
        algo, w = algos["supervised"]
        learner = algo.learner_group._learner
        hooks = {}

        def timed(obj, attr, label):
            f = getattr(obj, attr)
            hooks[label] = [0.0, 0.0, 0]  # wall, cpu of this thread, calls

            def g(*a, **kw):
                t0, c0 = time.perf_counter(), time.thread_time()
                try:
                    return f(*a, **kw)
                finally:
                    hooks[label][0] += time.perf_counter() - t0
                    hooks[label][1] += time.thread_time() - c0
                    hooks[label][2] += 1

            setattr(obj, attr, g)

        timed(learner, "_sup_loss_stats", "keep loss inputs (per minibatch)")
        timed(learner, "_sup_grad_stats", "gradient norms (per minibatch)")
        timed(learner, "_sup_flush", "reduce buffers, clip fraction, KL, log (per update)")
        if learner._sup_gae is not None:
            timed(learner._sup_gae, "_log_raw_stats", "raw advantage stats, log (per update)")
        # RLlib's reduce of the learner's metrics: the extra keys make it longer.
        reduce_cpu = {}
        for name, (a, _) in algos.items():
            lm = a.learner_group._learner.metrics
            f = lm.reduce
            reduce_cpu[name] = []

            def g(*x, _f=f, _acc=reduce_cpu[name], **kw):
                c0 = time.thread_time()
                try:
                    return _f(*x, **kw)
                finally:
                    _acc.append(time.thread_time() - c0)

            lm.reduce = g
        n0 = len(w)
        for _ in range(args.profile_iters):
            for name in names:
                algos[name][0].train()
        prof_wall = sum(t for t, _ in w[n0:])
        prof_cpu = sum(c for _, c in w[n0:])
        extra_reduce = median(reduce_cpu["supervised"]) - median(reduce_cpu["stock"])
        hooks["extra RLlib metrics reduce (per update, median difference)"] = [
            float("nan"), extra_reduce * args.profile_iters, args.profile_iters]

        # ---- report --------------------------------------------------------------
        print()
        print(f"PPO CartPole-v1, train_batch_size_per_learner={args.batch}, minibatch_size="
              f"{args.minibatch}, num_epochs={args.epochs}, num_env_runners=0, num_learners=0, "
              f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
              f"load average at end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print()
        print("| measure | pairs | stock median (ms) | supervised median (ms) | median paired ratio | "
              "ratio of medians | ratio of 10th percentiles | overhead (median paired) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        col = lambda d, k, i: [x[i] for x in d[k]]  # noqa: E731
        print(row("A: timers/learner_update_timer (de-EMA'd), train()", timer["stock"], timer["supervised"]))
        print(row("A: wall of learner_group.update, train()", col(times_a, "stock", 0), col(times_a, "supervised", 0)))
        print(row("A: process CPU of learner_group.update, train()", col(times_a, "stock", 1),
                  col(times_a, "supervised", 1)))
        print(row("B: wall of learner_group.update, same episodes", col(times_b, "stock", 0),
                  col(times_b, "supervised", 0)))
        print(row("B: process CPU of learner_group.update, same episodes", col(times_b, "stock", 1),
                  col(times_b, "supervised", 1)))
        for i, what in ((0, "wall"), (1, "CPU")):
            q = sorted(b / a for a, b in zip(col(times_b, "stock", i), col(times_b, "supervised", i)))
            if q:
                print()
                print(f"B paired {what} ratios: min {q[0]:.3f}, p10 {quantile(q, .1):.3f}, p25 {quantile(q, .25):.3f}, "
                      f"median {median(q):.3f}, p75 {quantile(q, .75):.3f}, p90 {quantile(q, .9):.3f}, max {q[-1]:.3f}")
        print()
        print(f"C: time inside the supervised hooks ({args.profile_iters} train() iterations: "
              f"{prof_wall * 1e3:.0f} ms wall, {prof_cpu * 1e3:.0f} ms process CPU of learner update; "
              f"hooks timed by thread CPU time):")
        print()
        print("| hook | calls | CPU per call (us) | CPU per update (ms) | share of update CPU |")
        print("| --- | ---: | ---: | ---: | ---: |")
        tc = 0.0
        for label, (t, c, n) in hooks.items():
            if n:
                tc += c
                print(f"| {label} | {n} | {c / n * 1e6:.0f} | {c / args.profile_iters * 1e3:.3f} | "
                      f"{100 * c / prof_cpu:.2f}% |")
        print(f"| all | | | {tc / args.profile_iters * 1e3:.3f} | {100 * tc / prof_cpu:.2f}% |")
        print()
        _write_results(args, times_b, col)
        for algo, _ in algos.values():
            algo.stop()
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
