"""The Telegram transport: compose, render to Telegram HTML, ``sendMessage`` / ``editMessageText``
/ ``sendPhoto`` through a plain PTB ``telegram.Bot``.

Retries belong to the dispatcher (backoff, ``Retry-After`` pauses, attempts counted in the
outbox), so the Bot gets no ``AIORateLimiter`` and nothing here retries: ``make_bot`` builds a
plain Bot with bounded timeouts.

Pacing: Telegram allows about one message a second to a private chat, 20 a minute to a group
and 30 a second overall, and answers 429 beyond that. PTB's ``AIORateLimiter`` does not pace
private chats, so ``ChatPacer`` does it all: it books a slot per send (at least
``per_chat_interval`` s apart in a private chat, id > 0; ``group_interval`` s in a group, id < 0;
at most ``global_per_second`` overall) and waits for it with the injected clock's ``sleep``, so a
message split into several parts goes out one part per second. After a 429 the chat is paused
for ``retry_after``. The dispatcher paces per recipient as well; each send waits for both.

Errors (``map_telegram_error``): ``RetryAfter`` → ``RateLimited(retry_after)``; ``Forbidden``
(bot blocked, user deactivated, bot kicked from the group), ``ChatMigrated`` and the
``BadRequest``s in ``UNREACHABLE`` ("chat not found" …) → ``PermanentSendError(unreachable=
True)``; any other ``BadRequest`` (can't parse entities, message too long, BUTTON_DATA_INVALID),
``InvalidToken`` and ``EndPointNotFound`` → ``PermanentSendError``; ``TimedOut``,
``NetworkError`` (PTB raises it for 5xx and dropped connections) and anything else →
``TransientSendError``.

A message longer than 4,096 characters goes out as several messages; the buttons ride on the
last, whose id is the ``message_id`` of the returned ref (``update`` edits that one). When a
later part fails, the dispatcher sends the whole message again (at least once: the earlier
parts may arrive twice).

A digest (outbox kind ``digest``) is the text, then its aging chart (``bot.charts``) with
``sendPhoto`` in the same chat, paced like a message. When the chart fails after the text went
out, ``send`` does not raise: the ref says ``"chart": "failed: …"`` (the text is not sent twice;
the chart is not retried). Otherwise the ref has ``"chart": "sent"`` and ``chart_message_id``.

Buttons carry opaque tokens as ``callback_data``: a ``TokenMinter`` (DB-backed, elsewhere)
stores what each stands for — action, value, chat and person — since a client can forge
callback data; one is minted per button on every send attempt.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import logging
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import telegram
from telegram import LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from bot.compose import compose
from bot.messages import Button, Message
from bot.telegram_render import (
    MAX_CAPTION,
    MAX_TEXT,
    clip_html,
    clip_plain,
    message_buttons,
    render_parts,
    render_text,
)
from bot.transports.base import (
    Outgoing,
    PermanentSendError,
    RateLimited,
    SendError,
    TransientSendError,
)
from credit.settings import TelegramSettings
from jobs.pacing import earliest_free_slot

log = logging.getLogger(__name__)

DIGEST = "digest"  # the outbox kind whose chart follows the message

# BadRequest descriptions (lower case) that mean the chat cannot be reached: mark the person.
UNREACHABLE = (
    "chat not found",
    "user not found",
    "peer_id_invalid",
    "user is deactivated",
    "have no rights to send",
    "not enough rights to send",
    "chat_write_forbidden",
)
NOT_MODIFIED = "message is not modified"
DEFAULT_RETRY_AFTER = 1.0
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)

T = TypeVar("T")


class Clock(Protocol):
    """``jobs.clock.SystemClock`` or ``FakeClock``: aware ``now()`` and an async ``sleep``."""

    def now(self) -> dt.datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class TokenMinter(Protocol):
    """Hands out short opaque ``callback_data`` tokens (≤ 64 bytes) and remembers what each
    stands for. Synchronous (it writes to the database); the transport calls it in a thread."""

    def mint(self, *, action: str, value: str, chat_id: int, person_id: int | None) -> str: ...


def make_bot(settings: TelegramSettings) -> telegram.Bot:
    """A plain Bot (no rate limiter, no retries) with bounded timeouts."""
    token = settings.bot_token.get_secret_value()
    if not token:
        raise ValueError("telegram.bot_token is not set (CREDITBOT_TELEGRAM__BOT_TOKEN)")
    request = HTTPXRequest(
        connection_pool_size=16,
        connect_timeout=5.0,
        read_timeout=15.0,
        write_timeout=15.0,
        pool_timeout=5.0,
        media_write_timeout=30.0,
    )
    return telegram.Bot(token, base_url=settings.api_base_url, request=request)


def retry_after_seconds(exc: RetryAfter) -> float:
    """``exc.retry_after`` in seconds: PTB 22 gives an int, or a timedelta with
    ``PTB_TIMEDELTA=true`` (and warns about the int; we read it quietly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: Any = exc.retry_after
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
    return max(0.0, seconds) or DEFAULT_RETRY_AFTER


def map_telegram_error(exc: TelegramError) -> SendError:
    """The dispatcher's error kind for an error PTB raised."""
    reason = str(exc)[:300]
    if isinstance(exc, RetryAfter):
        return RateLimited(retry_after_seconds(exc), "(telegram 429)")
    if isinstance(exc, Forbidden):
        return PermanentSendError(reason, unreachable=True)
    if isinstance(exc, ChatMigrated):  # a group became a supergroup with a new id
        return PermanentSendError(reason, unreachable=True)
    if isinstance(exc, BadRequest):  # before NetworkError: BadRequest is a NetworkError
        lowered = reason.lower()
        return PermanentSendError(reason, unreachable=any(u in lowered for u in UNREACHABLE))
    if isinstance(exc, InvalidToken | EndPointNotFound):
        return PermanentSendError(f"{type(exc).__name__}: {reason}"[:300])
    # TimedOut, NetworkError (5xx, dropped connections), Conflict, anything new: try again
    # later. A send that timed out may have gone through: the outbox accepts "at least once".
    return TransientSendError(f"{type(exc).__name__}: {reason}"[:300])


class ChatPacer:
    """Books send slots on ``clock``: ``per_chat_interval`` s apart in a private chat (id > 0),
    ``group_interval`` s in a group (id < 0), and ``1 / global_per_second`` s apart overall.

    ``reserve`` books and returns the moment (epoch seconds) a send may go, so concurrent
    callers get distinct slots; a chat booked far ahead does not hold the others up (overall
    slots fill the earliest free gap). ``wait`` books and sleeps until the slot; ``pause`` holds
    a chat after a 429.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        per_chat_interval: float = 1.0,
        group_interval: float = 3.0,
        global_per_second: float = 25.0,
    ) -> None:
        if global_per_second <= 0:
            raise ValueError("global_per_second must be positive")
        self.clock = clock
        self.per_chat_interval = per_chat_interval
        self.group_interval = group_interval
        self.global_per_second = global_per_second
        self._booked: list[float] = []  # every booked slot, sorted (the overall limit)
        self._next_for: dict[int, float] = {}  # per chat: the earliest next slot

    def interval(self, chat_id: int) -> float:
        return self.group_interval if chat_id < 0 else self.per_chat_interval

    def reserve(self, chat_id: int) -> float:
        now = self.clock.now().timestamp()
        gap = 1.0 / self.global_per_second
        self._forget_before(now - gap)
        at = earliest_free_slot(self._booked, max(now, self._next_for.get(chat_id, 0.0)), gap)
        bisect.insort(self._booked, at)
        self._next_for[chat_id] = at + self.interval(chat_id)
        return at

    async def wait(self, chat_id: int) -> None:
        """Book the chat's next slot and sleep until it comes."""
        delay = self.reserve(chat_id) - self.clock.now().timestamp()
        if delay > 0:
            await self.clock.sleep(delay)

    def pause(self, chat_id: int, seconds: float) -> None:
        """No send to ``chat_id`` for ``seconds`` from now (Telegram said retry_after)."""
        until = self.clock.now().timestamp() + seconds
        self._next_for[chat_id] = max(self._next_for.get(chat_id, 0.0), until)

    def _forget_before(self, moment: float) -> None:
        del self._booked[: bisect.bisect_left(self._booked, moment)]
        if len(self._next_for) > 10_000:
            self._next_for = {k: v for k, v in self._next_for.items() if v > moment}


def _chat_id(address: dict[str, Any]) -> int:
    raw = address.get("telegram_chat_id")
    try:
        chat_id = int(raw) if raw is not None and str(raw).strip() else 0
    except (TypeError, ValueError):
        chat_id = 0
    if not chat_id:
        raise PermanentSendError("no Telegram chat id for the recipient", unreachable=True)
    return chat_id


class TelegramTransport:
    channel = "telegram"

    def __init__(
        self,
        bot: telegram.Bot,
        *,
        minter: TokenMinter,
        clock: Clock,
        per_chat_interval: float = 1.0,
        group_interval: float = 3.0,
        global_per_second: float = 25.0,
    ) -> None:
        self.bot = bot
        self.minter = minter
        self.clock = clock
        self.pacer = ChatPacer(
            clock,
            per_chat_interval=per_chat_interval,
            group_interval=group_interval,
            global_per_second=global_per_second,
        )

    @classmethod
    def from_settings(
        cls, settings: TelegramSettings, *, minter: TokenMinter, clock: Clock
    ) -> TelegramTransport:
        return cls(
            make_bot(settings),
            minter=minter,
            clock=clock,
            per_chat_interval=settings.per_chat_interval_seconds,
            group_interval=settings.group_interval_seconds,
            global_per_second=settings.global_per_second,
        )

    async def _call(self, chat_id: int, call: Callable[[], Awaitable[T]], *, paced: bool) -> T:
        """Run one Bot API call (after the chat's slot when ``paced``), errors mapped."""
        if paced:
            await self.pacer.wait(chat_id)
        try:
            return await call()
        except TelegramError as exc:
            error = map_telegram_error(exc)
            if isinstance(error, RateLimited):
                self.pacer.pause(chat_id, error.retry_after)
            raise error from exc

    async def _tokens(self, message: Message, chat_id: int, person_id: Any) -> dict[Button, str]:
        tokens: dict[Button, str] = {}
        for button in message_buttons(message):
            if button not in tokens:
                tokens[button] = await asyncio.to_thread(
                    self.minter.mint,
                    action=button.action_id,
                    value=button.value,
                    chat_id=chat_id,
                    person_id=person_id,
                )
        return tokens

    async def send(self, message: Outgoing) -> dict[str, Any]:
        """Compose, render and send ``message`` (several parts when long); returns
        ``{"chat_id", "message_id" (the last part, with the buttons), "message_ids"}``."""
        chat_id = _chat_id(message.address)
        composed = compose(message.payload, message.address.get("locale"))
        tokens = await self._tokens(composed, chat_id, message.address.get("person_id"))
        try:
            parts = render_parts(composed, tokens.__getitem__)
        except ValueError as exc:  # a token over 64 bytes: the minter's bug, retrying won't help
            raise PermanentSendError(str(exc)[:300]) from exc
        ids: list[int] = []
        for part in parts:
            sent = await self._call(
                chat_id,
                lambda part=part: self.bot.send_message(
                    chat_id,
                    part.text,
                    parse_mode=ParseMode.HTML,
                    reply_markup=part.keyboard,
                    link_preview_options=NO_PREVIEW,
                ),
                paced=True,
            )
            ids.append(sent.message_id)
        ref: dict[str, Any] = {"chat_id": chat_id, "message_id": ids[-1], "message_ids": ids}
        if message.kind == DIGEST:
            ref.update(await self._send_chart(ref, message))
        return ref

    async def _send_chart(self, ref: dict[str, Any], message: Outgoing) -> dict[str, Any]:
        """The digest's aging chart as a photo after its text, in the same chat
        (``bot.charts.send_digest_chart``: a failure, a 429 included, is recorded, not raised)."""
        from bot.charts import send_digest_chart

        async def photo(png: bytes, filename: str, title: str) -> dict[str, Any]:
            out = await self.send_photo(ref, filename=filename, content=png, caption=title)
            return {"chart_message_id": out["message_id"]}

        return await send_digest_chart(message, photo)

    async def update(self, ref: dict[str, Any], message: Message) -> dict[str, Any]:
        """Replace the text of a message we sent (``ref`` as ``send`` returned it: its last
        part) with ``message``, clipped to 4,096 characters, and remove its buttons. An edit
        that changes nothing counts as done. Not paced (Telegram limits sends, not edits)."""
        chat_id, message_id = int(ref["chat_id"]), int(ref["message_id"])
        text = clip_html(render_text(message), MAX_TEXT)
        try:
            await self._call(
                chat_id,
                lambda: self.bot.edit_message_text(
                    text,
                    chat_id=chat_id,
                    message_id=message_id,
                    parse_mode=ParseMode.HTML,
                    link_preview_options=NO_PREVIEW,
                ),
                paced=False,
            )
        except PermanentSendError as exc:
            if NOT_MODIFIED not in exc.reason.lower():
                raise
        return {**ref, "chat_id": chat_id, "message_id": message_id}

    async def send_photo(
        self,
        ref_or_chat: dict[str, Any] | int,
        *,
        filename: str,
        content: bytes,
        caption: str | None = None,
    ) -> dict[str, Any]:
        """Send an image (the digest chart) to a chat: ``ref_or_chat`` is a ref as ``send``
        returned it (the same chat) or a chat id. ``caption`` is plain text (sent without a
        parse mode, so nothing needs escaping), clipped to 1,024 characters. Paced like
        messages. Returns ``{"chat_id", "message_id"}``."""
        if isinstance(ref_or_chat, dict):
            chat_id = _chat_id({"telegram_chat_id": ref_or_chat.get("chat_id")})
        else:
            chat_id = _chat_id({"telegram_chat_id": ref_or_chat})
        text = clip_plain(caption, MAX_CAPTION) if caption else None
        sent = await self._call(
            chat_id,
            lambda: self.bot.send_photo(chat_id, content, caption=text, filename=filename),
            paced=True,
        )
        return {"chat_id": chat_id, "message_id": sent.message_id}
