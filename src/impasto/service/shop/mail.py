"""Mails to customers: Jinja2 templates in, SMTP out, with retries.

``Mailer.compose`` renders ``templates/mail/<name>.txt`` (plain text; its
``{% set subject = … %}`` is the subject) and ``<name>.html`` (autoescaped, so a hostile
customer name stays text) into one ``multipart/alternative`` message. ``Mailer.send``
speaks SMTP in one of three ways, chosen by the URL:

    smtp://host:25                       plain (a local relay; no credentials allowed)
    smtp+starttls://user:pass@host:587   STARTTLS, then login (Amazon SES, most providers)
    smtps://user:pass@host:465           TLS from the first byte

Sending belongs in the worker, never in a request: ``send`` may sleep through its
backoff. It retries what can heal (connection refused, timeouts, dropped connections, 4xx
replies) with exponential backoff and gives up at once on what cannot (5xx replies, a
failed login, a certificate that does not verify, a server without STARTTLS — never a
silent downgrade to plain text). Either way it raises ``MailError`` after the last try;
the caller keeps the message (its job or outbox row) for a later attempt. An SMTP server
that accepted the message but dropped the connection before acknowledging it can cause a
duplicate on retry; the ``Message-ID`` stays the same so clients can fold them.
"""

from __future__ import annotations

import functools
import logging
import re
import smtplib
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path

from impasto.errors import InvalidEmail, MailError

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).parent / "templates" / "mail"
_TEMPLATE_NAME = re.compile(r"[a-z][a-z0-9_]*")
_SCHEMES = {"smtp": ("plain", 25), "smtp+starttls": ("starttls", 587), "smtps": ("tls", 465)}

MAX_ADDRESS_CHARS = 254        # RFC 5321's path limit minus the angle brackets
MAX_LOCAL_CHARS = 64
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_TLD = re.compile(r"[a-z]{2,63}|xn--[a-z0-9-]{1,59}")


def validate_email(address: str) -> str:
    """``address`` normalised (trimmed, domain lower-cased and IDNA-encoded) or ``InvalidEmail``.

    Deliberately narrower than RFC 5322: a bare ``local@domain`` only — no display names,
    comments, quoted local parts or IP-literal domains, no non-ASCII local part (SMTPUTF8
    is not universal; Amazon SES refuses it). The domain needs a dot and a plausible TLD,
    which refuses ``user@localhost`` and typos like ``user@gmail``. Control characters
    (``\\r\\n`` header injection) and spaces are refused, not stripped.
    """
    if not isinstance(address, str):
        raise InvalidEmail("email address must be text")
    address = address.strip(" \t")
    if not address:
        raise InvalidEmail("please enter an email address")
    if len(address) > MAX_ADDRESS_CHARS:
        raise InvalidEmail(f"email address is longer than {MAX_ADDRESS_CHARS} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in address):
        raise InvalidEmail("email address may not contain spaces or control characters")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidEmail(f"{address!r} is not an email address (name@example.com)")
    if len(local) > MAX_LOCAL_CHARS or not _LOCAL.fullmatch(local):
        raise InvalidEmail(f"{address!r}: the part before @ is not valid")
    domain = _normalise_domain(domain, address)
    normalised = f"{local}@{domain}"
    if len(normalised) > MAX_ADDRESS_CHARS:
        raise InvalidEmail(f"email address is longer than {MAX_ADDRESS_CHARS} characters")
    return normalised


def _normalise_domain(domain: str, address: str) -> str:
    try:
        domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidEmail(f"{address!r}: the domain is not valid") from None
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels) \
            or not _TLD.fullmatch(labels[-1]):
        raise InvalidEmail(f"{address!r}: the domain is not valid (example.com)")
    return domain


@dataclass(frozen=True)
class _Server:
    mode: str          # "plain" | "starttls" | "tls"
    host: str
    port: int
    username: str | None
    password: str | None


def _parse_smtp_url(url: str) -> _Server:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise MailError(f"SMTP URL must start with {', '.join(s + '://' for s in _SCHEMES)}", permanent=True)
    mode, default_port = _SCHEMES[parts.scheme]
    try:
        port = parts.port or default_port
    except ValueError:
        raise MailError("SMTP URL has a bad port", permanent=True) from None
    if not parts.hostname:
        raise MailError("SMTP URL needs a host", permanent=True)
    username = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    if username and mode == "plain":
        # Never send a password in clear text: credentials imply STARTTLS or TLS.
        raise MailError("SMTP credentials need smtp+starttls:// or smtps://", permanent=True)
    return _Server(mode, parts.hostname, port, username, password)


@functools.lru_cache(maxsize=1)
def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,      # a missing link fails compose, not the customer
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


class Mailer:
    """Composes and sends the shop's mails through one SMTP server.

    ``attempts`` tries in all, waiting ``backoff_seconds`` × 2ⁿ (capped at
    ``max_backoff_seconds``) between them; ``sleep`` and ``ssl_context`` are there for
    tests (a fake clock, a self-signed certificate) and for private CAs.
    """

    def __init__(self, smtp_url: str, *, sender: str, timeout: float = 10.0, attempts: int = 4,
                 backoff_seconds: float = 2.0, max_backoff_seconds: float = 60.0,
                 ssl_context: ssl.SSLContext | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._server = _parse_smtp_url(smtp_url)
        _, address = parseaddr(sender)
        if not address or "@" not in address or any(c in sender for c in "\r\n"):
            raise MailError(f"bad sender address {sender!r}", permanent=True)
        self.sender = sender
        self.sender_address = address
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._ssl_context = ssl_context
        self._sleep = sleep

    def __repr__(self) -> str:      # never the password
        s = self._server
        return f"Mailer({s.mode} {s.host}:{s.port}, sender={self.sender!r})"

    def compose(self, template_name: str, *, to: str, **context: object) -> EmailMessage:
        """A ready-to-send message from ``<template_name>.txt`` and ``.html``.

        ``to`` is validated; context values named ``*_url`` must be http(s) URLs, so a
        ``javascript:`` link can never reach an ``href``.
        """
        if not _TEMPLATE_NAME.fullmatch(template_name):
            raise ValueError(f"bad mail template name {template_name!r}")
        recipient = validate_email(to)
        for key, value in context.items():
            if key.endswith("_url") and urllib.parse.urlsplit(str(value)).scheme not in ("http", "https"):
                raise ValueError(f"{key} must be an http(s) URL, not {value!r}")
        env = _environment()
        text_module = env.get_template(f"{template_name}.txt").make_module(dict(context))
        subject = " ".join(str(getattr(text_module, "subject", "")).split())
        if not subject:
            raise ValueError(f"mail template {template_name}.txt sets no subject")
        html = env.get_template(f"{template_name}.html").render(dict(context, subject=subject))

        message = EmailMessage()
        message["Subject"] = subject
        message["From"] = self.sender
        message["To"] = Address(addr_spec=recipient)
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = make_msgid(domain=self.sender_address.rpartition("@")[2] or None)
        # Quoted-printable keeps the message 7-bit clean for relays without 8BITMIME.
        message.set_content(str(text_module).strip() + "\n", cte="quoted-printable")
        message.add_alternative(html, subtype="html", cte="quoted-printable")
        return message

    def send(self, message: EmailMessage) -> None:
        """Deliver ``message``, retrying transient failures; ``MailError`` when it cannot."""
        for attempt in range(1, self.attempts + 1):
            try:
                self._deliver(message)
                log.info("mail %s sent to %s", message.get("Message-ID"), message.get("To"))
                return
            except Exception as exc:
                transient = _is_transient(exc)
                if transient is None:
                    raise
                reason = _describe(exc)
                if not transient:
                    raise MailError(f"mail refused: {reason}", permanent=True) from exc
                if attempt == self.attempts:
                    raise MailError(f"mail not sent after {self.attempts} attempts: {reason}") from exc
                delay = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
                log.warning("mail to %s failed (attempt %d of %d: %s); retrying in %.1f s",
                            message.get("To"), attempt, self.attempts, reason, delay)
                self._sleep(delay)

    def _deliver(self, message: EmailMessage) -> None:
        server = self._server
        if server.mode == "tls":
            smtp = smtplib.SMTP_SSL(server.host, server.port, timeout=self.timeout,
                                    context=self._context())
        else:
            smtp = smtplib.SMTP(server.host, server.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            if server.mode == "starttls":
                smtp.starttls(context=self._context())   # SMTPNotSupportedError if not offered
                smtp.ehlo()
            if server.username:
                smtp.login(server.username, server.password or "")
            refused = smtp.send_message(message, from_addr=self.sender_address)
            if refused:
                log.warning("some recipients refused: %s", refused)
        finally:
            # Once DATA was accepted the mail is sent: a failing QUIT must not cause a retry.
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()


def _is_transient(exc: BaseException) -> bool | None:
    """True: retry; False: permanent; None: not an SMTP/network failure (a bug; re-raise).

    Order matters: every ``smtplib.SMTPException`` and ``ssl.SSLError`` is an ``OSError``.
    """
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(400 <= code < 500 for code in codes)
    if isinstance(exc, smtplib.SMTPResponseException):     # connect, HELO, auth, sender, data
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPNotSupportedError):      # no STARTTLS / AUTH offered
        return False
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    if isinstance(exc, smtplib.SMTPException):   # e.g. no common AUTH mechanism
        return False
    if isinstance(exc, OSError):                 # refused, reset, timeout, TLS handshake
        return True
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        error = exc.smtp_error
        text = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
        return f"{exc.smtp_code} {text}"
    return f"{type(exc).__name__}: {exc}"
