"""``impasto worker``: one render worker of the farm, on one device."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from impasto.cli.common import PROG, UsageError, require_extra, setup_logging, use_log_format
from impasto.cli.options import comma_list

WORKER_EPILOG = """\
One worker per device: on a machine with two GPUs run two, with --device cuda:0 and
--device cuda:1. A worker takes one job at a time; the broker hands the next queued job
to whichever worker is idle. Without --queues, a GPU with 8 GB or more renders previews
and prints, a smaller GPU or a CPU previews only. Every worker of a farm and the shop
use the same database, storage and catalog (IMPASTO_DATABASE_URL, IMPASTO_STORAGE_URL,
IMPASTO_CATALOG_DIR) and the same IMPASTO_PUBLIC_URL, for the links in the emails.
See docs/farm.md."""


def add_worker(commands, common: argparse.ArgumentParser) -> None:
    worker = commands.add_parser(
        "worker", parents=[common], help="render the shop's jobs on this machine's device (a farm worker)",
        description="Run a render worker: take jobs from the broker's queues, render them on DEVICE, "
                    "store the results and record them in the job table.",
        epilog=WORKER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    worker.add_argument("--broker", metavar="URL",
                        help="amqp://user:pass@host:5672/vhost or redis://host:6379/0 "
                             "(default: $IMPASTO_BROKER_URL)")
    worker.add_argument("--queues", type=comma_list(str), metavar="QUEUE[,QUEUE]",
                        help="preview, print or both (default: from the device's memory)")
    worker.add_argument("--device", default="auto", metavar="DEVICE",
                        help="auto, cpu, cuda or cuda:N (default: auto: the first GPU, else the CPU)")
    worker.add_argument("--name", help="this worker's name in the admin (default: HOST:DEVICE:PID)")
    worker.add_argument("--database-url", metavar="URL", help="the job table (default: $IMPASTO_DATABASE_URL)")
    worker.add_argument("--storage-url", metavar="URL",
                        help="file:///path or s3://bucket/prefix (default: $IMPASTO_STORAGE_URL)")
    worker.add_argument("--memory-budget", metavar="BYTES",
                        help="a print's memory budget, e.g. 20GB (default: 85%% of the GPU's memory, "
                             "50%% of the RAM on a CPU)")
    worker.add_argument("--lease-seconds", type=float, metavar="S",
                        help="a job whose worker is silent this long is given to another (default: 300)")
    worker.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve this worker's Prometheus metrics (render seconds) on PORT, all "
                             "addresses (default: none; the shop's /metrics has the job table's)")
    worker.set_defaults(handler=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    require_extra("farm", "worker")
    from impasto.service.farm import worker as farm_worker
    from impasto.service.farm.celery_app import check_broker_url, redact

    setup_logging(args.verbose + (0 if args.quiet else 1))
    logging.getLogger("impasto").propagate = False   # Celery logs to the root logger too: say it once
    settings = _farm_settings({"broker_url": args.broker, "database_url": args.database_url,
                               "storage_url": args.storage_url})
    use_log_format(settings.log_format, text=f"%(asctime)s {PROG}: %(levelname)s: %(processName)s: %(message)s")
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        raise UsageError(f"--metrics-port {args.metrics_port}: 1..65535")
    if not settings.broker_url:
        raise UsageError("give --broker URL (or set IMPASTO_BROKER_URL)")
    check_broker_url(settings.broker_url)
    if args.memory_budget:
        from impasto.engine.memory import parse_bytes

        parse_bytes(args.memory_budget)
    if args.lease_seconds is not None and args.lease_seconds < 3:
        raise UsageError(f"--lease-seconds {args.lease_seconds}: at least 3")
    machine = farm_worker.detect_machine(args.device)
    config = farm_worker.WorkerConfig(
        name=args.name or farm_worker.default_name(machine), machine=machine,
        queues=farm_worker.choose_queues(machine, args.queues),
        budget=args.memory_budget or farm_worker.memory_budget(machine), settings=settings)
    if args.lease_seconds is not None:
        config.lease_seconds = args.lease_seconds
    if not args.quiet:
        print(f"impasto worker {config.name}: {machine.device}, {machine.memory_bytes / 2**30:.1f} GB, "
              f"queues {','.join(config.queues)}, broker {redact(settings.broker_url)}; "
              f"Ctrl-C stops after the current job", flush=True)
    celery_level = "INFO" if args.verbose >= 2 else "WARNING"
    return farm_worker.run_worker(config, loglevel=celery_level, metrics_port=args.metrics_port)


def _farm_settings(overrides: dict[str, Any]):
    from impasto.config import load_settings

    settings = load_settings()
    return settings.model_copy(update={key: value for key, value in overrides.items() if value})
