"""Mail against a real SMTP server: aiosmtpd's ``Controller`` on 127.0.0.1, capturing messages.

Retries are tested with a fake ``sleep`` that records the backoff and, where a test needs
it, brings the server up between attempts — so no test waits for real backoff.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import socket
import ssl

import pytest

from impasto.errors import ImpastoError, ParamError
from impasto.service.shop.mail import InvalidEmail, Mailer, MailError, validate_email
from impasto.service.shop.routes.web import http_status

SENDER = "impasto <portraits@impasto.example>"
PORTRAIT_URL = "https://shop.example/portraits/0f3c?token=a&b=1"
DOWNLOAD_URL = "https://shop.example/download/9a1e"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Capture:
    """An aiosmtpd handler that keeps every message; ``replies`` scripts the DATA answers."""

    def __init__(self, replies: list[str] | None = None) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes = []
        self.data_calls = 0
        self.replies = list(replies or [])

    async def handle_DATA(self, server, session, envelope):
        self.data_calls += 1
        reply = self.replies.pop(0) if self.replies else "250 OK"
        if reply.startswith("250"):
            self.envelopes.append(envelope)
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return reply


def _controller(handler, port: int | None = None, **kwargs):
    from aiosmtpd.controller import Controller

    return Controller(handler, hostname="127.0.0.1", port=port or _free_port(), **kwargs)


@pytest.fixture
def smtp():
    """A running plain SMTP server and its capturing handler."""
    handler = Capture()
    controller = _controller(handler)
    controller.start()
    yield controller, handler
    controller.stop()


class Sleeps:
    """A fake ``sleep``: records delays and runs ``on_sleep(n)`` (n = 1, 2, …) instead of waiting."""

    def __init__(self, on_sleep=None) -> None:
        self.delays: list[float] = []
        self.on_sleep = on_sleep

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.on_sleep:
            self.on_sleep(len(self.delays))


def _parts(message) -> tuple[str, str]:
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    return text, html


# --- compose -------------------------------------------------------------------------------

def test_previews_ready_has_text_and_html_with_the_link():
    mailer = Mailer("smtp://127.0.0.1:25", sender=SENDER)
    message = mailer.compose("previews_ready", to="Ada@Example.COM", name="Ada", portrait_url=PORTRAIT_URL)
    assert message["Subject"] == "Your previews are ready"
    assert message["To"] == "Ada@example.com"
    assert message["From"] == SENDER
    assert message["Message-ID"].endswith("@impasto.example>")
    assert message.get_content_type() == "multipart/alternative"
    text, html = _parts(message)
    assert PORTRAIT_URL in text
    assert 'href="https://shop.example/portraits/0f3c?token=a&amp;b=1"' in html
    assert "Hello Ada," in text and "Hello Ada," in html
    assert "{{" not in text + html and "{%" not in text + html
    assert message.as_bytes().isascii()            # 7-bit clean: no 8BITMIME needed


def test_print_ready_mentions_size_and_link_lifetime():
    mailer = Mailer("smtp://127.0.0.1:25", sender=SENDER)
    message = mailer.compose("print_ready", to="ada@example.com", download_url=DOWNLOAD_URL,
                             size="8x10in", link_days=7)
    assert message["Subject"] == "Your print file is ready"
    text, html = _parts(message)
    for part in (text, html):
        assert DOWNLOAD_URL in part and "8x10in" in part and "7 days" in part
    assert text.startswith("Hello,")               # no name: still a greeting


def test_hostile_name_is_escaped_in_html():
    mailer = Mailer("smtp://127.0.0.1:25", sender=SENDER)
    name = '<script>alert("x")</script><a href="https://evil.example">Bob</a> & co'
    message = mailer.compose("previews_ready", to="bob@example.com", name=name, portrait_url=PORTRAIT_URL)
    text, html = _parts(message)
    assert "<script>" not in html and "evil.example\">" not in html
    assert "&lt;script&gt;" in html and "&amp; co" in html
    assert name in text                            # plain text is not HTML: kept verbatim
    assert "Bob" not in message["Subject"]          # customer data never goes into headers


def test_compose_refuses_bad_input():
    mailer = Mailer("smtp://127.0.0.1:25", sender=SENDER)
    with pytest.raises(InvalidEmail):
        mailer.compose("previews_ready", to="bob@example.com\r\nBcc: all@example.com",
                       portrait_url=PORTRAIT_URL)
    with pytest.raises(ValueError):
        mailer.compose("previews_ready", to="bob@example.com", portrait_url="javascript:alert(1)")
    with pytest.raises(ValueError):
        mailer.compose("../secrets", to="bob@example.com")
    import jinja2

    with pytest.raises(jinja2.UndefinedError):     # a missing link fails loudly, never a blank mail
        mailer.compose("previews_ready", to="bob@example.com")


# --- send ----------------------------------------------------------------------------------

def test_send_plain_delivers(smtp):
    controller, handler = smtp
    mailer = Mailer(f"smtp://127.0.0.1:{controller.port}", sender=SENDER, timeout=5)
    mailer.send(mailer.compose("previews_ready", to="ada@example.com", name="Ada", portrait_url=PORTRAIT_URL))
    assert len(handler.messages) == 1
    envelope = handler.envelopes[0]
    assert envelope.mail_from == "portraits@impasto.example"
    assert envelope.rcpt_tos == ["ada@example.com"]
    text, html = _parts(handler.messages[0])
    assert PORTRAIT_URL in text and "See your previews" in html


def test_server_down_then_up_delivers_exactly_once():
    handler = Capture()
    port = _free_port()
    controller = _controller(handler, port)
    sleeps = Sleeps(on_sleep=lambda n: controller.start() if n == 2 else None)
    mailer = Mailer(f"smtp://127.0.0.1:{port}", sender=SENDER, timeout=5, attempts=4,
                    backoff_seconds=2, sleep=sleeps)
    try:
        mailer.send(mailer.compose("print_ready", to="ada@example.com", download_url=DOWNLOAD_URL))
    finally:
        controller.stop()
    assert sleeps.delays == [2, 4]                 # refused, refused, delivered
    assert len(handler.messages) == 1


def test_transient_4xx_is_retried(smtp):
    controller, handler = smtp
    handler.replies = ["451 4.3.0 try again later", "250 OK"]
    sleeps = Sleeps()
    mailer = Mailer(f"smtp://127.0.0.1:{controller.port}", sender=SENDER, timeout=5, sleep=sleeps)
    mailer.send(mailer.compose("print_ready", to="ada@example.com", download_url=DOWNLOAD_URL))
    assert handler.data_calls == 2 and len(handler.messages) == 1
    assert sleeps.delays == [2]


def test_permanent_550_is_not_retried(smtp):
    controller, handler = smtp
    handler.replies = ["550 5.7.1 message rejected"] * 5
    sleeps = Sleeps()
    mailer = Mailer(f"smtp://127.0.0.1:{controller.port}", sender=SENDER, timeout=5, sleep=sleeps)
    with pytest.raises(MailError) as caught:
        mailer.send(mailer.compose("print_ready", to="ada@example.com", download_url=DOWNLOAD_URL))
    assert caught.value.permanent
    assert "550" in str(caught.value)
    assert handler.data_calls == 1 and sleeps.delays == []
    assert isinstance(caught.value, ImpastoError)


def test_rejected_recipient_is_permanent():
    class RejectRcpt(Capture):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            self.data_calls += 1
            return "550 5.1.1 no such user"

    handler = RejectRcpt()
    controller = _controller(handler)
    controller.start()
    sleeps = Sleeps()
    try:
        mailer = Mailer(f"smtp://127.0.0.1:{controller.port}", sender=SENDER, timeout=5, sleep=sleeps)
        with pytest.raises(MailError) as caught:
            mailer.send(mailer.compose("print_ready", to="nobody@example.com", download_url=DOWNLOAD_URL))
    finally:
        controller.stop()
    assert caught.value.permanent and handler.data_calls == 1 and sleeps.delays == []


def test_outage_through_every_attempt_raises_transient_mail_error():
    sleeps = Sleeps()
    mailer = Mailer(f"smtp://127.0.0.1:{_free_port()}", sender=SENDER, timeout=5, attempts=4,
                    backoff_seconds=1, max_backoff_seconds=3, sleep=sleeps)
    with pytest.raises(MailError) as caught:
        mailer.send(mailer.compose("print_ready", to="ada@example.com", download_url=DOWNLOAD_URL))
    assert not caught.value.permanent
    assert sleeps.delays == [1, 2, 3]              # exponential, capped


def test_silent_server_times_out_and_is_retried():
    with socket.socket() as listener:              # accepts TCP, never greets
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        sleeps = Sleeps()
        mailer = Mailer(f"smtp://127.0.0.1:{listener.getsockname()[1]}", sender=SENDER,
                        timeout=0.2, attempts=2, sleep=sleeps)
        with pytest.raises(MailError) as caught:
            mailer.send(mailer.compose("print_ready", to="ada@example.com", download_url=DOWNLOAD_URL))
    assert not caught.value.permanent and sleeps.delays == [2]


# --- TLS -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (``cryptography``), as (cert path, key path)."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        pytest.skip("the STARTTLS/TLS tests need the 'cryptography' package")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _server_context(certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def _client_context(certificate) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


class Logins:
    """An aiosmtpd authenticator accepting one user, recording every attempt."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, bytes]] = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        self.seen.append((auth_data.login, auth_data.password))
        ok = (auth_data.login, auth_data.password) == (b"ses-user", b"p@ss/word")
        return AuthResult(success=ok, handled=False)     # handled=False: aiosmtpd answers 535


def test_starttls_with_login(certificate):
    handler, logins = Capture(), Logins()
    controller = _controller(handler, tls_context=_server_context(certificate), require_starttls=True,
                             authenticator=logins, auth_required=True)
    controller.start()
    try:
        mailer = Mailer(f"smtp+starttls://ses-user:p%40ss%2Fword@127.0.0.1:{controller.port}", sender=SENDER,
                        timeout=5, ssl_context=_client_context(certificate))
        mailer.send(mailer.compose("print_ready", to="ada@example.com", download_url=DOWNLOAD_URL))
    finally:
        controller.stop()
    assert logins.seen == [(b"ses-user", b"p@ss/word")]
    assert len(handler.messages) == 1
    assert "p@ss" not in repr(mailer)


def test_starttls_wrong_password_is_permanent(certificate):
    handler, logins = Capture(), Logins()
    controller = _controller(handler, tls_context=_server_context(certificate), require_starttls=True,
                             authenticator=logins, auth_required=True)
    controller.start()
    sleeps = Sleeps()
    try:
        mailer = Mailer(f"smtp+starttls://ses-user:wrong@127.0.0.1:{controller.port}", sender=SENDER,
                        timeout=5, ssl_context=_client_context(certificate), sleep=sleeps)
        with pytest.raises(MailError) as caught:
            mailer.send(mailer.compose("print_ready", to="ada@example.com", download_url=DOWNLOAD_URL))
    finally:
        controller.stop()
    assert caught.value.permanent and sleeps.delays == [] and handler.messages == []


def test_untrusted_certificate_is_refused(certificate):
    handler = Capture()
    controller = _controller(handler, tls_context=_server_context(certificate), require_starttls=True)
    controller.start()
    sleeps = Sleeps()
    try:
        mailer = Mailer(f"smtp+starttls://127.0.0.1:{controller.port}", sender=SENDER, timeout=5,
                        sleep=sleeps)     # system CAs: the self-signed cert must not pass
        with pytest.raises(MailError) as caught:
            mailer.send(mailer.compose("print_ready", to="ada@example.com", download_url=DOWNLOAD_URL))
    finally:
        controller.stop()
    assert caught.value.permanent and handler.messages == []


def test_starttls_never_downgrades(smtp):
    controller, handler = smtp                     # a plain server: no STARTTLS offered
    sleeps = Sleeps()
    mailer = Mailer(f"smtp+starttls://127.0.0.1:{controller.port}", sender=SENDER, timeout=5, sleep=sleeps)
    with pytest.raises(MailError) as caught:
        mailer.send(mailer.compose("print_ready", to="ada@example.com", download_url=DOWNLOAD_URL))
    assert caught.value.permanent and handler.messages == [] and sleeps.delays == []


def test_implicit_tls(certificate):
    handler = Capture()
    controller = _controller(handler, ssl_context=_server_context(certificate))
    controller.start()
    try:
        mailer = Mailer(f"smtps://127.0.0.1:{controller.port}", sender=SENDER, timeout=5,
                        ssl_context=_client_context(certificate))
        mailer.send(mailer.compose("previews_ready", to="ada@example.com", portrait_url=PORTRAIT_URL))
    finally:
        controller.stop()
    assert len(handler.messages) == 1


# --- configuration -------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["http://host", "smtp://", "smtp://user:pw@host:25", "smtp://host:99999"])
def test_bad_smtp_urls(url):
    with pytest.raises(MailError):
        Mailer(url, sender=SENDER)


def test_bad_sender():
    with pytest.raises(MailError):
        Mailer("smtp://host", sender="impasto\r\nBcc: x@example.com <a@b.example>")


# --- addresses -----------------------------------------------------------------------------

@pytest.mark.parametrize("address, expected", [
    ("ada@example.com", "ada@example.com"),
    ("  Ada.Lovelace+prints@Example.CO.UK ", "Ada.Lovelace+prints@example.co.uk"),
    ("o'brien@example.ie", "o'brien@example.ie"),
    ("user@bücher.example", "user@xn--bcher-kva.example"),
    ("x@xn--bcher-kva.example", "x@xn--bcher-kva.example"),
    ("a" * 64 + "@" + "b" * 63 + ".com", "a" * 64 + "@" + "b" * 63 + ".com"),
])
def test_valid_addresses(address, expected):
    assert validate_email(address) == expected


@pytest.mark.parametrize("address", [
    "", "   ", "ada", "ada@", "@example.com", "ada@localhost", "ada@example", "ada@example.c",
    "ada @example.com", "ada@exa mple.com", "ada@example.com\r\nBcc: x@example.com",
    "ada@example.com\n", "ada\0@example.com", "Ada <ada@example.com>", '"ada"@example.com',
    "ada..lovelace@example.com", ".ada@example.com", "ada.@example.com", "ada@-example.com",
    "ada@example-.com", "ada@example..com", "ada@[127.0.0.1]", "ada@127.0.0.1", "adä@example.com",
    "a@b@example.com", "a" * 65 + "@example.com", "a@" + "b" * 64 + ".com",
    "a@" + ".".join(["b" * 60] * 5) + ".com", None, 42,
])
def test_invalid_addresses(address):
    with pytest.raises(InvalidEmail) as caught:
        validate_email(address)
    assert isinstance(caught.value, ParamError) and http_status(caught.value) == 422
    assert "\n" not in str(caught.value) and "\r" not in str(caught.value)
