"""The customer's pages without JavaScript, live progress over SSE, the admin's actions and
catalog, the outbox without SMTP, and the OpenAPI schema."""

from __future__ import annotations

import json
import re
import threading
import time

from fastapi.testclient import TestClient
from sqlalchemy import select

import support.shop as app_common
from impasto.service.core import jobs, orders, outbox, workers
from impasto.service.core.models import Email, EmailStatus, Job, JobKind, JobStatus, Order, OrderStatus
from impasto.service.shop.app import create_app, shop_of
from support.shop import (
    ADDRESS,
    FORM_ADDRESS,
    ADMIN_PASSWORD,
    CSRF,
    PUBLIC_URL,
    csrf_token,
    finish_jobs,
    make_catalog,
    make_settings,
    new_portrait,
    photo_bytes,
    wait_for,
)

ADMIN = ("admin", ADMIN_PASSWORD)


def test_the_pages_work_without_javascript(web):
    client, shop = web
    home = client.get("/")
    assert home.status_code == 200 and "Paint my previews" in home.text and "Starry" in home.text
    token = csrf_token(client)
    posted = client.post("/portraits", data={"csrf_token": token, "email": "ada@example.com", "consent": "yes"},
                         files={"photo": ("me.png", photo_bytes(fmt="PNG"), "image/png")}, follow_redirects=False)
    assert posted.status_code == 303
    portrait_url = posted.headers["location"]
    painting = client.get(portrait_url)
    assert 'http-equiv="refresh"' in painting.text and painting.text.count("Waiting for an easel") == 2

    finish_jobs(shop)
    done = client.get(portrait_url)
    assert 'http-equiv="refresh"' not in done.text and done.text.count("Order a print") == 2
    order_link = re.search(r'href="(/portraits/[^"]+/order\?preview=\d+)"', done.text).group(1)
    form = client.get(order_link)
    assert form.status_code == 200 and "€9.00" in form.text and "Pay on invoice" in form.text
    preview_id = order_link.rsplit("=", 1)[1]
    fields = {"csrf_token": token, "preview_id": preview_id, "print_size": "1x1in", "payment_method": "invoice"}
    refused = client.post(f"{portrait_url}/orders", data={**fields, **FORM_ADDRESS, "shipping_name": "Ada",
                                                          "shipping_line1": " "})
    assert refused.status_code == 422 and "street address" in refused.text and 'value="Ada"' in refused.text
    assert '<option value="GB" selected>' in refused.text           # what was chosen stays chosen

    placed = client.post(f"{portrait_url}/orders", data={**fields, **FORM_ADDRESS,
                                                         "shipping_name": "Ada <b>Lovelace</b>"}, follow_redirects=False)
    assert placed.status_code == 303
    confirmation = client.get(placed.headers["location"])
    number = re.search(r"IMP-[A-Z2-9]{4}-[A-Z2-9]{4}", confirmation.text).group(0)
    assert "Thank you" in confirmation.text and "&lt;b&gt;Lovelace" in confirmation.text   # escaped
    again = client.post(f"{portrait_url}/orders", data={**fields, **FORM_ADDRESS,
                                                        "shipping_name": "Ada <b>Lovelace</b>"}, follow_redirects=False)
    assert number in again.headers["location"]                 # a double click places one order
    with shop.sessions() as session:
        assert session.scalars(select(Order)).one().status is OrderStatus.ORDERED


def test_the_event_stream_shows_progress_as_it_happens(web):
    client, shop = web
    portrait = new_portrait(client, shop, finished=False)
    views: list[dict] = []
    names: list[str] = []

    def read() -> None:
        with client.stream("GET", portrait["events_url"]) as response:
            for line in response.iter_lines():
                if line.startswith("event: "):
                    names.append(line[7:])
                elif line.startswith("data: ") and names[-1] == "portrait":
                    views.append(json.loads(line[6:]))

    reader = threading.Thread(target=read)
    reader.start()
    with shop.sessions() as session:
        for job_id in [p["id"] for p in portrait["previews"]]:
            jobs.claim(session=session, worker="test", job_id=job_id)
            jobs.report_progress(session=session, job_id=job_id, progress=0.5, iteration=2, total=4)

    def halfway() -> bool:
        return any(p["progress"] == 0.5 and p["iteration"] == 2 and p["status"] == "running"
                   for view in list(views) for p in view["previews"])

    wait_for(halfway, "the progress in the stream", seconds=30)
    finish_jobs_running(shop)
    reader.join(30)
    assert names[-1] == "done" and views[-1]["done"]
    assert all(p["status"] == "done" for p in views[-1]["previews"])


def finish_jobs_running(shop) -> None:
    with shop.sessions() as session:
        for job in session.scalars(select(Job).where(Job.status == JobStatus.RUNNING)).all():
            shop.storage.put(f"jobs/{job.id}/result.png", photo_bytes(48, 40, fmt="PNG"), content_type="image/png")
            jobs.finish(session=session, job_id=job.id, result_key=f"jobs/{job.id}/result.png")


def test_the_admin_reruns_cancels_and_moves_orders(web):
    client, shop = web
    portrait = new_portrait(client, shop)
    client.post(f"/api/v1{portrait['url']}/orders", json={"preview_id": portrait["previews"][0]["id"],
                "print_size": "1x1in", "shipping_address": ADDRESS})
    finish_jobs(shop, JobKind.PRINT)
    page = client.get("/admin", auth=ADMIN)
    assert page.status_code == 200 and "IMP-" in page.text and "Mark printed" in page.text
    token = CSRF.search(client.get("/admin", auth=ADMIN).text).group(1)   # bound to Basic (issue 12)
    preview = portrait["previews"][1]["id"]
    assert client.post(f"/admin/jobs/{preview}/rerun", data={"csrf_token": token}, auth=ADMIN).status_code == 200
    with shop.sessions() as session:
        assert session.get(Job, preview).status is JobStatus.QUEUED
        order = session.scalars(select(Order)).one()
    status_url = f"/admin/orders/{order.id}/status"
    assert client.post(status_url, data={"csrf_token": token, "status": "printed"}, auth=ADMIN).status_code == 200
    untracked = client.post(status_url, data={"csrf_token": token, "status": "shipped"}, auth=ADMIN,
                            headers={"accept": "application/json"})
    assert untracked.status_code == 422 and "carrier" in untracked.json()["detail"]
    shipped = client.post(status_url, auth=ADMIN, data={"csrf_token": token, "status": "shipped", "carrier": "DHL",
                                                        "tracking_number": "JD0123"})
    assert shipped.status_code == 200
    backwards = client.post(status_url, data={"csrf_token": token, "status": "printed"}, auth=ADMIN,
                            headers={"accept": "application/json"})
    assert backwards.status_code == 409 and "shipped" in backwards.json()["detail"]
    with shop.sessions() as session:
        assert session.get(Order, order.id).status is OrderStatus.SHIPPED
    fragment = client.get("/admin/jobs", auth=ADMIN)
    assert fragment.status_code == 200 and 'hx-trigger="every 3s"' in fragment.text


def test_the_admin_adds_and_removes_styles(web):
    client, shop = web
    token = CSRF.search(client.get("/admin", auth=ADMIN).text).group(1)   # bound to Basic (issue 12)

    def add(name: str, preset: str):
        return client.post("/admin/styles", auth=ADMIN, data={"csrf_token": token, "name": name, "title": "Ochre",
                                                                "preset": preset},
                           files={"image": ("ochre.jpg", photo_bytes(300, 300, seed=3), "image/jpeg")})

    assert add("ochre", '{"style_weight": 250, "original_colors": true}').status_code == 200
    styles = {s["name"]: s for s in client.get("/api/v1/styles").json()}
    assert styles["ochre"]["preset"]["style_weight"] == 250 and styles["ochre"]["title"] == "Ochre"
    assert client.get(styles["ochre"]["image_url"]).status_code == 200
    refused = add("sneaky", '{"weights": "/etc/passwd"}')
    assert refused.status_code == 422 and "weights" in refused.text
    assert add("broken", "{not json").status_code == 422
    assert add("../up", "{}").status_code == 422
    assert shop.catalog.names() == ["ochre", "scream", "starry"]
    removed = client.post("/admin/styles/ochre/delete", auth=ADMIN, data={"csrf_token": token})
    assert removed.status_code == 200 and shop.catalog.names() == ["scream", "starry"]


def test_without_smtp_mails_wait_in_the_outbox_and_go_out_later(tmp_path, smtp_box):
    settings = make_settings(tmp_path)
    catalog = make_catalog(tmp_path)
    with TestClient(create_app(settings, catalog=catalog, dispatcher=app_common.NullDispatcher())) as client:
        shop = shop_of(client.app)
        portrait = new_portrait(client, shop)
        with shop.sessions() as session:          # as the worker does when the previews are done
            outbox.queue_email(session=session, dedupe_key="previews_ready:1", to="ada@example.com",
                             template="previews_ready",
                             context={"portrait": portrait["id"], "portrait_url": PUBLIC_URL + portrait["url"]})
            session.commit()
        time.sleep(0.3)
        with shop.sessions() as session:
            mail = session.scalars(select(Email)).one()
            assert (mail.status, mail.attempts) == (EmailStatus.PENDING, 0)
    smtp_url, box = smtp_box
    app = create_app(settings.model_copy(update={"smtp_url": smtp_url}), catalog=catalog,
                     dispatcher=app_common.NullDispatcher())
    shop_of(app).outbox_seconds = 0.05
    with TestClient(app):
        wait_for(lambda: box.messages, "the waiting mail")
    assert portrait["url"] in box.texts()["Your previews are ready"]


def test_the_openapi_schema_lists_the_flow(web):
    client, _ = web
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) >= {"/api/v1/portraits", "/api/v1/portraits/{public_id}", "/api/v1/portraits/{public_id}/events",
                          "/api/v1/portraits/{public_id}/orders", "/api/v1/portraits/{public_id}/orders/{number}",
                          "/api/v1/styles", "/api/v1/prints"}
    assert not any(path.startswith(("/admin", "/files", "/portraits")) for path in paths)
    options = schema["components"]["schemas"]["RenderOptions"]["properties"]
    assert options["style_weight"]["description"] and "weights" not in options     # derived from RenderParams
    upload_body = paths["/api/v1/portraits"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload_body
    prints = client.get("/api/v1/prints").json()
    assert prints["prints"][0] == {"size": "1x1in", "price_cents": 900, "currency": "EUR"}


def test_the_stream_stays_open_between_a_print_finishing_and_its_order_becoming_ready(web):
    """The worker finishes the print job, then readies the order in a second commit; a view
    read in between must not say "done", or the confirmation page never shows its download."""
    client, shop = web
    portrait = new_portrait(client, shop)
    preview_id = portrait["previews"][0]["id"]
    settings_size = shop.settings.prints[0].size
    response = client.post(f"/api/v1/portraits/{portrait['id']}/orders",
                           json={"preview_id": preview_id, "print_size": settings_size,
                                 "shipping_address": ADDRESS})
    assert response.status_code == 201, response.text
    with shop.sessions() as session:                       # the first commit only: the job is done
        job = jobs.claim(session=session, worker="test", kinds=[JobKind.PRINT])
        jobs.finish(session=session, job_id=job.id, result_key=f"jobs/{job.id}/result.png")
    view = client.get(f"/api/v1/portraits/{portrait['id']}").json()
    assert view["orders"][0]["download_url"] is None and view["done"] is False
    with shop.sessions() as session:                       # the second: the order is ready
        order = session.scalars(select(Order)).one()
        orders.set_order_status(session=session, order_id=order.id, status=OrderStatus.RENDERING)
        orders.set_order_status(session=session, order_id=order.id, status=OrderStatus.READY)
        session.commit()
    view = client.get(f"/api/v1/portraits/{portrait['id']}").json()
    assert view["orders"][0]["download_url"] and view["done"] is True


def test_the_admin_shows_each_worker_and_a_vanished_one_as_gone(web):
    from datetime import timedelta

    from impasto.service.core.models import utcnow

    client, shop = web
    with shop.sessions() as session:
        workers.register_worker(session=session, name="titan:4242:0", host="titan", device="cuda:0",
                             queues=["preview", "print"], memory_bytes=12 * 2**30)
        workers.register_worker(session=session, name="gtx970:77:0", host="gtx970", device="cuda:0",
                             queues=["preview"], memory_bytes=4 * 2**30, now=utcnow() - timedelta(hours=1))
    page = client.get("/admin", auth=ADMIN).text
    titan = page[page.index('data-worker="titan:4242:0"'):]
    titan = titan[:titan.index("</tr>")]
    assert "titan" in titan and "12.0 GiB" in titan and "preview, print" in titan and "alive" in titan
    gone = page[page.index('data-worker="gtx970:77:0"'):]
    gone = gone[:gone.index("</tr>")]
    assert "4.0 GiB" in gone and ">gone<" in gone
