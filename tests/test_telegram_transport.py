"""The Telegram transport: a real ``telegram.Bot`` (PTB 22) against the fake Bot API
(tests/fakes/telegram_api.py), driven by the real dispatcher and outbox on a FakeClock.

The fake shares the dispatcher's clock, so its flood limits (1 message a second per private
chat, 20 a minute per group, 30 a second overall) and our pacing run on the same fake time and
nothing sleeps for real. No async plugin: each test runs its coroutine with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import secrets
import struct
import threading
import warnings
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, update
from telegram.error import (
    BadRequest,
    ChatMigrated,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)

from bot.compose import compose
from bot.messages import Message, Section
from bot.telegram_render import MAX_TEXT, message_buttons
from bot.transports.base import Outgoing, PermanentSendError, RateLimited, TransientSendError
from bot.transports.telegram import (
    ChatPacer,
    TelegramTransport,
    make_bot,
    map_telegram_error,
    retry_after_seconds,
)
from credit.settings import OutboxSettings, Settings, TelegramSettings
from credit.store.db import write_session
from credit.store.models import Person
from jobs.clock import FakeClock
from jobs.dispatch import Dispatcher
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegramAPI, Request
from tests.fakes.telegram_api import RetryAfter as ScriptedRetryAfter
from tests.support.outbox_data import (
    NOW,
    FixedRandom,
    audits,
    person,
    put,
    reminder_payload,
    reminders,
    row,
    rows,
    seed_people,
)

REP1, REP2, REP3 = 5001, 5002, 5003  # private chats of rep01…rep03
ADMIN_CHATS = {"adm01": 9001, "adm02": 9002}
TEAM_GROUP = -100200300  # a group chat


class MemoryMinter:
    """The token store, in memory: a short random token per button, remembered."""

    def __init__(self) -> None:
        self.issued: dict[str, dict[str, Any]] = {}
        self.threads: set[str] = set()

    def mint(self, *, action: str, value: str, chat_id: int, person_id: int | None) -> str:
        self.threads.add(threading.current_thread().name)
        token = secrets.token_urlsafe(12)
        self.issued[token] = {
            "action": action,
            "value": value,
            "chat_id": chat_id,
            "person_id": person_id,
        }
        return token


class LongTokenMinter(MemoryMinter):
    def mint(self, **kwargs: Any) -> str:
        return "x" * 65


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def tg(clock: FakeClock) -> Iterator[FakeTelegramAPI]:
    with FakeTelegramAPI(now=lambda: clock.now().timestamp()) as api:
        yield api


@pytest.fixture
def minter() -> MemoryMinter:
    return MemoryMinter()


@pytest.fixture(autouse=True)
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """PTB 22 warns about int ``retry_after`` unless opted in to ``timedelta`` values."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


def transport_for(
    tg: FakeTelegramAPI, clock: FakeClock, minter: Any, **pacing: float
) -> TelegramTransport:
    return TelegramTransport(tg.bot(), minter=minter, clock=clock, **pacing)


def settings(**outbox: Any) -> Settings:
    outbox.setdefault("channels", ["telegram"])
    return Settings(
        outbox=OutboxSettings(**outbox), telegram=TelegramSettings(bot_token=DEFAULT_TOKEN)
    )


def dispatcher_for(
    engine: Engine, clock: FakeClock, transport: TelegramTransport, **outbox: Any
) -> Dispatcher:
    rng = outbox.pop("rng", None)
    return Dispatcher(engine, settings(**outbox), {"telegram": transport}, clock, rng=rng)


def seed(engine: Engine, **extra: dict[str, Any]) -> dict[str, int]:
    """seed_people, then Telegram chats for the reps and the admins."""
    people = seed_people(engine, **extra)
    chats = {"rep01": REP1, "rep02": REP2, "rep03": REP3, **ADMIN_CHATS}
    with write_session(engine) as s:
        for code, chat_id in chats.items():
            s.execute(update(Person).where(Person.code == code).values(telegram_chat_id=chat_id))
    return people


async def deliver_everything(engine: Engine, clock: FakeClock, dispatcher: Dispatcher) -> int:
    """Drain; move the clock to the next due row; repeat until nothing is pending."""
    for rounds in range(1, 30):
        await dispatcher.drain()
        pending = rows(engine, status="pending")
        if not pending:
            return rounds
        clock.set(max(clock.now(), min(r.next_attempt_at for r in pending)))
    raise AssertionError("messages still pending after 30 rounds")


def sends(tg: FakeTelegramAPI, chat_id: int | None = None) -> list[Request]:
    calls = tg.calls("sendMessage")
    return [c for c in calls if chat_id is None or int(c.params["chat_id"]) == chat_id]


def gaps(calls: list[Request]) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(calls)]


def outgoing(chat_id: int | None, payload: dict[str, Any], **address: Any) -> Outgoing:
    return Outgoing(
        1, "reminder", {"telegram_chat_id": chat_id, "person_id": 7, **address}, payload
    )


def rep_payload(**changes: Any) -> dict[str, Any]:
    payload = reminder_payload(Person(id=7, code="rep07", name="Rep 7", role="rep"))
    payload.update(changes)
    return payload


def long_payload(promises: int) -> dict[str, Any]:
    """A reminder with many broken promises: one line each, so it runs over 4,096 characters."""
    broken = [
        {
            "number": f"INV-2026-{i:04d}",
            "customer": f"C{i:04d}",
            "customer_name": f"Customer <{i}> & Partners Trading Co.",
            "promised_date": "2026-11-18",
            "promised_amount": "500.00",
            "open_amount": "800.00",
            "currency": "CNY",
        }
        for i in range(promises)
    ]
    return rep_payload(broken_promises=broken)


def png(width: int = 640, height: int = 480) -> bytes:
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR"
    return header + struct.pack(">II", width, height) + b"\x08\x06\x00\x00\x00" + b"\0" * 40


# --- through the dispatcher to the fake Telegram -------------------------------------------


def test_a_reminder_arrives_as_html_with_minted_buttons(engine, clock, tg, minter):
    people = seed(engine)
    (mid,) = put(engine, reminders(engine, ["rep01"], channel="telegram"))
    transport = transport_for(tg, clock, minter)

    report = asyncio.run(dispatcher_for(engine, clock, transport).drain())

    assert (report.sent, report.errors) == (1, [])
    (stored,) = tg.messages(REP1)
    assert stored.parse_mode == "HTML"
    assert stored.text.startswith("<b>Receivables to chase — Nov 25, 2026</b>\n")
    assert "• INV-2026-0001 · 宏达机械有限公司 · CN¥12,800.00 · 12 days overdue" in stored.plain
    title = "Receivables to chase — Nov 25, 2026"
    assert {"type": "bold", "offset": 0, "length": len(title)} in stored.entities
    keyboard = stored.reply_markup["inline_keyboard"]
    assert [len(r) for r in keyboard] == [2, 2]
    buttons = [b for r in keyboard for b in r]
    assert [b["text"] for b in buttons] == [
        "Acknowledge · INV-2026-0001", "Promise to pay", "Dispute", "Snooze",
    ]  # fmt: skip
    assert all(1 <= len(b["callback_data"].encode()) <= 64 for b in buttons)
    minted = [minter.issued[b["callback_data"]] for b in buttons]  # our tokens, nothing else
    assert [m["action"] for m in minted] == ["ack", "promise", "dispute", "snooze"]
    assert {m["value"] for m in minted} == {"INV-2026-0001|overdue"}
    assert {(m["chat_id"], m["person_id"]) for m in minted} == {(REP1, people["rep01"])}
    assert "MainThread" not in minter.threads  # minted off the event loop (it does DB work)
    assert row(engine, mid).platform_ref == {
        "chat_id": REP1,
        "message_id": stored.message_id,
        "message_ids": [stored.message_id],
    }
    (call,) = sends(tg)
    assert call.params["link_preview_options"] == {"is_disabled": True}


def test_a_chinese_recipient_gets_chinese_on_telegram(engine, clock, tg, minter):
    seed(engine, zh01={"role": "rep", "locale": "zh_CN", "telegram_chat_id": 6001})
    put(engine, reminders(engine, ["zh01"], channel="telegram"))
    asyncio.run(dispatcher_for(engine, clock, transport_for(tg, clock, minter)).drain())
    (stored,) = tg.messages(6001)
    assert stored.plain.startswith("应收账款催收提醒 — 2026年11月25日\n今天有 1 张发票需要您跟进")
    assert "逾期 12 天" in stored.plain
    assert stored.reply_markup["inline_keyboard"][0][1]["text"] == "承诺付款"


def test_our_pacer_keeps_one_private_chat_at_one_message_a_second(engine, clock, tg, minter):
    seed(engine)
    ids = put(engine, reminders(engine, ["rep01"] * 3, channel="telegram"))
    # no gap per recipient in the dispatcher: only the transport's pacer holds the line
    transport = transport_for(tg, clock, minter)
    dispatcher = dispatcher_for(engine, clock, transport, per_recipient_interval_seconds=0)

    asyncio.run(deliver_everything(engine, clock, dispatcher))

    calls = sends(tg, REP1)
    assert [c.status for c in calls] == [200] * 3  # no 429 from the fake
    assert all(g >= 1.0 - 1e-3 for g in gaps(calls))
    assert sorted(row(engine, i).platform_ref["message_id"] for i in ids) == [1, 2, 3]


def test_a_long_message_goes_out_in_parts_a_second_apart(clock, tg, minter):
    transport = transport_for(tg, clock, minter)

    ref = asyncio.run(transport.send(outgoing(REP1, long_payload(120))))

    stored = tg.messages(REP1)
    assert 2 <= len(stored) <= 4
    calls = sends(tg, REP1)
    assert [c.status for c in calls] == [200] * len(stored)  # zero 429s
    assert all(g >= 1.0 - 1e-3 for g in gaps(calls))
    assert all(len(m.text) <= MAX_TEXT for m in stored)
    assert [m.reply_markup is not None for m in stored] == [False] * (len(stored) - 1) + [True]
    assert ref == {
        "chat_id": REP1,
        "message_id": stored[-1].message_id,
        "message_ids": [m.message_id for m in stored],
    }
    shown = "\n".join(m.plain for m in stored)
    assert all(f"Customer <{i}> & Partners" in shown for i in range(120))


def test_31_chats_at_once_stay_under_the_global_limit(engine, clock, tg, minter):
    extra = {f"p{i:02d}": {"role": "rep", "telegram_chat_id": 7000 + i} for i in range(31)}
    seed(engine, **extra)
    put(engine, reminders(engine, list(extra), channel="telegram"))
    transport = transport_for(tg, clock, minter)  # 25 a second overall
    dispatcher = dispatcher_for(engine, clock, transport, global_per_second=1000)

    asyncio.run(deliver_everything(engine, clock, dispatcher))

    calls = sends(tg)
    assert len(calls) == 31 and {c.status for c in calls} == {200}
    assert calls[-1].at - calls[0].at >= 30 / 25 - 1e-3
    assert all(g >= 1 / 25 - 1e-3 for g in gaps(calls))
    assert len({int(c.params["chat_id"]) for c in calls}) == 31


def test_a_group_gets_a_message_every_three_seconds(engine, clock, tg, minter):
    seed(engine, team={"role": "rep", "telegram_chat_id": TEAM_GROUP})
    put(engine, reminders(engine, ["team"] * 22, channel="telegram"))  # over the burst of 20
    transport = transport_for(tg, clock, minter)
    dispatcher = dispatcher_for(engine, clock, transport, per_recipient_interval_seconds=0)

    asyncio.run(deliver_everything(engine, clock, dispatcher))

    calls = sends(tg, TEAM_GROUP)
    assert [c.status for c in calls] == [200] * 22
    assert all(g >= 3.0 - 1e-3 for g in gaps(calls))
    assert len(tg.messages(TEAM_GROUP)) == 22


def test_retry_after_reschedules_and_delivers_exactly_once(engine, clock, tg, minter):
    seed(engine)
    (mid,) = put(engine, reminders(engine, ["rep01"], channel="telegram"))
    tg.script(REP1, ScriptedRetryAfter(7))
    transport = transport_for(tg, clock, minter)
    dispatcher = dispatcher_for(engine, clock, transport)

    async def main() -> None:
        first = await dispatcher.drain()
        assert (first.rate_limited, first.sent) == (1, 0)
        waiting = row(engine, mid)
        assert waiting.status == "pending"
        assert waiting.next_attempt_at == NOW + timedelta(seconds=7)
        await deliver_everything(engine, clock, dispatcher)

    asyncio.run(main())

    calls = sends(tg, REP1)
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 7 - 1e-3
    assert len(tg.messages(REP1)) == 1
    assert row(engine, mid).status == "sent"
    assert row(engine, mid).platform_ref["message_id"] == tg.messages(REP1)[0].message_id


def test_a_blocked_bot_fails_the_row_marks_the_person_and_alerts_admins(engine, clock, tg, minter):
    people = seed(engine)
    (mid,) = put(engine, reminders(engine, ["rep01"], channel="telegram"))
    tg.block(REP1)
    dispatcher = dispatcher_for(engine, clock, transport_for(tg, clock, minter))

    rounds = asyncio.run(deliver_everything(engine, clock, dispatcher))

    assert rounds == 1  # nothing left pending: no retry loop
    failed = row(engine, mid)
    reason = "Forbidden: bot was blocked by the user"
    assert (failed.status, failed.last_error) == ("failed", reason)
    assert [c.status for c in sends(tg, REP1)] == [403]  # tried once
    assert person(engine, "rep01").unreachable_reason == reason
    assert [a.after for a in audits(engine, "person.unreachable")] == [{"reason": reason}]
    alerts = rows(engine, kind="admin_alert")
    assert sorted(a.recipient_id for a in alerts) == sorted([people["adm01"], people["adm02"]])
    # the alerts go out through Telegram to the admins' chats (the same drain)
    assert {a.status for a in alerts} == {"sent"}
    assert reason in tg.messages(ADMIN_CHATS["adm01"])[0].plain


def test_chat_not_found_fails_the_row_and_marks_the_person_unreachable(engine, clock, tg, minter):
    seed(engine)
    (mid,) = put(engine, reminders(engine, ["rep02"], channel="telegram"))
    tg.forget(REP2)

    report = asyncio.run(dispatcher_for(engine, clock, transport_for(tg, clock, minter)).drain())

    assert report.failed == 1
    assert (row(engine, mid).status, row(engine, mid).last_error) == ("failed", "Chat not found")
    assert person(engine, "rep02").unreachable_reason == "Chat not found"
    assert len(rows(engine, kind="admin_alert")) == 2
    assert [c.status for c in sends(tg, REP2)] == [400]


def test_a_500_is_retried_with_backoff_then_delivered_once(engine, clock, tg, minter):
    seed(engine)
    (mid,) = put(engine, reminders(engine, ["rep01"], channel="telegram"))
    tg.script(REP1, 500)
    dispatcher = dispatcher_for(
        engine,
        clock,
        transport_for(tg, clock, minter),
        rng=FixedRandom(0.5),
        backoff_base_seconds=30,
    )

    async def main() -> None:
        await dispatcher.drain()
        first = row(engine, mid)
        assert (first.status, first.attempts) == ("pending", 1)
        assert first.last_error.startswith("TransientSendError: NetworkError: Internal Server")
        assert first.next_attempt_at == NOW + timedelta(seconds=30)  # base · 2⁰ · jitter 1
        await deliver_everything(engine, clock, dispatcher)

    asyncio.run(main())

    calls = sends(tg, REP1)
    assert [c.status for c in calls] == [500, 200]
    assert calls[1].at - calls[0].at == pytest.approx(30, abs=1e-3)
    assert row(engine, mid).status == "sent"
    assert len(tg.messages(REP1)) == 1


# --- the transport alone ---------------------------------------------------------------------


def test_retry_after_pauses_that_chat_in_our_pacer(clock, tg, minter):
    transport = transport_for(tg, clock, minter)
    tg.script(REP1, ScriptedRetryAfter(7))

    async def main() -> None:
        with pytest.raises(RateLimited) as limited:
            await transport.send(outgoing(REP1, rep_payload()))
        assert limited.value.retry_after == 7.0
        await transport.send(outgoing(REP2, rep_payload()))  # another chat: not held
        await transport.send(outgoing(REP1, rep_payload()))  # waits out the 7 s

    asyncio.run(main())

    first, again = sends(tg, REP1)
    assert (first.status, again.status) == (429, 200)
    assert again.at - first.at >= 7 - 1e-3
    assert sends(tg, REP2)[0].at - first.at < 1


def test_missing_chat_id_is_permanent_and_unreachable(clock, tg, minter):
    transport = transport_for(tg, clock, minter)
    for address in (None, ""):
        with pytest.raises(PermanentSendError) as missing:
            asyncio.run(transport.send(outgoing(address, rep_payload())))
        assert missing.value.unreachable
        assert "no Telegram chat id" in missing.value.reason
    assert tg.requests == [] and minter.issued == {}


def test_a_token_over_64_bytes_is_refused_before_sending(clock, tg):
    transport = transport_for(tg, clock, LongTokenMinter())
    with pytest.raises(PermanentSendError, match="65 bytes") as refused:
        asyncio.run(transport.send(outgoing(REP1, rep_payload())))
    assert not refused.value.unreachable
    assert tg.requests == []


def test_update_edits_the_last_part_and_removes_the_buttons(clock, tg, minter):
    transport = transport_for(tg, clock, minter)
    done = Message("Acknowledged", "INV-1 acknowledged", [Section("Done <ok>", lines=["INV-1"])])

    async def main() -> dict[str, Any]:
        ref = await transport.send(outgoing(REP1, long_payload(120)))
        again = await transport.update(ref, done)
        assert await transport.update(ref, done) == again  # not modified: still fine
        return ref

    ref = asyncio.run(main())

    *earlier, last = tg.messages(REP1)
    assert last.message_id == ref["message_id"]
    assert last.plain == "Acknowledged\nINV-1 acknowledged\n\nDone <ok>\n• INV-1"
    assert last.reply_markup is None
    assert len(last.edits) == 1 and last.edits[0]["reply_markup"] is not None
    assert all(m.edits == [] for m in earlier)
    (_, unchanged) = tg.calls("editMessageText")
    assert unchanged.description.startswith("Bad Request: message is not modified")

    huge = Message("Big", "s", [Section("Lines", lines=[f"line {i}" for i in range(2000)])])
    asyncio.run(transport.update(ref, huge))
    assert len(tg.message(REP1, ref["message_id"]).text) <= MAX_TEXT
    assert tg.message(REP1, ref["message_id"]).plain.endswith("…")

    with pytest.raises(PermanentSendError, match=r"(?i)message to edit not found"):
        asyncio.run(transport.update({"chat_id": REP1, "message_id": 999}, done))


def test_send_photo_stores_the_png_paced_with_the_messages(clock, tg, minter):
    transport = transport_for(tg, clock, minter)
    image = png()

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        ref = await transport.send(outgoing(REP1, rep_payload()))
        photo = await transport.send_photo(
            ref, filename="aging.png", content=image, caption="Aging <by tier> " + "x" * 2000
        )
        await transport.send_photo(TEAM_GROUP, filename="aging.png", content=image)
        return ref, photo

    ref, photo = asyncio.run(main())

    (stored,) = tg.photos(REP1)
    assert stored.data == image and stored.filename == "aging.png"
    assert (stored.width, stored.height) == (640, 480)
    shown = tg.message(REP1, photo["message_id"])
    assert shown.caption.startswith("Aging <by tier> ") and len(shown.caption) == 1024
    assert shown.caption.endswith("…") and shown.parse_mode is None
    assert photo == {"chat_id": REP1, "message_id": ref["message_id"] + 1}
    (call,) = [c for c in tg.calls("sendPhoto") if int(c.params["chat_id"]) == REP1]
    assert call.at - sends(tg, REP1)[0].at >= 1 - 1e-3  # one chat, one message a second
    assert len(tg.photos(TEAM_GROUP)) == 1


def test_from_settings_builds_a_plain_bot_for_the_configured_server(clock, tg, minter):
    config = TelegramSettings(
        bot_token=DEFAULT_TOKEN,
        api_base_url=tg.base_url,
        per_chat_interval_seconds=2.0,
        group_interval_seconds=4.0,
        global_per_second=10.0,
    )
    transport = TelegramTransport.from_settings(config, minter=minter, clock=clock)

    assert transport.bot.base_url == f"{tg.base_url}{DEFAULT_TOKEN}"
    assert (transport.pacer.per_chat_interval, transport.pacer.group_interval) == (2.0, 4.0)
    assert transport.pacer.global_per_second == 10.0

    async def twice() -> None:
        await transport.send(outgoing(REP1, rep_payload()))
        await transport.send(outgoing(REP1, rep_payload()))

    asyncio.run(twice())
    assert gaps(sends(tg, REP1)) == [pytest.approx(2.0, abs=1e-3)]
    with pytest.raises(ValueError, match="bot_token"):
        make_bot(TelegramSettings())


# --- the pacer -------------------------------------------------------------------------------


def test_chat_pacer_books_distinct_slots_per_chat_group_and_overall(clock):
    pacer = ChatPacer(clock, per_chat_interval=1.0, group_interval=3.0, global_per_second=25.0)
    t0 = clock.now().timestamp()

    assert [pacer.reserve(REP1) - t0 for _ in range(3)] == pytest.approx([0, 1, 2])
    assert [pacer.reserve(TEAM_GROUP) - t0 for _ in range(3)] == pytest.approx([0.04, 3.04, 6.04])
    others = [pacer.reserve(7000 + i) - t0 for i in range(30)]
    assert max(others) < 1.4  # not held up behind the slots booked for REP1 and the group
    booked = sorted([0, 1, 2, 0.04, 3.04, 6.04, *others])
    assert all(b - a >= 0.04 - 1e-6 for a, b in itertools.pairwise(booked))  # 25 a second

    pacer.pause(REP2, 7)
    assert pacer.reserve(REP2) - t0 == pytest.approx(7)
    assert pacer.reserve(REP3) - t0 < 7  # only that chat is held


def test_concurrent_waiters_never_go_before_their_slot(clock):
    pacer = ChatPacer(clock, per_chat_interval=1.0)
    t0 = clock.now().timestamp()
    went: list[float] = []

    async def send() -> None:
        await pacer.wait(REP1)
        went.append(clock.now().timestamp() - t0)

    async def main() -> None:
        await asyncio.gather(*(send() for _ in range(5)))

    asyncio.run(main())
    assert sorted(went)[-1] >= 4 - 1e-6  # five sends to one chat need at least 4 s
    assert sorted(went) == went  # in booking order


# --- error mapping ---------------------------------------------------------------------------


def test_retry_after_is_read_as_int_or_timedelta(monkeypatch):
    assert retry_after_seconds(RetryAfter(7)) == 7.0  # PTB_TIMEDELTA=true: a timedelta
    assert isinstance(RetryAfter(7).retry_after, dt.timedelta)
    monkeypatch.delenv("PTB_TIMEDELTA")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PTB's own constructor warns about the int
        exc = RetryAfter(7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # … but reading it here does not
        mapped = map_telegram_error(exc)
    assert isinstance(mapped, RateLimited) and mapped.retry_after == 7.0


@pytest.mark.parametrize(
    ("exc", "kind", "unreachable"),
    [
        (Forbidden("Forbidden: bot was blocked by the user"), PermanentSendError, True),
        (Forbidden("Forbidden: user is deactivated"), PermanentSendError, True),
        (Forbidden("Forbidden: bot was kicked from the group chat"), PermanentSendError, True),
        (BadRequest("Bad Request: chat not found"), PermanentSendError, True),
        (BadRequest("Bad Request: user not found"), PermanentSendError, True),
        (BadRequest("Bad Request: PEER_ID_INVALID"), PermanentSendError, True),
        (ChatMigrated(-1001234567890), PermanentSendError, True),
        (BadRequest("Bad Request: can't parse entities: x"), PermanentSendError, False),
        (BadRequest("Bad Request: message is too long"), PermanentSendError, False),
        (BadRequest("Bad Request: BUTTON_DATA_INVALID"), PermanentSendError, False),
        (InvalidToken("Unauthorized"), PermanentSendError, False),
        (EndPointNotFound("Not Found"), PermanentSendError, False),
        (TimedOut(), TransientSendError, None),
        (NetworkError("Bad Gateway (502)"), TransientSendError, None),
    ],
)
def test_error_mapping(exc, kind, unreachable):
    mapped = map_telegram_error(exc)
    assert type(mapped) is kind
    if unreachable is not None:
        assert mapped.unreachable is unreachable


def test_real_errors_from_the_fake_map_as_expected(clock, tg, minter):
    transport = transport_for(tg, clock, minter)
    tg.script(REP1, (400, "Bad Request: can't parse entities: Unclosed start tag"), 503)
    tg.script(REP2, (403, "Forbidden: user is deactivated"))

    async def attempt(chat_id: int) -> Exception:
        try:
            await transport.send(outgoing(chat_id, rep_payload()))
        except Exception as exc:
            return exc
        raise AssertionError("sent")

    async def main() -> list[Exception]:
        return [await attempt(REP1), await attempt(REP1), await attempt(REP2)]

    parse, unavailable, deactivated = asyncio.run(main())
    assert isinstance(parse, PermanentSendError) and not parse.unreachable
    assert parse.reason == "Can't parse entities: unclosed start tag"
    assert isinstance(unavailable, TransientSendError)
    assert "Service Unavailable (503)" in str(unavailable)
    assert isinstance(deactivated, PermanentSendError) and deactivated.unreachable


def test_a_wrong_token_is_permanent_and_a_dead_server_transient(clock, tg, minter):
    wrong = TelegramSettings(bot_token="123456789:" + "B" * 35, api_base_url=tg.base_url)
    transport = TelegramTransport.from_settings(wrong, minter=minter, clock=clock)
    with pytest.raises(PermanentSendError, match="InvalidToken") as bad:
        asyncio.run(transport.send(outgoing(REP1, rep_payload())))
    assert not bad.value.unreachable

    with FakeTelegramAPI() as gone:
        url = gone.base_url
    dead = TelegramSettings(bot_token=DEFAULT_TOKEN, api_base_url=url)
    transport = TelegramTransport.from_settings(dead, minter=minter, clock=clock)
    with pytest.raises(TransientSendError):
        asyncio.run(transport.send(outgoing(REP1, rep_payload())))


def test_every_button_gets_a_token_of_its_own(clock, tg, minter):
    transport = transport_for(tg, clock, minter)
    payload = rep_payload()
    asyncio.run(transport.send(outgoing(REP1, payload)))
    buttons = message_buttons(compose(payload, "en"))
    assert len(minter.issued) == len(buttons) == 4
