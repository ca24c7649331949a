"""Errors impasto raises on purpose: the whole tree, defined here.

Every failure a user can cause (a bad file, a bad option, missing weights) is an
``ImpastoError``; the CLI turns one into a single line on stderr and exit code 2, the
web service into a 4xx response (a few that name an outage, such as ``MailError``, a
503). Anything else is a bug.

The classes carry no HTTP codes: the shop's web layer maps them
(``impasto.service.shop.routes.web.HTTP_STATUS``), and one it does not map is a 400.
The modules that raise them import them from here and keep their names
(``impasto.service.shop.uploads.UploadTooLarge`` is this module's class).

    ImpastoError
    ├── ImageError          unreadable, truncated, too small or too large image
    ├── ParamError          an option out of range or inconsistent with another (also a ValueError)
    │   ├── InvalidEmail    an address the shop will not send to            (service.shop.mail)
    │   └── BudgetTooSmall  a --memory-budget that cannot hold the render (``needed``: one that can)
    ├── WeightsError        perceptual-net weights missing, of the wrong shape, not downloadable
    ├── OutputError         the result cannot be written where asked
    ├── RenderDiverged      the loss became NaN or infinite (e.g. float16 overflow)
    ├── RenderCancelled     the caller asked the render loop to stop
    ├── StateError          a render-state file missing or not one                  (state)
    ├── CatalogError        a style missing, already there, or stored badly         (catalog)
    ├── ConfigError         an IMPASTO_* variable with a bad value                  (config)
    ├── StorageError        a key, URL or argument storage refuses             (service.core.storage)
    │   └── KeyNotFound     no object under this key
    ├── NoSuchId            an id out of range: names nothing                (service.core.untrusted)
    ├── JobError            no such job, or a transition its status forbids     (service.core.jobs)
    ├── OrderStatusError    an order status change its life cycle forbids       (service.core.jobs)
    ├── FarmError           a bad or unreachable broker URL, a bad worker option (service.farm)
    ├── MailError           a mail not sent (``permanent``: retrying won't help) (service.shop.mail)
    ├── SecurityError       a configuration the security kit refuses          (service.shop.security)
    ├── UploadError         an upload refused                                  (service.shop.uploads)
    │   ├── UploadTooLarge
    │   ├── UnsupportedFormat
    │   ├── CorruptImage    truncated, damaged, or not the format it claims
    │   ├── SuspiciousImage a polyglot, or active content
    │   ├── TooManyPixels   over the pixel cap, refused from the header
    │   └── TooSmall
    └── ShopError           a request the shop's flows refuse                    (service.shop.flows)
        ├── NotFound        no such portrait, job or order (for this customer)
        ├── NotReady        not yet: the preview or print is still rendering
        │   └── PortraitInUse  delete-now asked while a print is under way  (service.core.retention)
        ├── LinkExpired     a signed link past its time
        ├── InvalidInput    a form or API field the flows refuse
        ├── TooManyRequests over a rate limit (``headers``: Retry-After)
        ├── WebhookRejected a webhook whose signature, age or body does not check out (service.shop.payments)
        └── Unavailable     the shop cannot take it now
            ├── PaymentError the payment provider failed or refused a call     (service.shop.payments)
            └── FulfilmentError the print lab failed or refused a call         (service.shop.fulfilment)
"""

from __future__ import annotations

__all__ = [
    "BudgetTooSmall", "CatalogError", "ConfigError", "CorruptImage", "FarmError", "FulfilmentError",
    "ImageError", "ImpastoError", "InvalidEmail", "InvalidInput", "JobError", "KeyNotFound",
    "LinkExpired", "MailError", "NoSuchId", "NotFound", "NotReady", "OrderStatusError", "OutputError",
    "ParamError", "PaymentError", "PortraitInUse", "RenderCancelled", "RenderDiverged", "SecurityError",
    "ShopError", "StateError", "StorageError", "SuspiciousImage", "TooManyPixels", "TooManyRequests",
    "TooSmall", "Unavailable", "UnsupportedFormat", "UploadError", "UploadTooLarge", "WebhookRejected",
    "WeightsError",
]


class ImpastoError(Exception):
    """Base of every error caused by input rather than by a bug."""


# --- the engine, the CLI ------------------------------------------------------------------

class ImageError(ImpastoError):
    """An image that cannot be used: missing, not an image, truncated, too small/large."""


class ParamError(ImpastoError, ValueError):
    """A render option that is out of range or inconsistent with the others."""


class WeightsError(ImpastoError):
    """Perceptual-network weights that are missing, malformed or not obtainable."""


class OutputError(ImpastoError):
    """An output path that cannot be written."""


class RenderDiverged(ImpastoError):
    """The loss stopped being a finite number: the options (precision, step size) do not work."""


class RenderCancelled(ImpastoError):
    """Raised from a progress callback to stop a render early."""


class StateError(ImpastoError):
    """A state file that is missing or not an impasto render state."""


class CatalogError(ImpastoError):
    """A style that is missing, already there, or stored badly."""


class ConfigError(ImpastoError):
    """An ``IMPASTO_*`` environment variable whose value is not valid (the message names it)."""


# --- the service's core -------------------------------------------------------------------

class StorageError(ImpastoError):
    """A key, URL or argument the storage layer refuses (never an infrastructure failure)."""


class KeyNotFound(StorageError):
    """No object under this key."""


class NoSuchId(ImpastoError):
    """An id that is not a number in range names nothing: the same 404 as a missing row."""


class JobError(ImpastoError):
    """A job that does not exist, or a transition its status does not allow."""


class OrderStatusError(ImpastoError):
    """An order status change that the order's life cycle does not allow."""


# --- the farm -----------------------------------------------------------------------------

class FarmError(ImpastoError):
    """A broker URL that is malformed or names no reachable broker, or a bad worker option."""


# --- the shop -----------------------------------------------------------------------------

class MailError(ImpastoError):
    """A mail could not be sent. ``permanent``: retrying the same message will not help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class InvalidEmail(ParamError):
    """An email address the shop will not send to (answered with 422)."""


class BudgetTooSmall(ParamError):
    """A ``--memory-budget`` that cannot hold the render at all, found before it starts;
    ``needed`` is the smallest budget that would (bytes)."""

    def __init__(self, message: str, *, needed: int):
        super().__init__(message)
        self.needed = needed


class SecurityError(ImpastoError):
    """A configuration the security kit refuses (a secret key too short to sign with)."""


class UploadError(ImpastoError):
    """An upload refused; ``str()`` is a one-line message (the web layer picks the HTTP code)."""


class UploadTooLarge(UploadError):
    """More bytes than the upload cap."""


class UnsupportedFormat(UploadError):
    """Not one of the formats the shop takes."""


class CorruptImage(UploadError):
    """Truncated, damaged, or not decodable as the format it claims to be."""


class SuspiciousImage(UploadError):
    """An image that is also something else (a polyglot), or carries active content."""


class TooManyPixels(UploadError):
    """More pixels than the cap: refused from the header, before any decoding."""


class TooSmall(UploadError):
    """Fewer pixels than a portrait needs."""


class ShopError(ImpastoError):
    """A request the shop's flows refuse."""


class NotFound(ShopError):
    """No such portrait, job or order (or not this customer's: the same answer)."""


class NotReady(ShopError):
    """Not yet: what was asked for is still being made."""


class PortraitInUse(NotReady):
    """A photo its customer asked to delete while an order of it is still being made."""


class LinkExpired(ShopError):
    """A signed link past its expiry."""


class InvalidInput(ShopError):
    """A field the flows refuse."""


class TooManyRequests(ShopError):
    """Over a rate limit; ``headers`` carries ``Retry-After``."""

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_seconds)}


class Unavailable(ShopError):
    """The shop cannot take this now (e.g. no payment provider)."""


class PaymentError(Unavailable):
    """The payment provider failed or refused a call (a checkout, a refund): nothing was changed here."""


class WebhookRejected(ShopError):
    """A webhook whose signature, timestamp or body does not check out (answered 400)."""


class FulfilmentError(Unavailable):
    """The print lab failed or refused a call: the order stays where it was, to be tried again."""
