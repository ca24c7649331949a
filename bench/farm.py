"""The farm: jobs per minute with 1 and 2 workers, and the dispatch overhead per job.

    python bench/farm.py [--broker rabbitmq|redis] [--jobs 30] [--rounds 2] [--overhead-jobs 20]

Real `impasto worker` processes on the local broker and PostgreSQL (a virtual host / a
Redis database and a schema of their own, removed afterwards), small previews (32 px,
2 L-BFGS iterations, one scale, one thread per worker). In one run:

1. one worker, warmed up, renders ``--jobs`` previews queued at once: jobs/min from the
   first enqueue to the last finish (the baseline);
2. a second worker joins (warmed up too) and the same number of jobs is rendered;
   ``--rounds`` times (the second worker stops before each round's single-worker part);
3. with both workers idle, ``--overhead-jobs`` jobs are enqueued one at a time: the
   dispatch overhead is each job's claim time minus its enqueue time (commit, notify,
   publish, delivery, claim), as the job table records them.

Uses the test harness in tests/farm (``farm_support``), so it needs the test extras.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "farm"))

import farm_support  # the test harness, found through the path above
from farm_support import Farm

AMQP_URL = os.environ.get("IMPASTO_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("IMPASTO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("IMPASTO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def throughput(farm: Farm, count: int) -> dict:
    """``count`` jobs queued at once: jobs/min (first enqueue to last finish), the mean seconds
    a job took on its worker, the workers' busy share of the span, and each worker's count."""
    ids = farm.enqueue(count)
    rows = farm.wait_finished(ids, seconds=60 * 30)
    failed = [row.id for row in rows if row.status.value != "done"]
    if failed:
        raise SystemExit(f"jobs {failed} did not finish: {farm.summary(failed)}")
    span = (max(row.finished_at for row in rows) - min(row.created_at for row in rows)).total_seconds()
    busy = [(row.finished_at - row.started_at).total_seconds() for row in rows]
    shares: dict[str, int] = {}
    for row in rows:
        shares[row.worker] = shares.get(row.worker, 0) + 1
    return {"per_min": 60 * count / span, "job_s": statistics.mean(busy),
            "busy": sum(busy) / (span * len(shares)), "shares": shares}


def warm_up(farm: Farm, name: str) -> None:
    """Jobs until ``name`` has rendered one (its render process loads torch and the weights)."""
    while True:
        rows = farm.wait_finished(farm.enqueue(2), seconds=600)
        if any(row.worker == name for row in rows):
            return


def overhead_ms(farm: Farm, count: int) -> list[float]:
    """Enqueue → claim of jobs queued one at a time to idle workers, in milliseconds."""
    times = []
    for _ in range(count):
        row, = farm.wait_finished(farm.enqueue(1), seconds=600)
        farm.wait_emails([row.portrait_id])
        times.append((row.started_at - row.created_at).total_seconds() * 1000)
        time.sleep(0.2)   # let the worker finish its bookkeeping and wait on the broker again
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=["rabbitmq", "redis"], default="rabbitmq")
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--overhead-jobs", type=int, default=20)
    args = parser.parse_args()
    broker = (farm_support.amqp_vhost(AMQP_URL) if args.broker == "rabbitmq"
              else farm_support.redis_database(REDIS_URL))
    with (tempfile.TemporaryDirectory(prefix="impasto-bench-farm-") as root, broker as broker_url,
          farm_support.pg_schema(POSTGRES_URL) as database_url):
        farm = Farm(Path(root), broker_url=broker_url, database_url=database_url)
        try:
            run(farm, args)
        finally:
            farm.close()


def run(farm: Farm, args: argparse.Namespace) -> None:
    """Rounds of one worker, then two (the second stopped again between rounds): the load of
    anything else on the machine then weighs on both sides alike."""
    print(f"broker: {args.broker}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start")
    farm.start_worker("b1")
    farm.wait_ready("b1")
    warm_up(farm, "b1")
    rounds = []
    for _ in range(args.rounds):
        if "b2" in farm.procs:
            farm.stop_worker("b2")
        one = throughput(farm, args.jobs)
        farm.start_worker("b2")
        farm.wait_ready("b2")
        warm_up(farm, "b2")
        rounds.append((one, throughput(farm, args.jobs)))
    times = overhead_ms(farm, args.overhead_jobs)
    print("\n| round | workers | jobs | jobs/min | × | s per job on its worker | workers busy |")
    print("|---|---|---|---|---|---|---|")
    for index, (one, two) in enumerate(rounds, start=1):
        for workers, result in ((1, one), (2, two)):
            print(f"| {index} | {workers} | {args.jobs} | {result['per_min']:.1f} | "
                  f"{result['per_min'] / one['per_min']:.2f} | {result['job_s']:.2f} | {result['busy']:.0%} |")
    one, two = (statistics.mean(r[0]["per_min"] for r in rounds), statistics.mean(r[1]["per_min"] for r in rounds))
    print(f"\nmean: 1 worker {one:.1f} jobs/min, 2 workers {two:.1f} jobs/min: **{two / one:.2f}×**")
    print(f"jobs per worker with two, by round: {[r[1]['shares'] for r in rounds]}")
    print(f"dispatch overhead (enqueue → claim), {len(times)} jobs to idle workers: "
          f"median {statistics.median(times):.1f} ms, min {min(times):.1f} ms, max {max(times):.1f} ms")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
