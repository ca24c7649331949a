"""The farm's parts without worker processes: URLs, devices and queues, the CLI's errors,
the dispatcher and the sweeper against a real broker, the task body's idempotence."""

from __future__ import annotations

from datetime import timedelta

import farm_support
import pytest

from impasto.cli import main
from impasto.config import Settings
from impasto.service.core import jobs, workers
from impasto.service.core import render_job as worker
from impasto.service.core.dispatch import LocalDispatcher, list_workers
from impasto.service.core.models import Job, JobKind, JobStatus, Portrait, utcnow
from impasto.service.farm import celery_app
from impasto.service.farm.celery_app import FarmError, broker_priority, check_broker_url, make_celery, redact
from impasto.service.farm.dispatcher import CeleryDispatcher, Sweeper, make_dispatcher
from impasto.service.farm.worker import (
    Machine,
    WorkerConfig,
    WorkerRuntime,
    choose_queues,
    detect_machine,
    memory_budget,
)

GB = 2**30
CPU = Machine("cpu", "cpu", 16 * GB)


@pytest.fixture
def sessions(sqlite_sessions):
    return sqlite_sessions


@pytest.fixture
def rabbit(amqp_url):
    """A Celery app on a virtual host of its own (no workers)."""
    with farm_support.amqp_vhost(amqp_url) as broker_url:
        app = make_celery(broker_url)
        yield app
        app.close()


def add_jobs(sessions, kinds: list[JobKind]) -> list[int]:
    with sessions() as session:
        portrait = Portrait(email="ada@example.com", photo_key="portraits/p/photo.png", consent=True)
        session.add(portrait)
        session.flush()
        ids = [jobs.enqueue(session=session, portrait_id=portrait.id, kind=kind, style="tiny").id
               for kind in kinds]
        session.commit()
    return ids


def waiting(app, queue: str) -> int:
    return celery_app.waiting_messages(app, queue)


def purge(app, queue: str) -> None:
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(queue)


# --- URLs, devices, queues ---------------------------------------------------------------

@pytest.mark.parametrize("url", ["amqp://guest:guest@127.0.0.1:5672//", "redis://127.0.0.1:6379/0",
                                 "rediss://h:6380/1", "pyamqp://h/vhost"])
def test_broker_urls_of_rabbitmq_and_redis_are_accepted(url):
    assert check_broker_url(url) == url


@pytest.mark.parametrize("url", ["", "http://h/", "amqp://", "redis:///0", "sqs://", "amqp://h:99999/"])
def test_other_broker_urls_are_refused(url):
    with pytest.raises(FarmError, match="broker URL"):
        check_broker_url(url)


def test_passwords_never_appear_in_messages():
    assert redact("amqp://user:s3cret@h:5672/v") == "amqp://user:***@h:5672/v"
    with pytest.raises(FarmError) as caught:
        check_broker_url("ftp://user:s3cret@h/")
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(("machine", "queues"), [
    (CPU, ["preview"]),
    (Machine("cuda:0", "small", 6 * GB), ["preview"]),
    (Machine("cuda:1", "big", 24 * GB), ["preview", "print"]),
])
def test_queues_follow_the_device_and_its_memory(machine, queues):
    assert choose_queues(machine) == queues


def test_queues_given_are_used_in_a_fixed_order_and_checked():
    assert choose_queues(CPU, ["print", "preview"]) == ["preview", "print"]
    assert choose_queues(Machine("cuda:0", "big", 80 * GB), ["preview"]) == ["preview"]
    with pytest.raises(FarmError, match="unknown queue"):
        choose_queues(CPU, ["prints"])


def test_a_prints_budget_and_device_come_from_the_worker():
    assert memory_budget(Machine("cuda:0", "H200", 140 * GB)) == f"{int(140 * GB * 0.85) // 2**20}MB"
    assert memory_budget(CPU) == "8192MB"
    config = WorkerConfig(name="w", machine=Machine("cuda:1", "x", 24 * GB), queues=["preview", "print"],
                          budget="20GB", settings=Settings())
    assert config.machine_options(JobKind.PREVIEW) == {"device": "cuda:1"}
    assert config.machine_options(JobKind.PRINT) == {"device": "cuda:1", "memory_budget": "20GB"}


def test_the_cpu_is_found_when_there_is_no_gpu():
    import torch

    machine = detect_machine("auto")
    if torch.cuda.is_available():
        assert machine.is_gpu and machine.memory_bytes > 0
    else:
        assert (machine.device, machine.is_gpu) == ("cpu", False) and machine.memory_bytes > GB
        with pytest.raises(FarmError, match="CUDA is not available"):
            detect_machine("cuda:0")
    with pytest.raises(FarmError, match="--device"):
        detect_machine("tpu")


def test_broker_priorities_put_previews_first():
    assert broker_priority(0) == 10 and broker_priority(10) == 0
    assert broker_priority(-5) == 10 and broker_priority(99) == 0


# --- the machine's options in a render (worker.py) ---------------------------------------

def test_machine_options_win_and_do_not_stop_a_retry_from_resuming(tmp_path):
    from impasto.catalog import Catalog
    from impasto.engine.params import RenderParams

    (tmp_path / "s.png").write_bytes(farm_support.png_bytes(32, 32, 0))
    style = Catalog(tmp_path / "styles").add("s", tmp_path / "s.png", {"device": "auto", "seed": 3})
    task = worker._Task(1, JobKind.PRINT, "s", {"image_size": 64}, "w", 1, 1, "k", None)
    preview = RenderParams.build(image_size=48, device="cuda:0", seed=3)   # rendered on another GPU
    params = worker._params(task, style, Settings(), preview, {"device": "cpu", "memory_budget": "1GB"})
    assert (params.device, params.memory_budget, params.image_size, params.seed) == ("cpu", "1GB", 64, 3)
    assert worker._same_render(params.model_copy(update={"device": "cuda:3", "memory_budget": None}), params)
    assert not worker._same_render(params.model_copy(update={"seed": 4}), params)


# --- the command line --------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["--broker", "ftp://h/"], "broker URL ftp://h/"),
    (["--broker", "amqp://guest:guest@127.0.0.1:1//"], "cannot reach the broker at amqp://guest:***@"),
    (["--broker", "redis://127.0.0.1:1/0"], "cannot reach the broker at redis://127.0.0.1:1/0"),
    (["--broker", "amqp://h//", "--queues", "preview,prints"], "unknown queue(s) prints"),
    (["--broker", "amqp://h//", "--memory-budget", "lots"], "memory budget 'lots'"),
    ([], "give --broker URL"),
])
def test_worker_errors_are_one_line_and_exit_2(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("IMPASTO_BROKER_URL", raising=False)
    monkeypatch.setenv("IMPASTO_DATA_DIR", str(tmp_path))
    assert main(["worker", "--device", "cpu", "-q", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("impasto: error: ") and err.count("\n") == 1 and message in err


# --- the dispatcher and the sweeper on RabbitMQ ------------------------------------------

def test_make_dispatcher_picks_threads_or_the_farm(sessions, tmp_path):
    local = make_dispatcher(Settings(data_dir=tmp_path), session_factory=sessions, storage=None, catalog=None)
    assert isinstance(local, LocalDispatcher)
    farm = make_dispatcher(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/9",
                                    broker_visibility_timeout_seconds=7200),
                           session_factory=sessions, storage=None, catalog=None, sweep_seconds=2.0)
    assert isinstance(farm, CeleryDispatcher) and farm.sweep_seconds == 2.0
    assert farm.app.conf.broker_transport_options == {"visibility_timeout": 7200}
    assert farm.app.conf.task_acks_late and farm.app.conf.task_reject_on_worker_lost
    assert farm.app.conf.worker_prefetch_multiplier == 1


def test_notify_publishes_each_new_job_once_to_the_queue_of_its_kind(sessions, rabbit):
    dispatcher = CeleryDispatcher(session_factory=sessions, app=rabbit, sweep_seconds=3600)
    with dispatcher:
        farm_support.wait_until(lambda: dispatcher._high_water is not None, "the first sweep", seconds=30)
        add_jobs(sessions, [JobKind.PREVIEW, JobKind.PRINT, JobKind.PREVIEW])
        dispatcher.notify()
        farm_support.wait_until(lambda: waiting(rabbit, "preview") == 2, "two previews", seconds=30)
        dispatcher.notify()
        dispatcher.notify()
    assert (waiting(rabbit, "preview"), waiting(rabbit, "print")) == (2, 1)


def test_the_sweeper_republishes_lost_messages_and_jobs_of_dead_workers(sessions, rabbit):
    *_, running = add_jobs(sessions, [JobKind.PREVIEW, JobKind.PRINT, JobKind.PREVIEW])
    sweeper = Sweeper(rabbit, sessions)
    with sessions() as session:           # a worker took `running`, then died: its lease ran out
        jobs.claim(session=session, worker="dead", job_id=running, lease_seconds=60)
    assert sweeper.sweep() == {"requeued": 0, "preview": 0, "print": 0}   # a shortfall seen once...
    assert sweeper.sweep() == {"requeued": 0, "preview": 1, "print": 1}   # ...and again: published
    assert sweeper.sweep() == {"requeued": 0, "preview": 0, "print": 0}   # nothing twice
    purge(rabbit, "preview")                                             # a message lost...
    sweeper.sweep()
    assert sweeper.sweep()["preview"] == 0          # ...within a minute of its publish: not yet
    sweeper.sent.clear()                            # a minute later
    assert sweeper.sweep()["preview"] == 1 and waiting(rabbit, "preview") == 1
    later = utcnow() + timedelta(seconds=61)
    assert sweeper.sweep(now=later) == {"requeued": 1, "preview": 0, "print": 0}
    assert waiting(rabbit, "preview") == 2                               # published at once
    with sessions() as session:
        job = session.get(Job, running)
        assert (job.status, job.attempts, job.worker) == (JobStatus.QUEUED, 1, None)


def test_redis_queues_are_counted_and_published_to(sessions, redis_url):
    with farm_support.redis_database(redis_url) as url:
        app = make_celery(url)
        try:
            ids = add_jobs(sessions, [JobKind.PRINT, JobKind.PRINT])
            for job_id in ids:
                celery_app.send_job(app, job_id=job_id, kind="print", priority=10)
            assert (waiting(app, "print"), waiting(app, "preview")) == (2, 0)
        finally:
            app.close()


# --- the task body -----------------------------------------------------------------------

def test_a_message_for_a_job_that_is_not_queued_does_nothing(sessions, tmp_path):
    done, cancelled = add_jobs(sessions, [JobKind.PREVIEW, JobKind.PREVIEW])
    with sessions() as session:
        jobs.claim(session=session, worker="w0", job_id=done)
        jobs.finish(session=session, job_id=done, result_key="jobs/1/result.png")
        jobs.cancel(session=session, job_id=cancelled)
        session.commit()
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'impasto.db'}")
    runtime = WorkerRuntime(WorkerConfig(name="w1", machine=CPU, queues=["preview"], budget="1GB",
                                         settings=settings))
    assert runtime.run(done, app=None) == "skipped"        # a redelivery after the job was done
    assert runtime.run(cancelled, app=None) == "skipped"
    runtime.resources().engine.dispose()
    with sessions() as session:
        assert [(job.status, job.attempts, job.worker) for job in session.query(Job).order_by(Job.id)] == [
            (JobStatus.DONE, 1, "w0"), (JobStatus.CANCELLED, 0, None)]


def test_workers_not_heard_from_show_as_gone_with_their_jobs_progress(sessions):
    job_id, = add_jobs(sessions, [JobKind.PREVIEW])
    with sessions() as session:
        jobs.claim(session=session, worker="a", job_id=job_id)
        jobs.report_progress(session=session, job_id=job_id, progress=0.25, iteration=1, total=4)
        for name in ("a", "b"):
            workers.register_worker(session=session, name=name, host="h", device="cpu", queues=["preview"])
        workers.worker_seen(session=session, name="a", current_job_id=job_id)
        workers.worker_seen(session=session, name="b", current_job_id=None,
                            now=utcnow() - timedelta(seconds=30))
        infos = {info.name: info for info in list_workers(session=session, stale_seconds=10)}
    assert (infos["a"].alive, infos["a"].progress, infos["a"].current_job_id) == (True, 0.25, job_id)
    assert (infos["b"].alive, infos["b"].progress) == (False, None)


def test_the_heartbeat_clears_a_job_its_dead_render_process_left_on_the_row(sessions, tmp_path):
    left, running = add_jobs(sessions, [JobKind.PREVIEW, JobKind.PREVIEW])
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'impasto.db'}")
    runtime = WorkerRuntime(WorkerConfig(name="w1", machine=CPU, queues=["preview"], budget="1GB",
                                         settings=settings))
    runtime.register()
    with sessions() as session:
        jobs.claim(session=session, worker="w1", job_id=running)
        workers.worker_seen(session=session, name="w1", current_job_id=running)
    runtime._heartbeat()
    assert list_workers(session=sessions())[0].current_job_id == running      # still ours: kept
    with sessions() as session:      # the render process died: the sweeper requeued its job
        jobs.requeue_stale(session=session, all_running=True)
        workers.worker_seen(session=session, name="w1", current_job_id=left)   # and a job never claimed
    runtime._heartbeat()
    runtime.resources().engine.dispose()
    assert list_workers(session=sessions())[0].current_job_id is None


def test_an_unreachable_database_is_one_line_and_exit_2(amqp_url, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("IMPASTO_DATA_DIR", str(tmp_path))
    argv = ["worker", "-q", "--device", "cpu", "--broker", amqp_url,
            "--database-url", "postgresql://nobody@127.0.0.1:1/none"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("impasto: error: database: ") and err.count("\n") == 1
