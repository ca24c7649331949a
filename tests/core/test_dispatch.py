"""LocalDispatcher: render threads that take their jobs from the table, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from impasto.service.core import jobs
from impasto.service.core.dispatch import Dispatcher, LocalDispatcher
from impasto.service.core.models import Job, JobKind, JobStatus
from support.db import add_portrait

WAIT_SECONDS = 30   # a generous ceiling for work that takes well under a second; never a timing claim


def enqueue(sessions, kind=JobKind.PREVIEW, count=1) -> list[int]:
    with sessions() as session:
        portrait = add_portrait(session)
        ids = [jobs.enqueue(session=session, portrait_id=portrait.id, kind=kind, style="s").id
               for _ in range(count)]
        session.commit()
    return ids


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def count(sessions, status: JobStatus) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(Job).where(Job.status == status))


class Recorder:
    """A run_job that records which thread ran which job, then finishes it."""

    def __init__(self, sessions, *, seconds: float = 0.0, fail_on: set[int] = frozenset()):
        self.sessions, self.seconds, self.fail_on = sessions, seconds, fail_on
        self.runs: list[tuple[int, str]] = []
        self.lock = threading.Lock()

    def __call__(self, job_id: int) -> None:
        with self.lock:
            self.runs.append((job_id, threading.current_thread().name))
        if job_id in self.fail_on:
            raise RuntimeError("a bug in run_job")
        time.sleep(self.seconds)
        with self.sessions() as session:
            jobs.finish(session=session, job_id=job_id, result_key=f"jobs/{job_id}/result.png")


def test_local_dispatcher_is_a_dispatcher(sessions):
    assert isinstance(LocalDispatcher(session_factory=sessions, run_job=print), Dispatcher)


def test_two_threads_run_ten_jobs_exactly_once_each(sessions):
    ids = enqueue(sessions, count=10)
    recorder = Recorder(sessions, seconds=0.05)
    dispatcher = LocalDispatcher(session_factory=sessions, run_job=recorder, threads=2, poll_seconds=0.1)
    with dispatcher:
        wait_until(lambda: count(sessions, JobStatus.DONE) == 10, "ten jobs done")
        # a thread counts its job in its worker row just after run_job returns: wait for that too
        wait_until(lambda: sum(info.jobs_done for info in dispatcher.workers()) == 10, "ten jobs counted")
        infos = dispatcher.workers()
    assert Counter(job_id for job_id, _ in recorder.runs) == Counter(ids)
    assert len({thread for _, thread in recorder.runs}) == 2
    assert len(infos) == 2 and sum(info.jobs_done for info in infos) == 10
    assert all(info.alive and info.queues == ("preview", "print") for info in infos)
    assert dispatcher.workers() == []            # stop() removed the rows of its threads


def test_previews_run_before_prints(sessions):
    prints = enqueue(sessions, JobKind.PRINT, count=2)
    previews = enqueue(sessions, count=3)
    recorder = Recorder(sessions)
    with LocalDispatcher(session_factory=sessions, run_job=recorder, threads=1, poll_seconds=0.1):
        wait_until(lambda: count(sessions, JobStatus.DONE) == 5, "five jobs done")
    assert [job_id for job_id, _ in recorder.runs] == previews + prints


def test_notify_wakes_an_idle_thread_without_waiting_for_the_poll(sessions):
    recorder = Recorder(sessions)
    with LocalDispatcher(session_factory=sessions, run_job=recorder, poll_seconds=3600) as dispatcher:
        time.sleep(0.2)   # let the thread find the queue empty and begin its hour-long wait
        enqueue(sessions, count=1)
        dispatcher.notify()
        wait_until(lambda: count(sessions, JobStatus.DONE) == 1, "the job to run after notify()")


def test_start_requeues_jobs_a_crashed_process_left_running(sessions):
    job_id, = enqueue(sessions)
    with sessions() as session:
        jobs.claim(session=session, worker="dead-host:123:0")
    recorder = Recorder(sessions)
    with LocalDispatcher(session_factory=sessions, run_job=recorder, poll_seconds=0.1):
        wait_until(lambda: count(sessions, JobStatus.DONE) == 1, "the requeued job to run")
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job.attempts == 2 and job.worker != "dead-host:123:0"


def test_a_thread_survives_a_run_job_that_raises(sessions):
    bad, good = enqueue(sessions, count=2)
    recorder = Recorder(sessions, fail_on={bad})
    with LocalDispatcher(session_factory=sessions, run_job=recorder, poll_seconds=0.1):
        wait_until(lambda: count(sessions, JobStatus.DONE) == 1, "the second job to run")
    assert [job_id for job_id, _ in recorder.runs] == [bad, good]
    with sessions() as session:
        assert session.get(Job, bad).status is JobStatus.RUNNING   # until its lease expires


def test_only_the_listened_kinds_are_taken(sessions):
    enqueue(sessions, JobKind.PRINT)
    preview, = enqueue(sessions)
    recorder = Recorder(sessions)
    with LocalDispatcher(session_factory=sessions, run_job=recorder, kinds=["preview"], poll_seconds=0.05):
        wait_until(lambda: count(sessions, JobStatus.DONE) == 1, "the preview")
        time.sleep(0.2)
    assert [job_id for job_id, _ in recorder.runs] == [preview]
    assert count(sessions, JobStatus.QUEUED) == 1


def test_stop_ends_idle_threads_and_refuses_bad_thread_counts(sessions):
    dispatcher = LocalDispatcher(session_factory=sessions, run_job=Recorder(sessions), threads=2,
                                 poll_seconds=3600)
    dispatcher.start()
    with pytest.raises(RuntimeError, match="already started"):
        dispatcher.start()
    dispatcher.stop(timeout_seconds=WAIT_SECONDS)
    assert not any(thread.name.startswith("impasto-worker") for thread in threading.enumerate())
    with pytest.raises(ValueError):
        LocalDispatcher(session_factory=sessions, run_job=print, threads=0)


def test_local_dispatcher_wires_render_job_with_the_shared_stop_event(tmp_path):
    from impasto.config import Settings
    from impasto.service.core import render_job
    from impasto.service.core.dispatch import local_dispatcher

    dispatcher = local_dispatcher(Settings(data_dir=tmp_path, workers=2), session_factory=None, storage="s",
                                  catalog="c", snapshot_seconds=3.0, run_options={"progress_seconds": 0.5},
                                  poll_seconds=1.0)
    run = dispatcher.run_job
    assert isinstance(dispatcher, LocalDispatcher) and len(dispatcher.names) == 2
    assert run.func is render_job.run_job and run.keywords["interrupt"] is dispatcher.stopping
    assert (run.keywords["storage"], run.keywords["snapshot_seconds"], run.keywords["progress_seconds"]) == (
        "s", 3.0, 0.5)
    assert dispatcher.poll_seconds == 1.0
