"""The farm's Celery app: made by a function from a broker URL, nothing at import.

Configuration, and why:

- ``task_acks_late`` + ``worker_prefetch_multiplier=1`` + one process per device: a
  worker holds at most the message it is rendering, so an idle worker takes the next job
  and a busy one takes none (pull-based least-loaded dispatch, no scheduler).
- ``task_reject_on_worker_lost``: a render process that dies (out of memory, SIGKILL)
  puts its message back instead of acknowledging it.
- ``worker_cancel_long_running_tasks_on_connection_loss=False``: a broker restart does not
  kill renders; the message comes back to the queue, its copy finds the job ``running``
  in the table and does nothing, the first render finishes.
- No result backend: the job table is the truth (status, attempts, progress, outputs).
- Queues ``preview`` and ``print`` (durable, persistent messages); on RabbitMQ with
  priorities (a job's ``priority``, smaller first, becomes the broker's, larger first)
  and publisher confirms. On Redis, ``visibility_timeout`` (Settings) must be longer than
  the longest render, or a running job's message is handed to a second worker (which
  then finds the job running and drops it: harmless, but a wasted delivery).

Operators' tools: task events and remote control are on, so ``celery -A
impasto.service.farm.celery_app inspect active`` (or ``events``, or Flower) works against the
farm. ``app``, the module's Celery app for them, is made on first access from
``IMPASTO_BROKER_URL`` (PEP 562 ``__getattr__``): importing this module still builds nothing.

A message only names a job: ``render_job(job_id)``. Every delivery re-checks the table
(``jobs.claim(job_id=…)``), so a duplicate, a redelivery after a crash or a message for a
cancelled job does nothing; and a job whose message was lost is re-sent by the sweeper
(``farm.dispatcher.Sweeper``). The task body is ``farm.worker.WorkerRuntime.run``, set up by
``impasto worker`` before the pool starts.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import TYPE_CHECKING, Any

from impasto.errors import FarmError

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

TASK_NAME = "impasto.render_job"
QUEUES = ("preview", "print")
EXCHANGE = "impasto"
MAX_BROKER_PRIORITY = 10                 # RabbitMQ x-max-priority: 0..10, larger first
VISIBILITY_TIMEOUT_SECONDS = 12 * 3600   # Redis: longer than the longest print
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
REDIS_SCHEMES = ("redis", "rediss")
CONNECT_TIMEOUT_SECONDS = 5.0

_runtime: Any = None    # the worker process's farm.worker.WorkerRuntime (None in the shop)
_app: Any = None        # ``app``, made by __getattr__ on first use


def __getattr__(name: str) -> Any:
    """``app`` (also ``celery``, Celery's other name to look for): the farm's app on
    ``Settings.broker_url``, for ``celery -A impasto.service.farm.celery_app …`` and Flower."""
    global _app
    if name not in ("app", "celery"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        from impasto.config import get_settings

        settings = get_settings()
        if not settings.broker_url:
            raise FarmError("the farm's Celery app needs IMPASTO_BROKER_URL (amqp://… or redis://…)")
        _app = make_celery(settings.broker_url,
                           visibility_timeout_seconds=settings.broker_visibility_timeout_seconds)
    return _app


def check_broker_url(url: str) -> str:
    """``url`` when it names a RabbitMQ (``amqp://``) or Redis (``redis://``) broker."""
    parsed = urllib.parse.urlsplit(url or "")
    try:
        port_ok = parsed.port is None or parsed.port > 0
    except ValueError:
        port_ok = False
    if parsed.scheme not in AMQP_SCHEMES + REDIS_SCHEMES or not parsed.hostname or not port_ok:
        shown = redact(url) if url else "(empty)"
        raise FarmError(f"broker URL {shown}: use amqp://user:pass@host:5672/vhost or "
                        f"redis://host:6379/0")
    return url


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


def is_amqp(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in AMQP_SCHEMES


def make_celery(broker_url: str, *,
                visibility_timeout_seconds: int = VISIBILITY_TIMEOUT_SECONDS) -> Celery:
    """A Celery app for the farm on ``broker_url`` (RabbitMQ or Redis), with ``render_job``."""
    from celery import Celery
    from kombu import Exchange, Queue

    check_broker_url(broker_url)
    amqp = is_amqp(broker_url)
    exchange = Exchange(EXCHANGE, type="direct", durable=True)
    arguments = {"x-max-priority": MAX_BROKER_PRIORITY} if amqp else None
    queues = [Queue(name, exchange, routing_key=name, durable=True, queue_arguments=arguments)
              for name in QUEUES]
    transport = ({"confirm_publish": True} if amqp
                 else {"visibility_timeout": int(visibility_timeout_seconds)})
    app = Celery("impasto", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True, task_reject_on_worker_lost=True, task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1, worker_concurrency=1,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_queues=queues, task_default_queue="preview", task_default_exchange=EXCHANGE,
        task_create_missing_queues=False, task_default_delivery_mode="persistent",
        result_backend=None, task_ignore_result=True, task_store_errors_even_if_ignored=False,
        # events (task sent/started/succeeded, worker heartbeats) for Flower and `celery events`
        worker_send_task_events=True, task_send_sent_event=True, worker_hijack_root_logger=False,
        broker_connection_retry=True, broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None, broker_connection_timeout=CONNECT_TIMEOUT_SECONDS,
        broker_transport_options=transport,
        worker_enable_remote_control=True,    # `celery inspect active`, Flower; anyone on the broker is trusted

        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5,
                                   "interval_max": 2.0},
    )
    app.task(name=TASK_NAME, bind=True)(render_job)
    return app


def render_job(task, job_id: int) -> str:
    """The task: claim ``job_id`` if it is still queued, render it, record the outcome."""
    if _runtime is None:
        raise RuntimeError("render_job runs in an `impasto worker` process only")
    return _runtime.run(int(job_id), app=task.app)


def broker_priority(job_priority: int) -> int:
    """The job's priority (smaller runs first) as RabbitMQ's (larger first), clamped to 0..10."""
    return MAX_BROKER_PRIORITY - min(max(int(job_priority), 0), MAX_BROKER_PRIORITY)


def send_job(app: Celery, *, job_id: int, kind: str, priority: int = 0) -> None:
    """Publish ``render_job(job_id)`` to the queue of the job's kind (raises when the broker is down)."""
    queue = str(kind)
    if queue not in QUEUES:
        raise FarmError(f"job {job_id}: no queue for kind {kind!r}")
    options: dict[str, Any] = {"queue": queue, "routing_key": queue}
    if is_amqp(app.conf.broker_url):
        options["priority"] = broker_priority(priority)
    app.send_task(TASK_NAME, args=[int(job_id)], **options)
    log.debug("job %s sent to queue %s", job_id, queue)


def waiting_messages(app: Celery, queue: str) -> int:
    """Messages ready in ``queue`` (not those a worker holds); 0 when the queue does not exist yet."""
    from amqp.exceptions import NotFound  # amqp ships with kombu, also for Redis
    from kombu.exceptions import ChannelError

    with app.pool.acquire(block=True) as connection:     # pooled: the sweeper asks every few seconds
        connection.ensure_connection(max_retries=1)
        channel = connection.channel()
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except (ChannelError, NotFound):
            return 0
        finally:
            try:
                channel.close()
            except Exception as exc:  # noqa: BLE001 - a channel the broker's NOT_FOUND closed
                log.debug("closing a probe channel: %s", exc)


def ping_broker(app: Celery, *, timeout_seconds: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """FarmError unless the broker answers within ``timeout_seconds``."""
    url = redact(app.conf.broker_url)
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout_seconds)
    except Exception as exc:  # noqa: BLE001 - every failure to connect is the same answer
        raise FarmError(f"cannot reach the broker at {url}: {exc}") from None
