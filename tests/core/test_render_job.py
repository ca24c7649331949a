"""worker.run_job end to end: real tiny renders (32–64 px, a few iterations), real storage.

The job-table parts run on SQLite and PostgreSQL in the end-to-end preview; the other
render tests use SQLite only, as their subject is the render path, not the database.
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select, update

from impasto.catalog import Catalog
from impasto.config import Settings
from impasto.engine.features import native_bfloat16
from impasto.service.core import jobs, orders
from impasto.service.core import render_job as worker
from impasto.service.core.models import Email, Job, JobKind, JobStatus, Order, OrderStatus, Portrait
from impasto.service.core.storage import LocalStorage
from impasto.state import load_state
from support.db import add_order, add_portrait

PHOTO_KEY = "portraits/p1/photo.png"
FAST = {"start_size": 0, "num_iterations": 3}


def png_bytes(width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def shop(tmp_path):
    """Storage with a photo, a one-style catalog and settings for 48 px previews."""
    storage = LocalStorage(tmp_path / "files", secret=b"test-secret", base_url="http://shop.test")
    storage.put(PHOTO_KEY, png_bytes(48, 40, seed=1), content_type="image/png")
    (tmp_path / "starry.png").write_bytes(png_bytes(48, 48, seed=2))
    catalog = Catalog(tmp_path / "styles")
    catalog.add("starry", tmp_path / "starry.png", {"style_weight": 200.0, "seed": 5})
    settings = Settings(data_dir=tmp_path, public_url="http://shop.test/", preview_size=48,
                        preview_iterations=3)
    return {"storage": storage, "catalog": catalog, "settings": settings}


def new_portrait(sessions) -> int:
    with sessions() as session:
        portrait = add_portrait(session)
        portrait.photo_key = PHOTO_KEY
        session.commit()
        return portrait.id


def queue(sessions, portrait_id, kind=JobKind.PREVIEW, params=FAST, **options) -> int:
    with sessions() as session:
        job = jobs.enqueue(session=session, portrait_id=portrait_id, kind=kind, style="starry", params=params,
                           **options)
        session.commit()
        return job.id


def claim_and_run(sessions, shop, job_id, **options) -> JobStatus | None:
    with sessions() as session:
        assert jobs.claim(session=session, worker="w1").id == job_id
    return worker.run_job(job_id, session_factory=sessions, **shop, **options)


def job_row(sessions, job_id) -> Job:
    with sessions() as session:
        return session.get(Job, job_id)


def emails(sessions) -> list[Email]:
    with sessions() as session:
        return session.scalars(select(Email).order_by(Email.id)).all()


@pytest.fixture
def progress_calls(monkeypatch) -> list[tuple[int, int]]:
    calls = []
    real = jobs.report_progress

    def spy(**kwargs):
        calls.append((kwargs["iteration"], kwargs["total"]))
        return real(**kwargs)

    monkeypatch.setattr(jobs, "report_progress", spy)
    return calls


# --- the happy paths ---------------------------------------------------------------------

def test_a_preview_is_rendered_stored_recorded_and_announced(sessions, shop, progress_calls):
    portrait_id = new_portrait(sessions)
    job_id = queue(sessions, portrait_id)
    assert claim_and_run(sessions, shop, job_id, progress_seconds=0) is JobStatus.DONE

    job = job_row(sessions, job_id)
    assert (job.status, job.progress, job.iteration, job.total) == (JobStatus.DONE, 1.0, 3, 3)
    assert job.result_key == f"jobs/{job_id}/result.png"
    assert job.state_key == f"jobs/{job_id}/state.safetensors"
    assert progress_calls == [(1, 3), (2, 3), (3, 3)]
    with Image.open(io.BytesIO(shop["storage"].get(job.result_key))) as result:
        assert (result.format, result.size) == ("PNG", (48, 40))
    state_path = shop["catalog"].root.parent / "state.safetensors"
    state_path.write_bytes(shop["storage"].get(job.state_key))
    state = load_state(state_path)
    assert sorted(state.scales) == [48] and state.params.style_weight == 200.0 and state.params.seed == 5
    assert state.params.portrait_face_iterations == shop["settings"].preview_face_iterations == 7
    assert state.params.precision == ("bfloat16" if native_bfloat16("cpu") else "float32")   # auto
    email, = emails(sessions)
    assert (email.dedupe_key, email.template, email.to) == (f"previews_ready:{portrait_id}", "previews_ready",
                                                            "ada@example.com")
    assert email.context["portrait_url"].startswith("http://shop.test/portraits/")


@pytest.mark.parametrize(("setting", "native", "expected"), [
    ("auto", True, "bfloat16"), ("auto", False, "float32"), ("float32", True, "float32"),
    ("bfloat16", False, "bfloat16")])
def test_a_previews_precision_is_bfloat16_only_where_the_hardware_has_it(monkeypatch, tmp_path, setting, native,
                                                                          expected):
    import impasto.engine.features as features

    asked = []
    monkeypatch.setattr(features, "native_bfloat16", lambda device: asked.append(str(device)) or native)
    settings = Settings(data_dir=tmp_path, preview_precision=setting)
    assert worker._preview_precision(settings, {"device": "cpu"}) == expected
    assert asked == (["cpu"] if setting == "auto" else [])


def test_previews_ready_is_queued_once_all_previews_are_done(sqlite_sessions, shop):
    portrait_id = new_portrait(sqlite_sessions)
    first, second = queue(sqlite_sessions, portrait_id), queue(sqlite_sessions, portrait_id)
    claim_and_run(sqlite_sessions, shop, first)
    assert emails(sqlite_sessions) == []
    claim_and_run(sqlite_sessions, shop, second)
    assert len(emails(sqlite_sessions)) == 1
    with sqlite_sessions() as session:         # a re-run finishing again sends nothing new
        jobs.rerun(session=session, job_id=second)
        session.commit()
    claim_and_run(sqlite_sessions, shop, second)
    assert len(emails(sqlite_sessions)) == 1


def test_a_print_continues_its_preview_and_readies_the_order(sqlite_sessions, shop, progress_calls):
    portrait_id = new_portrait(sqlite_sessions)
    preview = queue(sqlite_sessions, portrait_id)
    claim_and_run(sqlite_sessions, shop, preview)
    print_ = queue(sqlite_sessions, portrait_id, JobKind.PRINT, parent_job_id=preview,
                   params={"image_size": 64, "num_iterations": 2})
    with sqlite_sessions() as session:
        order = add_order(session, session.get(Portrait, portrait_id),
                          preview_job_id=preview, print_job_id=print_)
        orders.set_order_status(session=session, order_id=order.id, status=OrderStatus.RENDERING)
        session.commit()
    progress_calls.clear()
    assert claim_and_run(sqlite_sessions, shop, print_, progress_seconds=0) is JobStatus.DONE

    assert progress_calls[-1] == (2, 2)       # only the new 64 px scale: the preview's 48 px was kept
    with Image.open(io.BytesIO(shop["storage"].get(worker.result_key(print_)))) as result:
        assert result.size == (64, 53)
    state_path = shop["catalog"].root.parent / "print.safetensors"
    state_path.write_bytes(shop["storage"].get(worker.state_key(print_)))
    saved = load_state(state_path).params
    assert saved.portrait_face_iterations is None and saved.precision == "float32"   # the preview's shortcuts stay its own
    with sqlite_sessions() as session:
        order = session.get(Order, order.id)
        assert order.status is OrderStatus.READY and order.ready_at is not None
    mail = emails(sqlite_sessions)[-1]
    assert mail.dedupe_key == f"print_ready:{order.number}" and mail.template == "print_ready"
    assert mail.context["download_url"].endswith(f"/orders/{order.number}/download")
    assert mail.context["size"] == "8x10in" and mail.context["name"] == "Ada Lovelace"


def test_a_retry_continues_from_the_state_its_last_attempt_stored(sqlite_sessions, shop, progress_calls):
    job_id = queue(sqlite_sessions, new_portrait(sqlite_sessions))
    claim_and_run(sqlite_sessions, shop, job_id)
    first = shop["storage"].get(worker.result_key(job_id))
    with sqlite_sessions() as session:   # as if the machine died after storing its last scale
        session.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.QUEUED))
        session.commit()
    progress_calls.clear()
    assert claim_and_run(sqlite_sessions, shop, job_id) is JobStatus.DONE
    assert progress_calls == []                                  # nothing left to render
    assert shop["storage"].get(worker.result_key(job_id)) == first


# --- stopping ----------------------------------------------------------------------------

def start_long_render(sessions, shop, **options):
    job_id = queue(sessions, new_portrait(sessions), params={"start_size": 0, "num_iterations": 5000,
                                                               "image_size": 32})
    outcome = {}
    with sessions() as session:
        jobs.claim(session=session, worker="w1")
    thread = threading.Thread(target=lambda: outcome.setdefault(
        "status", worker.run_job(job_id, session_factory=sessions, **shop, progress_seconds=0.05, **options)))
    thread.start()
    deadline = time.monotonic() + 120
    while job_row(sessions, job_id).iteration == 0:
        assert time.monotonic() < deadline and thread.is_alive(), "the render never reported progress"
        time.sleep(0.05)
    return job_id, thread, outcome


def test_cancelling_stops_a_running_render(sqlite_sessions, shop):
    job_id, thread, outcome = start_long_render(sqlite_sessions, shop)
    with sqlite_sessions() as session:
        jobs.cancel(session=session, job_id=job_id)
        session.commit()
    thread.join(timeout=120)
    assert not thread.is_alive() and outcome["status"] is JobStatus.CANCELLED
    job = job_row(sqlite_sessions, job_id)
    assert job.status is JobStatus.CANCELLED and job.iteration < 5000 and job.result_key is None


def test_an_interrupt_hands_the_job_back_without_using_an_attempt(sqlite_sessions, shop):
    interrupt = threading.Event()
    job_id, thread, outcome = start_long_render(sqlite_sessions, shop, interrupt=interrupt)
    interrupt.set()
    thread.join(timeout=120)
    assert outcome["status"] is JobStatus.QUEUED
    job = job_row(sqlite_sessions, job_id)
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)


# --- failures ----------------------------------------------------------------------------

def test_a_photo_that_is_not_an_image_fails_for_good_with_the_reason(sqlite_sessions, shop):
    shop["storage"].put(PHOTO_KEY, b"GIF89a but not really", content_type="image/gif")
    job_id = queue(sqlite_sessions, new_portrait(sqlite_sessions))
    assert claim_and_run(sqlite_sessions, shop, job_id) is JobStatus.FAILED
    job = job_row(sqlite_sessions, job_id)
    assert job.attempts == 1 and "not an image" in job.error
    assert emails(sqlite_sessions) == []


def test_a_photo_missing_from_storage_fails_for_good(sqlite_sessions, shop):
    shop["storage"].delete(PHOTO_KEY)
    job_id = queue(sqlite_sessions, new_portrait(sqlite_sessions))
    assert claim_and_run(sqlite_sessions, shop, job_id) is JobStatus.FAILED
    assert job_row(sqlite_sessions, job_id).attempts == 1


def test_a_style_missing_from_the_catalog_fails_for_good(sqlite_sessions, shop):
    shop["catalog"].remove("starry")
    job_id = queue(sqlite_sessions, new_portrait(sqlite_sessions))
    assert claim_and_run(sqlite_sessions, shop, job_id) is JobStatus.FAILED
    assert "no style 'starry'" in job_row(sqlite_sessions, job_id).error


def test_an_unexpected_error_is_logged_and_retried(sqlite_sessions, shop, caplog):
    class BrokenStorage:
        def get(self, key):
            raise RuntimeError("disk on fire")

    job_id = queue(sqlite_sessions, new_portrait(sqlite_sessions))
    status = claim_and_run(sqlite_sessions, {**shop, "storage": BrokenStorage()}, job_id)
    assert status is JobStatus.QUEUED
    assert job_row(sqlite_sessions, job_id).error == "internal error: RuntimeError: disk on fire"
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)


def test_a_job_that_is_not_running_is_left_alone(sqlite_sessions, shop):
    job_id = queue(sqlite_sessions, new_portrait(sqlite_sessions))
    assert worker.run_job(job_id, session_factory=sqlite_sessions, **shop) is None
    assert job_row(sqlite_sessions, job_id).status is JobStatus.QUEUED


# --- wired together ----------------------------------------------------------------------

def test_the_local_dispatcher_runs_real_renders_and_hands_back_on_stop(sqlite_sessions, shop):
    import functools

    from impasto.service.core.dispatch import LocalDispatcher

    portrait_id = new_portrait(sqlite_sessions)
    quick = queue(sqlite_sessions, portrait_id)
    endless = queue(sqlite_sessions, portrait_id, JobKind.PRINT,
                    params={"start_size": 0, "image_size": 32, "num_iterations": 5000})
    stopping = threading.Event()
    run = functools.partial(worker.run_job, session_factory=sqlite_sessions, **shop,
                            progress_seconds=0.05, interrupt=stopping)
    dispatcher = LocalDispatcher(session_factory=sqlite_sessions, run_job=run, poll_seconds=0.05,
                                 stopping=stopping)
    dispatcher.start()
    try:
        deadline = time.monotonic() + 120
        while job_row(sqlite_sessions, endless).iteration == 0:
            assert time.monotonic() < deadline, "the print never started"
            time.sleep(0.05)
    finally:
        dispatcher.stop(timeout_seconds=120)
    assert job_row(sqlite_sessions, quick).status is JobStatus.DONE
    print_job = job_row(sqlite_sessions, endless)
    assert (print_job.status, print_job.attempts) == (JobStatus.QUEUED, 0)
    assert len(emails(sqlite_sessions)) == 1


def test_previews_start_from_the_sketch_and_prints_keep_their_own_iteration_budget(shop):
    from impasto.engine.params import RenderParams

    style = shop["catalog"].get("starry")
    settings = shop["settings"].model_copy(update={"preview_iterations": 20, "print_iterations": 120})

    def task(kind, params=None):
        return worker._Task(1, kind, "starry", params or {}, None, 1, 1, PHOTO_KEY, None)

    preview = worker._params(task(JobKind.PREVIEW), style, settings, None, {})
    assert (preview.init, preview.num_iterations, preview.style_weight) == ("quick", 20, 200.0)
    # a print continues the preview's options, but not its 20 iterations: shared over the print's
    # whole schedule they would leave its large scales about one iteration each
    printed = worker._params(task(JobKind.PRINT, {"print_size": "8x10in"}), style, settings, preview, {})
    assert printed.num_iterations == 120 and printed.seed == preview.seed and printed.print_size == "8x10in"
    assert isinstance(printed, RenderParams)


def test_a_finished_render_is_timed_by_kind_and_size_and_logged_with_its_job_id(sqlite_sessions, shop):
    import json
    import logging

    from prometheus_client import generate_latest

    from impasto.logs import JsonFormatter
    from impasto.service.core.metrics import REGISTRY
    from support.metrics import value

    count = "impasto_render_seconds_count"
    before = value(generate_latest(REGISTRY).decode(), count, kind="preview", size="48px")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("impasto").addHandler(handler)
    try:
        job_id = queue(sqlite_sessions, new_portrait(sqlite_sessions))
        assert claim_and_run(sqlite_sessions, shop, job_id) is JobStatus.DONE
        shop["catalog"].remove("starry")
        failed = queue(sqlite_sessions, new_portrait(sqlite_sessions))
        assert claim_and_run(sqlite_sessions, shop, failed) is JobStatus.FAILED
    finally:
        logging.getLogger("impasto").removeHandler(handler)
    text = generate_latest(REGISTRY).decode()
    assert value(text, count, kind="preview", size="48px") == before + 1     # the failed one is not timed
    assert value(text, "impasto_render_seconds_sum", kind="preview", size="48px") > 0
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any(line.get("job_id") == failed and "failed" in line["message"] for line in lines), lines


def test_a_render_whose_portrait_is_deleted_meanwhile_stops_and_drops_its_files(sqlite_sessions, shop):
    from impasto.service.core.retention import delete_portrait

    portrait_id = new_portrait(sqlite_sessions)
    job_id = queue(sqlite_sessions, portrait_id, params={"start_size": 0, "num_iterations": 50})
    deleted = []

    def delete_midway() -> None:       # run_job's hook between iterations: the customer clicks "delete"
        if not deleted:
            with sqlite_sessions() as session:
                deleted.append(delete_portrait(session=session, storage=shop["storage"], portrait_id=portrait_id))
            shop["storage"].put(worker.state_key(job_id), b"a scale stored meanwhile",
                                content_type="application/octet-stream")

    with sqlite_sessions() as session:
        jobs.claim(session=session, worker="w1")
    status = worker.run_job(job_id, session_factory=sqlite_sessions, progress_seconds=0, yield_to=delete_midway,
                            **shop)
    assert status is None and deleted == [True]
    assert not shop["storage"].exists(worker.state_key(job_id))
    assert not shop["storage"].exists(worker.result_key(job_id))
    with sqlite_sessions() as session:
        assert session.get(Job, job_id) is None
