"""A fake Slack Socket Mode endpoint on 127.0.0.1, for the real slack_sdk client.

Two servers: an HTTP one answering ``apps.connections.open`` (only with ``Authorization:
Bearer xapp-…`` of the expected app token; it returns ``{"ok": true, "url":
"ws://127.0.0.1:PORT/link"}``) and a WebSocket one (``websockets``' threaded server) at that
URL. A client that connects first gets Slack's ``hello``; ``deliver()`` then sends it an
envelope (``interactive``, ``events_api``, ``slash_commands``) and ``wait_for_ack()`` waits,
bounded, for the client's ``{"envelope_id": …}``.

    with FakeSlackSocket() as socket:
        client = WebClient(base_url=socket.url)  # for apps.connections.open
        ...
        envelope_id = socket.deliver("interactive", payload)
        ack = socket.wait_for_ack(envelope_id)
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

WS_PATH = "/link"
FORWARDED = ("authorization", "content-type")


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.01)


class FakeSlackSocket:
    def __init__(
        self, *, app_token: str = "xapp-1-A0000FAKE-0000-fake", upstream: str | None = None
    ) -> None:
        """``upstream``: a Web API base URL (``FakeSlackAPI.url``) that every other method is
        passed on to, so that one ``[slack] api_base_url`` serves a whole app (as slack.com
        does); without it other methods answer ``unknown_method``."""
        self.app_token = app_token
        self.upstream = upstream
        self.opens: list[dict[str, Any]] = []  # apps.connections.open calls: auth, ok
        self.sent: list[dict[str, Any]] = []  # what went to the client
        self.received: list[Any] = []  # what the client sent (JSON or raw text)
        self.acks: dict[str, dict[str, Any]] = {}  # envelope_id -> the client's ack
        self._connections: list[ServerConnection] = []
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._http: ThreadingHTTPServer | None = None
        self._ws: Server | None = None
        self._threads: list[threading.Thread] = []

    # --- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> FakeSlackSocket:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake._handle_http(self)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._ws = serve(self._handle_ws, "127.0.0.1", 0)
        for target in (lambda: self._http.serve_forever(0.05), self._ws.serve_forever):  # type: ignore[union-attr]
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._http is not None and self._ws is not None
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()
        self._ws.shutdown()
        self._http.shutdown()
        self._http.server_close()
        for thread in self._threads:
            thread.join(5)

    @property
    def url(self) -> str:
        """The Web API base URL (for the WebClient that calls apps.connections.open)."""
        assert self._http is not None, "use FakeSlackSocket as a context manager"
        return f"http://127.0.0.1:{self._http.server_address[1]}/api/"

    @property
    def ws_url(self) -> str:
        assert self._ws is not None, "use FakeSlackSocket as a context manager"
        return f"ws://127.0.0.1:{self._ws.socket.getsockname()[1]}{WS_PATH}"

    # --- apps.connections.open --------------------------------------------------------------------

    def _handle_http(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw_in = h.rfile.read(length) if length else b""
        split = urlsplit(h.path)
        method = split.path.rsplit("/", 1)[-1]
        auth = h.headers.get("Authorization", "")
        if method != "apps.connections.open" and self.upstream:
            self._forward(h, method, split.query, raw_in)
            return
        if method != "apps.connections.open":
            body: dict[str, Any] = {"ok": False, "error": "unknown_method"}
        elif not auth.startswith("Bearer "):
            body = {"ok": False, "error": "not_authed"}
        elif not auth.removeprefix("Bearer ").startswith("xapp-"):
            body = {"ok": False, "error": "not_allowed_token_type"}
        elif auth.removeprefix("Bearer ") != self.app_token:
            body = {"ok": False, "error": "invalid_auth"}
        else:
            body = {"ok": True, "url": self.ws_url}
        with self._lock:
            self.opens.append({"method": method, "authorization": auth, "ok": body["ok"]})
        raw = json.dumps(body).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)

    def _forward(self, h: BaseHTTPRequestHandler, method: str, query: str, raw: bytes) -> None:
        assert self.upstream is not None
        url = self.upstream + method + (f"?{query}" if query else "")
        headers = {k: v for k, v in h.headers.items() if k.lower() in FORWARDED}
        request = urllib.request.Request(url, data=raw, headers=headers, method=h.command)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                status, body, out = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            status, body, out = exc.code, exc.read(), exc.headers
        h.send_response(status)
        for key, value in out.items():
            if key.lower() in ("content-type", "retry-after"):
                h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    # --- the WebSocket ----------------------------------------------------------------------------

    def _handle_ws(self, connection: ServerConnection) -> None:
        if connection.request is None or urlsplit(connection.request.path).path != WS_PATH:
            connection.close(1008, "unknown path")
            return
        hello = {
            "type": "hello",
            "num_connections": 1,
            "debug_info": {"host": "fake-socket", "approximate_connection_time": 18060},
            "connection_info": {"app_id": "A0000FAKE"},
        }
        connection.send(json.dumps(hello))
        with self._lock:
            self.sent.append(hello)
            self._connections.append(connection)
        try:
            for message in connection:
                self._received(message)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                if connection in self._connections:
                    self._connections.remove(connection)

    def _received(self, message: str | bytes) -> None:
        try:
            data: Any = json.loads(message)
        except ValueError:
            data = message
        with self._lock:
            self.received.append(data)
            if isinstance(data, dict) and "envelope_id" in data:
                self.acks[str(data["envelope_id"])] = data

    def connected(self) -> bool:
        with self._lock:
            return bool(self._connections)

    def deliver(self, kind: str, payload: dict[str, Any], *, timeout: float = 10.0) -> str:
        """Send an envelope of ``kind`` carrying ``payload`` to the connected client (waiting,
        bounded, for one to connect); returns its envelope_id."""
        wait_until(self.connected, timeout, "a Socket Mode client to connect")
        envelope_id = f"{uuid.uuid4()}-{next(self._seq)}"
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": 0,
            "retry_reason": "",
        }
        with self._lock:
            connection = self._connections[-1]
            self.sent.append(envelope)
        connection.send(json.dumps(envelope))
        return envelope_id

    def wait_for_ack(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        def acked() -> dict[str, Any] | None:
            with self._lock:
                return self.acks.get(envelope_id)

        return wait_until(acked, timeout, f"the ack of envelope {envelope_id}")
