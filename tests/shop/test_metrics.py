"""``GET /metrics``: the counters move with real requests, the gauges follow the tables.

Counters are per process and shared by every app a test session makes, so the tests read
them before and after and compare; the table gauges belong to one app's database.
"""

from __future__ import annotations

import json
import logging

from impasto.service.core.models import JobKind
from support.metrics import sample, value
from support.shop import finish_jobs, make_catalog, make_settings, photo_bytes, upload


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "set-cookie" not in response.headers          # a scrape gets no CSRF cookie
    return response.text


def test_an_upload_and_a_refusal_are_counted_by_outcome_and_reason(web):
    client, _ = web
    before = scrape(client)
    assert upload(client).status_code == 201
    assert upload(client, b"GIF89a not really", filename="x.gif", content_type="image/gif").status_code in (415, 422)
    refused = upload(client, b"plain text, not a photo", filename="x.txt", content_type="text/plain")
    after = scrape(client)
    assert value(after, "impasto_uploads_accepted_total") == value(before, "impasto_uploads_accepted_total") + 1
    reason = {415: "unsupported_format", 422: "invalid"}[refused.status_code]
    assert (value(after, "impasto_uploads_rejected_total", reason=reason)
            > value(before, "impasto_uploads_rejected_total", reason=reason))


def test_requests_are_counted_by_route_template_not_by_path(web):
    client, _ = web
    public_id = upload(client).json()["id"]
    template = "/api/v1/portraits/{public_id}"
    labels = {"method": "GET", "route": template, "status": "200"}
    before = value(scrape(client), "impasto_http_requests_total", **labels)
    client.get(f"/api/v1/portraits/{public_id}")
    client.get(f"/api/v1/portraits/{public_id}")
    client.get("/no/such/page/at/all")
    after = scrape(client)
    assert value(after, "impasto_http_requests_total", **labels) == before + 2
    assert value(after, "impasto_http_requests_total", method="GET", route="unmatched", status="404") >= 1
    assert public_id not in after                       # no path, no customer's id, in a label


def test_job_gauges_follow_the_job_table_by_queue_and_status(web):
    client, shop = web
    upload(client)                                      # two styles: two preview jobs
    text = scrape(client)
    assert sample(text, "impasto_jobs", queue="preview", status="queued") == 2
    assert sample(text, "impasto_jobs", queue="preview", status="done") == 0
    assert sample(text, "impasto_jobs", queue="print", status="queued") == 0
    finish_jobs(shop, JobKind.PREVIEW)
    text = scrape(client)
    assert sample(text, "impasto_jobs", queue="preview", status="queued") == 0
    assert sample(text, "impasto_jobs", queue="preview", status="done") == 2
    assert sample(text, "impasto_database_up") == 1
    assert sample(text, "impasto_mail_outbox_emails", status="pending") is not None


def test_workers_and_their_heartbeat_age_are_read_from_the_worker_table(web):
    from datetime import timedelta

    from impasto.service.core import workers
    from impasto.service.core.models import utcnow

    client, shop = web
    with shop.sessions() as session:
        workers.register_worker(session=session, name="gpu-1", host="h", device="cuda:0", queues=["preview"],
                                now=utcnow() - timedelta(seconds=90))
    text = scrape(client)
    assert sample(text, "impasto_workers") == 1
    assert 89 <= sample(text, "impasto_worker_heartbeat_age_seconds", worker="gpu-1") < 300


def test_a_metrics_token_closes_the_scrape_to_everyone_without_it(tmp_path):
    from fastapi.testclient import TestClient

    from impasto.service.shop.app import create_app
    from support.shop import NullDispatcher

    settings = make_settings(tmp_path, metrics_token="scrape-me-please", sketches=False)
    with TestClient(create_app(settings, catalog=make_catalog(tmp_path), dispatcher=NullDispatcher())) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        response = client.get("/metrics", headers={"Authorization": "Bearer scrape-me-please"})
        assert response.status_code == 200 and "impasto_jobs" in response.text


# --- request ids -------------------------------------------------------------------------

def test_every_answer_carries_a_request_id_and_a_sane_incoming_one_is_kept(web):
    client, _ = web
    first, second = client.get("/healthz"), client.get("/healthz")
    assert len(first.headers["x-request-id"]) == 32
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    kept = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a9c2e.0001"})
    assert kept.headers["x-request-id"] == "lb-7f3a9c2e.0001"
    for insane in ("short", "has spaces in it", "x" * 200, "quote\"s-are-out", "<script>alert(1)</script>"):
        replaced = client.get("/healthz", headers={"X-Request-ID": insane})
        assert replaced.headers["x-request-id"] != insane and len(replaced.headers["x-request-id"]) == 32


def test_json_log_lines_carry_the_request_id_the_answer_names(web):
    import io

    from impasto.logs import JsonFormatter

    client, _ = web
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("impasto")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        response = upload(client, photo_bytes(), email="grace@example.com")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    request_id = response.headers["x-request-id"]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]     # every line is one object
    mine = [line for line in lines if line.get("request_id") == request_id]
    assert any("uploaded" in line["message"] for line in mine), lines
    assert any(line["message"].startswith("job ") and line["logger"] == "impasto.service.core.jobs"
               for line in mine)
    assert {"time", "level", "logger", "message"} <= set(mine[0])
