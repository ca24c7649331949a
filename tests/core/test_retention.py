"""Retention with a moved clock: exactly the portraits that are due go, files and rows, on
SQLite and PostgreSQL, local storage and S3 (moto's server)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from impasto.errors import PortraitInUse
from impasto.service.core import jobs, retention
from impasto.service.core.models import Email, Job, JobKind, Order, OrderStatus, Portrait, utcnow
from impasto.service.core.storage import LocalStorage, make_key, storage_from_url
from support.db import add_order

DAYS = 30
BUCKET = "impasto-retention"


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "files", secret=b"retention-secret", base_url="http://shop.test")
    endpoint = request.getfixturevalue("moto_endpoint")
    store = storage_from_url(f"s3://{BUCKET}/run-{uuid.uuid4().hex[:8]}", secret=b"retention-secret",
                             base_url="http://shop.test", endpoint_url=endpoint)
    try:
        store.client.create_bucket(Bucket=BUCKET)
    except store.client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return store


def make_portrait(sessions, storage, *, created, order: dict | None = None) -> dict:
    """A portrait with its photo, two finished previews (result, state, snapshot each), the
    previews email, and optionally an order with its print and its email."""
    with sessions() as session:
        photo = make_key("portraits", uuid.uuid4().hex, "photo.jpg")
        portrait = Portrait(email="ada@example.com", photo_key=photo, consent=True, created_at=created)
        session.add(portrait)
        session.flush()
        storage.put(photo, b"photo", content_type="image/jpeg")
        keys, job_ids = [photo], []
        for style in ("starry", "scream"):
            job = jobs.enqueue(session=session, portrait_id=portrait.id, kind=JobKind.PREVIEW, style=style)
            job_ids.append(job.id)
        if order is not None:
            print_job = jobs.enqueue(session=session, portrait_id=portrait.id, kind=JobKind.PRINT, style="starry",
                                     parent_job_id=job_ids[0])
            job_ids.append(print_job.id)
            row = add_order(session, portrait, preview_job_id=job_ids[0], print_job_id=print_job.id, **order)
            session.add(Email(dedupe_key=f"print_ready:{row.number}", to=portrait.email, template="print_ready"))
        for job_id in job_ids:
            for name in ("result.png", "state.safetensors", "snapshot.jpg"):
                keys.append(make_key("jobs", job_id, name))
                storage.put(keys[-1], b"x", content_type="application/octet-stream")
        session.add(Email(dedupe_key=f"previews_ready:{portrait.id}", to=portrait.email, template="previews_ready"))
        session.commit()
        return {"id": portrait.id, "keys": keys, "jobs": job_ids}


def remaining(sessions) -> dict[str, int]:
    with sessions() as session:
        return {model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (Portrait, Job, Order, Email)}


def alive(sessions, storage, portrait: dict) -> bool:
    """Whether the portrait's row and all its files are there (False: all gone; else fail)."""
    with sessions() as session:
        row = session.get(Portrait, portrait["id"]) is not None
    files = [storage.exists(key) for key in portrait["keys"]]
    assert all(files) == row and any(files) == row, (row, files)
    return row


def test_retention_deletes_exactly_what_is_due_as_the_clock_moves(sessions, storage):
    t0 = utcnow()
    unordered = make_portrait(sessions, storage, created=t0)
    shipped = make_portrait(sessions, storage, created=t0, order={
        "status": OrderStatus.SHIPPED, "shipped_at": t0 + timedelta(days=5)})
    cancelled = make_portrait(sessions, storage, created=t0, order={
        "status": OrderStatus.CANCELLED, "cancelled_at": t0 + timedelta(hours=12)})
    printing = make_portrait(sessions, storage, created=t0 - timedelta(days=400), order={
        "status": OrderStatus.PRINTED, "printed_at": t0})
    with sessions() as session:     # someone else's mail stays whatever happens
        session.add(Email(dedupe_key="other:1", to="bob@example.com", template="previews_ready"))
        session.commit()
    everyone = (unordered, shipped, cancelled, printing)

    def purge(days_later: float) -> int:
        return retention.purge_expired(sessions=sessions, storage=storage, days=DAYS,
                                       now=t0 + timedelta(days=days_later))

    assert purge(29) == 0 and all(alive(sessions, storage, p) for p in everyone)
    assert purge(31) == 2
    assert [alive(sessions, storage, p) for p in everyone] == [False, True, False, True]
    assert purge(34.9) == 0
    assert purge(35.1) == 1
    assert [alive(sessions, storage, p) for p in everyone] == [False, False, False, True]
    assert purge(4000) == 0 and alive(sessions, storage, printing)     # under way: never due
    assert remaining(sessions) == {"portraits": 1, "jobs": 3, "orders": 1, "emails": 3}


def test_deleting_now_is_refused_while_a_print_is_under_way_and_idempotent(sqlite_sessions, tmp_path):
    storage = LocalStorage(tmp_path / "files", secret=b"retention-secret", base_url="http://shop.test")
    busy = make_portrait(sqlite_sessions, storage, created=utcnow(), order={"status": OrderStatus.RENDERING})
    with sqlite_sessions() as session, pytest.raises(PortraitInUse):
        retention.delete_portrait(session=session, storage=storage, portrait_id=busy["id"])
    assert alive(sqlite_sessions, storage, busy)
    with sqlite_sessions() as session:
        assert retention.delete_portrait(session=session, storage=storage, portrait_id=busy["id"], force=True)
        assert not retention.delete_portrait(session=session, storage=storage, portrait_id=busy["id"])
    assert not alive(sqlite_sessions, storage, busy)
    assert list((tmp_path / "files").rglob("*")) == []          # no empty customer's folder left


def test_the_sweeper_purges_at_start_on_its_clock(sqlite_sessions, tmp_path):
    storage = LocalStorage(tmp_path / "files", secret=b"retention-secret", base_url="http://shop.test")
    old = make_portrait(sqlite_sessions, storage, created=utcnow())
    sweeper = retention.RetentionSweeper(sessions=sqlite_sessions, storage=storage, days=DAYS,
                                         clock=lambda: utcnow() + timedelta(days=DAYS + 1))
    sweeper.start()
    try:
        from support.net import wait_until

        def row_gone() -> bool:     # files go first, then the row: poll the row, then check all of it
            with sqlite_sessions() as session:
                return session.get(Portrait, old["id"]) is None

        wait_until(row_gone, "the sweeper's first round", seconds=30)
        assert not alive(sqlite_sessions, storage, old)
    finally:
        sweeper.stop()
