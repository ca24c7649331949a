"""A TEST DOUBLE of a print lab's order API, shaped like Prodigi's v4 ``Orders`` (a small HTTP
server on 127.0.0.1: no lab can run here). It records what the shop sent and lets a test
move an order through production and shipping.

- ``POST /v4.0/Orders`` → ``{"outcome": "Created", "order": {...}}``; a repeated
  ``idempotencyKey`` answers the same order again (``"outcome": "CreatedWithIssues"`` aside,
  as Prodigi does); ``fail_next`` answers 503s instead.
- ``GET /v4.0/Orders/<id>`` → ``{"order": {...}}`` with its ``status`` and ``shipments``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeLab:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []     # (headers, body) of each POST
        self.orders: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, str] = {}
        self.fail_next = 0
        self.base_url = ""
        self.lock = threading.Lock()

    def produced(self, order_id: str) -> None:
        self.orders[order_id]["status"]["details"]["inProduction"] = "Complete"

    def shipped(self, order_id: str, *, carrier: str, number: str, url: str) -> None:
        self.produced(order_id)
        self.orders[order_id]["status"]["stage"] = "Complete"
        self.orders[order_id]["shipments"] = [{"id": f"shp_{order_id}", "status": "Shipped",
                                               "carrier": {"name": carrier, "service": "Standard"},
                                               "tracking": {"number": number, "url": url}}]

    def create(self, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.received.append({"headers": headers, "body": body})
            if self.fail_next:
                self.fail_next -= 1
                return 503, {"outcome": "Error", "message": "fake lab: down on purpose"}
            key = body.get("idempotencyKey")
            if key in self.by_key:
                return 200, {"outcome": "Created", "order": self.orders[self.by_key[key]]}
            order_id = f"ord_fake_{len(self.orders) + 1}"
            details = {name: "NotStarted" for name in ("downloadAssets", "printReadyAssetsPrepared",
                                                       "allocateProductionLocation", "inProduction", "shipping")}
            self.orders[order_id] = {"id": order_id, "merchantReference": body.get("merchantReference"),
                                     "status": {"stage": "InProgress", "details": details}, "shipments": [],
                                     "recipient": body.get("recipient"), "items": body.get("items")}
            self.by_key[key] = order_id
            return 200, {"outcome": "Created", "order": self.orders[order_id]}


class _Handler(BaseHTTPRequestHandler):
    lab: FakeLab

    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        if self.path != "/v4.0/Orders":
            self._answer(404, {"outcome": "NotFound"})
            return
        self._answer(*self.lab.create({k.lower(): v for k, v in self.headers.items()}, body))

    def do_GET(self) -> None:
        order = self.lab.orders.get(self.path.removeprefix("/v4.0/Orders/"))
        self._answer(200, {"outcome": "Ok", "order": order}) if order else self._answer(404, {"outcome": "NotFound"})


class FakeLabServer:
    """``with FakeLabServer() as lab:`` — ``lab.base_url`` is the API's base (``…/v4.0``)."""

    def __init__(self) -> None:
        self.lab = FakeLab()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"lab": self.lab}))
        self.lab.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v4.0"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-lab", daemon=True)

    def __enter__(self) -> FakeLab:
        self.thread.start()
        return self.lab

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
