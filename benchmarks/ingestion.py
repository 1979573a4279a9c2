"""Ingestion and verdict latency of one supervisor actor, side by side with a no-op actor.

    python benchmarks/ingestion.py [--trials 100] [--iterations 100] [--concurrent 1000] [--seconds 20]

1. Throughput: the same pre-built batches (100 reports each, every detector on)
   are fed to the real supervisor actor and to a no-op actor with the same
   signature; reports/s for each, and their ratio.
2. Latency: ``--concurrent`` simulated trials, each reporting once per
   ~1 s iteration (jittered) through the single-report path that real
   trials use; p50/p99 of the verdict round trip, real vs no-op.
Writes benchmarks/results/ingestion.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from actors.supervisor_actor import SupervisorActor  # noqa: E402
from supervisor.detectors.synthetic import healthy_stream  # noqa: E402


@ray.remote(num_cpus=0, max_concurrency=1000)
class NoOpActor:
    def open_run(self, *a, **k):
        return {}

    def report_batch(self, run_id, reports):
        return [{"actions": [], "checkpoint": False, "stop": False} for _ in reports]

    async def report(self, run_id, report):
        return {"actions": [], "checkpoint": False, "stop": False}


def batches(trials: int, iterations: int, size: int, prefix: str) -> list[list[dict]]:
    streams = [healthy_stream(iterations, seed=i) for i in range(trials)]
    flat = [{"trial_id": f"{prefix}{t}", "seq": s, "iteration": s + 1, "metrics": streams[t][s]}
            for s in range(iterations) for t in range(trials)]
    return [flat[i:i + size] for i in range(0, len(flat), size)]


def throughput(actor, bs: list[list[dict]], run_id: str, inflight: int = 4) -> float:
    t0 = time.perf_counter()
    pending = []
    for b in bs:
        pending.append(actor.report_batch.remote(run_id, b))
        if len(pending) >= inflight:  # bounded: never pile up calls
            ray.get(pending.pop(0))
    ray.get(pending)
    return sum(len(b) for b in bs) / (time.perf_counter() - t0)


async def latency(actor, run_id: str, n: int, seconds: float, period: float = 1.0) -> list[float]:
    streams = [healthy_stream(64, seed=1000 + i) for i in range(min(n, 50))]
    out: list[float] = []
    stop = time.perf_counter() + seconds

    async def trial(i: int):
        await asyncio.sleep(random.random() * period)
        s = 0
        while time.perf_counter() < stop:
            rep = {"trial_id": f"lat{i}", "seq": s, "iteration": s + 1, "metrics": streams[i % len(streams)][s % 64]}
            t0 = time.perf_counter()
            await actor.report.remote(run_id, rep)
            out.append(1000 * (time.perf_counter() - t0))
            s += 1
            await asyncio.sleep(period * random.uniform(0.8, 1.2))

    await asyncio.gather(*(trial(i) for i in range(n)))
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--concurrent", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tmp = tempfile.mkdtemp()
    sup = SupervisorActor.remote()
    noop = NoOpActor.remote()
    ray.get([sup.open_run.remote("bench", tmp, "bench", "bench"), noop.open_run.remote()])

    rows = []
    real, base = [], []
    for rep in range(3):  # interleaved repetitions, fresh trials each time
        bs = batches(args.trials, args.iterations, args.batch, prefix=f"r{rep}_")
        base.append(throughput(noop, bs, "bench"))
        real.append(throughput(sup, bs, "bench"))
    r_med, b_med = statistics.median(real), statistics.median(base)
    rows.append(("ingestion, reports/s (batches of %d, all detectors)" % args.batch,
                 f"{r_med:,.0f}", f"{b_med:,.0f}", f"{r_med / b_med:.3f}"))

    lat_real = asyncio.run(latency(sup, "bench", args.concurrent, args.seconds))
    lat_noop = asyncio.run(latency(noop, "bench", args.concurrent, args.seconds))
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        a, b = pct(lat_real, q), pct(lat_noop, q)
        rows.append((f"verdict latency {name}, ms ({args.concurrent} concurrent trials, 1 report/s each)",
                     f"{a:.2f}", f"{b:.2f}", f"{a / b:.2f}"))
    table = ["| measure | supervisor | no-op actor | ratio |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    text = "\n".join(table)
    print(text)
    print(f"(latency samples: {len(lat_real)} real, {len(lat_noop)} no-op; cpus={os.cpu_count()})")
    out = Path(__file__).parent / "results" / "ingestion.md"
    out.write_text(text + "\n")
    ray.shutdown()


if __name__ == "__main__":
    main()
