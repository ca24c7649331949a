"""A TEST DOUBLE of Stripe's API: a small HTTP server on 127.0.0.1, because Stripe itself
cannot run here (and a test must never reach the real one).

It serves the few endpoints the shop calls, as the real API shapes them, and records what
it was sent, so tests check the shop's side: the amount, currency, reference and
idempotency key of each call.

- ``POST /v1/checkout/sessions``: a session (``cs_fake_N``), its ``url`` a page of this server;
  a repeated ``Idempotency-Key`` answers the first response again, as Stripe does.
- ``POST /v1/checkout/sessions/<id>/expire`` and ``POST /v1/refunds``.
- ``GET /pay/<id>``: a stand-in for the hosted checkout page, with one "Pay" button;
  ``POST /pay/<id>`` marks it paid, delivers ``checkout.session.completed`` to
  ``webhook_url`` (signed with the stripe package's scheme) and redirects to ``success_url``.

``fail_next`` makes the next API calls answer with an error (a Stripe error body).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, str]           # the form body, keys as Stripe's bracket notation spells them
    headers: dict[str, str]


@dataclass
class FakeStripe:
    webhook_secret: str
    webhook_url: str = ""
    calls: list[Call] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_next: int = 0
    deliveries: list[int] = field(default_factory=list)    # the webhook's HTTP answers
    _idempotent: dict[str, tuple[int, dict]] = field(default_factory=dict)
    _counter: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    base_url: str = ""

    def new_id(self, prefix: str) -> str:
        self._counter[prefix] += 1
        return f"{prefix}_fake_{self._counter[prefix]}"

    def api_calls(self, path_prefix: str) -> list[Call]:
        return [c for c in self.calls if c.path.startswith(path_prefix)]

    # --- events ------------------------------------------------------------------------

    def event(self, type_: str, session_id: str, **changes: Any) -> dict[str, Any]:
        session = {**self.sessions[session_id], **changes}
        return {"id": self.new_id("evt"), "object": "event", "type": type_, "api_version": "2025-01-27",
                "created": int(time.time()), "livemode": False, "data": {"object": session}}

    def pay(self, session_id: str) -> dict[str, Any]:
        """The customer paid: the session completes with a payment intent; its event."""
        session = self.sessions[session_id]
        session.update(status="complete", payment_status="paid", payment_intent=self.new_id("pi"))
        return self.event("checkout.session.completed", session_id)

    def signed(self, event: dict[str, Any], *, secret: str | None = None,
               timestamp: int | None = None) -> tuple[bytes, str]:
        """The body and ``Stripe-Signature`` header Stripe would send (the package's own scheme)."""
        import stripe

        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(payload, secret or self.webhook_secret,
                                                                   timestamp=timestamp)
        return payload.encode(), header

    def deliver(self, event: dict[str, Any]) -> int:
        payload, header = self.signed(event)
        request = urllib.request.Request(self.webhook_url, data=payload, method="POST",
                                         headers={"Content-Type": "application/json", "Stripe-Signature": header})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        self.deliveries.append(status)
        return status

    # --- the API -----------------------------------------------------------------------

    def handle(self, method: str, path: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, dict]:
        with self._lock:
            self.calls.append(Call(method, path, params, headers))
            key = headers.get("idempotency-key")
            if key and (method, path, key) in self._idempotent:
                return self._idempotent[(method, path, key)]
            if self.fail_next:
                self.fail_next -= 1
                return 400, {"error": {"type": "invalid_request_error", "message": "fake: refused on purpose"}}
            answer = self._route(method, path, params)
            if key:
                self._idempotent[(method, path, key)] = answer
            return answer

    def _route(self, method: str, path: str, params: dict[str, str]) -> tuple[int, dict]:
        if method == "POST" and path == "/v1/checkout/sessions":
            return 200, self._create_session(params)
        if method == "POST" and path.startswith("/v1/checkout/sessions/") and path.endswith("/expire"):
            session = self.sessions.get(path.split("/")[4])
            if session is None or session["status"] != "open":
                return 400, {"error": {"type": "invalid_request_error", "message": "session is not open"}}
            session["status"] = "expired"
            return 200, session
        if method == "POST" and path == "/v1/refunds":
            refund = {"id": self.new_id("re"), "object": "refund", "status": "succeeded",
                      "payment_intent": params.get("payment_intent"), "metadata": {"order": params.get("metadata[order]")}}
            self.refunds[refund["id"]] = refund
            return 200, refund
        return 404, {"error": {"type": "invalid_request_error", "message": f"fake: no route {method} {path}"}}

    def _create_session(self, params: dict[str, str]) -> dict[str, Any]:
        session_id = self.new_id("cs")
        amount = int(params["line_items[0][price_data][unit_amount]"]) * int(params["line_items[0][quantity]"])
        session = {"id": session_id, "object": "checkout.session", "mode": params.get("mode"),
                   "url": f"{self.base_url}/pay/{session_id}", "status": "open", "payment_status": "unpaid",
                   "client_reference_id": params.get("client_reference_id"),
                   "customer_email": params.get("customer_email"), "amount_total": amount,
                   "currency": params.get("line_items[0][price_data][currency]"),
                   "success_url": params.get("success_url"), "cancel_url": params.get("cancel_url"),
                   "metadata": {"order": params.get("metadata[order]")}, "payment_intent": None}
        self.sessions[session_id] = session
        return session


class _Handler(BaseHTTPRequestHandler):
    fake: FakeStripe

    def log_message(self, *args) -> None:     # quiet
        pass

    def _params(self) -> dict[str, str]:
        body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
        query = urllib.parse.urlsplit(self.path).query
        return dict(urllib.parse.parse_qsl("&".join(part for part in (query, body) if part), keep_blank_values=True))

    def _answer(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        session = self.fake.sessions.get(path.removeprefix("/pay/"))
        if not path.startswith("/pay/") or session is None:
            self._answer(404, b"no such checkout", "text/plain")
            return
        amount = f"{session['amount_total'] / 100:.2f} {session['currency'].upper()}"
        page = (f"<!doctype html><title>Fake checkout</title><h1>Fake Stripe checkout (a test double)</h1>"
                f"<p data-amount>{amount}</p><p data-reference>{session['client_reference_id']}</p>"
                f"<form method=post><button id=pay type=submit>Pay {amount}</button></form>")
        self._answer(200, page.encode(), "text/html")

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        params = self._params()
        if path.startswith("/pay/"):
            session_id = path.removeprefix("/pay/")
            event = self.fake.pay(session_id)
            self.fake.deliver(event)
            self._answer(303, b"", "text/plain", {"Location": self.fake.sessions[session_id]["success_url"]})
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, body = self.fake.handle("POST", path, params, headers)
        self._answer(status, json.dumps(body).encode(), "application/json", {"Request-Id": "req_fake"})


class FakeStripeServer:
    """``with FakeStripeServer(secret) as fake:`` — the double on a free port, ``fake.base_url`` its URL."""

    def __init__(self, webhook_secret: str) -> None:
        self.fake = FakeStripe(webhook_secret=webhook_secret)
        handler = type("Handler", (_Handler,), {"fake": self.fake})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.fake.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-stripe", daemon=True)

    def __enter__(self) -> FakeStripe:
        self.thread.start()
        return self.fake

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
