"""A fake Slack Web API: a real HTTP server on 127.0.0.1 for a real ``slack_sdk.WebClient``.

    with FakeSlackAPI(now=lambda: clock.now().timestamp()) as slack:
        client = WebClient(token=slack.token, base_url=slack.url, retry_handlers=[])

* Bodies: JSON, form-encoded, multipart and query strings, as slack_sdk sends them; a
  ``blocks`` parameter sent as a JSON string is decoded. ``Authorization: Bearer <token>`` (or
  a ``token`` parameter) is checked: none → ``not_authed``, a wrong one → ``invalid_auth``.
* Methods: ``auth.test``, ``chat.postMessage`` (a user id posts to the DM ``D…``; unique ``ts``;
  the message is stored), ``chat.update`` (only a stored ``ts`` in that channel, else
  ``message_not_found``), ``conversations.open``, ``chat.postEphemeral`` (stored in
  ``ephemerals``; a known channel and user), ``views.open`` (a ``trigger_id`` and a modal view;
  stored in ``views`` under a new view id; a trigger is used once, else ``expired_trigger_id``)
  and ``views.update`` (a stored ``view_id``, else ``not_found``), ``views.publish`` (a known
  ``user_id`` and a ``home`` view; stored in ``home_views`` per user, the latest wins).
  Files, as ``files_upload_v2`` sends them: ``files.getUploadURLExternal`` (a ``filename``
  and a ``length`` > 0; returns an ``upload_url`` on this server and a ``file_id``), a POST of
  the bytes to that URL (no token; stored; a body of another length → HTTP 400, an URL not
  handed out → 404) and ``files.completeUploadExternal`` (every file uploaded, else
  ``file_not_found``; a ``channel_id`` must be a conversation id — a user id →
  ``invalid_arguments``, as Slack's ``^[CGDZ]`` pattern — and a known one, else
  ``channel_not_found``; the file is shared there and kept in ``files`` with its bytes, title
  and ``initial_comment``). Anything else → ``unknown_method``.
* Response URLs: ``response_url()`` hands out ``…/respond/N``; a POST there (JSON, as
  ``respond()`` / ``WebhookClient`` sends it, no token) is stored in ``responses`` under that
  URL and answered ``ok``; an URL not handed out → 404.
* Users: ``users=None`` knows every ``U…`` id; a set knows only those (others:
  ``channel_not_found`` on post, ``user_not_found`` on open). Channels ``C…`` must be added.
* ``chat.postMessage`` is limited per channel with a token bucket (capacity ``burst``, refill
  ``per_second``): over it, HTTP 429 with ``Retry-After`` (whole seconds) and
  ``{"ok": false, "error": "ratelimited"}``. Time comes from ``now`` (inject the test's clock).
* Blocks are checked against Slack's limits (50 blocks, 3,000 characters of section text, 25
  elements an actions block, 255-character ids, unique action ids) → ``invalid_blocks``.
* ``script(target, *answers)``: the next calls to a channel or user answer these in order:
  an error string (200 ``ok: false``) or an HTTP status (e.g. 500, a non-JSON body), or
  ``RateLimit(seconds)`` (HTTP 429, ``Retry-After``, ``ratelimited``). The files methods also
  take scripts under their method name (``script("files.getUploadURLExternal", …)``), and
  the POST of the bytes under ``"upload"`` (HTTP statuses only: the bytes are not stored).
* Every request is recorded (``requests``): method, params, time, HTTP status, error, and
  the URL path it came to (a client whose base URL is ``…/api/NAME/`` is told apart by it).
* Optional faults, off by default: ``fault`` — a callable ``(method, channel, at)`` returning
  an answer as ``script`` takes them (or None: carry on), consulted by ``chat.postMessage``
  after the scripts (an outage, say); ``hold_posts(n, timeout=…)`` — the next ``n``
  ``chat.postMessage`` calls wait before they are processed (listed in ``held``) until
  ``release_held()`` or the timeout, then are processed as usual, even when the caller has
  gone meanwhile (a send in flight).
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import itertools
import json
import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class RateLimit:
    """A scripted answer: HTTP 429 with ``Retry-After: retry_after`` and ``ratelimited``."""

    retry_after: int


Answer = str | int | RateLimit


@dataclass(frozen=True)
class Request:
    method: str
    params: dict[str, Any]
    at: float
    status: int
    error: str | None
    path: str = ""


@dataclass(frozen=True)
class Held:
    """A ``chat.postMessage`` call held by ``hold_posts``: its URL path, params, arrival."""

    path: str
    params: dict[str, Any]
    at: float


@dataclass
class StoredMessage:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    edits: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StoredFile:
    id: str
    filename: str
    length: int
    data: bytes | None = None
    title: str = ""
    channels: list[str] = field(default_factory=list)
    initial_comment: str | None = None
    thread_ts: str | None = None
    alt_txt: str | None = None


@dataclass
class _Bucket:
    tokens: float
    at: float


class _Reply(Exception):
    def __init__(self, status: int, body: dict[str, Any] | str, headers: dict[str, str]) -> None:
        self.status, self.body, self.headers = status, body, headers


def _error(error: str, status: int = 200, **headers: str) -> _Reply:
    return _Reply(status, {"ok": False, "error": error}, headers)


class FakeSlackAPI:
    def __init__(
        self,
        *,
        token: str = "xoxb-fake-0000-token",
        now: Callable[[], float] = time.time,
        users: set[str] | None = None,
        burst: float = 2.0,
        per_second: float = 1.0,
    ) -> None:
        self.token = token
        self.now = now
        self.users = users
        self.channels: set[str] = set()
        self.burst = burst
        self.per_second = per_second
        self.requests: list[Request] = []
        self.messages: dict[str, list[StoredMessage]] = defaultdict(list)
        self.ephemerals: list[dict[str, Any]] = []
        self.views: dict[str, dict[str, Any]] = {}
        self.home_views: dict[str, dict[str, Any]] = {}
        self.responses: dict[str, list[dict[str, Any]]] = {}
        self.files: dict[str, StoredFile] = {}
        self._upload_urls: dict[str, str] = {}  # upload URL path → file id
        self._triggers_used: set[str] = set()
        self._scripts: dict[str, deque[Answer]] = defaultdict(deque)
        self._buckets: dict[str, _Bucket] = {}
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # optional faults (off by default): see the module's docstring
        self.fault: Callable[[str, str, float], Answer | None] | None = None
        self.held: list[Held] = []
        self._hold_count = 0
        self._hold_timeout = 30.0
        self._hold_release = threading.Event()

    # --- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> FakeSlackAPI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake._handle(self)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def url(self) -> str:
        assert self._server is not None, "use FakeSlackAPI as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/"

    # --- scripting and inspection ---------------------------------------------------------------

    def script(self, target: str, *answers: Answer) -> None:
        """The next calls naming ``target`` (a channel or user id) answer ``answers`` in order."""
        with self._lock:
            self._scripts[target].extend(answers)

    def hold_posts(self, count: int = 1, *, timeout: float = 30.0) -> None:
        """The next ``count`` chat.postMessage calls wait (before being processed) until
        ``release_held()`` or ``timeout`` seconds; each is listed in ``held`` on arrival."""
        with self._lock:
            self._hold_count += count
            self._hold_timeout = timeout
            self._hold_release = threading.Event()

    def release_held(self) -> None:
        """Let every held call (and any still to be held) go on."""
        with self._lock:
            self._hold_count = 0
            self._hold_release.set()

    def _maybe_hold(self, path: str, query: str, content_type: str, raw: bytes) -> None:
        with self._lock:
            if self._hold_count <= 0:
                return
            self._hold_count -= 1
            release, timeout = self._hold_release, self._hold_timeout
            params: dict[str, Any] = dict(parse_qsl(query))
            with contextlib.suppress(ValueError):
                params.update(_parse_body(content_type, raw))
            self.held.append(Held(path, params, self.now()))
        release.wait(timeout)

    def add_channel(self, channel: str) -> None:
        with self._lock:
            self.channels.add(channel)

    def calls(self, method: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == method]

    def response_url(self) -> str:
        """A new response_url (as Slack sends with a slash command or an interaction)."""
        assert self._server is not None, "use FakeSlackAPI as a context manager"
        with self._lock:
            url = f"http://127.0.0.1:{self._server.server_address[1]}/respond/{next(self._seq)}"
            self.responses[url] = []
        return url

    def responded(self, url: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.responses.get(url, []))

    @staticmethod
    def dm_for(user: str) -> str:
        return "D" + user[1:]

    # --- HTTP -----------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        if split.path.startswith("/respond/"):
            self._handle_response_url(h, split.path)
            return
        if split.path.startswith("/upload/"):
            self._handle_upload(h, split.path)
            return
        method = split.path.rsplit("/", 1)[-1]
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        if method == "chat.postMessage" and self._hold_count > 0:
            self._maybe_hold(split.path, split.query, h.headers.get("Content-Type", ""), raw)
        params = dict(parse_qsl(split.query))
        status, headers = 200, {}
        body: dict[str, Any] | str
        with self._lock:
            at = self.now()
            try:
                params.update(_parse_body(h.headers.get("Content-Type", ""), raw))
                if isinstance(params.get("blocks"), str):
                    params["blocks"] = json.loads(params["blocks"])
                self._check_auth(h.headers.get("Authorization", ""), params)
                body = self._dispatch(method, params, at)
            except _Reply as reply:
                status, body, headers = reply.status, reply.body, reply.headers
            except (ValueError, KeyError) as exc:
                body = {"ok": False, "error": "invalid_arguments", "detail": str(exc)}
            error = body.get("error") if isinstance(body, dict) else f"HTTP {status}"
            self.requests.append(Request(method, params, at, status, error, split.path))
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        try:
            h.send_response(status)
            ctype = "application/json; charset=utf-8" if isinstance(body, dict) else "text/plain"
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                h.send_header(key, value)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller is gone (killed while its request was held): processed anyway

    def _handle_response_url(self, h: BaseHTTPRequestHandler, path: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        assert self._server is not None
        url = f"http://127.0.0.1:{self._server.server_address[1]}{path}"
        with self._lock:
            if url not in self.responses:
                status, data = 404, b"no_service"
            else:
                try:
                    body = _parse_body(h.headers.get("Content-Type", ""), raw)
                    if isinstance(body.get("blocks"), str):
                        body["blocks"] = json.loads(body["blocks"])
                    _check_blocks(body.get("blocks") or [])
                    self.responses[url].append(body)
                    status, data = 200, b"ok"
                except _Reply:
                    status, data = 400, b"invalid_blocks"
                except ValueError:
                    status, data = 400, b"invalid_payload"
            self.requests.append(Request("response_url", {"url": url}, self.now(), status, None))
        h.send_response(status)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _handle_upload(self, h: BaseHTTPRequestHandler, path: str) -> None:
        """The upload URL of ``files.getUploadURLExternal``: the raw bytes, no token."""
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        with self._lock:
            file_id = self._upload_urls.get(path)
            stored = self.files.get(file_id) if file_id else None
            queue = self._scripts.get("upload")
            answer = queue.popleft() if queue else None
            if isinstance(answer, int):
                status, data = answer, f"fake upload answer {answer}".encode()
            elif stored is None or h.command != "POST":
                status, data = 404, b"not_found"
            elif len(raw) != stored.length:
                status, data = 400, f"length mismatch: {len(raw)} != {stored.length}".encode()
            else:
                stored.data = raw
                status, data = 200, f"OK - {len(raw)}".encode()
            params = {"url": path, "file_id": file_id, "bytes": len(raw)}
            error = None if status == 200 else data.decode()
            self.requests.append(Request("upload", params, self.now(), status, error))
        h.send_response(status)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _check_auth(self, header: str, params: dict[str, Any]) -> None:
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        token = token or str(params.get("token") or "")
        if not token:
            raise _error("not_authed")
        if token != self.token:
            raise _error("invalid_auth")

    def _dispatch(self, method: str, params: dict[str, Any], at: float) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "url": "https://fake.slack.com/", "team": "Fake", "user": "bot",
                    "team_id": "T0000FAKE", "user_id": "UBOT", "bot_id": "BBOT"}  # fmt: skip
        if method == "chat.postMessage":
            return self._post(params, at)
        if method == "chat.update":
            return self._update(params)
        if method == "conversations.open":
            users = str(params.get("users") or "").split(",")
            if len(users) != 1 or not self._knows_user(users[0]):
                raise _error("user_not_found")
            channel = self.dm_for(users[0])
            self.channels.add(channel)
            return {"ok": True, "channel": {"id": channel}}
        if method == "chat.postEphemeral":
            return self._ephemeral(params)
        if method == "views.open":
            return self._views_open(params)
        if method == "views.update":
            return self._views_update(params)
        if method == "views.publish":
            return self._views_publish(params)
        if method == "files.getUploadURLExternal":
            return self._get_upload_url(params)
        if method == "files.completeUploadExternal":
            return self._complete_upload(params)
        raise _error("unknown_method")

    def _get_upload_url(self, params: dict[str, Any]) -> dict[str, Any]:
        self._scripted("files.getUploadURLExternal")
        filename = str(params.get("filename") or "")
        try:
            length = int(params.get("length") or 0)
        except (TypeError, ValueError):
            length = 0
        if not filename or length <= 0:
            raise _error("invalid_arguments")
        assert self._server is not None
        file_id = f"F{next(self._seq):08d}"
        path = f"/upload/v1/{file_id}-{next(self._seq)}"
        self.files[file_id] = StoredFile(
            file_id, filename, length, alt_txt=params.get("alt_txt") or None
        )
        self._upload_urls[path] = file_id
        url = f"http://127.0.0.1:{self._server.server_address[1]}{path}"
        return {"ok": True, "upload_url": url, "file_id": file_id}

    def _complete_upload(self, params: dict[str, Any]) -> dict[str, Any]:
        self._scripted("files.completeUploadExternal")
        raw = params.get("files")
        items = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(items, list) or not items:
            raise _error("invalid_arguments")
        channel = str(params.get("channel_id") or "")
        if channel:
            self._scripted(channel)
            if channel[:1] not in ("C", "G", "D", "Z"):
                raise _error("invalid_arguments")
            channel = self._resolve(channel)
        stored: list[StoredFile] = []
        for item in items:
            found = self.files.get(str(item.get("id") or ""))
            if found is None or found.data is None:
                raise _error("file_not_found")
            stored.append(found)
        comment = params.get("initial_comment") or None
        thread_ts = params.get("thread_ts") or None
        out = []
        for item, f in zip(items, stored, strict=True):
            f.title = str(item.get("title") or f.filename)
            if channel and channel not in f.channels:
                f.channels.append(channel)
            f.initial_comment, f.thread_ts = comment, thread_ts
            permalink = f"https://fake.slack.com/files/UBOT/{f.id}/{f.filename}"
            out.append(
                {
                    "id": f.id,
                    "name": f.filename,
                    "title": f.title,
                    "size": f.length,
                    "channels": list(f.channels),
                    "permalink": permalink,
                }
            )
        return {"ok": True, "files": out}

    def _ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, user = str(params.get("channel") or ""), str(params.get("user") or "")
        self._scripted(channel)
        channel = self._resolve(channel)
        if not self._knows_user(user):
            raise _error("user_not_found")
        text, blocks = str(params.get("text") or ""), params.get("blocks") or []
        if not text and not blocks:
            raise _error("no_text")
        _check_blocks(blocks)
        self.ephemerals.append({"channel": channel, "user": user, "text": text, "blocks": blocks})
        return {"ok": True, "message_ts": f"{int(self.now())}.{next(self._seq):06d}"}

    @staticmethod
    def _view_param(params: dict[str, Any]) -> dict[str, Any]:
        view = params.get("view")
        view = json.loads(view) if isinstance(view, str) else view
        if not isinstance(view, dict) or view.get("type") != "modal" or not view.get("blocks"):
            raise _error("invalid_arguments")
        if len(view["blocks"]) > 100 or len(str(view.get("private_metadata", ""))) > 3000:
            raise _error("invalid_arguments")
        return view

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        trigger = str(params.get("trigger_id") or "")
        if not trigger:
            raise _error("invalid_arguments")
        if trigger in self._triggers_used:
            raise _error("expired_trigger_id")
        view = self._view_param(params)
        self._triggers_used.add(trigger)
        view_id = f"V{next(self._seq):08d}"
        self.views[view_id] = {**view, "id": view_id}
        return {"ok": True, "view": self.views[view_id]}

    def _views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        view_id = str(params.get("view_id") or "")
        if view_id not in self.views:
            raise _error("not_found")
        view = self._view_param(params)
        self.views[view_id] = {**view, "id": view_id}
        return {"ok": True, "view": self.views[view_id]}

    def _views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("user_id") or "")
        if not self._knows_user(user):
            raise _error("user_not_found")
        view = params.get("view")
        view = json.loads(view) if isinstance(view, str) else view
        if not isinstance(view, dict) or view.get("type") != "home":
            raise _error("invalid_arguments")
        blocks = view.get("blocks") or []
        if len(blocks) > 100 or len(str(view.get("private_metadata", ""))) > 3000:
            raise _error("invalid_arguments")
        _check_blocks(blocks[:50])  # a home view may have 100 blocks; check the rest alike
        _check_blocks(blocks[50:])
        view_id = f"V{next(self._seq):08d}"
        self.home_views[user] = {**view, "id": view_id}
        return {"ok": True, "view": self.home_views[user]}

    def _knows_user(self, user: str) -> bool:
        return user.startswith("U") and (self.users is None or user in self.users)

    def _resolve(self, channel: str) -> str:
        if channel.startswith("U"):
            if not self._knows_user(channel):
                raise _error("channel_not_found")
            dm = self.dm_for(channel)
            self.channels.add(dm)
            return dm
        if channel not in self.channels:
            raise _error("channel_not_found")
        return channel

    def _scripted(self, *targets: str) -> None:
        for target in targets:
            queue = self._scripts.get(target)
            if queue:
                answer = queue.popleft()
                if isinstance(answer, RateLimit):
                    raise _error("ratelimited", 429, **{"Retry-After": str(answer.retry_after)})
                if isinstance(answer, int):
                    raise _Reply(answer, f"fake upstream error {answer}", {})
                raise _error(answer)

    def _take_token(self, channel: str, at: float) -> None:
        bucket = self._buckets.setdefault(channel, _Bucket(self.burst, at))
        bucket.tokens = min(self.burst, bucket.tokens + max(0.0, at - bucket.at) * self.per_second)
        bucket.at = max(bucket.at, at)
        if bucket.tokens < 1:
            wait = max(1, math.ceil((1 - bucket.tokens) / self.per_second))
            raise _error("ratelimited", 429, **{"Retry-After": str(wait)})
        bucket.tokens -= 1

    def _post(self, params: dict[str, Any], at: float) -> dict[str, Any]:
        requested = str(params.get("channel") or "")
        self._scripted(requested)
        channel = self._resolve(requested)
        if channel != requested:
            self._scripted(channel)
        if self.fault is not None:
            answer = self.fault("chat.postMessage", channel, at)
            if isinstance(answer, RateLimit):
                raise _error("ratelimited", 429, **{"Retry-After": str(answer.retry_after)})
            if isinstance(answer, int):
                raise _Reply(answer, f"fake upstream error {answer}", {})
            if isinstance(answer, str):
                raise _error(answer)
        self._take_token(channel, at)
        text, blocks = str(params.get("text") or ""), params.get("blocks") or []
        if not text and not blocks:
            raise _error("no_text")
        _check_blocks(blocks)
        ts = f"{int(at)}.{next(self._seq):06d}"
        self.messages[channel].append(StoredMessage(channel, ts, text, blocks))
        message = {"type": "message", "text": text, "blocks": blocks, "ts": ts}
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(params.get("channel") or ""), str(params.get("ts") or "")
        self._scripted(channel)
        if channel not in self.channels:
            raise _error("channel_not_found")
        found = [m for m in self.messages.get(channel, []) if m.ts == ts]
        if not found:
            raise _error("message_not_found")
        text, blocks = str(params.get("text") or ""), params.get("blocks") or []
        _check_blocks(blocks)
        message = found[0]
        message.edits.append({"text": message.text, "blocks": message.blocks})
        message.text, message.blocks = text, blocks
        return {"ok": True, "channel": channel, "ts": ts, "text": text}


def _parse_body(content_type: str, raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    if content_type.startswith("application/json"):
        return dict(json.loads(raw))
    if content_type.startswith("multipart/form-data"):
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        out: dict[str, Any] = {}
        for part in parsed.iter_parts():
            name = part.get_param("name", header="content-disposition")
            out[str(name)] = part.get_content()
        return out
    return dict(parse_qsl(raw.decode()))


def _check_blocks(blocks: list[dict[str, Any]]) -> None:
    """Slack refuses blocks over its limits with ``invalid_blocks``."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        raise _error("invalid_blocks")
    action_ids: list[str] = []
    for block in blocks:
        if len(str(block.get("block_id", ""))) > 255:
            raise _error("invalid_blocks")
        kind = block.get("type")
        if kind == "section" and len(block.get("text", {}).get("text", "")) > 3000:
            raise _error("invalid_blocks")
        if kind == "header" and len(block.get("text", {}).get("text", "")) > 150:
            raise _error("invalid_blocks")
        if kind == "actions":
            elements = block.get("elements", [])
            if len(elements) > 25:
                raise _error("invalid_blocks")
            action_ids += [str(e.get("action_id", "")) for e in elements]
    if any(len(a) > 255 for a in action_ids) or len(set(action_ids)) != len(action_ids):
        raise _error("invalid_blocks")
    if len({b.get("block_id") for b in blocks if "block_id" in b}) != sum(
        "block_id" in b for b in blocks
    ):
        raise _error("invalid_blocks")
