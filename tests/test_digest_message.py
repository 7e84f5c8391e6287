"""The daily digest as a message: composed in English and Simplified Chinese from a payload
of the digest contract, rendered for Slack (Block Kit limits) and Telegram (HTML, 4,096
characters), and delivered — the text, then the aging chart in the same conversation (fake
Slack files, fake Telegram photos); a chart that fails after the text does not resend it."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, update

from bot import charts
from bot.compose import compose
from bot.messages import Message
from bot.slack_render import MAX_BLOCKS, MAX_HEADER_TEXT, MAX_SECTION_TEXT, render_blocks
from bot.telegram_render import MAX_TEXT, render_parts, text_length
from bot.transports.base import Outgoing
from bot.transports.console import ConsoleTransport
from bot.transports.slack import SlackTransport, make_web_client
from bot.transports.telegram import TelegramTransport
from credit.settings import OutboxSettings, Settings, TelegramSettings
from credit.store.db import write_session
from credit.store.models import Person
from credit.store.outbox import NewMessage
from jobs.clock import FakeClock
from jobs.dispatch import Dispatcher
from tests.fakes.slack_api import FakeSlackAPI, RateLimit
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegramAPI
from tests.fakes.telegram_api import RetryAfter as ScriptedRetryAfter
from tests.support.digest_payloads import BUSINESS_DATE, digest_payload
from tests.support.outbox_data import NOW, put, row, seed_people
from tests.support.outbox_data import settings as slack_settings

PNG = b"\x89PNG\r\n\x1a\n"
USER, DM = "UREP0001", "DREP0001"  # rep01 of seed_people, and the fake's DM with them
CHAT = 5001


def headings(message: Message) -> list[str]:
    return [s.heading for s in message.sections]


def section(message: Message, heading: str) -> Any:
    (found,) = [s for s in message.sections if s.heading == heading]
    return found


def facts(message: Message, heading: str) -> dict[str, str]:
    return {f.label: f.value for f in section(message, heading).facts}


# --- composing -----------------------------------------------------------------------------------


def test_a_regional_managers_digest_in_english() -> None:
    m = compose(digest_payload("region"))

    assert m.title == "Daily receivables digest — region East — Nov 25, 2026"
    assert m.summary == ("Overdue CN¥850,150.25 + $4,200.00 of CN¥1,662,495.92 + $4,200.00 open")
    assert headings(m) == [
        "Aging by bucket (days past due)",
        "DSO and collection rate",
        "Most overdue customers",
        "Promises to pay due today",
        "Broken promises to pay",
        "Credit holds set",
        "Credit holds lifted",
        "Shipment requests waiting for a decision",
        "Bad-debt provision",
    ]
    aging = facts(m, "Aging by bucket (days past due)")
    assert aging == {
        "current": "CN¥812,345.67 (+CN¥12,000.00 since the last digest)",
        "1–30 days": "CN¥356,000.00 (-CN¥8,400.50 since the last digest)",
        "31–60 days": "CN¥198,500.25 + $4,200.00 "
        "(+CN¥15,000.00 / +$4,200.00 since the last digest)",
        "61–90 days": "CN¥87,000.00",  # no change: nothing said
        "91–180 days": "CN¥143,250.00 (+CN¥2,300.00 since the last digest)",
        "over 180 days": "CN¥65,400.00 (-CN¥1,200.00 since the last digest)",
        "Total open": "CN¥1,662,495.92 + $4,200.00",
        "Total overdue": "CN¥850,150.25 + $4,200.00",
    }
    assert facts(m, "DSO and collection rate") == {
        "DSO": "47.3 days this month · 52.8 days this quarter",
        "Collection rate": "85.3% this month · n/a this quarter",
    }
    assert section(m, "Most overdue customers").lines[0] == (
        "Acme Trading Co. (C001) · CN¥98,000.00 overdue · up to 200 days"
    )
    assert section(m, "Promises to pay due today").lines == [
        "INV-2026-000123 · Acme Trading Co. · CN¥25,000.00 · promised for Nov 25, 2026"
    ]
    assert section(m, "Credit holds set").lines == [
        "Cobalt <Ltd> (C003) — overdue 2–6 months (61 days)"
    ]
    assert section(m, "Shipment requests waiting for a decision").lines == [
        "Request 41 · Cobalt <Ltd> · CN¥300,000.00 · waiting 5 h",
        "Request 38 · Bolt & Nut Ltd · $12,500.00 · waiting 2 d 4 h",
    ]
    provision = section(m, "Bad-debt provision")
    assert [(f.label, f.value) for f in provision.facts] == [("Total provision", "CN¥66,360.00")]
    assert provision.lines == [
        "1–30 days at 2%: CN¥7,120.00 on CN¥356,000.00",
        "over 180 days at 60%: CN¥39,240.00 on CN¥65,400.00",
        "Specific: Cobalt <Ltd> (C003): CN¥20,000.00 on CN¥20,000.00",
    ]
    assert m.footer and not m.buttons and not any(s.buttons for s in m.sections)


def test_the_same_digest_in_simplified_chinese() -> None:
    m = compose(digest_payload("region", locale="zh_CN", chinese=True))

    assert m.locale == "zh_CN"
    assert m.title == "应收账款每日汇总 — 华东区 — 2026年11月25日"
    assert m.summary.startswith("逾期 ¥850,150.25 + US$4,200.00，未收合计 ¥1,662,495.92")
    aging = facts(m, "账龄分布（逾期天数）")
    assert aging["未逾期"] == "¥812,345.67（较上次汇总 +¥12,000.00）"
    assert aging["180 天以上"] == "¥65,400.00（较上次汇总 -¥1,200.00）"
    assert facts(m, "应收账款周转天数（DSO）和回款率") == {
        "DSO": "本月 47.3 天 · 本季度 52.8 天",
        "回款率": "本月 85.3% · 本季度 暂无",
    }
    assert section(m, "逾期最多的客户").lines[0] == (
        "上海浦东新材料有限公司（C001）· 逾期 ¥98,000.00 · 最长 200 天"
    )
    assert section(m, "待审批的发货申请").lines[1].endswith("已等待 2 天 4 小时")
    assert "坏账准备" in headings(m)


def test_the_company_digest_has_the_region_table() -> None:
    p = digest_payload("company")
    p["regions"][0]["buckets"]["1_30"]["USD"] = "0.00"  # a currency at zero is left out
    m = compose(p)
    assert m.title == "Daily receivables digest — company-wide — Nov 25, 2026"
    regions = section(m, "By region (overdue, then per bucket)")
    assert [line.split(":")[0] for line in regions.lines] == ["East", "South", "North", "West"]
    assert regions.lines[0].startswith("East: overdue CN¥425,075.12 — 1–30 days CN¥178,000.00 · ")
    assert "current" not in regions.lines[0]  # the overdue buckets only
    assert "$0.00" not in regions.lines[0]
    assert "By region (overdue, then per bucket)" not in headings(compose(digest_payload("region")))


def test_a_reps_digest_starts_with_their_day_and_repeats_nothing() -> None:
    m = compose(digest_payload("rep"))
    assert m.title == "Daily receivables digest — Lei Wang — Nov 25, 2026"
    assert headings(m)[0] == "Your day"
    assert section(m, "Your day").lines == [
        "Promise due today: INV-2026-000123 · Acme Trading Co. · CN¥25,000.00",
        "INV-2026-000200 · Bolt & Nut Ltd · CN¥43,000.00 enters "
        "“1 month overdue: warn of supply stop, get a repayment plan”",
        "Your request 41 · Cobalt <Ltd> · CN¥300,000.00 · waiting 5 h",
    ]
    for absent in (
        "Promises to pay due today",  # in "your day"
        "Shipment requests waiting for a decision",
        "Bad-debt provision",
        "By region (overdue, then per bucket)",
    ):
        assert absent not in headings(m)
    empty = digest_payload("rep")
    empty["your_day"] = {"promises_due_today": [], "entering_tier": [], "pending_requests": []}
    assert section(compose(empty), "Your day").text == "Nothing due from you today."


def test_long_lists_say_how_many_more_counting_what_the_payload_left_out() -> None:
    p = digest_payload("region", many=60)
    # the payload lists at most 50 and counts all (credit.store.digest.LIST_LIMIT)
    p["promises_due_today"] = p["promises_due_today"][:50]
    p["counts"] = {"promises_due_today": 75}
    m = compose(p)
    promises = section(m, "Promises to pay due today")
    assert len(promises.lines) == 11 and promises.lines[-1] == "… and 65 more"
    top = section(m, "Most overdue customers")
    assert len(top.lines) == 11 and top.lines[-1] == "… and 53 more"
    zh = compose(digest_payload("region", locale="zh_CN", many=60))
    assert section(zh, "逾期最多的客户").lines[-1] == "… 另有 53 项"  # items, not invoices (张)


def test_no_change_and_no_ratios_yet() -> None:
    """The first digest: no earlier snapshot (change None), nothing billed yet (ratios None)."""
    p = digest_payload("region", trend_days=1)
    for b in p["buckets"]:
        b["change"] = None
    p["dso"] = {"month": None, "quarter": None}
    p["collection_rate"] = {"month": None, "quarter": None}
    for key in ("promises_due_today", "promises_broken", "holds_on", "holds_off"):
        p[key] = []
    p["pending_approvals"] = []
    p["provision"] = {"brackets": [], "specific": [], "total": {"CNY": "0.00"}}
    m = compose(p)
    assert headings(m) == [
        "Aging by bucket (days past due)",
        "DSO and collection rate",
        "Most overdue customers",
    ]
    assert facts(m, "Aging by bucket (days past due)")["current"] == "CN¥812,345.67"
    assert facts(m, "DSO and collection rate")["DSO"] == "n/a this month · n/a this quarter"


# --- rendering -----------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["en", "zh_CN"])
@pytest.mark.parametrize("scope", ["region", "company", "rep"])
def test_slack_blocks_stay_within_block_kit_limits(scope: str, locale: str) -> None:
    for many in (0, 60):
        p = digest_payload(scope, locale=locale, chinese=locale == "zh_CN", many=many)
        blocks, text = render_blocks(compose(p))
        assert len(blocks) <= MAX_BLOCKS
        assert blocks[0]["type"] == "header"
        assert len(blocks[0]["text"]["text"]) <= MAX_HEADER_TEXT
        for b in blocks:
            if b["type"] == "section":
                assert len(b["text"]["text"]) <= MAX_SECTION_TEXT
        assert not [b for b in blocks if b["type"] == "actions"]
        assert text  # the fallback (notification) text
    shown = "\n".join(b["text"]["text"] for b in blocks if b["type"] == "section")
    if locale == "en" and scope != "rep":
        assert "Cobalt &lt;Ltd&gt;" in shown and "Bolt &amp; Nut Ltd" in shown  # escaped


@pytest.mark.parametrize("locale", ["en", "zh_CN"])
def test_telegram_html_parts_within_4096(locale: str) -> None:
    for many in (0, 60):
        p = digest_payload("company", locale=locale, chinese=locale == "zh_CN", many=many)
        parts = render_parts(compose(p), lambda b: "unused")
        assert all(text_length(part.text) <= MAX_TEXT for part in parts)
        assert all(part.keyboard is None for part in parts)  # a digest has no buttons
    html = "\n".join(part.text for part in render_parts(compose(digest_payload("region")), str))
    assert html.startswith("<b>Daily receivables digest — region East — Nov 25, 2026</b>")
    assert "Cobalt &lt;Ltd&gt; (C003)" in html
    assert "<b>Aging by bucket (days past due)</b>" in html


# --- delivery: Slack -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_charts() -> None:
    charts.clear_cache()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def slack(clock: FakeClock) -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI(now=lambda: clock.now().timestamp(), users={USER, "UREP0002"}) as api:
        yield api


def slack_transport(slack: FakeSlackAPI) -> SlackTransport:
    return SlackTransport(make_web_client(slack.token, slack.url))


def digest_out(address: dict[str, Any], payload: dict[str, Any] | None = None) -> Outgoing:
    return Outgoing(7, "digest", address, payload or digest_payload("region"))


def slack_steps(slack: FakeSlackAPI) -> list[str]:
    wanted = {"chat.postMessage", "files.getUploadURLExternal", "upload",
              "files.completeUploadExternal"}  # fmt: skip
    return [r.method for r in slack.requests if r.method in wanted]


def test_slack_posts_the_digest_then_uploads_the_chart_to_the_same_dm(slack) -> None:
    ref = asyncio.run(slack_transport(slack).send(digest_out({"slack_user_id": USER})))

    (posted,) = slack.messages[DM]
    assert posted.blocks[0]["text"]["text"].startswith("Daily receivables digest — region East")
    assert ref["channel"] == DM and ref["ts"] == posted.ts
    assert ref["chart"] == "sent"
    stored = slack.files[ref["chart_file_id"]]
    assert stored.channels == [DM]  # the DM the digest went to
    assert stored.filename == f"aging-{BUSINESS_DATE}.png"
    assert stored.title == "Receivables aging — region East — Nov 25, 2026"
    assert stored.data is not None and stored.data.startswith(PNG)
    assert stored.data == charts.aging_chart(digest_payload("region"))
    assert slack_steps(slack) == [
        "chat.postMessage",
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ]
    assert not slack.calls("conversations.open")  # the ref already names the DM


def test_slack_chart_title_in_the_recipients_language(slack) -> None:
    out = digest_out({"slack_user_id": USER, "locale": "zh_CN"})
    ref = asyncio.run(slack_transport(slack).send(out))
    assert slack.files[ref["chart_file_id"]].title == "应收账款账龄 — East — 2026年11月25日"
    assert slack.messages[DM][0].blocks[0]["text"]["text"].startswith("应收账款每日汇总")


@pytest.mark.parametrize(
    "script",
    [("upload", 500), ("files.getUploadURLExternal", RateLimit(30)),
     ("files.completeUploadExternal", "not_in_channel")],
)  # fmt: skip
def test_a_failed_slack_upload_is_recorded_not_raised(slack, script) -> None:
    slack.script(*script)
    ref = asyncio.run(slack_transport(slack).send(digest_out({"slack_user_id": USER})))

    assert ref["chart"].startswith("failed: ")
    assert "chart_file_id" not in ref
    assert len(slack.messages[DM]) == 1 and ref["ts"] == slack.messages[DM][0].ts


def test_a_chart_that_cannot_be_drawn_is_recorded_too(slack, monkeypatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("no font")

    monkeypatch.setattr(charts, "aging_chart", broken)
    ref = asyncio.run(slack_transport(slack).send(digest_out({"slack_user_id": USER})))
    assert ref["chart"] == "failed: RuntimeError: no font"
    assert len(slack.messages[DM]) == 1 and not slack.files


def test_other_kinds_get_no_chart(slack) -> None:
    reminder = Outgoing(8, "credit_hold", {"slack_user_id": USER}, {
        "kind": "credit_hold", "credit_holds": [
            {"customer": "C1", "customer_name": "Acme", "on": False}],
    })  # fmt: skip
    ref = asyncio.run(slack_transport(slack).send(reminder))
    assert "chart" not in ref
    assert not slack.calls("files.getUploadURLExternal")


def digest_row(engine: Engine, code: str, channel: str, payload: dict[str, Any]) -> int:
    from sqlalchemy import select

    from credit.store.db import read_session

    with read_session(engine) as s:
        person = s.execute(select(Person).where(Person.code == code)).scalar_one()
    key = f"digest:{person.id}:{BUSINESS_DATE}"
    message = NewMessage(key, person.id, channel, "digest", None, payload, NOW)
    (mid,) = put(engine, [message])
    return mid


def test_through_the_dispatcher_a_failed_upload_does_not_resend_the_text(
    engine, clock, slack
) -> None:
    seed_people(engine)
    mid = digest_row(engine, "rep01", "slack", digest_payload("region"))
    slack.script("upload", 503)
    dispatcher = Dispatcher(engine, slack_settings(), {"slack": slack_transport(slack)}, clock)

    report = asyncio.run(dispatcher.drain())
    again = asyncio.run(dispatcher.drain())

    assert (report.sent, report.retried, again.sent) == (1, 0, 0)
    sent = row(engine, mid)
    assert sent.status == "sent"
    assert sent.platform_ref["channel"] == DM
    assert sent.platform_ref["chart"].startswith("failed: TransientSendError: ")
    assert len(slack.calls("chat.postMessage")) == 1


# --- delivery: Telegram --------------------------------------------------------------------------


class Minter:
    def mint(self, *, action: str, value: str, chat_id: int, person_id: int | None) -> str:
        return secrets.token_urlsafe(12)


@pytest.fixture
def tg(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTelegramAPI]:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    with FakeTelegramAPI(now=lambda: clock.now().timestamp()) as api:
        yield api


def tg_transport(tg: FakeTelegramAPI, clock: FakeClock) -> TelegramTransport:
    return TelegramTransport(tg.bot(), minter=Minter(), clock=clock)


def test_telegram_sends_the_text_then_the_chart_as_a_photo(tg, clock) -> None:
    out = digest_out({"telegram_chat_id": CHAT, "locale": "zh_CN"})
    ref = asyncio.run(tg_transport(tg, clock).send(out))

    stored = tg.messages(CHAT)
    texts = [m for m in stored if m.photo is None]
    (photo_message,) = [m for m in stored if m.photo is not None]
    assert texts and texts[0].plain.startswith("应收账款每日汇总 — East — 2026年11月25日")
    assert photo_message.message_id > texts[-1].message_id  # after the text
    (photo,) = tg.photos(CHAT)
    assert photo.data.startswith(PNG) and photo.filename == f"aging-{BUSINESS_DATE}.png"
    assert photo.width == 900
    assert photo_message.caption == "应收账款账龄 — East — 2026年11月25日"
    assert ref["chart"] == "sent" and ref["chart_message_id"] == photo_message.message_id
    assert ref["message_id"] == texts[-1].message_id  # updates edit the text, not the photo
    sends = [r for r in tg.requests if r.method in ("sendMessage", "sendPhoto")]
    assert sends[-1].method == "sendPhoto"
    assert sends[-1].at - sends[-2].at >= 1.0 - 1e-3  # paced like a message: 1 a second


@pytest.mark.parametrize(
    "answer", [500, ScriptedRetryAfter(20), (400, "Bad Request: IMAGE_PROCESS_FAILED")]
)
def test_a_failed_photo_is_recorded_not_raised(tg, clock, answer) -> None:
    tg.script("sendPhoto", answer)
    ref = asyncio.run(tg_transport(tg, clock).send(digest_out({"telegram_chat_id": CHAT})))

    assert ref["chart"].startswith("failed: ")
    assert not tg.photos(CHAT)
    assert len(tg.calls("sendMessage")) == len(ref["message_ids"])  # each text part once


def test_through_the_dispatcher_on_telegram(engine, clock, tg) -> None:
    seed_people(engine)
    with write_session(engine) as s:
        s.execute(update(Person).where(Person.code == "rep01").values(telegram_chat_id=CHAT))
    mid = digest_row(engine, "rep01", "telegram", digest_payload("rep"))
    tg.script("sendPhoto", 502)
    settings = Settings(
        outbox=OutboxSettings(channels=["telegram"]),
        telegram=TelegramSettings(bot_token=DEFAULT_TOKEN),
    )
    dispatcher = Dispatcher(engine, settings, {"telegram": tg_transport(tg, clock)}, clock)

    first = asyncio.run(dispatcher.drain())
    second = asyncio.run(dispatcher.drain())

    assert (first.sent, first.retried, second.sent) == (1, 0, 0)
    ref = row(engine, mid).platform_ref
    assert ref["chart"].startswith("failed: ")
    assert len(tg.calls("sendMessage")) == len(ref["message_ids"])


# --- the console ---------------------------------------------------------------------------------


def test_the_console_names_the_chart(capsys) -> None:
    import io

    stream = io.StringIO()
    asyncio.run(ConsoleTransport(stream).send(digest_out({"name": "Li Wang"})))
    text = stream.getvalue()
    assert ">>> to Li Wang [digest #7]" in text
    assert "== Daily receivables digest — region East — Nov 25, 2026 ==" in text
    size = len(charts.aging_chart(digest_payload("region")))
    assert text.rstrip().endswith(f"[chart: aging-{BUSINESS_DATE}.png, {size} bytes]")
