"""The farm on RabbitMQ: three real `impasto worker` processes, PostgreSQL, shared files.

The tests share one farm (starting workers is the slow part) and run in file order:
the 60-job run first (it also counts every worker's jobs), then the crash, the dropped
connections, the routing of prints and the poison job. Each checks its own jobs only.
"""

from __future__ import annotations

import time
from datetime import timedelta

import farm_support
import pytest
from farm_support import Farm, idle_gaps, wait_until

from impasto.service.core.dispatch import list_workers
from impasto.service.core.models import JobKind, JobStatus, utcnow
from impasto.state import load_state

WORKERS = ("w1", "w2", "w3")
IDLE_TOLERANCE_SECONDS = 2.0    # a worker's own bookkeeping between jobs, on a loaded machine


@pytest.fixture(scope="module")
def farm(tmp_path_factory, postgres_url, amqp_url, vgg16_state):
    """Three preview workers (CPU: previews only) on a virtual host of their own."""
    with farm_support.amqp_vhost(amqp_url) as broker_url, farm_support.pg_schema(postgres_url) as db_url:
        farm = Farm(tmp_path_factory.mktemp("farm-rabbitmq"), broker_url=broker_url, database_url=db_url)
        try:
            for name in WORKERS:
                farm.start_worker(name)
            farm.wait_ready(*WORKERS)
            yield farm
        finally:
            farm.close()


def test_sixty_jobs_run_exactly_once_and_no_worker_idles_while_jobs_wait(farm):
    ids = farm.enqueue(60)
    rows = farm.wait_finished(ids, seconds=240)

    assert {row.status for row in rows} == {JobStatus.DONE}
    assert {row.attempts for row in rows} == {1}
    assert {row.worker for row in rows} == set(WORKERS)            # all three took jobs
    for row in rows:
        assert farm.outputs(row.id) == ["result.png", "state.safetensors"]
    emails = farm.wait_emails([row.portrait_id for row in rows])
    assert len(emails) == 60 and len({email.dedupe_key for email in emails}) == 60
    with farm.sessions() as session:   # every run of a job counts here: 60 means none ran twice
        assert sum(info.jobs_done for info in list_workers(session=session)) == 60
    problems, longest = idle_gaps(rows, tolerance_seconds=IDLE_TOLERANCE_SECONDS)
    assert not problems, f"longest idle overlap {longest:.2f} s: {problems[:5]}"


def test_sigkill_of_a_worker_group_mid_render_the_job_completes_on_another(farm):
    job_id, = farm.enqueue(1, params={"start_size": 0, "num_iterations": 60})
    running = wait_until(lambda: (job := farm.job(job_id)).status is JobStatus.RUNNING and job.iteration > 0
                         and job, "the long job to be rendering", seconds=120)
    victim = running.worker
    killed_at = utcnow()
    farm.kill_group(victim)

    row, = farm.wait_finished([job_id], seconds=180)
    assert row.status is JobStatus.DONE and row.attempts == 2
    assert row.worker != victim
    assert farm.outputs(job_id) == ["result.png", "state.safetensors"]
    assert len(farm.wait_emails([row.portrait_id])) == 1

    # the admin's workers view: the killed worker is gone, the others alive
    others = [name for name in WORKERS if name != victim]
    wait_until(lambda: all(info.last_heartbeat_at > killed_at for info in farm.dispatcher.workers()
                           if info.name in others), "the living workers' next heartbeat", seconds=60)
    stale = (utcnow() - killed_at) / timedelta(seconds=1)
    with farm.sessions() as session:
        alive = {info.name: info.alive for info in list_workers(session=session, stale_seconds=stale)}
    assert alive == {victim: False, **{name: True for name in others}}


def test_dropped_broker_connections_lose_no_job(farm):
    first = farm.enqueue(10)
    wait_until(lambda: sum(job.status is JobStatus.DONE for job in farm.jobs(first)) >= 2,
               "two jobs done", seconds=120)
    vhost = farm.broker_url.rsplit("/", 1)[1]
    farm_support.rabbitmqctl("close_all_connections", "-p", vhost, "impasto farm test")
    second = farm.enqueue(6)          # published while the connections come back
    rows = farm.wait_finished(first + second, seconds=240)

    assert {row.status for row in rows} == {JobStatus.DONE}
    assert {row.attempts for row in rows} == {1}      # the running renders were not cut off
    for row in rows:
        assert farm.outputs(row.id) == ["result.png", "state.safetensors"]
    assert len(farm.wait_emails([row.portrait_id for row in rows])) == 16


def start_printer(farm: Farm) -> None:
    """A worker for prints only, with a 1 GB budget. It carries the poison hook
    (``farm_poison``: a job in the style "poison" kills its render process), which leaves
    every other job alone; one worker start serves both tests that need a print worker."""
    if "printer" not in farm.procs:
        farm.start_worker("printer", queues="print", poisoned=True, extra=("--memory-budget", "1GB"))
    farm.wait_ready("printer")


def test_a_print_job_never_goes_to_a_preview_only_worker(farm):
    print_id, = farm.enqueue(1, kind=JobKind.PRINT, params={"image_size": 48, "start_size": 0,
                                                             "num_iterations": 2})
    preview_ids = farm.enqueue(2)
    farm.wait_finished(preview_ids, seconds=120)
    time.sleep(3)                     # idle preview workers and three sweeps later...
    waiting = farm.job(print_id)
    assert (waiting.status, waiting.attempts) == (JobStatus.QUEUED, 0)

    start_printer(farm)
    row, = farm.wait_finished([print_id], seconds=180)
    assert (row.status, row.worker, row.attempts) == (JobStatus.DONE, "printer", 1)
    state_file = farm.root / "print.state"
    state_file.write_bytes((farm.files / row.state_key).read_bytes())
    params = load_state(state_file).params      # the worker's own budget and device
    assert (params.memory_budget, params.device) == ("1GB", "cpu")


def test_a_job_that_always_crashes_stops_at_the_attempt_cap(farm):
    start_printer(farm)
    job_id, = farm.enqueue(1, kind=JobKind.PRINT, style="poison",
                           params={"image_size": 48, "start_size": 0, "num_iterations": 2})
    row, = farm.wait_finished([job_id], seconds=240)
    assert (row.status, row.attempts, row.max_attempts) == (JobStatus.FAILED, 3, 3)
    assert "worker lost" in row.error
    assert farm.outputs(job_id) == []
    assert farm.procs["printer"].poll() is None          # the worker itself lived on

    def printer():
        with farm.sessions() as session:
            return next(info for info in list_workers(session=session) if info.name == "printer")
    wait_until(lambda: printer().current_job_id is None, "the dead render's job to leave the row", seconds=60)
    assert printer().alive
