"""The fake Telegram Bot API, driven by a real ``telegram.Bot`` (PTB 22) over real HTTP.

No async plugin is installed: each test runs its coroutine with ``asyncio.run``. Time for the
flood limits comes from a mutable fake clock, never from sleeping.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import telegram
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
)

from tests.fakes.telegram_api import (
    FakeTelegramAPI,
    HTMLParseError,
    parse_telegram_html,
)
from tests.fakes.telegram_api import (
    RetryAfter as ScriptedRetryAfter,
)

USER = 4242  # a private chat
GROUP = -4242


class Clock:
    def __init__(self) -> None:
        self.t = 1_750_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tg(clock: Clock) -> Iterator[FakeTelegramAPI]:
    with FakeTelegramAPI(now=clock) as fake:
        yield fake


def with_bot(fake: FakeTelegramAPI, body: Callable[[telegram.Bot], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with fake.bot() as bot:
            return await body(bot)

    return asyncio.run(main())


def ci(text: str) -> str:
    """A ``pytest.raises`` pattern: PTB capitalizes "Bad Request: …" descriptions."""
    return "(?i)" + re.escape(text)


@pytest.fixture(autouse=True)
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """PTB 22 warns about int ``retry_after`` unless opted in to ``timedelta`` values."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


def retry_seconds(exc: RetryAfter) -> float:
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


def keyboard(*data: str) -> InlineKeyboardMarkup:
    rows = [[InlineKeyboardButton(f"b{i}", callback_data=d)] for i, d in enumerate(data)]
    return InlineKeyboardMarkup(rows)


def png(width: int, height: int) -> bytes:
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR"
    return header + struct.pack(">II", width, height) + b"\x08\x06\x00\x00\x00" + b"\0" * 40


# --- basics ---------------------------------------------------------------------------------------


def test_initialize_calls_get_me(tg: FakeTelegramAPI) -> None:
    async def body(bot: telegram.Bot) -> None:
        assert bot.username == "creditbot_test_bot"
        assert bot.id == 123456789
        assert bot.bot.is_bot

    with_bot(tg, body)
    assert [r.status for r in tg.calls("getMe")] == [200]


def test_wrong_token_is_401_and_unknown_method_404(tg: FakeTelegramAPI) -> None:
    async def main() -> None:
        wrong = telegram.Bot("987:not-the-token", base_url=tg.base_url)
        with pytest.raises(InvalidToken, match=ci("rejected by the server")):
            await wrong.initialize()
        async with tg.bot() as bot:
            with pytest.raises(EndPointNotFound):
                await bot.do_api_request("sendTeleportation", api_kwargs={"chat_id": USER})

    asyncio.run(main())
    assert tg.requests[0].status == 401
    assert tg.requests[-1].status == 404
    assert tg.requests[-1].description == "Not Found"
    raw = httpx.get(f"{tg.url}/bot{tg.token}/nope")
    assert raw.status_code == 404
    assert raw.json() == {"ok": False, "error_code": 404, "description": "Not Found"}


def test_json_form_and_query_bodies(tg: FakeTelegramAPI) -> None:
    markup = {"inline_keyboard": [[{"text": "Pay", "callback_data": "pay:1"}]]}
    sent = httpx.post(
        f"{tg.url}/bot{tg.token}/sendMessage",
        json={"chat_id": USER, "text": "hi", "reply_markup": markup},
    ).json()
    assert sent["ok"] and sent["result"]["reply_markup"] == markup
    form = httpx.post(
        f"{tg.url}/bot{tg.token}/SENDMESSAGE",  # method names are case-insensitive
        data={"chat_id": str(GROUP), "text": "form", "reply_markup": json.dumps(markup)},
    ).json()
    assert form["result"]["chat"] == {"id": GROUP, "type": "group", "title": f"Group {GROUP}"}
    assert tg.messages(GROUP)[0].reply_markup == markup
    me = httpx.get(f"{tg.url}/bot{tg.token}/getMe?unused=1").json()
    assert me["result"]["username"] == "creditbot_test_bot"
    assert [r.method for r in tg.requests] == ["sendMessage", "sendMessage", "getMe"]


# --- sending and editing --------------------------------------------------------------------------


def test_send_message_html_with_inline_keyboard(tg: FakeTelegramAPI, clock: Clock) -> None:
    text = "<b>Invoice</b> INV-7 &amp; <i>co</i> &lt;overdue&gt;"

    async def body(bot: telegram.Bot) -> telegram.Message:
        return await bot.send_message(
            USER, text, parse_mode=ParseMode.HTML, reply_markup=keyboard("approve:7", "deny:7")
        )

    msg = with_bot(tg, body)
    assert msg.text == "Invoice INV-7 & co <overdue>"
    assert [(e.type, e.offset, e.length) for e in msg.entities] == [
        ("bold", 0, 7),
        ("italic", 16, 2),
    ]
    assert msg.text_html == "<b>Invoice</b> INV-7 &amp; <i>co</i> &lt;overdue&gt;"
    assert msg.chat.type == "private" and msg.chat.id == USER
    assert msg.from_user is not None and msg.from_user.is_bot
    assert msg.date.timestamp() == int(clock.t)
    assert msg.reply_markup is not None
    assert msg.reply_markup.inline_keyboard[1][0].callback_data == "deny:7"
    (stored,) = tg.messages(USER)
    assert (stored.message_id, stored.text, stored.parse_mode) == (msg.message_id, text, "HTML")
    assert stored.reply_markup == keyboard("approve:7", "deny:7").to_dict()


def test_message_ids_are_unique_per_chat(tg: FakeTelegramAPI, clock: Clock) -> None:
    async def body(bot: telegram.Bot) -> list[tuple[int, int]]:
        out = []
        for chat in (USER, USER + 1, USER, GROUP):
            msg = await bot.send_message(chat, "x")
            out.append((chat, msg.message_id))
            clock.t += 1
        return out

    assert with_bot(tg, body) == [(USER, 1), (USER + 1, 1), (USER, 2), (GROUP, 1)]


def test_edit_text_and_markup(tg: FakeTelegramAPI) -> None:
    async def body(bot: telegram.Bot) -> None:
        msg = await bot.send_message(USER, "Pending", reply_markup=keyboard("approve:1"))
        edited = await bot.edit_message_text(
            "<b>Approved</b>", chat_id=USER, message_id=msg.message_id, parse_mode="HTML"
        )
        assert isinstance(edited, telegram.Message)
        assert edited.text == "Approved" and edited.edit_date is not None
        assert edited.reply_markup is None  # an edit without reply_markup drops the keyboard
        again = await bot.edit_message_reply_markup(
            chat_id=USER, message_id=msg.message_id, reply_markup=keyboard("undo:1")
        )
        assert isinstance(again, telegram.Message) and again.reply_markup is not None
        # edits are not flood-limited in the fake: many in the same instant are fine
        for n in range(5):
            await bot.edit_message_text(f"v{n}", chat_id=USER, message_id=msg.message_id)

    with_bot(tg, body)
    (stored,) = tg.messages(USER)
    assert stored.text == "v4" and stored.parse_mode is None
    assert stored.reply_markup is None  # the text edits without reply_markup removed it
    assert [e["plain"] for e in stored.edits[:3]] == ["Pending", "Approved", "Approved"]
    assert stored.edits[1]["text"] == "<b>Approved</b>"
    assert stored.edits[2]["reply_markup"] == keyboard("undo:1").to_dict()
    assert len(stored.edits) == 7


def test_edit_errors(tg: FakeTelegramAPI) -> None:
    same: dict[str, Any] = {"parse_mode": "HTML", "reply_markup": keyboard("a")}

    async def body(bot: telegram.Bot) -> None:
        msg = await bot.send_message(
            USER, "<b>Due</b>", parse_mode="HTML", reply_markup=keyboard("a")
        )
        with pytest.raises(BadRequest, match=ci("message is not modified")):
            await bot.edit_message_text("<b>Due</b>", USER, msg.message_id, **same)
        with pytest.raises(BadRequest, match=ci("message is not modified")):  # same rendering
            await bot.edit_message_text("<strong>Due</strong>", USER, msg.message_id, **same)
        with pytest.raises(BadRequest, match=ci("message is not modified")):
            await bot.edit_message_reply_markup(
                chat_id=USER, message_id=msg.message_id, reply_markup=keyboard("a")
            )
        with pytest.raises(BadRequest, match=ci("message to edit not found")):
            await bot.edit_message_text("x", chat_id=USER, message_id=999)
        with pytest.raises(BadRequest, match=ci("message to edit not found")):
            await bot.edit_message_text("x", chat_id=USER + 1, message_id=msg.message_id)
        assert await bot.delete_message(USER, msg.message_id)
        with pytest.raises(BadRequest, match=ci("message to edit not found")):
            await bot.edit_message_text("x", chat_id=USER, message_id=msg.message_id)

    with_bot(tg, body)
    assert tg.messages(USER)[0].edits == []
    assert tg.calls("editMessageText")[0].description == "Bad Request: " + (
        "message is not modified: specified new message content and reply markup are exactly "
        "the same as a current content and reply markup of the message"
    )


# --- validation -----------------------------------------------------------------------------------


def test_callback_data_is_1_to_64_bytes(tg: FakeTelegramAPI, clock: Clock) -> None:
    async def body(bot: telegram.Bot) -> None:
        with pytest.raises(BadRequest, match=ci("BUTTON_DATA_INVALID")):
            await bot.send_message(USER, "x", reply_markup=keyboard("é" * 33))  # 66 bytes
        with pytest.raises(BadRequest, match=ci("BUTTON_DATA_INVALID")):
            await bot.send_message(USER, "x", reply_markup=keyboard("a" * 65))
        with pytest.raises(BadRequest, match=ci("Text buttons are unallowed")):
            await bot.send_message(USER, "x", reply_markup=keyboard(""))
        empty = InlineKeyboardMarkup([[InlineKeyboardButton("", callback_data="a")]])
        with pytest.raises(BadRequest, match=ci("Text must be non-empty")):
            await bot.send_message(USER, "x", reply_markup=empty)
        await bot.send_message(USER, "x", reply_markup=keyboard("é" * 32))  # 64 bytes

    with_bot(tg, body)
    assert len(tg.messages(USER)) == 1


@pytest.mark.parametrize(
    "text",
    [
        "<p>para</p>",
        "<b>unclosed",
        "a < b",
        "AT&T",
        "x > y",
        "<b>cross</i>",
        "</b>",
        '<span class="red">x</span>',
        "<br>",
        "&nbsp;",
        '<a href="https://x.test">open',
    ],
)
def test_bad_html_is_refused(tg: FakeTelegramAPI, text: str) -> None:
    async def body(bot: telegram.Bot) -> None:
        with pytest.raises(BadRequest, match=ci("can't parse entities")):
            await bot.send_message(USER, text, parse_mode="HTML")
        await bot.send_message(USER, text)  # without parse_mode the same text is fine
        # ... and the refused send took no flood token: that was the first in this second

    with_bot(tg, body)
    assert [m.text for m in tg.messages(USER)] == [text]


def test_text_length_and_emptiness(tg: FakeTelegramAPI, clock: Clock) -> None:
    async def body(bot: telegram.Bot) -> None:
        with pytest.raises(BadRequest, match=ci("message is too long")):
            await bot.send_message(USER, "x" * 4097)
        with pytest.raises(BadRequest, match=ci("message text is empty")):
            await bot.send_message(USER, " \n ")
        with pytest.raises(BadRequest, match=ci("message text is empty")):
            await bot.send_message(USER, "<b></b>", parse_mode="HTML")
        await bot.send_message(USER, "x" * 4096)
        clock.t += 1
        # counted after the markup is parsed out: 4,096 visible characters pass
        await bot.send_message(USER, "<b>" + "y" * 4096 + "</b>", parse_mode="HTML")

    with_bot(tg, body)
    assert [len(m.plain) for m in tg.messages(USER)] == [4096, 4096]


def test_blocked_forgotten_and_unknown_chats(clock: Clock) -> None:
    with FakeTelegramAPI(now=clock, chats={USER, USER + 1, GROUP}) as fake:
        fake.block(USER)
        fake.block(GROUP)
        fake.forget(USER + 1)

        async def body(bot: telegram.Bot) -> None:
            with pytest.raises(Forbidden, match=ci("bot was blocked by the user")):
                await bot.send_message(USER, "hello")
            with pytest.raises(Forbidden, match=ci("bot was kicked from the group chat")):
                await bot.send_message(GROUP, "hello")
            with pytest.raises(BadRequest, match=ci("chat not found")):
                await bot.send_message(USER + 1, "hello")
            with pytest.raises(BadRequest, match=ci("chat not found")):
                await bot.send_message(777, "not in the set of known chats")
            fake.unblock(USER)
            await bot.send_message(USER, "hello again")

        with_bot(fake, body)
        blocked = fake.calls("sendMessage")[0]
        assert (blocked.status, blocked.description) == (
            403,
            "Forbidden: bot was blocked by the user",
        )


# --- flood limits ---------------------------------------------------------------------------------


def test_private_chat_one_message_per_second(tg: FakeTelegramAPI, clock: Clock) -> None:
    async def body(bot: telegram.Bot) -> None:
        await bot.send_message(USER, "first")
        clock.t += 0.5
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(USER, "second")
        assert retry_seconds(caught.value) == 1
        await bot.send_message(USER + 1, "another chat is not limited by this one")
        clock.t += 1
        await bot.send_message(USER, "second, later")

    with_bot(tg, body)
    assert [m.text for m in tg.messages(USER)] == ["first", "second, later"]
    refused = [r for r in tg.calls("sendMessage") if r.status == 429]
    assert [r.description for r in refused] == ["Too Many Requests: retry after 1"]
    raw_body = httpx.post(
        f"{tg.url}/bot{tg.token}/sendMessage", data={"chat_id": USER, "text": "now"}
    ).json()
    assert raw_body == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    }


def test_group_twenty_messages_per_minute(tg: FakeTelegramAPI, clock: Clock) -> None:
    async def body(bot: telegram.Bot) -> None:
        for n in range(20):
            await bot.send_message(GROUP, f"m{n}")
            clock.t += 0.1
        # a token bucket: a burst of 20, then one token every 3 s; in these 2 s, 2/3 came back
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(GROUP, "m20")
        assert retry_seconds(caught.value) == 1
        clock.t += 1
        await bot.send_message(GROUP, "m20")
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(GROUP, "m21")
        assert retry_seconds(caught.value) == 3

    with_bot(tg, body)
    assert len(tg.messages(GROUP)) == 21


def test_group_limit_in_the_same_instant(tg: FakeTelegramAPI, clock: Clock) -> None:
    async def body(bot: telegram.Bot) -> None:
        for n in range(20):
            await bot.send_message(GROUP, f"m{n}")
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(GROUP, "m20")
        assert retry_seconds(caught.value) == 3  # 20 per minute: one token every 3 s
        clock.t += 2
        with pytest.raises(RetryAfter):
            await bot.send_message(GROUP, "m20")
        clock.t += 1
        await bot.send_message(GROUP, "m20")

    with_bot(tg, body)
    assert len(tg.messages(GROUP)) == 21


def test_thirty_messages_per_second_overall(tg: FakeTelegramAPI, clock: Clock) -> None:
    async def body(bot: telegram.Bot) -> None:
        for chat in range(1, 31):
            await bot.send_message(chat, "reminder")
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(31, "reminder")
        assert retry_seconds(caught.value) == 1
        clock.t += 1
        await bot.send_message(31, "reminder")

    with_bot(tg, body)
    assert sum(len(tg.messages(chat)) for chat in range(1, 32)) == 31


def test_limits_are_constructor_arguments(clock: Clock) -> None:
    with FakeTelegramAPI(now=clock, per_chat_per_second=2, global_per_second=2) as fake:

        async def body(bot: telegram.Bot) -> None:
            await bot.send_message(USER, "a")
            clock.t += 0.5  # two per second (burst 1): a token is back
            await bot.send_message(USER, "b")
            await bot.send_message(USER + 1, "c")  # the overall bucket had 2, got 1 back
            with pytest.raises(RetryAfter):  # but it is empty now
                await bot.send_message(USER + 2, "d")

        with_bot(fake, body)


# --- photos ---------------------------------------------------------------------------------------


def test_send_photo_stores_the_bytes(tg: FakeTelegramAPI, clock: Clock) -> None:
    image = png(640, 480)

    async def body(bot: telegram.Bot) -> None:
        msg = await bot.send_photo(
            USER, image, caption="<b>Aging</b> report", parse_mode="HTML", filename="aging.png"
        )
        assert msg.caption == "Aging report"
        assert msg.caption_entities[0].type == "bold"
        size = msg.photo[-1]
        assert (size.width, size.height, size.file_size) == (640, 480, len(image))
        file = await bot.get_file(size.file_id)
        assert bytes(await file.download_as_bytearray()) == image
        with pytest.raises(BadRequest, match=ci("message caption is too long")):
            await bot.send_photo(USER, image, caption="c" * 1025)
        clock.t += 1
        again = await bot.send_photo(USER, size.file_id)  # re-send by file_id
        assert again.photo[-1].file_id == size.file_id
        with pytest.raises(BadRequest, match=ci("no text in the message to edit")):
            await bot.edit_message_text("x", chat_id=USER, message_id=msg.message_id)
        edited = await bot.edit_message_caption(USER, msg.message_id, caption="Updated")
        assert isinstance(edited, telegram.Message) and edited.caption == "Updated"

    with_bot(tg, body)
    first, second = tg.photos(USER)
    assert first.data == image and first.filename == "aging.png"
    assert second is first
    assert tg.messages(USER)[0].caption == "Updated"
    assert tg.messages(USER)[0].edits[0]["caption"] == "<b>Aging</b> report"


# --- updates --------------------------------------------------------------------------------------


def test_updates_are_valid_bot_api_json(tg: FakeTelegramAPI) -> None:
    async def body(bot: telegram.Bot) -> None:
        msg = await bot.send_message(GROUP, "Approve?", reply_markup=keyboard("ok:9"))
        start = Update.de_json(tg.make_message_update(USER, "/start@creditbot_test_bot"), bot)
        assert start.message is not None and start.message.from_user is not None
        assert start.message.from_user.id == USER and not start.message.from_user.is_bot
        assert start.message.entities[0].type == "bot_command"
        assert start.message.entities[0].length == len("/start@creditbot_test_bot")
        press = Update.de_json(tg.make_callback_update(GROUP, msg.message_id, "ok:9", 77), bot)
        query = press.callback_query
        assert query is not None and query.data == "ok:9" and query.from_user.id == 77
        assert query.message is not None and query.message.message_id == msg.message_id
        assert isinstance(query.message, telegram.Message) and query.message.text == "Approve?"
        assert start.update_id < press.update_id
        with pytest.raises(LookupError):
            tg.make_callback_update(GROUP, 999, "ok:9")

    with_bot(tg, body)


def test_get_updates_with_offset(tg: FakeTelegramAPI) -> None:
    ids = [tg.push_update(tg.make_message_update(USER, f"text {n}")) for n in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3

    async def body(bot: telegram.Bot) -> None:
        updates = await bot.get_updates()
        assert [u.update_id for u in updates] == ids
        assert [u.message.text for u in updates if u.message] == ["text 0", "text 1", "text 2"]
        assert [u.update_id for u in await bot.get_updates()] == ids  # not confirmed yet
        assert [u.update_id for u in await bot.get_updates(offset=ids[1])] == ids[1:]
        assert [u.update_id for u in await bot.get_updates(limit=1)] == ids[1:2]
        assert await bot.get_updates(offset=ids[2] + 1) == ()

    with_bot(tg, body)
    assert tg.pending_updates() == []


def test_long_poll_waits_until_an_update_is_pushed(clock: Clock) -> None:
    with FakeTelegramAPI(now=clock, poll_cap=10) as fake:

        async def body(bot: telegram.Bot) -> None:
            started = time.monotonic()
            poll = asyncio.create_task(bot.get_updates(timeout=10))
            while fake.polling == 0:
                assert time.monotonic() - started < 5, "getUpdates never started waiting"
                await asyncio.sleep(0.01)
            fake.push_update(fake.make_message_update(USER, "wake up"))
            updates = await poll
            assert [u.message.text for u in updates if u.message] == ["wake up"]
            assert time.monotonic() - started < 5

        with_bot(fake, body)


def test_long_poll_is_capped_in_real_time(tg: FakeTelegramAPI) -> None:
    async def body(bot: telegram.Bot) -> None:
        started = time.monotonic()
        assert await bot.get_updates(timeout=30) == ()
        assert time.monotonic() - started < 3  # poll_cap 0.5 s, not 30 s

    with_bot(tg, body)


def test_second_poller_terminates_the_first(clock: Clock) -> None:
    with FakeTelegramAPI(now=clock, poll_cap=10) as fake:

        async def main() -> None:
            async with fake.bot() as first, fake.bot() as second:
                poll = asyncio.create_task(first.get_updates(timeout=10))
                started = time.monotonic()
                while fake.polling == 0:
                    assert time.monotonic() - started < 5, "getUpdates never started waiting"
                    await asyncio.sleep(0.01)
                assert await second.get_updates(timeout=0) == ()
                with pytest.raises(Conflict, match=ci("terminated by other getUpdates request")):
                    await poll

        asyncio.run(main())
        assert [r.status for r in fake.calls("getUpdates")] == [200, 409]


def test_webhook_blocks_get_updates(tg: FakeTelegramAPI) -> None:
    async def body(bot: telegram.Bot) -> None:
        with pytest.raises(BadRequest, match=ci("secret token contains unallowed characters")):
            await bot.set_webhook("https://bot.example.com/tg", secret_token="has space")
        with pytest.raises(BadRequest, match=ci("secret token contains unallowed characters")):
            await bot.set_webhook("https://bot.example.com/tg", secret_token="x" * 257)
        with pytest.raises(BadRequest, match=ci("HTTPS URL must be provided")):
            await bot.set_webhook("http://bot.example.com/tg")
        with pytest.raises(BadRequest, match=ci("ports 80, 88, 443 or 8443")):
            await bot.set_webhook("https://bot.example.com:9000/tg")
        assert await bot.set_webhook("https://bot.example.com/tg", secret_token="S3cret_-x")
        info = await bot.get_webhook_info()
        assert info.url == "https://bot.example.com/tg"
        with pytest.raises(Conflict, match=ci("webhook is active")):
            await bot.get_updates()
        assert await bot.delete_webhook()
        assert (await bot.get_webhook_info()).url == ""
        assert await bot.get_updates() == ()

    with_bot(tg, body)
    assert tg.calls("setWebhook")[-1].params["secret_token"] == "S3cret_-x"
    assert tg.webhook == {}


def test_delete_webhook_can_drop_pending_updates(tg: FakeTelegramAPI) -> None:
    tg.push_update(tg.make_message_update(USER, "old"))

    async def body(bot: telegram.Bot) -> None:
        assert (await bot.get_webhook_info()).pending_update_count == 1
        assert await bot.delete_webhook(drop_pending_updates=True)
        assert await bot.get_updates() == ()

    with_bot(tg, body)


def test_answer_callback_query(tg: FakeTelegramAPI) -> None:
    async def body(bot: telegram.Bot) -> None:
        msg = await bot.send_message(USER, "Ship order 12?", reply_markup=keyboard("ship:12"))
        update = Update.de_json(tg.make_callback_update(USER, msg.message_id, "ship:12"), bot)
        assert update.callback_query is not None
        assert await update.callback_query.answer("Shipped", show_alert=True)
        with pytest.raises(BadRequest, match=ci("query is too old")):
            await update.callback_query.answer()  # a query is answered once
        with pytest.raises(BadRequest, match=ci("query ID is invalid")):
            await bot.answer_callback_query("123456")

    with_bot(tg, body)
    (answer,) = tg.callback_answers
    assert (answer.text, answer.show_alert) == ("Shipped", True)


def test_callback_queries_can_expire(clock: Clock) -> None:
    with FakeTelegramAPI(now=clock, callback_ttl=15) as fake:

        async def body(bot: telegram.Bot) -> None:
            msg = await bot.send_message(USER, "Ship?", reply_markup=keyboard("ship:1"))
            update = fake.make_callback_update(USER, msg.message_id, "ship:1")
            query_id = update["callback_query"]["id"]
            clock.t += 16
            with pytest.raises(BadRequest, match=ci("query is too old")):
                await bot.answer_callback_query(query_id)

        with_bot(fake, body)


# --- scripts --------------------------------------------------------------------------------------


def test_scripted_failures(tg: FakeTelegramAPI) -> None:
    tg.script(USER, 500, ScriptedRetryAfter(7), (403, "Forbidden: bot was blocked by the user"))
    tg.script("sendPhoto", (400, "Bad Request: IMAGE_PROCESS_FAILED"))

    async def body(bot: telegram.Bot) -> None:
        with pytest.raises(NetworkError, match=ci("Internal Server Error")):
            await bot.send_message(USER, "1")
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(USER, "2")
        assert retry_seconds(caught.value) == 7
        with pytest.raises(Forbidden, match=ci("blocked")):
            await bot.send_message(USER, "3")
        with pytest.raises(BadRequest, match=ci("IMAGE_PROCESS_FAILED")):
            await bot.send_photo(USER + 1, png(1, 1))
        await bot.send_message(USER, "4")  # the script is used up

    with_bot(tg, body)
    assert [(r.status, r.description) for r in tg.calls("sendMessage")] == [
        (500, "HTTP 500"),
        (429, "Too Many Requests: retry after 7"),
        (403, "Forbidden: bot was blocked by the user"),
        (200, None),
    ]
    assert [m.text for m in tg.messages(USER)] == ["4"]


def test_scripted_statuses_on_the_wire(tg: FakeTelegramAPI) -> None:
    tg.script("getMe", 502, 404)
    first = httpx.get(f"{tg.url}/bot{tg.token}/getMe")
    assert first.status_code == 502 and "application/json" not in first.headers["content-type"]
    second = httpx.get(f"{tg.url}/bot{tg.token}/getMe")
    assert second.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
    assert httpx.get(f"{tg.url}/bot{tg.token}/getMe").json()["ok"] is True


# --- commands -------------------------------------------------------------------------------------


def test_my_commands(tg: FakeTelegramAPI) -> None:
    async def body(bot: telegram.Bot) -> None:
        assert await bot.set_my_commands([("start", "Start"), ("aging", "Aging report")])
        scope = telegram.BotCommandScopeChat(USER)
        assert await bot.set_my_commands([("approve", "Approvals")], scope=scope)
        assert [c.command for c in await bot.get_my_commands()] == ["start", "aging"]
        assert [c.command for c in await bot.get_my_commands(scope=scope)] == ["approve"]
        with pytest.raises(BadRequest, match=ci("BOT_COMMAND_INVALID")):
            await bot.set_my_commands([("Start", "capital letters are refused")])
        assert await bot.delete_my_commands()
        assert await bot.get_my_commands() == ()

    with_bot(tg, body)
    assert tg.commands({"type": "chat", "chat_id": USER}) == [
        {"command": "approve", "description": "Approvals"}
    ]


# --- Telegram HTML --------------------------------------------------------------------------------


def test_parse_telegram_html() -> None:
    plain, entities = parse_telegram_html(
        '💶 <b>Due <i>now</i></b> <a href="https://x.test/?a=1&amp;b=2">pay</a> &#8364;&#x21;'
        '<pre><code class="language-python">x = 1</code></pre>'
        '<span class="tg-spoiler">s</span><tg-spoiler>t</tg-spoiler>'
        "<blockquote expandable>q</blockquote>"
    )
    assert plain == "💶 Due now pay €!x = 1stq"
    assert entities == [
        {"type": "bold", "offset": 3, "length": 7},  # 💶 is two UTF-16 code units
        {"type": "italic", "offset": 7, "length": 3},
        {"type": "text_link", "offset": 11, "length": 3, "url": "https://x.test/?a=1&b=2"},
        {"type": "pre", "offset": 17, "length": 5, "language": "python"},
        {"type": "spoiler", "offset": 22, "length": 1},
        {"type": "spoiler", "offset": 23, "length": 1},
        {"type": "expandable_blockquote", "offset": 24, "length": 1},
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<p>x</p>", 'Unsupported start tag "p" at byte offset 0'),
        ("é<p>x</p>", 'Unsupported start tag "p" at byte offset 2'),  # offsets count bytes
        ("é <b>x", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<b", "Unclosed start tag at byte offset 0"),
        ("a < b", 'Unsupported start tag "" at byte offset 2'),
    ],
)
def test_parse_telegram_html_errors(text: str, message: str) -> None:
    with pytest.raises(HTMLParseError) as caught:
        parse_telegram_html(text)
    assert str(caught.value) == message


def test_malformed_input_is_a_400_not_a_dropped_connection(tg: FakeTelegramAPI) -> None:
    url = f"{tg.url}/bot{tg.token}"
    bad_json = httpx.post(
        f"{url}/sendMessage", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400 and bad_json.json()["ok"] is False
    bad_timeout = httpx.post(f"{url}/getUpdates", data={"timeout": "soon"})
    assert bad_timeout.status_code == 400
    bad_markup = httpx.post(
        f"{url}/sendMessage", data={"chat_id": USER, "text": "x", "reply_markup": "{"}
    )
    assert bad_markup.json()["description"].startswith("Bad Request: can't parse reply_markup")


def test_ptb_application_polls_the_fake(tg: FakeTelegramAPI, clock: Clock) -> None:
    """End to end: PTB's Application + Updater long-polls, handles a command and a button."""
    from telegram.ext import Application, CallbackQueryHandler, CommandHandler

    async def main() -> None:
        finished = asyncio.Event()

        async def start(update: Update, context: Any) -> None:
            assert update.effective_chat is not None
            await context.bot.send_message(
                update.effective_chat.id, "Approve?", reply_markup=keyboard("approve:1")
            )

        async def press(update: Update, context: Any) -> None:
            query = update.callback_query
            assert query is not None
            await query.answer("Approved")
            clock.t += 1
            await query.edit_message_text(f"Approved by {query.from_user.id}")
            finished.set()

        app = (
            Application.builder()
            .token(tg.token)
            .base_url(tg.base_url)
            .base_file_url(tg.base_file_url)
            .build()
        )
        app.add_handler(CommandHandler("start", start))
        app.add_handler(CallbackQueryHandler(press))
        async with app:
            await app.start()
            assert app.updater is not None
            await app.updater.start_polling(poll_interval=0, timeout=1)
            tg.push_update(tg.make_message_update(USER, "/start"))
            for _ in range(500):
                if tg.messages(USER):
                    break
                await asyncio.sleep(0.01)
            (sent,) = tg.messages(USER)
            tg.push_update(tg.make_callback_update(USER, sent.message_id, "approve:1"))
            await asyncio.wait_for(finished.wait(), 10)
            await app.updater.stop()
            await app.stop()

    asyncio.run(main())
    (message,) = tg.messages(USER)
    assert message.text == f"Approved by {USER}" and message.reply_markup is None
    assert [a.text for a in tg.callback_answers] == ["Approved"]
    assert tg.calls("deleteWebhook")  # the Updater clears any webhook first
