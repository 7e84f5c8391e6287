"""The Slack transport: Block Kit rendering, and the real dispatcher sending through a real
``slack_sdk.WebClient`` to the fake Slack Web API (tests/fakes/slack_api.py) on a FakeClock.

The fake shares the dispatcher's clock, so its per-channel rate limit and the dispatcher's
pauses run on the same (fake) time and nothing sleeps for real.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from slack_sdk import WebClient
from sqlalchemy import Engine

from bot.compose import compose
from bot.messages import Button, Fact, Message, Section
from bot.slack_render import MAX_SECTION_TEXT, escape_mrkdwn, render_blocks
from bot.transports.base import PermanentSendError, RateLimited, TransientSendError
from bot.transports.slack import SlackTransport, make_web_client
from jobs.clock import FakeClock
from jobs.dispatch import Dispatcher
from tests.fakes.slack_api import FakeSlackAPI
from tests.support.outbox_data import (
    NOW,
    FixedRandom,
    person,
    put,
    reminders,
    row,
    rows,
    seed_people,
    settings,
)

REP1_DM = "DREP0001"  # the fake's DM with UREP0001 (rep01 in seed_people)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def slack(clock: FakeClock) -> Iterator[FakeSlackAPI]:
    users = {f"UREP{i:04d}" for i in range(1, 4)} | {"UADM01", "UADM02", "UZH01"}
    with FakeSlackAPI(now=lambda: clock.now().timestamp(), users=users) as api:
        yield api


def transport_for(slack: FakeSlackAPI, token: str | None = None) -> SlackTransport:
    return SlackTransport(make_web_client(token or slack.token, slack.url))


def dispatcher_for(
    engine: Engine,
    clock: FakeClock,
    transport: SlackTransport,
    rng: random.Random | None = None,
    **outbox: Any,
) -> Dispatcher:
    return Dispatcher(engine, settings(**outbox), {"slack": transport}, clock, rng=rng)


def deliver_everything(engine: Engine, clock: FakeClock, dispatcher: Dispatcher) -> int:
    """Drain; move the clock to the next due row; repeat until nothing is pending."""
    for rounds in range(1, 30):
        asyncio.run(dispatcher.drain())
        pending = rows(engine, status="pending")
        if not pending:
            return rounds
        clock.set(max(clock.now(), min(r.next_attempt_at for r in pending)))
    raise AssertionError("messages still pending after 30 rounds")


def texts(blocks: list[dict[str, Any]]) -> str:
    out = []
    for b in blocks:
        if "text" in b:
            out.append(b["text"]["text"])
        out += [e["text"]["text"] if "text" in e and isinstance(e["text"], dict) else
                e.get("text", "") for e in b.get("elements", [])]  # fmt: skip
    return "\n".join(out)


# --- rendering -----------------------------------------------------------------------------


def test_render_blocks_lays_out_a_message_and_escapes_mrkdwn():
    message = Message(
        title="Receivables <today>",
        summary="2 invoices & more",
        sections=[
            Section(
                heading="Overdue <30 days> & more",
                text="1 new",
                facts=[Fact("owner", "A&B")],
                lines=["INV-1 · <Acme> · ¥1.00", "INV-2 · Beta · ¥2.00"],
                more=3,
                buttons=[Button("Acknowledge", "ack", "INV-1|overdue", "primary")],
            )
        ],
        buttons=[Button("Dispute", "ack", "INV-1", "danger"), Button("Later", "snooze", "x")],
        footer="CreditBot",
    )
    blocks, fallback = render_blocks(message)

    assert fallback == "2 invoices &amp; more"
    assert [b["type"] for b in blocks] == [
        "header", "section", "context", "actions", "actions", "context",
    ]  # fmt: skip
    assert blocks[0]["text"] == {"type": "plain_text", "text": "Receivables <today>", "emoji": True}
    assert blocks[1]["text"]["type"] == "mrkdwn"
    assert blocks[1]["text"]["text"] == (
        "*Overdue &lt;30 days&gt; &amp; more*\n1 new\n*owner:* A&amp;B\n"
        "• INV-1 · &lt;Acme&gt; · ¥1.00\n• INV-2 · Beta · ¥2.00"
    )
    assert blocks[2]["elements"][0]["text"] == "… and 3 more"
    section_button = blocks[3]["elements"][0]
    assert section_button["value"] == "INV-1|overdue"
    assert section_button["style"] == "primary"
    ids = [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert len(set(ids)) == 3 and all(i.split(":")[0] in ("ack", "snooze") for i in ids)
    assert "style" not in blocks[4]["elements"][1]
    assert blocks[-1]["elements"][0]["text"] == "CreditBot"
    assert len({b["block_id"] for b in blocks}) == len(blocks)


def test_escape_mrkdwn_escapes_only_what_slack_asks():
    assert escape_mrkdwn("a & b <c> *d* _e_") == "a &amp; b &lt;c&gt; *d* _e_"


def test_render_blocks_stays_within_50_blocks_and_says_how_many_sections_were_left_out():
    sections = [
        Section(heading=f"S{i}", lines=["x"], more=1, buttons=[Button("Ack", "ack", str(i))])
        for i in range(40)
    ]  # 3 blocks each: 120 blocks' worth
    blocks, _ = render_blocks(Message("T", "s", sections, footer="f"))

    assert len(blocks) <= 50
    shown = [b for b in blocks if b["type"] == "section"]
    last_context = blocks[-2]["elements"][0]["text"]
    assert blocks[-1]["elements"][0]["text"] == "f"  # the footer stays
    assert last_context == f"… and {40 - len(shown)} more section(s)"
    assert len(shown) == 15  # header + footer + "more sections" + 15 × 3 = 48; a 16th: 51


def test_render_blocks_cuts_a_long_section_on_a_line_boundary():
    lines = [f"INV-{i:04d} · customer {i} · ¥{i}.00 · 12 days overdue" for i in range(400)]
    blocks, _ = render_blocks(Message("T", "s", [Section(heading="Overdue", lines=lines, more=5)]))

    text = blocks[1]["text"]["text"]
    assert len(text) <= MAX_SECTION_TEXT
    shown = text.split("\n")[1:]
    assert shown == [f"• {line}" for line in lines[: len(shown)]]  # whole lines, in order
    assert len(shown) > 40  # it used the room it had
    assert blocks[2]["elements"][0]["text"] == f"… and {400 - len(shown) + 5} more"


def test_render_blocks_splits_buttons_and_bounds_ids():
    buttons = [Button(f"B{i}", "a" * 300, str(i)) for i in range(30)]
    blocks, _ = render_blocks(Message("T" * 200, "s", buttons=buttons))

    assert len(blocks[0]["text"]["text"]) == 150
    actions = [b for b in blocks if b["type"] == "actions"]
    assert [len(b["elements"]) for b in actions] == [25, 5]
    ids = [e["action_id"] for b in actions for e in b["elements"]]
    assert len(set(ids)) == 30 and max(len(i) for i in ids) == 255


def test_a_chinese_reminder_renders_in_chinese(engine):
    seed_people(engine, zh01={"role": "rep", "slack_user_id": "UZH01", "locale": "zh_CN"})
    (msg,) = reminders(engine, ["zh01"])
    blocks, fallback = render_blocks(compose(msg.payload, "zh_CN"))
    assert blocks[0]["text"]["text"].startswith("应收账款催收提醒")
    assert fallback == "今天有 1 张发票需要您跟进"
    assert "逾期 12 天" in texts(blocks)


# --- through the dispatcher to the fake Slack ----------------------------------------------


def test_a_reminder_reaches_the_recipients_dm_and_can_be_updated(engine, clock, slack):
    seed_people(engine)
    (mid,) = put(engine, reminders(engine, ["rep01"]))
    transport = transport_for(slack)

    report = asyncio.run(dispatcher_for(engine, clock, transport).drain())

    assert (report.sent, report.errors) == (1, [])
    (stored,) = slack.messages[REP1_DM]
    assert stored.text == "1 invoice(s) need your attention today"
    assert stored.blocks[0]["type"] == "header"
    assert "INV-2026-0001" in texts(stored.blocks)
    assert row(engine, mid).platform_ref == {"channel": REP1_DM, "ts": stored.ts}
    (call,) = slack.calls("chat.postMessage")
    assert call.params["channel"] == "UREP0001"  # posted to the user id: Slack picks the DM

    ref = row(engine, mid).platform_ref
    done = Message("Acknowledged", "Acknowledged by Rep 1", [Section("Done", lines=["INV-1"])])
    assert asyncio.run(transport.update(ref, done)) == ref
    assert stored.text == "Acknowledged by Rep 1"
    assert stored.blocks[0]["text"]["text"] == "Acknowledged"
    assert len(stored.edits) == 1
    with pytest.raises(TransientSendError, match="message_not_found"):
        asyncio.run(transport.update({"channel": REP1_DM, "ts": "1.000999"}, done))


def test_a_chinese_recipient_gets_chinese_on_slack(engine, clock, slack):
    seed_people(engine, zh01={"role": "rep", "slack_user_id": "UZH01", "locale": "zh_CN"})
    put(engine, reminders(engine, ["zh01"]))
    asyncio.run(dispatcher_for(engine, clock, transport_for(slack)).drain())
    (stored,) = slack.messages["DZH01"]
    assert stored.text == "今天有 1 张发票需要您跟进"
    assert stored.blocks[0]["text"]["text"].startswith("应收账款催收提醒")


def test_our_pacer_keeps_one_recipient_under_slacks_limit(engine, clock, slack):
    seed_people(engine)
    ids = put(engine, reminders(engine, ["rep01"] * 5))
    dispatcher = dispatcher_for(engine, clock, transport_for(slack))  # 1 s per recipient

    deliver_everything(engine, clock, dispatcher)

    assert [c.status for c in slack.calls("chat.postMessage")] == [200] * 5
    assert sorted(row(engine, i).platform_ref["ts"] for i in ids) == sorted(
        m.ts for m in slack.messages[REP1_DM]
    )


def test_slacks_429_and_retry_after_deliver_each_message_exactly_once(engine, clock, slack):
    seed_people(engine)
    ids = put(engine, reminders(engine, ["rep01"] * 6 + ["rep02"] * 2))
    # no gap per recipient: only the fake's limiter and our Retry-After handling hold the line
    dispatcher = dispatcher_for(
        engine, clock, transport_for(slack), per_recipient_interval_seconds=0
    )

    deliver_everything(engine, clock, dispatcher)

    posts = slack.calls("chat.postMessage")
    limited = [c for c in posts if c.status == 429]
    assert limited, "the burst should have hit the fake's per-channel limit"
    assert all(c.error == "ratelimited" for c in limited)
    assert len(limited) <= len(ids)  # no 429 loop
    assert [r.status for r in rows(engine)] == ["sent"] * 8
    assert len(slack.messages[REP1_DM]) == 6 and len(slack.messages["DREP0002"]) == 2
    refs = sorted(row(engine, i).platform_ref["ts"] for i in ids)
    stored = sorted(m.ts for ms in slack.messages.values() for m in ms)
    assert refs == stored and len(set(refs)) == 8
    # after each 429 the next post to any channel waited out Retry-After (whole seconds)
    for hit in limited:
        later = [c for c in posts if c.at > hit.at]
        assert all(c.at >= hit.at + 1 - 1e-6 for c in later)
    assert (clock.now() - NOW).total_seconds() < 10  # paused, not backed off for minutes


def test_channel_not_found_fails_the_row_marks_the_person_and_alerts_admins(engine, clock, slack):
    people = seed_people(engine, ghost={"role": "rep", "slack_user_id": "UGONE"})
    (mid,) = put(engine, reminders(engine, ["ghost"]))
    dispatcher = dispatcher_for(engine, clock, transport_for(slack))

    report = asyncio.run(dispatcher.drain())

    assert report.failed == 1
    failed = row(engine, mid)
    assert (failed.status, failed.last_error) == ("failed", "channel_not_found")
    assert person(engine, "ghost").unreachable_reason == "channel_not_found"
    alerts = rows(engine, kind="admin_alert")
    assert sorted(a.recipient_id for a in alerts) == sorted([people["adm01"], people["adm02"]])
    assert [c.params["channel"] for c in slack.calls("chat.postMessage")][:1] == ["UGONE"]
    # the alerts themselves go out through Slack to the admins' DMs (the same drain)
    assert {a.status for a in alerts} == {"sent"}
    assert "channel_not_found" in slack.messages["DADM01"][0].text
    assert slack.messages.get("DGONE") is None


def test_a_500_is_retried_with_backoff_then_delivered(engine, clock, slack):
    seed_people(engine)
    (mid,) = put(engine, reminders(engine, ["rep01"]))
    slack.script("UREP0001", 500, 500)
    dispatcher = dispatcher_for(
        engine, clock, transport_for(slack), rng=FixedRandom(0.5), backoff_base_seconds=30
    )

    asyncio.run(dispatcher.drain())
    first = row(engine, mid)
    assert (first.status, first.attempts) == ("pending", 1)
    assert "HTTP 500" in first.last_error
    assert first.next_attempt_at == NOW + timedelta(seconds=30)  # base · 2⁰ · jitter 1

    deliver_everything(engine, clock, dispatcher)

    posts = slack.calls("chat.postMessage")
    assert [c.status for c in posts] == [500, 500, 200]
    assert [c.at - NOW.timestamp() for c in posts] == [0, 30, 90]  # backoff 30 s, then 60 s
    assert row(engine, mid).status == "sent"
    assert len(slack.messages[REP1_DM]) == 1


def test_invalid_auth_is_permanent_and_does_not_blame_the_recipient(engine, clock, slack):
    seed_people(engine)
    (mid,) = put(engine, reminders(engine, ["rep01"]))
    dispatcher = dispatcher_for(engine, clock, transport_for(slack, token="xoxb-wrong"))

    report = asyncio.run(dispatcher.drain())

    assert report.failed == 3  # the reminder, then the two admin alerts about it (no loop)
    assert (row(engine, mid).status, row(engine, mid).last_error) == ("failed", "invalid_auth")
    assert rows(engine, kind="admin_alert", status="pending") == []
    assert person(engine, "rep01").unreachable_reason is None
    assert slack.messages == {}
    assert [c.error for c in slack.calls("chat.postMessage")] == ["invalid_auth"] * 3  # + alerts


# --- the transport alone ---------------------------------------------------------------------


def test_error_mapping(slack):
    transport = transport_for(slack)

    async def post(channel: str) -> Any:
        return await transport._call("chat_postMessage", channel=channel, text="x")

    slack.script("UREP0001", "missing_scope", "not_in_channel", "fatal_error", 503)
    with pytest.raises(PermanentSendError) as scope:
        asyncio.run(post("UREP0001"))
    assert (scope.value.reason, scope.value.unreachable) == ("missing_scope", False)
    with pytest.raises(PermanentSendError) as gone:
        asyncio.run(post("UREP0001"))
    assert (gone.value.reason, gone.value.unreachable) == ("not_in_channel", True)
    with pytest.raises(TransientSendError, match="fatal_error"):
        asyncio.run(post("UREP0001"))
    with pytest.raises(TransientSendError, match="HTTP 503"):
        asyncio.run(post("UREP0001"))
    asyncio.run(post("UREP0001"))
    asyncio.run(post("UREP0001"))
    with pytest.raises(RateLimited) as limited:
        asyncio.run(post("UREP0001"))
    assert limited.value.retry_after == 1.0


def test_a_dead_server_is_a_transient_error():
    with FakeSlackAPI() as gone:
        url = gone.url
    transport = SlackTransport(make_web_client("xoxb-x", url, timeout=2))
    with pytest.raises(TransientSendError, match="connection"):
        asyncio.run(transport._call("auth_test"))


def test_the_transport_refuses_a_client_that_retries_or_sleeps_by_itself():
    with pytest.raises(ValueError, match="retry_handlers"):
        SlackTransport(WebClient(token="xoxb-x"))  # slack_sdk's default: ConnectionErrorRetry…
    assert SlackTransport(make_web_client("xoxb-x")).client.retry_handlers == []
