"""A fake Telegram Bot API: a real HTTP server on 127.0.0.1 for a real ``telegram.Bot`` (PTB 22).

    with FakeTelegramAPI(now=lambda: clock.now().timestamp()) as tg:
        bot = telegram.Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url)
        # or simply: bot = tg.bot()

* URLs as the real Bot API: ``{url}/bot{TOKEN}/{method}`` (GET or POST; method names are
  case-insensitive, as Telegram's), ``base_url`` is ``{url}/bot`` because PTB appends the token
  and the method. Another token → HTTP 401 ``Unauthorized``; an unknown method or path → 404
  ``Not Found`` (PTB raises ``InvalidToken`` for both, ``EndPointNotFound`` from
  ``do_api_request``). Files handed out by ``getFile`` are served at
  ``{url}/file/bot{TOKEN}/{file_path}`` (``base_file_url``).
* Bodies: JSON, form-encoded (PTB's way: every value JSON-encoded, strings as they are),
  multipart/form-data (uploads; ``attach://name`` is resolved) and query strings. JSON-valued
  parameters sent as strings (``reply_markup``, ``commands``, ``scope``, ``allowed_updates``,
  ``entities`` …) are decoded; numbers and booleans sent as strings are read as such.
* Errors are Telegram's JSON: ``{"ok": false, "error_code": N, "description": "…"}``, with the
  HTTP status N. The descriptions of the common errors are Telegram's own ("Bad Request: chat
  not found", "Forbidden: bot was blocked by the user", "Bad Request: message is not modified:
  …", "Bad Request: BUTTON_DATA_INVALID", "Conflict: terminated by other getUpdates request; …");
  a few rarer ones (bad command lists, bad files) are close approximations.
* Methods: ``getMe``; ``sendMessage`` (``chat_id``, ``text``, ``parse_mode``, ``reply_markup``;
  returns a full Message: ``message_id`` unique per chat, ``date`` from ``now``, ``chat``,
  ``from`` = the bot, the text as Telegram shows it with ``entities``; the message is stored);
  ``sendPhoto`` (a multipart upload — the bytes are stored — or the ``file_id`` of a stored
  photo; ``caption`` ≤ 1,024 characters; returns a Message with a ``photo`` array);
  ``editMessageText`` / ``editMessageCaption`` / ``editMessageReplyMarkup`` (``chat_id`` +
  ``message_id`` of a stored message, else "message to edit not found"; an edit that changes
  nothing → "message is not modified"; an edit without ``reply_markup`` removes the inline
  keyboard, as Telegram does; the previous state goes to ``edits``); ``deleteMessage``;
  ``answerCallbackQuery`` (only ids handed out by ``make_callback_update``, once each, else
  "query is too old and response timeout expired or query ID is invalid"; recorded in
  ``callback_answers``); ``getFile``; ``setWebhook`` (an https URL on port 80, 88, 443 or
  8443; ``secret_token`` 1–256 characters of ``A-Za-z0-9_-``; stored in ``webhook``),
  ``deleteWebhook``, ``getWebhookInfo``; ``getUpdates``; ``setMyCommands``, ``getMyCommands``,
  ``deleteMyCommands`` (per ``scope`` and ``language_code``).
* Text: 1–4,096 characters and captions ≤ 1,024, counted (in code points) after the markup is
  parsed out and leading/trailing whitespace trimmed, as Telegram does: nothing left →
  "message text is empty". ``parse_mode="HTML"`` is parsed as Telegram HTML
  (``parse_telegram_html``: b strong i em u ins s strike del a[href] code pre span.tg-spoiler
  tg-spoiler blockquote; balanced tags; ``& < >`` only as ``&lt; &gt; &amp; &quot;`` or numeric
  entities), else 400 "Bad Request: can't parse entities: …". Markdown and MarkdownV2 are
  accepted but not parsed (the text is shown as sent). Returned messages carry the plain text
  and ``entities`` (UTF-16 offsets), so PTB's ``text_html`` works.
* Keyboards: inline buttons need a non-empty ``text`` and one action; ``callback_data`` is 1–64
  bytes of UTF-8 (longer → "BUTTON_DATA_INVALID"; an empty one counts as missing, → "Text
  buttons are unallowed in the inline keyboard", as Telegram answers).
* Chats: ids > 0 are private chats, ids < 0 groups (≤ -10¹² supergroups). ``chats=None`` knows
  every id, a set only those; ``forget(chat_id)`` unknows one → 400 "Bad Request: chat not
  found". ``block(chat_id)`` → 403 "Forbidden: bot was blocked by the user" (in a group: "bot
  was kicked from the group chat"), for sends and edits alike.
* Flood limits, with token buckets on the injected clock ``now``, on sends only
  (``sendMessage``, ``sendPhoto``; edits, deletes and answers are not limited here): a private
  chat ``per_chat_per_second`` (1/s, burst 1), a group ``group_per_minute`` (20/min, burst 20),
  and all chats together ``global_per_second`` (30/s, burst 30). Over one → HTTP 429 ``Too Many
  Requests: retry after N`` with ``parameters.retry_after`` N (whole seconds, rounded up, until
  every bucket has a token again); PTB raises ``RetryAfter``. A refused send takes no token.
  Checks run in this order: scripts, chat known / not blocked, content, flood limits.
* Updates: ``make_message_update(chat_id, text, …)`` and ``make_callback_update(chat_id,
  message_id, data, …)`` build valid Update JSON (monotonic ``update_id``; a leading ``/command``
  gets its ``bot_command`` entity; a callback carries the stored message as it is now and a
  fresh query id that ``answerCallbackQuery`` accepts); ``push_update(update)`` queues one.
  ``getUpdates`` returns queued updates with ``update_id >= offset`` (an ``offset`` confirms,
  i.e. drops, the earlier ones; a negative one keeps the last -offset), at most ``limit``; with
  ``timeout`` and nothing queued it waits, in real time, up to min(timeout, ``poll_cap``) — a
  pushed update wakes it. A second getUpdates while one waits ends the waiting one with 409
  "Conflict: terminated by other getUpdates request; …", as Telegram does; with a webhook set
  → 409 "Conflict: can't use getUpdates method while webhook is active; …". Webhooks are stored,
  not called (``allowed_updates`` is stored, not applied).
* ``script(target, *answers)``: the next calls to a chat id (int) or of a method (its name)
  answer these in order, before anything else is checked: an HTTP status (≥ 500: a non-JSON
  body, as a proxy answers; otherwise Telegram's error JSON), ``RetryAfter(seconds)`` (429 as
  above) or ``(status, description)`` (e.g. ``(403, "Forbidden: bot was blocked by the user")``).
* Inspection: ``messages(chat_id)`` (``StoredMessage``: text and parse_mode as sent, reply_markup,
  message_id, the shown ``plain`` text and ``entities``, ``edits``, ``deleted``),
  ``photos(chat_id)`` (``StoredPhoto`` with the bytes), ``callback_answers``, ``calls(method)``,
  ``requests`` (every call: method, params, time, HTTP status, error description), ``webhook``,
  ``pending_updates()``, ``commands(scope, language_code)``, ``polling`` (getUpdates waiting).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import struct
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

if TYPE_CHECKING:
    import telegram

DEFAULT_TOKEN = "123456789:AAFakeTelegramTokenForCreditBotTests-0"

MESSAGE_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_DATA_LIMIT = 64  # bytes of UTF-8
_EPSILON = 1e-4  # float rounding: clock readings near 1.7e9 s are only exact to ~2e-7 s

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
TEXT_BUTTONS_UNALLOWED = (
    "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
)
QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"
CONFLICT_OTHER_POLL = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is "
    "running"
)
CONFLICT_WEBHOOK = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first"
)


@dataclass(frozen=True)
class RetryAfter:
    """A scripted answer: HTTP 429, ``parameters.retry_after`` = ``seconds``."""

    seconds: int


Answer = int | RetryAfter | tuple[int, str]


@dataclass(frozen=True)
class Request:
    method: str
    params: dict[str, Any]
    at: float
    status: int
    description: str | None


@dataclass
class StoredPhoto:
    file_id: str
    file_unique_id: str
    data: bytes
    filename: str | None
    width: int
    height: int
    file_path: str


@dataclass
class StoredMessage:
    chat_id: int
    message_id: int
    date: int
    text: str | None  # as sent (None for a photo: see caption)
    parse_mode: str | None
    reply_markup: dict[str, Any] | None
    plain: str  # the text or caption as Telegram shows it: markup parsed out, trimmed
    entities: list[dict[str, Any]]
    caption: str | None = None  # as sent
    photo: StoredPhoto | None = None
    edit_date: int | None = None
    deleted: bool = False
    edits: list[dict[str, Any]] = field(default_factory=list)  # earlier states, oldest first


@dataclass(frozen=True)
class CallbackAnswer:
    callback_query_id: str
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int | None
    at: float


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class _Query:
    chat_id: int
    message_id: int
    at: float
    answered: bool = False


class _Reply(Exception):
    def __init__(self, status: int, body: dict[str, Any] | str) -> None:
        self.status, self.body = status, body


def _fail(status: int, description: str, **parameters: Any) -> _Reply:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return _Reply(status, body)


def _bad(description: str) -> _Reply:
    return _fail(400, f"Bad Request: {description}")


def _too_many(seconds: int) -> _Reply:
    return _fail(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)


_METHODS = [
    "getMe",
    "sendMessage",
    "sendPhoto",
    "editMessageText",
    "editMessageCaption",
    "editMessageReplyMarkup",
    "deleteMessage",
    "answerCallbackQuery",
    "getFile",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "getUpdates",
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
]
_CANONICAL = {name.lower(): name for name in _METHODS}
_JSON_PARAMS = {
    "reply_markup",
    "entities",
    "caption_entities",
    "commands",
    "scope",
    "allowed_updates",
    "link_preview_options",
    "reply_parameters",
}
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_COMMAND = re.compile(r"[a-z0-9_]{1,32}")
_BOT_COMMAND = re.compile(r"/[A-Za-z0-9_]{1,32}(@[A-Za-z0-9_]+)?")
_BUTTON_ACTIONS = {
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
}


class FakeTelegramAPI:
    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        now: Callable[[], float] = time.time,
        username: str = "creditbot_test_bot",
        first_name: str = "CreditBot",
        chats: set[int] | None = None,
        per_chat_per_second: float = 1.0,
        group_per_minute: float = 20.0,
        global_per_second: float = 30.0,
        poll_cap: float = 0.5,
        callback_ttl: float | None = None,
    ) -> None:
        self.token = token
        self.now = now
        head = token.split(":", 1)[0]
        self.bot_user: dict[str, Any] = {
            "id": int(head) if head.isdigit() else 1,
            "is_bot": True,
            "first_name": first_name,
            "username": username,
        }
        self.chats = chats
        self.per_chat_per_second = per_chat_per_second
        self.group_per_minute = group_per_minute
        self.global_per_second = global_per_second
        self.poll_cap = poll_cap
        self.callback_ttl = callback_ttl  # None: a handed-out query id never expires
        self.requests: list[Request] = []
        self.callback_answers: list[CallbackAnswer] = []
        self.webhook: dict[str, Any] = {}
        self.polling = 0  # getUpdates calls waiting right now
        self._messages: dict[int, list[StoredMessage]] = defaultdict(list)
        self._files: dict[str, StoredPhoto] = {}  # file_id → photo
        self._file_paths: dict[str, StoredPhoto] = {}  # file_path → photo
        self._blocked: set[int] = set()
        self._forgotten: set[int] = set()
        self._scripts: dict[int | str, deque[Answer]] = defaultdict(deque)
        self._buckets: dict[str, _Bucket] = {}
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._update_ids = itertools.count(100_000_001)
        self._seq = itertools.count(1)
        self._queries: dict[str, _Query] = {}
        self._updates: list[dict[str, Any]] = []
        self._commands: dict[tuple[str, str], list[dict[str, str]]] = {}
        self._poll_generation = 0
        self._closed = False
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> FakeTelegramAPI:
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
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def url(self) -> str:
        assert self._server is not None, "use FakeTelegramAPI as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """For ``telegram.Bot(token, base_url=…)``: PTB appends the token and the method."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.url}/file/bot"

    def bot(self, **kwargs: Any) -> telegram.Bot:
        """A real ``telegram.Bot`` pointed at this server (use it as ``async with``)."""
        import telegram

        return telegram.Bot(
            self.token, base_url=self.base_url, base_file_url=self.base_file_url, **kwargs
        )

    # --- scripting and set-up -------------------------------------------------------------------

    def script(self, target: int | str, *answers: Answer) -> None:
        """The next calls to chat ``target`` (an int) or of method ``target`` answer these."""
        key = target if isinstance(target, int) else _CANONICAL.get(target.lower(), target)
        with self._lock:
            self._scripts[key].extend(answers)

    def block(self, chat_id: int) -> None:
        with self._lock:
            self._blocked.add(chat_id)

    def unblock(self, chat_id: int) -> None:
        with self._lock:
            self._blocked.discard(chat_id)

    def forget(self, chat_id: int) -> None:
        """Sends to ``chat_id`` answer 400 "chat not found" from now on."""
        with self._lock:
            self._forgotten.add(chat_id)

    # --- updates --------------------------------------------------------------------------------

    def make_message_update(
        self,
        chat_id: int,
        text: str,
        user_id: int | None = None,
        *,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
        date: int | None = None,
        reply_to_message_id: int | None = None,
    ) -> dict[str, Any]:
        """An Update with a message a user wrote in ``chat_id`` (not queued: ``push_update``)."""
        with self._lock:
            user = self._user(chat_id, user_id, first_name, username, language_code)
            message: dict[str, Any] = {
                "message_id": self._next_message_id(chat_id),
                "from": user,
                "chat": self._chat_json(chat_id),
                "date": int(self.now()) if date is None else date,
                "text": text,
            }
            command = _BOT_COMMAND.match(text)
            if command:
                length = _utf16_len(command.group())
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
            if reply_to_message_id is not None:
                replied = self._find(chat_id, reply_to_message_id)
                if replied is None:
                    raise LookupError(f"no message {reply_to_message_id} in chat {chat_id}")
                message["reply_to_message"] = self._message_json(replied)
            return {"update_id": next(self._update_ids), "message": message}

    def make_callback_update(
        self,
        chat_id: int,
        message_id: int,
        data: str,
        user_id: int | None = None,
        *,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
    ) -> dict[str, Any]:
        """An Update with a button press on the bot's message; its query id becomes valid."""
        with self._lock:
            stored = self._find(chat_id, message_id)
            if stored is None:
                raise LookupError(f"the bot has no message {message_id} in chat {chat_id}")
            query_id = str(4_000_000_000_000 + next(self._seq))
            self._queries[query_id] = _Query(chat_id, message_id, self.now())
            query = {
                "id": query_id,
                "from": self._user(chat_id, user_id, first_name, username, language_code),
                "message": self._message_json(stored),
                "chat_instance": str(abs(chat_id) * 7 + 1_000_000_007),
                "data": data,
            }
            return {"update_id": next(self._update_ids), "callback_query": query}

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue an update for ``getUpdates`` (wakes a waiting long poll); its ``update_id``."""
        with self._cond:
            self._updates.append(copy.deepcopy(update))
            self._cond.notify_all()
            return int(update["update_id"])

    def pending_updates(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._updates)

    # --- inspection -----------------------------------------------------------------------------

    def messages(self, chat_id: int) -> list[StoredMessage]:
        with self._lock:
            return list(self._messages.get(chat_id, []))

    def message(self, chat_id: int, message_id: int) -> StoredMessage:
        with self._lock:
            found = [m for m in self._messages.get(chat_id, []) if m.message_id == message_id]
        if not found:
            raise LookupError(f"no message {message_id} in chat {chat_id}")
        return found[0]

    def photos(self, chat_id: int) -> list[StoredPhoto]:
        with self._lock:
            return [m.photo for m in self._messages.get(chat_id, []) if m.photo is not None]

    def calls(self, method: str) -> list[Request]:
        method = _CANONICAL.get(method.lower(), method)
        with self._lock:
            return [r for r in self.requests if r.method == method]

    def commands(
        self, scope: dict[str, Any] | None = None, language_code: str = ""
    ) -> list[dict[str, str]]:
        with self._lock:
            return copy.deepcopy(self._commands.get(_scope_key(scope, language_code), []))

    # --- HTTP -----------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        path = unquote(split.path)  # PTB percent-encodes the ":" of the token in file URLs
        raw = _read_body(h)
        if path.startswith("/file/bot"):
            self._handle_file(h, path)
            return
        match = re.fullmatch(r"/bot([^/]*)/([^/]*)", path)
        method = match.group(2) if match else path
        method = _CANONICAL.get(method.lower(), method)
        params: dict[str, Any] = dict(parse_qsl(split.query, keep_blank_values=True))
        status, body = 200, None
        with self._lock:
            at = self.now()
            try:
                if match is None:
                    raise _fail(404, "Not Found")
                if match.group(1) != self.token:
                    raise _fail(401, "Unauthorized")
                if method not in _METHODS:
                    raise _fail(404, "Not Found")
                try:
                    params.update(_parse_body(h.headers.get("Content-Type", ""), raw))
                except ValueError as exc:
                    raise _bad(f"can't parse request body: {exc}") from exc
                _decode_json_params(params)
                self._scripted(method)
                chat = params.get("chat_id")
                if isinstance(chat, int) or (isinstance(chat, str) and _is_int(chat)):
                    self._scripted(int(chat))
                result, extra = self._dispatch(method, params, at)
                body = {"ok": True, "result": result, **extra}
            except _Reply as reply:
                status, body = reply.status, reply.body
            except (ValueError, TypeError, KeyError, AttributeError) as exc:  # malformed input
                status, body = 400, _bad(f"invalid parameters: {exc!r}").body
            if isinstance(body, dict):
                description = None if body.get("ok") else body.get("description")
            else:
                description = f"HTTP {status}"
            self.requests.append(Request(method, params, at, status, description))
        _send(h, status, body)

    def _handle_file(self, h: BaseHTTPRequestHandler, path: str) -> None:
        prefix = f"/file/bot{self.token}/"
        with self._lock:
            photo = self._file_paths.get(path[len(prefix) :]) if path.startswith(prefix) else None
            status = 200 if photo is not None else 404
            params = {"path": path}
            self.requests.append(Request("file", params, self.now(), status, None))
        if photo is None:
            _send(h, 404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(photo.data)))
        h.end_headers()
        h.wfile.write(photo.data)

    def _scripted(self, target: int | str) -> None:
        queue = self._scripts.get(target)
        if not queue:
            return
        answer = queue.popleft()
        if isinstance(answer, RetryAfter):
            raise _too_many(answer.seconds)
        if isinstance(answer, tuple):
            status, description = answer
            raise _fail(status, description)
        if answer >= 500:
            phrase = _phrase(answer)
            raise _Reply(answer, f"<html><body><h1>{answer} {phrase}</h1></body></html>\n")
        raise _fail(answer, _phrase(answer))

    def _dispatch(
        self, method: str, params: dict[str, Any], at: float
    ) -> tuple[Any, dict[str, Any]]:
        if method == "getMe":
            return {
                **self.bot_user,
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }, {}
        if method == "sendMessage":
            return self._send_message(params, at), {}
        if method == "sendPhoto":
            return self._send_photo(params, at), {}
        if method in ("editMessageText", "editMessageCaption", "editMessageReplyMarkup"):
            return self._edit(method, params, at), {}
        if method == "deleteMessage":
            chat_id = self._chat(params)
            stored = self._find(chat_id, _int_param(params, "message_id"))
            if stored is None:
                raise _bad("message to delete not found")
            stored.deleted = True
            return True, {}
        if method == "answerCallbackQuery":
            return self._answer_callback(params, at), {}
        if method == "getFile":
            photo = self._files.get(str(params.get("file_id") or ""))
            if photo is None:
                raise _bad("invalid file_id")
            return self._file_json(photo), {}
        if method in ("setWebhook", "deleteWebhook", "getWebhookInfo"):
            return self._webhook_method(method, params)
        if method == "getUpdates":
            return self._get_updates(params), {}
        return self._commands_method(method, params), {}

    # --- chats and messages ---------------------------------------------------------------------

    def _chat(self, params: dict[str, Any]) -> int:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise _bad("chat_id is empty")
        if not (isinstance(raw, int) or (isinstance(raw, str) and _is_int(raw))):
            raise _bad("chat not found")  # an @username the fake does not know
        chat_id = int(raw)
        if chat_id == 0 or chat_id in self._forgotten:
            raise _bad("chat not found")
        if self.chats is not None and chat_id not in self.chats:
            raise _bad("chat not found")
        if chat_id in self._blocked:
            if chat_id > 0:
                raise _fail(403, "Forbidden: bot was blocked by the user")
            kind = self._chat_json(chat_id)["type"]
            raise _fail(403, f"Forbidden: bot was kicked from the {kind} chat")
        return chat_id

    def _next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def _find(self, chat_id: int, message_id: int | None) -> StoredMessage | None:
        for stored in self._messages.get(chat_id, []):
            if stored.message_id == message_id and not stored.deleted:
                return stored
        return None

    @staticmethod
    def _chat_json(chat_id: int) -> dict[str, Any]:
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": f"User {chat_id}"}
        kind = "supergroup" if chat_id <= -1_000_000_000_000 else "group"
        return {"id": chat_id, "type": kind, "title": f"Group {chat_id}"}

    @staticmethod
    def _user(
        chat_id: int,
        user_id: int | None,
        first_name: str | None,
        username: str | None,
        language_code: str | None,
    ) -> dict[str, Any]:
        uid = user_id if user_id is not None else (chat_id if chat_id > 0 else 1001)
        user: dict[str, Any] = {"id": uid, "is_bot": False, "first_name": first_name or "Test"}
        if username:
            user["username"] = username
        if language_code:
            user["language_code"] = language_code
        return user

    def _message_json(self, stored: StoredMessage) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message_id": stored.message_id,
            "from": dict(self.bot_user),
            "chat": self._chat_json(stored.chat_id),
            "date": stored.date,
        }
        if stored.photo is not None:
            out["photo"] = [self._photo_size(stored.photo)]
            if stored.plain:
                out["caption"] = stored.plain
            if stored.entities:
                out["caption_entities"] = copy.deepcopy(stored.entities)
        else:
            out["text"] = stored.plain
            if stored.entities:
                out["entities"] = copy.deepcopy(stored.entities)
        if stored.edit_date is not None:
            out["edit_date"] = stored.edit_date
        if stored.reply_markup and "inline_keyboard" in stored.reply_markup:
            out["reply_markup"] = {
                "inline_keyboard": copy.deepcopy(stored.reply_markup["inline_keyboard"])
            }
        return out

    @staticmethod
    def _photo_size(photo: StoredPhoto) -> dict[str, Any]:
        return {
            "file_id": photo.file_id,
            "file_unique_id": photo.file_unique_id,
            "width": photo.width,
            "height": photo.height,
            "file_size": len(photo.data),
        }

    def _file_json(self, photo: StoredPhoto) -> dict[str, Any]:
        return {
            "file_id": photo.file_id,
            "file_unique_id": photo.file_unique_id,
            "file_size": len(photo.data),
            "file_path": photo.file_path,
        }

    def _send_message(self, params: dict[str, Any], at: float) -> dict[str, Any]:
        chat_id = self._chat(params)
        text = params.get("text")
        text = "" if text is None else str(text)
        parse_mode = params.get("parse_mode") or None
        plain, entities = _render(text, parse_mode, params.get("entities"))
        if not plain:
            raise _bad("message text is empty")
        if len(plain) > MESSAGE_LIMIT:
            raise _bad("message is too long")
        markup = _check_markup(params.get("reply_markup"))
        self._take_send_token(chat_id, at)
        stored = StoredMessage(
            chat_id=chat_id,
            message_id=self._next_message_id(chat_id),
            date=int(at),
            text=text,
            parse_mode=parse_mode,
            reply_markup=markup,
            plain=plain,
            entities=entities,
        )
        self._messages[chat_id].append(stored)
        return self._message_json(stored)

    def _send_photo(self, params: dict[str, Any], at: float) -> dict[str, Any]:
        chat_id = self._chat(params)
        photo = params.get("photo")
        if isinstance(photo, str) and photo.startswith("attach://"):
            photo = params.get(photo.removeprefix("attach://"))
        caption = params.get("caption")
        caption = None if caption is None else str(caption)
        parse_mode = params.get("parse_mode") or None
        plain, entities = _render(caption or "", parse_mode, params.get("caption_entities"))
        if len(plain) > CAPTION_LIMIT:
            raise _bad("message caption is too long")
        markup = _check_markup(params.get("reply_markup"))
        if isinstance(photo, _Upload):
            if not photo.data:
                raise _bad("file must be non-empty")
            stored_photo: StoredPhoto | None = None
        elif isinstance(photo, str) and photo in self._files:
            stored_photo = self._files[photo]
        else:
            raise _bad("wrong file identifier/HTTP URL specified")
        self._take_send_token(chat_id, at)
        if stored_photo is None:
            assert isinstance(photo, _Upload)
            n = next(self._seq)
            width, height = _image_size(photo.data)
            stored_photo = StoredPhoto(
                file_id=f"AgACAgFake{n:08d}",
                file_unique_id=f"AQADFake{n:06d}",
                data=photo.data,
                filename=photo.filename,
                width=width,
                height=height,
                file_path=f"photos/file_{n}.jpg",
            )
            self._files[stored_photo.file_id] = stored_photo
            self._file_paths[stored_photo.file_path] = stored_photo
        stored = StoredMessage(
            chat_id=chat_id,
            message_id=self._next_message_id(chat_id),
            date=int(at),
            text=None,
            parse_mode=parse_mode,
            reply_markup=markup,
            plain=plain,
            entities=entities,
            caption=caption,
            photo=stored_photo,
        )
        self._messages[chat_id].append(stored)
        return self._message_json(stored)

    def _edit(self, method: str, params: dict[str, Any], at: float) -> dict[str, Any]:
        if params.get("inline_message_id") and params.get("chat_id") is None:
            raise _bad("inline messages are not supported by the fake")
        chat_id = self._chat(params)
        stored = self._find(chat_id, _int_param(params, "message_id"))
        if stored is None:
            raise _bad("message to edit not found")
        text, caption, parse_mode = stored.text, stored.caption, stored.parse_mode
        plain, entities = stored.plain, stored.entities
        if method == "editMessageText":
            if stored.photo is not None:
                raise _bad("there is no text in the message to edit")
            raw = params.get("text")
            text = "" if raw is None else str(raw)
            parse_mode = params.get("parse_mode") or None
            plain, entities = _render(text, parse_mode, params.get("entities"))
            if not plain:
                raise _bad("message text is empty")
            if len(plain) > MESSAGE_LIMIT:
                raise _bad("message is too long")
        elif method == "editMessageCaption":
            if stored.photo is None:
                raise _bad("there is no caption in the message to edit")
            raw = params.get("caption")
            caption = None if raw is None else str(raw)
            parse_mode = params.get("parse_mode") or None
            plain, entities = _render(caption or "", parse_mode, params.get("caption_entities"))
            if len(plain) > CAPTION_LIMIT:
                raise _bad("message caption is too long")
        markup = _check_markup(params.get("reply_markup"))
        if markup is not None and "inline_keyboard" not in markup:
            raise _bad("inline keyboard expected")
        if (plain, entities, markup) == (stored.plain, stored.entities, stored.reply_markup):
            raise _fail(400, NOT_MODIFIED)
        stored.edits.append(
            {
                "text": stored.text,
                "caption": stored.caption,
                "parse_mode": stored.parse_mode,
                "reply_markup": stored.reply_markup,
                "plain": stored.plain,
                "entities": stored.entities,
                "edit_date": stored.edit_date,
            }
        )
        stored.text, stored.caption, stored.parse_mode = text, caption, parse_mode
        stored.plain, stored.entities, stored.reply_markup = plain, entities, markup
        stored.edit_date = int(at)
        return self._message_json(stored)

    def _answer_callback(self, params: dict[str, Any], at: float) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        query = self._queries.get(query_id)
        if query is None or query.answered:
            raise _fail(400, QUERY_INVALID)
        if self.callback_ttl is not None and at - query.at > self.callback_ttl:
            raise _fail(400, QUERY_INVALID)
        query.answered = True
        text = params.get("text")
        cache_time = params.get("cache_time")
        self.callback_answers.append(
            CallbackAnswer(
                callback_query_id=query_id,
                text=None if text is None else str(text),
                show_alert=_bool_param(params, "show_alert"),
                url=params.get("url") or None,
                cache_time=None if cache_time in (None, "") else int(cache_time),
                at=at,
            )
        )
        return True

    # --- flood limits ---------------------------------------------------------------------------

    def _take_send_token(self, chat_id: int, at: float) -> None:
        if chat_id > 0:
            chat_bucket = (f"chat:{chat_id}", 1.0, self.per_chat_per_second)
        else:
            chat_bucket = (f"group:{chat_id}", self.group_per_minute, self.group_per_minute / 60)
        limits = [("global", self.global_per_second, self.global_per_second), chat_bucket]
        buckets: list[_Bucket] = []
        wait = 0
        for key, capacity, rate in limits:
            bucket = self._buckets.setdefault(key, _Bucket(capacity, at))
            bucket.tokens = min(capacity, bucket.tokens + max(0.0, at - bucket.at) * rate)
            bucket.at = max(bucket.at, at)
            if bucket.tokens < 1 - _EPSILON:
                wait = max(wait, max(1, math.ceil((1 - bucket.tokens) / rate - _EPSILON)))
            buckets.append(bucket)
        if wait:
            raise _too_many(wait)
        for bucket in buckets:
            bucket.tokens -= 1

    # --- webhook and polling --------------------------------------------------------------------

    def _webhook_method(self, method: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if method == "getWebhookInfo":
            info: dict[str, Any] = {
                "url": self.webhook.get("url", ""),
                "has_custom_certificate": False,
                "pending_update_count": len(self._updates),
            }
            if self.webhook:
                info["max_connections"] = self.webhook.get("max_connections") or 40
                if self.webhook.get("allowed_updates"):
                    info["allowed_updates"] = list(self.webhook["allowed_updates"])
            return info, {}
        url = str(params.get("url") or "") if method == "setWebhook" else ""
        if url:
            split = urlsplit(url)
            if split.scheme != "https" or not split.hostname:
                raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
            try:
                port = split.port
            except ValueError as exc:
                raise _bad(
                    "bad webhook: Failed to resolve host: Name or service not known"
                ) from exc
            if port not in (None, 80, 88, 443, 8443):
                raise _bad("bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443")
            secret = params.get("secret_token")
            if secret not in (None, "") and not _SECRET_TOKEN.fullmatch(str(secret)):
                raise _bad("secret token contains unallowed characters")
        if _bool_param(params, "drop_pending_updates"):
            self._updates.clear()
        if not url:
            had = bool(self.webhook)
            self.webhook = {}
            self._cond.notify_all()
            return True, {
                "description": "Webhook was deleted" if had else "Webhook is already deleted"
            }
        max_connections = params.get("max_connections")
        self.webhook = {
            "url": url,
            "secret_token": params.get("secret_token") or None,
            "max_connections": None if max_connections in (None, "") else int(max_connections),
            "allowed_updates": params.get("allowed_updates"),
        }
        return True, {"description": "Webhook was set"}

    def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook:
            raise _fail(409, CONFLICT_WEBHOOK)
        offset = _int_param(params, "offset") or 0
        limit = min(100, max(1, _int_param(params, "limit") or 100))
        timeout = float(params.get("timeout") or 0)
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]
        self._poll_generation += 1
        mine = self._poll_generation
        self._cond.notify_all()  # an earlier getUpdates still waiting is terminated
        deadline = time.monotonic() + min(max(timeout, 0.0), self.poll_cap)
        while True:
            if mine != self._poll_generation:
                raise _fail(409, CONFLICT_OTHER_POLL)
            if self.webhook:
                raise _fail(409, CONFLICT_WEBHOOK)
            remaining = deadline - time.monotonic()
            if self._updates or remaining <= 0 or self._closed:
                return copy.deepcopy(self._updates[:limit])
            self.polling += 1
            try:
                self._cond.wait(remaining)
            finally:
                self.polling -= 1

    # --- commands -------------------------------------------------------------------------------

    def _commands_method(self, method: str, params: dict[str, Any]) -> Any:
        scope = params.get("scope")
        if scope is not None and (not isinstance(scope, dict) or "type" not in scope):
            raise _bad("can't parse BotCommandScope JSON object")
        key = _scope_key(scope, str(params.get("language_code") or ""))
        if method == "getMyCommands":
            return copy.deepcopy(self._commands.get(key, []))
        if method == "deleteMyCommands":
            self._commands.pop(key, None)
            return True
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad("can't parse commands JSON object")
        out: list[dict[str, str]] = []
        for entry in commands:
            if not isinstance(entry, dict):
                raise _bad("can't parse commands JSON object")
            command, description = str(entry.get("command", "")), str(entry.get("description", ""))
            if not _COMMAND.fullmatch(command):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(description) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
            out.append({"command": command, "description": description})
        if out:
            self._commands[key] = out
        else:
            self._commands.pop(key, None)
        return True


# --- Telegram HTML -------------------------------------------------------------------------------


class HTMLParseError(ValueError):
    """Text that Telegram would refuse with "can't parse entities: <message>"."""


_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "blockquote": "blockquote",
}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ENTITY = re.compile(r"&(?:#([0-9]{1,8})|#[xX]([0-9a-fA-F]{1,7})|([A-Za-z][A-Za-z0-9]*));")
_NAME_CHARS = re.compile(r"[A-Za-z0-9-]*")
_ATTR_CHARS = re.compile(r"[A-Za-z0-9_-]*")


def parse_telegram_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's HTML → (the plain text, its entities with UTF-16 offsets), or HTMLParseError."""
    out: list[str] = []
    pos16 = 0  # length of ``out`` in UTF-16 code units
    stack: list[tuple[str, int, dict[str, str], int]] = []  # tag, start, attributes, byte offset
    entities: list[dict[str, Any]] = []
    i, n = 0, len(text)

    def byte_offset(index: int) -> int:
        return len(text[:index].encode())

    while i < n:
        c = text[i]
        if c == "<" and text.startswith("</", i):
            end = text.find(">", i)
            if end < 0:
                raise HTMLParseError(f"Unclosed end tag at byte offset {byte_offset(i)}")
            name = text[i + 2 : end].strip().lower()
            if not stack:
                raise HTMLParseError(f"Unexpected end tag at byte offset {byte_offset(i)}")
            tag, start, attrs, _ = stack.pop()
            if name != tag:
                raise HTMLParseError(
                    f'Unmatched end tag at byte offset {byte_offset(i)}, expected "</{tag}>", '
                    f'found "</{name}>"'
                )
            entity = _html_entity(tag, start, pos16 - start, attrs, stack)
            if entity is not None:
                entities.append(entity)
            i = end + 1
        elif c == "<":
            name_end = _NAME_CHARS.match(text, i + 1).end()  # type: ignore[union-attr]
            name = text[i + 1 : name_end].lower()
            offset = byte_offset(i)
            if name not in _TAGS:
                raise HTMLParseError(f'Unsupported start tag "{name}" at byte offset {offset}')
            attrs, i = _html_attributes(text, name_end, offset)
            if name == "span" and attrs.get("class") != "tg-spoiler":
                raise HTMLParseError(f'Unsupported start tag "span" at byte offset {offset}')
            stack.append((name, pos16, attrs, offset))
        elif c == "&":
            char = _html_char_reference(text, i)
            if char is None:
                raise HTMLParseError(
                    f'Character "&" at byte offset {byte_offset(i)} must be escaped as "&amp;"'
                )
            out.append(char)
            pos16 += _utf16_len(char)
            i = _ENTITY.match(text, i).end()  # type: ignore[union-attr]
        elif c == ">":
            raise HTMLParseError(
                f'Character ">" at byte offset {byte_offset(i)} must be escaped as "&gt;"'
            )
        else:
            out.append(c)
            pos16 += _utf16_len(c)
            i += 1
    if stack:
        raise HTMLParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _html_char_reference(text: str, i: int) -> str | None:
    m = _ENTITY.match(text, i)
    if m is None:
        return None
    decimal, hexadecimal, name = m.groups()
    if name is not None:
        return _NAMED_ENTITIES.get(name)
    code = int(decimal) if decimal is not None else int(hexadecimal, 16)
    if not 0 < code <= 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code)


def _html_attributes(text: str, i: int, offset: int) -> tuple[dict[str, str], int]:
    """The attributes of a start tag from ``i``; returns them and the index after ``>``."""
    attrs: dict[str, str] = {}
    n = len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            raise HTMLParseError(f"Unclosed start tag at byte offset {offset}")
        if text[i] == ">":
            return attrs, i + 1
        end = _ATTR_CHARS.match(text, i).end()  # type: ignore[union-attr]
        name = text[i:end].lower()
        if not name:
            raise HTMLParseError(f"Empty attribute name in the tag at byte offset {offset}")
        i = end
        while i < n and text[i] in " \t\r\n":
            i += 1
        value = ""
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i] in " \t\r\n":
                i += 1
            if i >= n:
                raise HTMLParseError(f"Unclosed start tag at byte offset {offset}")
            if text[i] in "\"'":
                close = text.find(text[i], i + 1)
                if close < 0:
                    raise HTMLParseError(f"Unclosed start tag at byte offset {offset}")
                value, i = text[i + 1 : close], close + 1
            else:
                end = i
                while end < n and text[end] not in " \t\r\n>":
                    end += 1
                value, i = text[i:end], end
            value = _ENTITY.sub(lambda m: _html_char_reference(m.group(), 0) or m.group(), value)
        attrs[name] = value


def _html_entity(
    tag: str,
    start: int,
    length: int,
    attrs: dict[str, str],
    outer: list[tuple[str, int, dict[str, str], int]],
) -> dict[str, Any] | None:
    if tag == "code" and outer and outer[-1][0] == "pre":
        language = attrs.get("class", "")
        if language.startswith("language-"):
            outer[-1][2]["\0language"] = language.removeprefix("language-")
        return None  # the code block is the enclosing pre
    if length <= 0:
        return None
    entity: dict[str, Any] = {"type": _TAGS[tag], "offset": start, "length": length}
    if tag == "a":
        href = attrs.get("href", "")
        if not href:
            return None
        entity["url"] = href
    elif tag == "pre" and attrs.get("\0language"):
        entity["language"] = attrs["\0language"]
    elif tag == "blockquote" and "expandable" in attrs:
        entity["type"] = "expandable_blockquote"
    return entity


def _render(text: str, parse_mode: str | None, entities: Any) -> tuple[str, list[dict[str, Any]]]:
    """The text as Telegram shows it: markup parsed out, surrounding whitespace trimmed."""
    if parse_mode is None or parse_mode == "":
        found = list(entities) if isinstance(entities, list) else []
    elif parse_mode.lower() == "html":
        try:
            text, found = parse_telegram_html(text)
        except HTMLParseError as exc:
            raise _bad(f"can't parse entities: {exc}") from exc
    elif parse_mode.lower() in ("markdown", "markdownv2"):
        found = []  # not parsed by the fake: shown as sent
    else:
        raise _bad("unsupported parse_mode")
    core = text.strip()
    if not core:
        return "", []
    lead = _utf16_len(text[: len(text) - len(text.lstrip())])
    size = _utf16_len(core)
    trimmed = []
    for entity in found:
        start = max(0, int(entity["offset"]) - lead)
        end = min(size, int(entity["offset"]) + int(entity["length"]) - lead)
        if end > start:
            trimmed.append({**entity, "offset": start, "length": end - start})
    return core, trimmed


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# --- keyboards -----------------------------------------------------------------------------------


def _check_markup(markup: Any) -> dict[str, Any] | None:
    if markup is None or markup == "":
        return None
    if not isinstance(markup, dict):
        raise _bad("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _bad("can't parse inline keyboard markup JSON object")
        for row in rows:
            for button in row:
                _check_inline_button(button)
    elif "keyboard" in markup:
        rows = markup["keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _bad("can't parse reply keyboard markup JSON object")
        for row in rows:
            for button in row:
                label = button if isinstance(button, str) else (button or {}).get("text")
                if not isinstance(label, str) or not label:
                    raise _bad("can't parse keyboard button: Text must be non-empty")
    elif not (markup.get("remove_keyboard") or markup.get("force_reply")):
        raise _bad("can't parse reply keyboard markup JSON object")
    return markup


def _check_inline_button(button: Any) -> None:
    if not isinstance(button, dict):
        raise _bad("can't parse inline keyboard button: InlineKeyboardButton must be an Object")
    label = button.get("text")
    if not isinstance(label, str) or not label.strip():
        raise _bad("can't parse inline keyboard button: Text must be non-empty")
    actions = {key for key in _BUTTON_ACTIONS if button.get(key) not in (None, "")}
    if not actions:
        raise _bad(TEXT_BUTTONS_UNALLOWED)
    data = button.get("callback_data")
    if data not in (None, "") and (
        not isinstance(data, str) or len(data.encode()) > CALLBACK_DATA_LIMIT
    ):
        raise _bad("BUTTON_DATA_INVALID")
    url = button.get("url")
    if url not in (None, "") and not isinstance(url, str):
        raise _bad('can\'t parse inline keyboard button: Field "url" must be of type String')


# --- request bodies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Upload:
    data: bytes
    filename: str | None
    content_type: str | None


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


def _parse_body(content_type: str, raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        parsed = json.loads(raw)
        if not isinstance(parsed, dict):
            raise ValueError("a JSON object is expected")
        return parsed
    if kind == "multipart/form-data":
        return _parse_multipart(content_type, raw)
    return dict(parse_qsl(raw.decode(), keep_blank_values=True))


def _parse_multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if m is None:
        raise ValueError("multipart without a boundary")
    delimiter = b"--" + m.group(1).encode()
    out: dict[str, Any] = {}
    for part in raw.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        part = part.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, sep, body = part.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a multipart part without headers")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = re.search(r'(?:^|;)\s*name="([^"]*)"', disposition)
        if name is None:
            raise ValueError("a multipart part without a name")
        filename = re.search(r'(?:^|;)\s*filename="([^"]*)"', disposition)
        part_type = headers.get("content-type")
        if filename is None and (part_type is None or part_type.startswith("text/")):
            out[name.group(1)] = body.decode()
        else:
            out[name.group(1)] = _Upload(body, filename.group(1) if filename else None, part_type)
    return out


def _decode_json_params(params: dict[str, Any]) -> None:
    for key in _JSON_PARAMS:
        value = params.get(key)
        if isinstance(value, str) and value:
            try:
                params[key] = json.loads(value)
            except ValueError as exc:
                raise _bad(f"can't parse {key} JSON object") from exc


def _is_int(value: str) -> bool:
    return re.fullmatch(r"-?[0-9]+", value.strip()) is not None


def _int_param(params: dict[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _bad(f"invalid {name} specified")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _is_int(value):
        return int(value)
    raise _bad(f"invalid {name} specified")


def _bool_param(params: dict[str, Any], name: str) -> bool:
    return params.get(name) in (True, 1, "true", "True", "1")


def _scope_key(scope: dict[str, Any] | None, language_code: str) -> tuple[str, str]:
    return json.dumps(scope or {"type": "default"}, sort_keys=True), language_code


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _image_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG (read from its header); 320×320 for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    return 320, 320


def _send(h: BaseHTTPRequestHandler, status: int, body: dict[str, Any] | str | None) -> None:
    if isinstance(body, dict):
        data = json.dumps(body).encode()
        ctype = "application/json"
    else:
        data = (body or "").encode()
        ctype = "text/html"
    try:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (e.g. a long poll it cancelled)
