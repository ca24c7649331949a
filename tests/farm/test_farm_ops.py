"""Operating a real farm (Redis broker, PostgreSQL, a real `impasto worker`): its metrics port,
JSON log lines with job ids, Celery's remote control through the module-level app, and the
task events Flower reads (`celery events --dump`; Flower itself is not installed here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import farm_support
import pytest
from farm_support import Farm

from impasto.service.core.models import JobStatus
from support.metrics import value
from support.net import free_port, wait_until

CELERY = str(Path(sys.executable).with_name("celery"))


@pytest.fixture(scope="module")
def farm(tmp_path_factory, postgres_url, redis_url, vgg16_state):
    with farm_support.redis_database(redis_url) as broker_url, farm_support.pg_schema(postgres_url) as db_url:
        farm = Farm(tmp_path_factory.mktemp("farm-ops"), broker_url=broker_url, database_url=db_url)
        farm.env.update({"IMPASTO_BROKER_VISIBILITY_TIMEOUT_SECONDS": "3600", "IMPASTO_LOG_FORMAT": "json"})
        farm.metrics_port = free_port()
        try:
            farm.start_worker("m1", extra=("--metrics-port", str(farm.metrics_port)))
            farm.wait_ready("m1")
            yield farm
        finally:
            farm.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_the_workers_metrics_port_counts_the_renders_its_render_process_ran(farm):
    count = "impasto_render_seconds_count"
    before = value(scrape(farm.metrics_port), count, kind="preview", size="32px")
    ids = farm.enqueue(2)
    rows = farm.wait_finished(ids, seconds=180)
    assert {row.status for row in rows} == {JobStatus.DONE}
    # the render process writes its numbers before the task returns; the scrape sums them
    wait_until(lambda: value(scrape(farm.metrics_port), count, kind="preview", size="32px") == before + 2,
               "the worker's metrics to count both renders", seconds=10)
    assert value(scrape(farm.metrics_port), "impasto_render_seconds_sum", kind="preview", size="32px") > 0

    lines = [line for line in (farm.logs / "m1.log").read_text().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]            # every JSON-looking line is one object
    assert {row.id for row in rows} <= {record.get("job_id") for record in records}


def test_celery_inspect_reaches_the_worker_through_the_module_level_app(farm):
    env = {**farm.env, "IMPASTO_BROKER_URL": farm.broker_url}
    result = subprocess.run([CELERY, "-A", "impasto.service.farm.celery_app", "inspect", "active",
                             "--timeout", "10", "--json"], capture_output=True, text=True, env=env, timeout=90)
    assert result.returncode == 0, result.stderr + result.stdout
    replies = json.loads(result.stdout.strip().splitlines()[-1])
    assert any(node.startswith("m1@") for node in replies), replies


def test_task_events_reach_celery_events_as_flower_would_read_them(farm):
    env = {**farm.env, "IMPASTO_BROKER_URL": farm.broker_url}
    log = farm.logs / "events.log"
    with open(log, "w") as out:
        dump = subprocess.Popen([CELERY, "-A", "impasto.service.farm.celery_app", "events", "--dump"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        # the worker's heartbeats (every 2 s) show the receiver is bound: the job's events follow
        wait_until(lambda: re.search(r"^m1@\S+ \[[^]]+\] heartbeat: ", log.read_text(), flags=re.MULTILINE),
                   "celery events to see the worker's heartbeat", seconds=60)
        ids = farm.enqueue(1)
        farm.wait_finished(ids, seconds=120)
        job = "impasto.render_job("

        def seen(event: str) -> bool:
            return any(event in line and job in line and f"args=[{ids[0]}]" in line
                       for line in log.read_text().splitlines())
        for event in ("task sent", "task received", "task started", "task succeeded"):  # the shop's, the worker's
            wait_until(lambda event=event: seen(event), f"the {event!r} event", seconds=30)
    finally:
        dump.terminate()
        dump.wait(30)
