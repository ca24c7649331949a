"""The farm on Redis: the 60-job run of the RabbitMQ tests, with Redis as the broker and
``visibility_timeout`` from the settings (the database and the workers are the same)."""

from __future__ import annotations

import farm_support
import pytest
from farm_support import Farm, idle_gaps

from impasto.service.core.dispatch import list_workers
from impasto.service.core.models import JobStatus

WORKERS = ("r1", "r2", "r3")
IDLE_TOLERANCE_SECONDS = 2.0


@pytest.fixture(scope="module")
def farm(tmp_path_factory, postgres_url, redis_url, vgg16_state):
    with farm_support.redis_database(redis_url) as broker_url, farm_support.pg_schema(postgres_url) as db_url:
        farm = Farm(tmp_path_factory.mktemp("farm-redis"), broker_url=broker_url, database_url=db_url)
        farm.env["IMPASTO_BROKER_VISIBILITY_TIMEOUT_SECONDS"] = "3600"
        try:
            for name in WORKERS:
                farm.start_worker(name)
            farm.wait_ready(*WORKERS)
            yield farm
        finally:
            farm.close()


def test_sixty_jobs_run_exactly_once_on_redis_and_no_worker_idles(farm):
    ids = farm.enqueue(60)
    rows = farm.wait_finished(ids, seconds=240)

    assert {(row.status, row.attempts) for row in rows} == {(JobStatus.DONE, 1)}
    assert {row.worker for row in rows} == set(WORKERS)
    for row in rows:
        assert farm.outputs(row.id) == ["result.png", "state.safetensors"]
    emails = farm.wait_emails([row.portrait_id for row in rows])
    assert len({email.dedupe_key for email in emails}) == len(emails) == 60
    with farm.sessions() as session:
        assert sum(info.jobs_done for info in list_workers(session=session)) == 60
    problems, longest = idle_gaps(rows, tolerance_seconds=IDLE_TOLERANCE_SECONDS)
    assert not problems, f"longest idle overlap {longest:.2f} s: {problems[:5]}"
