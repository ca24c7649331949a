"""Every ``IMPASTO_*`` environment variable, read in this one place.

``Settings`` is the shop's and the farm's; ``Locations`` (which ``Settings`` extends) the two
folders the CLI's render commands and the engine need, read without the service's variables,
so a bad shop variable never stops ``impasto render``. Nothing is built at import:
``get_settings()`` reads the environment on first call (tests call
``get_settings.cache_clear()`` after changing it); ``load_settings()`` is the CLI's, with a
one-line ``ConfigError`` for a bad value. Render options come from ``RenderParams``, not from here.

Not yet read here: ``engine/weights.py`` reads ``IMPASTO_CACHE_DIR`` itself (the engine's
owner moves it to ``Locations.cache_dir``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from impasto.errors import ConfigError


def _data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("impasto"))


class PrintOption(BaseModel):
    """One print size the shop sells: ``8x10in`` at ``price_cents`` (currency in Settings)."""

    size: str
    price_cents: int = Field(ge=0)


DEFAULT_PRINTS = [
    PrintOption(size="8x10in", price_cents=4900),
    PrintOption(size="12x16in", price_cents=8900),
    PrintOption(size="18x24in", price_cents=14900),
]


class Locations(BaseSettings):
    """Folders the CLI and the engine use, shop or no shop."""

    model_config = SettingsConfigDict(env_prefix="IMPASTO_", extra="ignore")

    catalog_dir: str = ""             # the styles; default: <user data dir>/styles
    cache_dir: str = ""               # converted weights; default: the user cache dir

    def resolved_catalog_dir(self) -> Path:
        return Path(self.catalog_dir) if self.catalog_dir else _data_dir() / "styles"

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        import platformdirs

        return Path(platformdirs.user_cache_dir("impasto"))


class Settings(Locations):
    """Everything the service needs to know about its surroundings."""

    # where things live: one machine needs none of these set
    data_dir: Path = Field(default_factory=_data_dir)
    database_url: str = ""            # default: sqlite:///<data_dir>/impasto.db
    storage_url: str = ""             # file:///path | s3://bucket/prefix; default file://<data_dir>/files
    smtp_url: str = ""                # smtp://host:25 | smtp+starttls://user:pass@host:587 | smtps://…:465
    mail_from: str = "impasto <portraits@localhost>"
    public_url: str = "http://127.0.0.1:8000"
    broker_url: str = ""              # empty: embedded dispatcher (threads); else Celery over it
    s3_endpoint_url: str = ""         # MinIO, R2, moto; empty for AWS

    # secrets
    secret_key: SecretStr = SecretStr("")   # signs URLs and CSRF tokens; generated per data dir if empty
    old_secret_keys: SecretStr = SecretStr("")   # a rotation: previous keys (comma-separated), still accepted
    admin_user: str = "admin"
    admin_password: SecretStr = SecretStr("")  # admin pages are closed until this is set
    metrics_token: SecretStr = SecretStr("")   # /metrics wants "Authorization: Bearer <it>" when set

    # operations
    log_format: Literal["text", "json"] = "text"   # json: one JSON object a line, with request and job ids
    retention_days: int = Field(30, ge=1)   # a photo and its paintings: days after upload, or after shipping

    # limits
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_pixels: int = 40_000_000
    rate_limit_per_hour: int = 20     # uploads per IP and per email address
    redis_url: str = ""               # redis://host:6379/0: rate limits and admin logouts shared by processes
    max_attempts: int = 3             # a job that failed this often is failed for good
    broker_visibility_timeout_seconds: int = 12 * 3600   # Redis broker: longer than the longest render
    download_link_seconds: int = 7 * 24 * 3600
    signed_url_seconds: int = 600
    header_timeout_seconds: float = Field(10.0, gt=0)   # a request's line and headers, in total
    body_timeout_seconds: float = Field(30.0, gt=0)     # the longest pause inside a request body
    body_total_seconds: float = Field(600.0, gt=0)      # a whole body (20 MB at 270 kbit/s)

    # what the shop renders and sells
    preview_size: int = 384
    preview_iterations: int = 20      # from the sketch, 20 score above the 120 from the photo (docs/benchmarks.md)
    preview_init: Literal["quick", "image", "random"] = "quick"   # quick: from the feed-forward sketch
    preview_start_size: int = 256     # the previews' coarsest scale (0: the preview size only)
    preview_face_iterations: int = 7  # the face pass's (13 by default): 39 → 23 % of a preview's time (docs/benchmarks.md)
    # auto: bfloat16 convolutions where the render device has them in hardware (docs/benchmarks.md)
    preview_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    starter_styles: bool = True       # the starter styles (impasto.starter) beside the artist's own
    sketches: bool = True             # a feed-forward sketch on every card right after the upload
    workers: int = 1                  # embedded render threads
    prints: list[PrintOption] = Field(default_factory=lambda: list(DEFAULT_PRINTS))
    print_dpi: int = 300
    print_iterations: int = 120       # a print's total over its whole schedule (the preview's scales are skipped)
    currency: str = "EUR"

    # payments (docs/payments.md): "invoice" needs no account; "stripe" sells through Stripe Checkout
    payment_provider: Literal["invoice", "stripe"] = "invoice"
    stripe_secret_key: SecretStr = SecretStr("")      # sk_live_… / sk_test_… (or a restricted key)
    stripe_webhook_secret: SecretStr = SecretStr("")  # whsec_…: the /webhooks/stripe endpoint's signing secret
    stripe_api_base: str = ""         # empty: Stripe's own (https://api.stripe.com); tests point it at a fake
    stripe_webhook_tolerance_seconds: int = Field(300, gt=0)   # older signatures are refused (replays)
    checkout_expiry_seconds: int = Field(24 * 3600, ge=1800, le=24 * 3600)   # Stripe allows 30 min..24 h

    # fulfilment (docs/payments.md): "manual" (the admin prints and ships) or "http" (a print lab's order API)
    fulfilment_provider: Literal["manual", "http"] = "manual"
    tracking_url_template: str = ""   # e.g. https://track.example/{tracking}: the shipped email's link
    lab_api_base: str = ""            # e.g. https://api.sandbox.prodigi.com/v4.0 (modelled on Prodigi's v4 Orders)
    lab_api_key: SecretStr = SecretStr("")   # sent as X-API-Key
    lab_skus: dict[str, str] = Field(default_factory=dict)   # print size → the lab's product SKU (default: the size)
    lab_shipping_method: str = "Standard"
    lab_poll_seconds: float = Field(600.0, gt=0)   # how often submitted orders are asked about (callbacks hurry it)
    print_file_format: Literal["jpeg", "tiff"] = "jpeg"   # what the lab gets: sRGB, at print_dpi
    print_bleed_mm: float = Field(0.0, ge=0, le=20)   # painted past each edge of the print (rendered, not stretched)

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'impasto.db'}"

    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.data_dir / "files").as_uri()


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def load_settings(cls: type[Settings] = Settings) -> Settings:
    """``cls()`` from the environment, a bad value a ``ConfigError`` naming its variable."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return cls()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "IMPASTO_" + "_".join(str(part) for part in error["loc"][:1]).upper()
        raise ConfigError(f"configuration: {name}: {error['msg']}") from None
    except SettingsError as exc:     # a value that is not valid JSON where JSON is expected
        raise ConfigError(f"configuration: {exc} (IMPASTO_* variables)") from None
