"""The job table as a queue, orders' life cycle and the mail outbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from impasto.errors import ParamError
from impasto.service.core import jobs, orders, outbox, workers
from impasto.service.core.models import (
    Email,
    EmailStatus,
    Job,
    JobKind,
    JobStatus,
    OrderStatus,
    Worker,
    utcnow,
)
from support.db import add_order, add_portrait


@pytest.fixture
def portrait_id(sessions) -> int:
    with sessions() as session:
        portrait = add_portrait(session)
        session.commit()
        return portrait.id


def enqueue(sessions, portrait_id, kind=JobKind.PREVIEW, count=1, **options) -> list[int]:
    with sessions() as session:
        ids = [jobs.enqueue(session=session, portrait_id=portrait_id, kind=kind, style="starry", params={},
                            **options).id for _ in range(count)]
        session.commit()
    return ids


def claim(sessions, worker="w1", **options):
    with sessions() as session:
        return jobs.claim(session=session, worker=worker, **options)


def get(sessions, job_id) -> Job:
    with sessions() as session:
        return session.get(Job, job_id)


# --- enqueue and claim -------------------------------------------------------------------

def test_enqueue_sets_priority_by_kind_and_checks_option_names(sessions, portrait_id):
    preview, = enqueue(sessions, portrait_id)
    print_, = enqueue(sessions, portrait_id, JobKind.PRINT, parent_job_id=preview)
    assert get(sessions, preview).priority < get(sessions, print_).priority
    assert get(sessions, print_).parent_job_id == preview
    with sessions() as session, pytest.raises(ParamError, match="style-wait|style_wait"):
        jobs.enqueue(session=session, portrait_id=portrait_id, kind="preview", style="s",
                     params={"style_wait": 1})
    with sessions() as session, pytest.raises(ValueError):
        jobs.enqueue(session=session, portrait_id=portrait_id, kind="poster", style="s")


def test_claim_takes_previews_before_prints_then_the_oldest(sessions, portrait_id):
    print_, = enqueue(sessions, portrait_id, JobKind.PRINT)
    first, second = enqueue(sessions, portrait_id, count=2)
    order = [claim(sessions).id for _ in range(3)]
    assert order == [first, second, print_]
    assert claim(sessions) is None


def test_claim_marks_the_job_running_for_its_worker(sessions, portrait_id):
    job_id, = enqueue(sessions, portrait_id)
    now = utcnow()
    job = claim(sessions, worker="gpu-1", now=now, lease_seconds=60)
    assert (job.id, job.status, job.attempts, job.worker) == (job_id, JobStatus.RUNNING, 1, "gpu-1")
    assert job.started_at == now and job.lease_expires_at == now + timedelta(seconds=60)


def test_claim_only_takes_the_kinds_a_worker_listens_to(sessions, portrait_id):
    print_, = enqueue(sessions, portrait_id, JobKind.PRINT)
    assert claim(sessions, kinds=["preview"]) is None
    assert claim(sessions, kinds=[JobKind.PRINT]).id == print_


def test_claim_by_id_takes_that_job_only_while_it_is_queued(sessions, portrait_id):
    first, second = enqueue(sessions, portrait_id, count=2)
    assert claim(sessions, job_id=second).id == second
    assert claim(sessions, job_id=second) is None        # a broker's duplicate delivery
    assert claim(sessions).id == first


@pytest.mark.parametrize("threads", [4])
def test_concurrent_claims_take_every_job_exactly_once(sessions, portrait_id, threads):
    ids = enqueue(sessions, portrait_id, count=50)
    claimed: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def drain(index: int) -> None:
        try:
            start.wait()
            while (job := claim(sessions, worker=f"w{index}")) is not None:
                claimed[index].append(job.id)
                with sessions() as session:
                    jobs.finish(session=session, job_id=job.id, result_key=f"jobs/{job.id}/result.png",
                                worker=f"w{index}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=drain, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not errors
    everything = [job_id for batch in claimed for job_id in batch]
    assert sorted(everything) == sorted(ids)          # each exactly once
    assert sum(1 for batch in claimed if batch) > 1   # and the threads really competed
    with sessions() as session:
        assert session.scalar(select(func.count()).where(Job.status == JobStatus.DONE)) == 50
        assert session.scalar(select(func.max(Job.attempts))) == 1


# --- progress, finish, failure -----------------------------------------------------------

def test_progress_is_clamped_renews_the_lease_and_says_when_to_stop(sessions, portrait_id):
    job_id, = enqueue(sessions, portrait_id)
    claim(sessions, worker="w1")
    later = utcnow() + timedelta(seconds=30)
    with sessions() as session:
        assert jobs.report_progress(session=session, job_id=job_id, progress=1.7, iteration=5, total=10,
                                    worker="w1", now=later, lease_seconds=60) is False
    job = get(sessions, job_id)
    assert (job.progress, job.iteration, job.total) == (1.0, 5, 10)
    assert job.lease_expires_at == later + timedelta(seconds=60)
    with sessions() as session:   # another worker's writes are fenced off, and it is told to stop
        assert jobs.report_progress(session=session, job_id=job_id, progress=0.1, iteration=1, total=10,
                                    worker="w2") is True
        assert jobs.heartbeat(session=session, job_id=job_id, worker="w1") is False
    assert get(sessions, job_id).iteration == 5


def test_finish_records_the_outputs(sessions, portrait_id):
    job_id, = enqueue(sessions, portrait_id)
    claim(sessions)
    with sessions() as session:
        assert jobs.finish(session=session, job_id=job_id, result_key="jobs/1/result.png",
                           state_key="jobs/1/state.safetensors")
        assert not jobs.finish(session=session, job_id=job_id, result_key="again")   # not running now
    job = get(sessions, job_id)
    assert (job.status, job.progress, job.result_key) == (JobStatus.DONE, 1.0, "jobs/1/result.png")
    assert job.state_key == "jobs/1/state.safetensors" and job.finished_at is not None


def test_failures_requeue_until_the_attempt_cap(sessions, portrait_id):
    job_id, = enqueue(sessions, portrait_id, max_attempts=2)
    statuses = []
    for _ in range(2):
        claim(sessions)
        with sessions() as session:
            statuses.append(jobs.fail(session=session, job_id=job_id, error="CUDA out of memory"))
    assert statuses == [JobStatus.QUEUED, JobStatus.FAILED]
    job = get(sessions, job_id)
    assert (job.status, job.attempts, job.error) == (JobStatus.FAILED, 2, "CUDA out of memory")
    assert claim(sessions) is None


def test_a_permanent_failure_is_not_retried(sessions, portrait_id):
    job_id, = enqueue(sessions, portrait_id)
    claim(sessions)
    with sessions() as session:
        status = jobs.fail(session=session, job_id=job_id, error="not an image", retry=False)
    assert status is JobStatus.FAILED


def test_release_gives_the_job_back_without_counting_the_attempt(sessions, portrait_id):
    job_id, = enqueue(sessions, portrait_id)
    claim(sessions)
    with sessions() as session:
        assert jobs.release(session=session, job_id=job_id)
    job = get(sessions, job_id)
    assert (job.status, job.attempts, job.worker) == (JobStatus.QUEUED, 0, None)


# --- stale leases ------------------------------------------------------------------------

def test_requeue_stale_takes_back_only_expired_leases(sessions, portrait_id):
    expired, alive = enqueue(sessions, portrait_id, count=2)
    now = utcnow()
    claim(sessions, now=now - timedelta(seconds=600), lease_seconds=300)
    claim(sessions, now=now, lease_seconds=300)
    with sessions() as session:
        assert jobs.requeue_stale(session=session, now=now) == 1
    assert get(sessions, expired).status is JobStatus.QUEUED
    assert get(sessions, expired).error == "worker lost (no heartbeat)"
    assert get(sessions, alive).status is JobStatus.RUNNING
    with sessions() as session:   # an embedded start-up: everything running was left by a crash
        assert jobs.requeue_stale(session=session, all_running=True) == 1
    assert get(sessions, alive).status is JobStatus.QUEUED


def test_a_job_that_keeps_killing_its_worker_ends_failed(sessions, portrait_id):
    job_id, = enqueue(sessions, portrait_id, max_attempts=2)
    for expected in (JobStatus.QUEUED, JobStatus.FAILED):
        claim(sessions)
        with sessions() as session:
            jobs.requeue_stale(session=session, all_running=True)
        assert get(sessions, job_id).status is expected


# --- cancel and re-run -------------------------------------------------------------------

def test_cancelling_a_queued_job_is_immediate(sessions, portrait_id):
    job_id, = enqueue(sessions, portrait_id)
    with sessions() as session:
        assert jobs.cancel(session=session, job_id=job_id).status is JobStatus.CANCELLED
        session.commit()
    assert claim(sessions) is None


def test_cancelling_a_running_job_sets_the_flag_its_render_checks(sessions, portrait_id):
    job_id, = enqueue(sessions, portrait_id)
    claim(sessions)
    with sessions() as session:
        job = jobs.cancel(session=session, job_id=job_id)
        session.commit()
        assert job.status is JobStatus.RUNNING and job.cancel_requested
    with sessions() as session:
        assert jobs.report_progress(session=session, job_id=job_id, progress=0.5, iteration=5,
                                    total=10) is True
        assert jobs.mark_cancelled(session=session, job_id=job_id)
    assert get(sessions, job_id).status is JobStatus.CANCELLED


def test_a_failure_after_a_cancel_request_ends_cancelled(sessions, portrait_id):
    job_id, = enqueue(sessions, portrait_id)
    claim(sessions)
    with sessions() as session:
        jobs.cancel(session=session, job_id=job_id)
        session.commit()
        assert jobs.fail(session=session, job_id=job_id, error="boom") is JobStatus.CANCELLED


def test_cancelling_a_finished_job_changes_nothing(sessions, portrait_id):
    job_id, = enqueue(sessions, portrait_id)
    claim(sessions)
    with sessions() as session:
        jobs.finish(session=session, job_id=job_id, result_key="r")
        assert jobs.cancel(session=session, job_id=job_id).status is JobStatus.DONE


def test_rerun_queues_a_finished_job_afresh_and_refuses_a_running_one(sessions, portrait_id):
    job_id, = enqueue(sessions, portrait_id, max_attempts=1)
    claim(sessions)
    with sessions() as session:
        jobs.fail(session=session, job_id=job_id, error="boom")
        job = jobs.rerun(session=session, job_id=job_id)
        session.commit()
    assert (job.status, job.attempts, job.error) == (JobStatus.QUEUED, 0, None)
    claim(sessions)
    with sessions() as session, pytest.raises(jobs.JobError, match="running"):
        jobs.rerun(session=session, job_id=job_id)
    with sessions() as session, pytest.raises(jobs.JobError, match="no job"):
        jobs.rerun(session=session, job_id=999_999)


def test_throttle_lets_one_call_through_per_interval():
    clock = [0.0]
    throttle = jobs.Throttle(1.0, clock=lambda: clock[0])
    seen = []
    for t in (0.0, 0.3, 0.99, 1.0, 1.5, 2.2):
        clock[0] = t
        seen.append(throttle.due())
    assert seen == [True, False, False, True, False, True]
    assert throttle.due(force=True)


# --- orders ------------------------------------------------------------------------------

def test_orders_move_along_their_life_cycle(sessions):
    with sessions() as session:
        order = add_order(session, add_portrait(session))
        for status in ("rendering", "ready", "ready", "printed", "shipped"):
            order = orders.set_order_status(session=session, order_id=order.id, status=status)
        session.commit()
        assert order.status is OrderStatus.SHIPPED
        assert order.ready_at and order.printed_at and order.shipped_at and not order.cancelled_at


def test_an_invalid_order_transition_is_a_clear_error(sessions):
    with sessions() as session:
        order = add_order(session, add_portrait(session))
        orders.set_order_status(session=session, order_id=order.id, status=OrderStatus.CANCELLED)
        with pytest.raises(orders.OrderStatusError, match=r"cannot go from cancelled to ready \(allowed from "
                                                        r"cancelled: none \(final\)\)"):
            orders.set_order_status(session=session, order_id=order.id, status=OrderStatus.READY)
    with sessions() as session:
        order = add_order(session, add_portrait(session))
        with pytest.raises(orders.OrderStatusError, match="allowed from ordered: cancelled, rendering"):
            orders.set_order_status(session=session, order_id=order.id, status="shipped")


# --- the mail outbox ---------------------------------------------------------------------

def queue(session, key="print_ready:IMP-AAAA-BBBB", **options) -> bool:
    return outbox.queue_email(session=session, dedupe_key=key, to="ada@example.com", template="print_ready",
                            context={"order": "IMP-AAAA-BBBB"}, **options)


def test_queue_email_stores_each_message_once_without_breaking_the_transaction(sessions):
    with sessions() as session:
        portrait = add_portrait(session)
        assert queue(session) is True
        assert queue(session) is False                  # same key: ignored, transaction intact
        portrait.email = "changed@example.com"
        session.commit()
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Email)) == 1
        email = session.scalars(select(Email)).one()
        assert (email.status, email.attempts) == (EmailStatus.PENDING, 0)
        assert email.context == {"order": "IMP-AAAA-BBBB"}


def test_a_send_that_fails_twice_then_succeeds_delivers_once_with_backoff(sessions):
    t0 = utcnow()
    with sessions() as session:
        queue(session, now=t0)
        session.commit()
    outcomes, delivered = [ConnectionRefusedError("smtp down"), TimeoutError("smtp slow"), None], []

    def send(email: Email) -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        delivered.append(email.dedupe_key)

    def deliver(seconds: float) -> int:
        with sessions() as session:
            return outbox.deliver_pending(session=session, send=send, now=t0 + timedelta(seconds=seconds))

    def row() -> Email:
        with sessions() as session:
            return session.scalars(select(Email)).one()

    assert deliver(0) == 0
    assert row().next_attempt_at == t0 + timedelta(seconds=60) and "smtp down" in row().last_error
    assert deliver(59) == 0 and len(outcomes) == 2     # not due yet: send not called
    assert deliver(60) == 0
    assert row().next_attempt_at == t0 + timedelta(seconds=180)   # the delay doubled
    assert deliver(180) == 1 and deliver(10_000) == 0
    assert delivered == ["print_ready:IMP-AAAA-BBBB"]
    email = row()
    assert (email.status, email.attempts, email.last_error) == (EmailStatus.SENT, 3, None)


def test_an_email_that_never_goes_through_is_kept_as_failed(sessions):
    t0 = utcnow()
    with sessions() as session:
        queue(session, now=t0)
        session.commit()

    def send(email):
        raise OSError("no route to host")

    with sessions() as session:
        for attempt in range(3):
            outbox.deliver_pending(session=session, send=send, now=t0 + timedelta(days=attempt),
                                   max_attempts=3)
        email = session.scalars(select(Email)).one()
    assert (email.status, email.attempts) == (EmailStatus.FAILED, 3)
    assert "no route to host" in email.last_error


def test_retry_delays_grow_exponentially_to_a_cap():
    assert [outbox.retry_delay_seconds(n) for n in (1, 2, 3)] == [60, 120, 240]
    assert outbox.retry_delay_seconds(50) == outbox.EMAIL_RETRY_MAX_SECONDS


# --- workers -----------------------------------------------------------------------------

def test_worker_rows_track_heartbeats_and_jobs_done(sessions, portrait_id):
    job_id, = enqueue(sessions, portrait_id)
    with sessions() as session:
        workers.register_worker(session=session, name="gpu-1", host="h", device="cuda:0", queues=["preview"],
                             memory_bytes=80 << 30)
        workers.worker_seen(session=session, name="gpu-1", current_job_id=job_id)
        workers.worker_seen(session=session, name="gpu-1", current_job_id=None, finished_job=True)
        workers.register_worker(session=session, name="gpu-1", host="h", device="cuda:0",
                             queues=["preview", "print"])
        worker = session.scalars(select(Worker)).one()
        assert (worker.queues, worker.jobs_done, worker.current_job_id) == (["preview", "print"], 0, None)
        workers.remove_worker(session=session, name="gpu-1")
        assert session.scalars(select(Worker)).all() == []
