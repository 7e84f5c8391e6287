"""A fake ERP for the decision callbacks: a real HTTP server on 127.0.0.1 whose first
``hold`` calls time out for the caller.

A held call is *received* — recorded, as an ERP that got the request would have it — and
then left unanswered until the caller hangs up (its transport timeout) or ``hold_max``
seconds pass; the answer goes nowhere. Later calls are answered 200. Every call is recorded
with its ``X-CreditBot-Idempotency-Key``, its body and whether its signature verifies, so a
test can count deliveries per key exactly.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bot.transports.erp import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify


@dataclass
class Call:
    at: float
    key: str | None
    body: dict[str, Any]
    signature_ok: bool
    held: bool
    held_for: float | None = None  # seconds until the caller hung up (held calls)


class FakeErp:
    def __init__(self, secret: str, *, hold: int = 0, hold_max: float = 60.0) -> None:
        self.secret = secret
        self.hold_left = hold
        self.hold_max = hold_max
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake._handle(self)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/erp/decisions"

    def __enter__(self) -> FakeErp:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def snapshot(self) -> list[Call]:
        with self.lock:
            return list(self.calls)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        call = Call(
            time.time(),
            h.headers.get(IDEMPOTENCY_HEADER),
            body,
            verify(self.secret, raw, h.headers.get(SIGNATURE_HEADER, "")),
            held=False,
        )
        with self.lock:
            if self.hold_left > 0:
                self.hold_left -= 1
                call.held = True
            self.calls.append(call)
        if call.held:
            call.held_for = _until_hangup(h.connection, self.hold_max)
        data = b'{"ok": true}'
        try:
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except OSError:
            pass  # the caller timed out and left


def _until_hangup(conn: socket.socket, limit: float) -> float:
    """Wait until the peer closes the connection (or ``limit``); the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        readable, _, _ = select.select([conn], [], [], 0.05)
        if readable:
            try:
                if conn.recv(1, socket.MSG_PEEK) == b"":
                    break
            except OSError:
                break
    return time.monotonic() - start
