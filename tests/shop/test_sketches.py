"""The instant look: every card gets a feed-forward sketch right after the upload, and the
Gatys preview starts from the same picture and replaces it."""

from __future__ import annotations

import io
import logging

from fastapi.testclient import TestClient
from PIL import Image

import support.shop as app_common
from impasto.service.shop.app import create_app, shop_of
from impasto.service.shop.sketches import sketch_key
from support.shop import NullDispatcher, make_catalog, make_settings, photo_bytes, wait_for

STYLES = ("starry", "scream", "hat")


def _upload(client, photo=None):
    response = client.post("/api/v1/portraits", data={"email": "ada@example.com", "consent": "true"},
                           files={"photo": ("me.jpg", photo or photo_bytes(), "image/jpeg")})
    assert response.status_code == 201, response.text
    return response.json()


def _view(client, public_id):
    return client.get(f"/api/v1/portraits/{public_id}").json()


def test_every_card_shows_a_sketch_before_any_preview_is_painted(tmp_path):
    catalog = make_catalog(tmp_path, STYLES)
    app = create_app(make_settings(tmp_path), catalog=catalog, dispatcher=NullDispatcher())
    shop = shop_of(app)
    with TestClient(app) as client:
        portrait = _upload(client)
        view = wait_for(lambda: (v := _view(client, portrait["id"])) and all(p["image_url"] for p in v["previews"])
                        and v, "every card's sketch")
        assert [p["status"] for p in view["previews"]] == ["queued"] * 3      # nothing rendered them
        assert all(p["sketch"] and p["image_url"].endswith("?v=sketch") for p in view["previews"])
        sketches = []
        for preview in view["previews"]:
            response = client.get(preview["image_url"])                       # → signed URL → the JPEG
            assert response.status_code == 200
            with Image.open(io.BytesIO(response.content)) as image:
                assert image.format == "JPEG" and max(image.size) == 48        # the photo's shape, sketched
                sketches.append(image.convert("RGB").tobytes())
        assert len(set(sketches)) == 3                                         # each in its own style
        page = client.get(f"/portraits/{portrait['id']}")
        assert page.text.count(">Sketch</span>") == 3 and "Sketch · waiting for an easel" in page.text
        app_common.finish_jobs(shop)                                      # the previews land
        done = _view(client, portrait["id"])
        assert all(p["status"] == "done" and not p["sketch"] and "v=done" in p["image_url"]
                   for p in done["previews"])
        assert shop.storage.exists(sketch_key(done["previews"][0]["id"]))


def test_a_sketch_that_fails_is_logged_and_the_other_cards_get_theirs(tmp_path, caplog):
    catalog = make_catalog(tmp_path, STYLES)
    (catalog.root / "scream" / "style.png").write_bytes(b"not a png")        # a style broken on disk
    app = create_app(make_settings(tmp_path), catalog=catalog, dispatcher=NullDispatcher())
    with TestClient(app) as client, caplog.at_level(logging.WARNING, logger="impasto.service.shop.sketches"):
        portrait = _upload(client)
        wait_for(lambda: sum(bool(p["image_url"]) for p in _view(client, portrait["id"])["previews"]) == 2,
                 "two sketches")
        wait_for(lambda: caplog.records, "the log line")
        view = _view(client, portrait["id"])
    by_style = {p["style"]: p for p in view["previews"]}
    assert by_style["scream"]["image_url"] is None and not by_style["scream"]["sketch"]
    assert [r.getMessage() for r in caplog.records if "scream" in r.getMessage()]


def test_sketches_can_be_turned_off(tmp_path):
    app = create_app(make_settings(tmp_path, sketches=False), catalog=make_catalog(tmp_path),
                     dispatcher=NullDispatcher())
    assert shop_of(app).sketches is None
    with TestClient(app) as client:
        portrait = _upload(client)
        assert _view(client, portrait["id"])["previews"][0]["image_url"] is None


def test_render_threads_and_waiters_wait_while_the_sketches_are_painted(tmp_path, monkeypatch):
    import threading

    from impasto.service.shop.sketches import SketchPainter, SketchRequest

    release, painting = threading.Event(), threading.Event()
    painter = SketchPainter(sessions=None, storage=None, catalog=None, size=48)
    monkeypatch.setattr(painter, "_warm_up", lambda: None)
    monkeypatch.setattr(painter, "paint", lambda request: (painting.set(), release.wait(30)))
    painter.start()
    try:
        painter.yield_to()                                  # idle: returns at once
        painter.submit(SketchRequest(photo=b"", jobs=((1, "starry"),)))
        assert painting.wait(30)
        waited = threading.Event()
        renderer = threading.Thread(target=lambda: (painter.yield_to(), waited.set()))
        renderer.start()
        assert not waited.wait(0.3)                         # the render thread waits ...
        assert not painter.wait_until_idle(0.1)             # (and so do the tests' storage checks)
        release.set()
        assert waited.wait(30)                              # ... until the sketches are painted
        assert painter.wait_until_idle(30)
        renderer.join(30)
    finally:
        release.set()
        painter.stop()


def test_a_painting_card_estimates_its_time_left_from_its_own_pace():
    from datetime import timedelta

    from impasto.service.core.models import Job, JobStatus, utcnow
    from impasto.service.shop.flows import _eta_seconds

    job = Job(status=JobStatus.RUNNING, started_at=utcnow() - timedelta(seconds=10), progress=0.25)
    assert 29 <= _eta_seconds(job) <= 31             # a quarter of the work in 10 s: 30 s more
    job.progress = 0.01
    assert _eta_seconds(job) is None                  # too early to promise anything
    job.status, job.progress = JobStatus.DONE, 1.0
    assert _eta_seconds(job) is None


def test_a_sketch_for_a_portrait_deleted_meanwhile_leaves_no_file(tmp_path):
    """The sketch thread may finish after "delete my photo now": its file must not outlive the job."""
    from impasto.service.shop.sketches import SketchRequest

    catalog = make_catalog(tmp_path, STYLES)
    app = create_app(make_settings(tmp_path), catalog=catalog, dispatcher=NullDispatcher())
    shop = shop_of(app)
    with TestClient(app):
        painter = shop.sketches
        gone_job = 987654                                     # no such job row: it was deleted
        made = painter.paint(SketchRequest(photo=photo_bytes(), jobs=((gone_job, "starry"),)))
        assert made == 0
        assert not shop.storage.exists(sketch_key(gone_job))
