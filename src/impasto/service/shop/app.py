"""The shop's web app: ``create_app()`` wires settings, database, storage, mail and renders.

One process is the whole shop in embedded mode (``impasto serve``): FastAPI under uvicorn,
SQLite, local files and render threads (``LocalDispatcher``). Each part can be swapped
through ``Settings`` (PostgreSQL, S3, SMTP, a broker) or, in tests, passed in directly.

Start-up (the lifespan, in order): migrate the database; list the styles (the starter set
is made here on first use, not in a customer's request); start the dispatcher (embedded:
it first requeues jobs a crash left ``running``); start the outbox sender, a thread that
delivers queued mails — mail is never sent inside a request, and with no SMTP server
configured the rows stay pending (logged once), to go out when one is; start the retention
sweeper (``core/retention.py``: photos past ``IMPASTO_RETENTION_DAYS`` are deleted, hourly).
Shutdown reverses it: the threads stop, render threads hand their jobs back to the queue.

Nothing heavy happens at import: no engine, no client, no torch (the routes that need
``RenderParams`` are imported by ``create_app``).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from impasto.service.core.periodic import Periodic

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from impasto.catalog import Catalog
    from impasto.config import Settings
    from impasto.service.core.dispatch import Dispatcher
    from impasto.service.core.storage import Storage
    from impasto.service.shop.fulfilment import FulfilmentProvider
    from impasto.service.shop.lab import LabSender
    from impasto.service.shop.mail import Mailer
    from impasto.service.shop.payments import PaymentProvider
    from impasto.service.shop.security import AdminSessions, LoginGuard, RateLimiter, Signer
    from impasto.service.shop.sketches import SketchPainter

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATE_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
OUTBOX_POLL_SECONDS = 2.0
LAB_ROUND_SECONDS = 5.0        # how often the print lab's thread looks for due submissions and polls
STOP_SECONDS = 30.0            # how long shutdown waits for a render thread to hand its job back
FORM_BODY_BYTES = 256 * 1024   # any request body but an upload
SNAPSHOT_SECONDS = 3.0         # how often a painting preview stores its picture for the live tiles


@dataclass
class Shop:
    """Everything a request handler needs, built once per app (``request.app.state.shop``)."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    storage: Storage
    catalog: Catalog
    dispatcher: Dispatcher
    mailer: Mailer | None
    signer: Signer
    payments: dict[str, PaymentProvider]
    upload_limit_ip: RateLimiter
    upload_limit_email: RateLimiter
    login_guard: LoginGuard
    admin_sessions: AdminSessions
    templates: Any = None
    outbox: OutboxSender | None = None
    sketches: SketchPainter | None = None   # feed-forward looks at upload (None: cards wait for Gatys)
    metrics: Any = None                      # what /metrics serves (core.metrics.Combined)
    retention: Any = None                    # core.retention.RetentionSweeper, while started
    fulfilment: FulfilmentProvider | None = None   # None: manual
    lab: LabSender | None = None                   # a print lab's thread (IMPASTO_FULFILMENT_PROVIDER=http)
    outbox_seconds: float = OUTBOX_POLL_SECONDS
    lab_seconds: float = LAB_ROUND_SECONDS
    own_engine: bool = True
    started: bool = field(default=False)

    @property
    def secure_cookies(self) -> bool:
        return self.settings.public_url.startswith("https://")

    @property
    def upload_body_bytes(self) -> int:
        """A photo at the cap plus room for the other form fields and multipart framing."""
        return self.settings.max_upload_bytes + 64 * 1024

    def start(self) -> None:
        from impasto.service.core.db import migrate

        migrate(self.engine)
        log.info("styles on offer: %s", ", ".join(self.catalog.names()) or "none")  # starter set made now
        if self.sketches is not None:
            self.sketches.start()
        self.dispatcher.start()
        self.outbox = OutboxSender(self.sessions, self.mailer, interval_seconds=self.outbox_seconds)
        self.outbox.start()
        from impasto.service.core.retention import RetentionSweeper

        self.retention = RetentionSweeper(sessions=self.sessions, storage=self.storage,
                                          days=self.settings.retention_days)
        self.retention.start()
        if self.fulfilment is not None and not self.fulfilment.manual:
            from impasto.service.shop.lab import LabSender

            self.lab = LabSender(self, interval_seconds=self.lab_seconds)
            self.lab.start()
        self.started = True

    def stop(self) -> None:
        if self.lab is not None:
            self.lab.stop()
        if self.outbox is not None:
            self.outbox.stop()
        if self.retention is not None:
            self.retention.stop()
        if self.sketches is not None:
            self.sketches.stop()
        if self.started:
            self.dispatcher.stop(timeout_seconds=STOP_SECONDS)
            self.started = False
        if self.own_engine:
            self.engine.dispose()


class OutboxSender(Periodic):
    """A thread that sends due outbox rows every ``interval_seconds`` (``wake()`` to hurry it).

    Without a mailer it only logs, once, that mails wait: ``outbox.deliver_pending`` is not
    called, so no row is marked failed for lack of a server.
    """

    name = "outbox"

    def __init__(self, sessions: sessionmaker[Session], mailer: Mailer | None, *,
                 interval_seconds: float = OUTBOX_POLL_SECONDS) -> None:
        super().__init__(interval_seconds=interval_seconds, join_seconds=STOP_SECONDS)
        self.sessions, self.mailer = sessions, mailer

    def start(self) -> None:
        if self.mailer is None:
            log.warning("no SMTP server configured (IMPASTO_SMTP_URL): mails stay queued in the outbox")
            return
        super().start()

    def run_round(self) -> None:
        self.deliver_once()

    def deliver_once(self) -> int:
        from impasto.service.core import outbox

        with self.sessions() as session:
            return outbox.deliver_pending(session=session, send=self._send)

    def _send(self, row) -> None:
        message = self.mailer.compose(row.template, to=row.to, **row.context)
        self.mailer.send(message)


def create_app(settings: Settings | None = None, *, dispatcher: Dispatcher | None = None,
               storage: Storage | None = None, mailer: Mailer | None = None,
               catalog: Catalog | None = None, engine: Engine | None = None) -> FastAPI:
    """The shop as an ASGI app. Defaults come from ``settings`` (else ``get_settings()``).

    ``dispatcher`` defaults to embedded render threads (``Settings.workers`` of them);
    ``mailer`` to one for ``Settings.smtp_url`` (none when empty: mails wait in the outbox).
    """
    shop = build_shop(settings, dispatcher=dispatcher, storage=storage, mailer=mailer,
                      catalog=catalog, engine=engine)
    return _app_for(shop)


def build_shop(settings: Settings | None = None, *, dispatcher: Dispatcher | None = None,
               storage: Storage | None = None, mailer: Mailer | None = None,
               catalog: Catalog | None = None, engine: Engine | None = None) -> Shop:
    from impasto.catalog import Catalog
    from impasto.config import get_settings
    from impasto.service.core.db import make_engine, session_factory
    from impasto.service.core.storage import storage_from_url
    from impasto.service.shop.fulfilment import make_fulfilment
    from impasto.service.shop.payments import default_providers
    from impasto.service.core.signing import split_keys
    from impasto.service.shop.limits import make_limiters
    from impasto.service.shop.security import Signer, load_secret
    from impasto.service.shop.sketches import SketchPainter

    settings = settings or get_settings()
    payments, fulfilment = default_providers(settings), make_fulfilment(settings)   # may raise ConfigError
    secret = load_secret(settings.secret_key.get_secret_value(), settings.data_dir)
    old_secrets = split_keys(settings.old_secret_keys.get_secret_value())   # a key rotation's previous keys
    own_engine = engine is None
    engine = engine or make_engine(settings.resolved_database_url())
    sessions = session_factory(engine)
    storage = storage or storage_from_url(settings.resolved_storage_url(), secret=secret,
                                          base_url=settings.public_url,
                                          endpoint_url=settings.s3_endpoint_url or None,
                                          old_secrets=old_secrets)
    catalog = catalog or Catalog(starter=settings.starter_styles)
    if mailer is None and settings.smtp_url:
        from impasto.service.shop.mail import Mailer

        # The outbox retries with its own backoff: one quick retry here is enough.
        mailer = Mailer(settings.smtp_url, sender=settings.mail_from, attempts=2, backoff_seconds=1.0)
    sketches = (SketchPainter(sessions=sessions, storage=storage, catalog=catalog, size=settings.preview_size)
                if settings.sketches else None)
    dispatcher = dispatcher or _default_dispatcher(settings, sessions, storage, catalog, sketches)
    shop = Shop(settings=settings, engine=engine, sessions=sessions, storage=storage, catalog=catalog,
                dispatcher=dispatcher, mailer=mailer, signer=Signer(secret, old_secrets=old_secrets),
                payments=payments, own_engine=own_engine, sketches=sketches, fulfilment=fulfilment,
                **make_limiters(settings))
    from impasto.service.core.metrics import REGISTRY, Combined, TableCollector

    shop.metrics = Combined(REGISTRY, TableCollector(sessions))
    return shop


def _default_dispatcher(settings: Settings, sessions, storage, catalog,
                        sketches: SketchPainter | None = None) -> Dispatcher:
    """Embedded render threads; with ``Settings.broker_url``, the farm's dispatcher."""
    from impasto.service.core.dispatch import local_dispatcher

    if settings.broker_url:
        # the farm (issue 6) owns the broker's wiring
        from impasto.service.farm.dispatcher import make_dispatcher

        return make_dispatcher(settings, session_factory=sessions, storage=storage, catalog=catalog,
                               snapshot_seconds=SNAPSHOT_SECONDS)
    return local_dispatcher(settings, session_factory=sessions, storage=storage, catalog=catalog,
                            snapshot_seconds=SNAPSHOT_SECONDS,
                            run_options={"yield_to": sketches.yield_to if sketches is not None else None})


def _app_for(shop: Shop) -> FastAPI:
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool

    from impasto import __version__
    from impasto.service.shop.routes import admin, api, docs, files, health, metrics, pages, privacy, webhooks
    from impasto.service.shop.middleware import RequestMiddleware, shop_middleware
    from impasto.service.shop.routes.web import install_error_handlers, make_templates
    from impasto.service.shop.server import BodyTimeoutMiddleware

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(shop.start)
        try:
            yield
        finally:
            await run_in_threadpool(shop.stop)

    # /docs is our own page (routes/docs.py): FastAPI's loads Swagger UI from a CDN.
    app = FastAPI(title="impasto shop", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  summary="Painted portraits: upload a photo, watch the previews, order a print.",
                  openapi_tags=[{"name": "portraits", "description": "photos, previews and their progress"},
                                {"name": "orders", "description": "prints of a chosen preview"},
                                {"name": "catalog", "description": "styles and print sizes on offer"}])
    app.state.shop = shop
    shop.templates = make_templates(shop, TEMPLATE_DIR)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount(docs.ASSETS, StaticFiles(directory=docs.assets_folder()), name="docs-assets")
    for module in (pages, privacy, api, admin, files, docs, health, metrics, webhooks):
        app.include_router(module.router)
    install_error_handlers(app)
    # Inside the shop's middleware (added last, so outermost): its 408 gets the security headers.
    app.add_middleware(BodyTimeoutMiddleware, idle_seconds=shop.settings.body_timeout_seconds,
                       total_seconds=shop.settings.body_total_seconds)
    app.add_middleware(shop_middleware(shop))
    app.add_middleware(RequestMiddleware)    # outermost: the request id is on every line and answer
    return app


def shop_of(app: Any) -> Shop:
    """The ``Shop`` behind an app made by ``create_app`` (tests reach its parts this way)."""
    return app.state.shop
