"""Helpers of the shop's tests (``from support.shop import ...``; the fixtures built on them,
``web`` and ``smtp_box``, live in the conftest.py files): photos, a tiny catalog, settings
for fast renders, the SMTP box's handler, a PostgreSQL schema per test, and helpers that
finish jobs by hand where a test is about the web, not the renders.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import io
import re
import threading

import numpy as np
from PIL import Image
from sqlalchemy import func, select

from impasto.catalog import Catalog
from impasto.config import PrintOption, Settings
from impasto.service.core import jobs, orders
from impasto.service.core import render_job as worker
from impasto.service.core.models import Job, JobKind, Order, OrderStatus, Portrait
from support.db import postgres_schema  # noqa: F401 - the shop's tests take it from here too
from support.net import free_port, wait_until  # noqa: F401 - likewise

WAIT_SECONDS = 120      # a ceiling for renders that take seconds; never a timing claim
SECRET = "test-secret-key-0123456789abcdef"
PUBLIC_URL = "http://testserver"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


# A shipping address: as the API takes it, and as the order form posts it.
ADDRESS = {"name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London", "postal_code": "SW1Y 4LB",
           "country": "GB"}
FORM_ADDRESS = {f"shipping_{name}": value for name, value in ADDRESS.items()}


def photo_bytes(width: int = 320, height: int = 256, *, seed: int = 0, fmt: str = "JPEG", **save) -> bytes:
    """A smooth gradient with a little noise: compresses like a photo, decodes fast."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    pixels = pixels + np.random.default_rng(seed).integers(0, 24, pixels.shape)
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def make_catalog(tmp_path, names=("starry",)) -> Catalog:
    catalog = Catalog(tmp_path / "styles")
    for index, name in enumerate(names):
        path = tmp_path / f"{name}.png"
        path.write_bytes(photo_bytes(48, 48, seed=index + 7, fmt="PNG"))
        catalog.add(name, path, {"start_size": 0, "seed": index + 1}, title=name.title())
    return catalog


def make_settings(tmp_path, **overrides) -> Settings:
    """48 px previews in 4 iterations; a 1×1 in print at 64 dpi (64 px) continuing them."""
    values = {"data_dir": tmp_path, "public_url": PUBLIC_URL, "secret_key": SECRET, "preview_size": 48,
              "preview_iterations": 4, "print_dpi": 64, "signed_url_seconds": 300,
              "prints": [PrintOption(size="1x1in", price_cents=900), PrintOption(size="1x1.25in", price_cents=1500)]}
    values.update(overrides)
    return Settings(**values)


class NullDispatcher:
    """For tests about the web, not the renders: jobs stay queued until a test finishes them."""

    def __init__(self) -> None:
        self.notified = 0

    def start(self) -> None:
        pass

    def stop(self, *, timeout_seconds=None) -> None:
        pass

    def notify(self) -> None:
        self.notified += 1

    def workers(self) -> list:
        return []


def finish_jobs(shop, kind: JobKind = JobKind.PREVIEW) -> list[int]:
    """Claim and finish every queued job of ``kind`` with a small stored PNG; ready their orders."""
    done = []
    with shop.sessions() as session:
        while (job := jobs.claim(session=session, worker="test", kinds=[kind])) is not None:
            shop.storage.put(worker.result_key(job.id), photo_bytes(48, 40, fmt="PNG"), content_type="image/png")
            jobs.finish(session=session, job_id=job.id, result_key=worker.result_key(job.id))
            done.append(job.id)
            order = session.scalars(select(Order).where(Order.print_job_id == job.id)).one_or_none()
            if order is not None:
                orders.set_order_status(session=session, order_id=order.id, status=OrderStatus.RENDERING)
                orders.set_order_status(session=session, order_id=order.id, status=OrderStatus.READY)
                session.commit()
    return done


def csrf_token(client, path: str = "/") -> str:
    """Visit a page (which sets the CSRF cookie) and read the token its forms carry."""
    response = client.get(path)
    match = CSRF.search(response.text)
    assert match, f"no CSRF token on {path} ({response.status_code})"
    return match.group(1)


def count_rows(shop, model=Portrait) -> int:
    with shop.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def stored_files(shop) -> list[str]:
    """The files under the shop's storage, once the sketch thread is idle: a sketch painted
    for a portrait deleted meanwhile is stored, then removed with its folders."""
    if shop.sketches is not None:
        assert shop.sketches.wait_until_idle(WAIT_SECONDS), "the sketch thread is still painting"
    root = shop.storage.root
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def nothing_stored(shop) -> bool:
    return count_rows(shop, Portrait) == 0 and count_rows(shop, Job) == 0 and stored_files(shop) == []


def wait_for(condition, what: str, seconds: float = WAIT_SECONDS):
    return wait_until(condition, what, seconds=seconds)


@contextlib.contextmanager
def serving(app, port: int):
    """``app`` under uvicorn on 127.0.0.1:``port``, in a thread, until the block ends."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "uvicorn", seconds=60)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(60)


def read_events(client, url: str) -> list[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream, read to its end."""
    with client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = "".join(response.iter_text())
    events = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            events.append((fields["event"], fields.get("data", "")))
    return events


# --- SMTP --------------------------------------------------------------------------------

class MailBox:
    """An aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"

    def texts(self) -> dict[str, str]:
        """Subject → plain-text body."""
        return {m["Subject"]: m.get_body(("plain",)).get_content() for m in self.messages}


# --- PostgreSQL --------------------------------------------------------------------------

# --- an app without renders --------------------------------------------------------------

ADMIN_PASSWORD = "correct-horse-battery-staple"
MAX_UPLOAD_BYTES = 300_000
MAX_UPLOAD_PIXELS = 2_000_000


def upload(client, photo: bytes | None = None, *, email: str = "ada@example.com", consent: bool = True,
           filename: str = "me.jpg", content_type: str = "image/jpeg"):
    """POST /api/v1/portraits."""
    data = {"email": email, "consent": "true" if consent else "false"}
    files = {"photo": (filename, photo if photo is not None else photo_bytes(), content_type)}
    return client.post("/api/v1/portraits", data=data, files=files)


def new_portrait(client, shop, *, finished: bool = True, **options) -> dict:
    """A portrait made through the API, its previews finished by hand."""
    response = upload(client, **options)
    assert response.status_code == 201, response.text
    if finished:
        finish_jobs(shop)
    return client.get(f"/api/v1/portraits/{response.json()['id']}").json()
