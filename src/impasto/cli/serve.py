"""``impasto serve``: the whole shop in one process."""

from __future__ import annotations

import argparse
from typing import Any

from impasto.cli.common import require_extra, use_log_format
from impasto.errors import ImpastoError

SERVE_EPILOG = """\
Everything runs in this process: the web shop (FastAPI under uvicorn), a SQLite database,
local-file storage and render threads, all under $IMPASTO_DATA_DIR (default: the user
data folder). IMPASTO_* environment variables configure the rest (README: "The shop"):
IMPASTO_ADMIN_PASSWORD opens /admin, IMPASTO_SMTP_URL sends the emails,
IMPASTO_DATABASE_URL and IMPASTO_STORAGE_URL move data to PostgreSQL and S3."""


def add_serve(commands, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser(
        "serve", parents=[common], help="run the shop: web app, database, storage and render threads",
        description="Serve the portrait shop on one machine, with no other server needed.",
        epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="render threads (default: $IMPASTO_WORKERS, else 1)")
    serve.add_argument("--broker", metavar="URL",
                       help="hand renders to the farm's workers over this broker (amqp:// or redis://) "
                            "instead of rendering here (default: $IMPASTO_BROKER_URL)")
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import socket

    require_extra("shop", "serve")
    settings = _serve_settings(args)
    use_log_format(settings.log_format)
    if settings.broker_url:
        require_extra("farm", "serve --broker")    # the shop publishes to the farm with Celery
    from impasto.service.shop.app import create_app

    try:   # a clear line now rather than uvicorn's traceback later
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as exc:
        raise ImpastoError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    _migrate(settings)
    app = create_app(settings)
    admin = "" if settings.admin_password.get_secret_value() else " (closed until IMPASTO_ADMIN_PASSWORD is set)"
    print(f"impasto shop: {settings.public_url.rstrip('/')}/ — admin: {settings.public_url.rstrip('/')}/admin"
          f"{admin}; Ctrl-C stops", flush=True)
    from impasto.service.shop.server import run

    run(app, host=args.host, port=args.port, settings=settings,
        log_level="info" if args.verbose else "warning")
    return 0


def _serve_settings(args: argparse.Namespace):
    from impasto.config import load_settings

    if not 0 < args.port < 65536:
        raise ImpastoError(f"--port must be 1..65535, not {args.port}")
    if args.workers is not None and args.workers < 1:
        raise ImpastoError(f"--workers must be at least 1, not {args.workers}")
    settings = load_settings()
    updates: dict[str, Any] = {}
    if args.workers is not None:
        updates["workers"] = args.workers
    if args.broker:
        updates["broker_url"] = args.broker
    if not settings.public_url or "public_url" not in settings.model_fields_set:   # no IMPASTO_PUBLIC_URL
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
        updates["public_url"] = f"http://{host if ':' not in host else f'[{host}]'}:{args.port}"
    return settings.model_copy(update=updates)


def _migrate(settings) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from impasto.service.core.db import migrate

    try:
        migrate(settings.resolved_database_url())
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ImpastoError(f"database: {reason}") from None
