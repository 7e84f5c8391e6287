"""Raising a shipment request from chat and the CLI, on SQLite and PostgreSQL.

* Slack: ``/credit request CUSTOMER AMOUNT ORDER`` — a signed slash command into the ASGI app
  (bot.http → Bolt → bot.slack_app), answered ephemerally at the response_url the fake Slack
  hands out.
* Telegram: ``/request CUSTOMER AMOUNT ORDER`` — an update from the fake Bot API processed by
  the real PTB application (bot.telegram_app), answered in the chat.
* CLI: ``creditbot request CUSTOMER AMOUNT ORDER --as PERSON`` (typer's CliRunner) on a
  migrated database.

Each way: within policy → approved at once; over the limit → pending, the cards queued to the
right approvers only (and sent by the real dispatcher to the fake Slack and Telegram);
blacklisted → refused, no card; a bad amount or an unknown customer → a clear error and
nothing written; and whoever raised a request cannot decide it.

The ledger (tests.support.approvals): Rita (rep, North, Slack) looks after Acme Pumps & Co
(C001: CN¥100,000.00 limit, CN¥80,000.00 open of which CN¥20,000.00 is 40 days overdue),
Birch Valves (C002: US$50,000.00 limit, nothing open) and Coal & Coke Ltd (C003,
blacklisted). North's regional managers are Mia (Slack) and Max (Telegram, Chinese); Sam
manages South; Carl is the credit manager; Eve the executive.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, select, update
from typer.testing import CliRunner

from bot import cli
from bot.cli import app as cli_app
from credit.store.approvals import decide
from credit.store.db import make_engine, read_session, write_session
from credit.store.models import AuditLog, OutboxMessage, Person, ShipmentRequest
from tests.support.approvals import (
    CARL,
    EVE_CHAT,
    MAX_CHAT,
    MIA,
    NOBODY,
    NORA,
    RITA,
    SAM,
    World,
    add_customers,
    build_ledger,
    buttons_of,
    open_world,
    texts,
)

RITA_CHAT, STRANGER_CHAT = 7005, 9999
OWN_REQUEST = (
    "Not done: you raised this request or are the customer's rep: someone else must decide it"
)


def make_world(engine: Engine, *, nora: bool = False) -> Iterator[World]:
    build_ledger(engine, nora=nora)
    add_customers(engine)
    with write_session(engine) as s:  # Rita uses Telegram too
        s.execute(update(Person).where(Person.code == "rita").values(telegram_chat_id=RITA_CHAT))
    with open_world(engine) as w:
        yield w


@pytest.fixture
def world(engine: Engine) -> Iterator[World]:
    yield from make_world(engine)


@pytest.fixture
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


def requests(w: World) -> list[tuple[str, str, str, str, str | None]]:
    """(order, status, amount, currency, requester) of every request."""
    with read_session(w.engine) as s:
        rows = s.execute(
            select(ShipmentRequest, Person.code)
            .join(Person, Person.id == ShipmentRequest.requested_by_id, isouter=True)
            .order_by(ShipmentRequest.id)
        ).all()
        return [(r.order_ref, r.status, str(r.amount), r.currency, code) for r, code in rows]


def cards_to(w: World) -> list[str]:
    """Who has an approval card queued, by person code."""
    return [code for code, _row in w.outbox("approval_card")]


def nothing_written(w: World) -> None:
    assert w.count(ShipmentRequest) == 0
    assert w.count(OutboxMessage) == 0
    assert w.audit() == []


def slack_answer(w: World, user: str, text: str) -> str:
    """``/credit TEXT`` typed by ``user``: the one ephemeral answer's text."""
    url = w.slash_command(user, text)
    [answer] = w.slack.responded(url)
    assert answer["response_type"] == "ephemeral"
    return str(answer["text"])


# --- Slack: /credit request ----------------------------------------------------------------------


def test_slack_within_policy_is_approved_at_once(world: World) -> None:
    answer = slack_answer(world, RITA, "request C002 20,000.00 SO-R1")

    assert answer == (
        "✓ Request 1: order SO-R1 for Birch Valves (C002), $20,000.00 — approved at once: "
        "within policy. You may ship."
    )
    assert requests(world) == [("SO-R1", "approved", "20000.00", "USD", "rita")]
    assert world.audit() == [("rita", "shipment.raise", "slack")]
    assert world.count(OutboxMessage) == 0  # no card, and nobody to call back


def test_slack_over_the_limit_waits_for_the_regional_managers_cards(world: World) -> None:
    answer = slack_answer(world, RITA, "request C002 60000 SO-R2")

    assert answer == (
        "⏳ Request 1: order SO-R2 for Birch Valves (C002), $60,000.00 — waiting for the "
        "regional manager (over the credit limit). Approval card sent to Max Wang, Mia Manager; "
        "you will be told the decision."
    )
    assert requests(world) == [("SO-R2", "pending", "60000.00", "USD", "rita")]
    # the cards were queued in the request's own transaction, to North's active managers only
    assert cards_to(world) == ["max", "mia"]
    assert world.audit() == [
        ("rita", "shipment.raise", "slack"),
        ("creditbot", "shipment.notify", "slack"),
    ]
    [notify] = world.audit_rows("shipment.notify")
    assert notify.after["recipients"] == ["max", "mia"]

    world.dispatch()
    card = world.slack_card(MIA, "SO-R2")
    assert buttons_of(card.blocks) == ["approve", "reject"]
    assert "Birch Valves" in texts(card.blocks)
    assert "SO-R2" in world.telegram_card(MAX_CHAT, "SO-R2").plain
    for other in (SAM, CARL, RITA):  # the other region, another level, the requester
        assert world.slack_cards(other, "SO-R2") == []
    assert world.tg.messages(EVE_CHAT) == [] and world.tg.messages(RITA_CHAT) == []

    # the rep cannot approve her own request (a card she got hold of): refused, audited
    world.send(world.click(card, "approve", RITA))
    assert world.ephemerals(RITA) == [OWN_REQUEST]
    assert world.request(1).status == "pending"
    [refused] = world.audit_rows("shipment.decide.refused")
    assert (refused.actor, refused.after["refusal"]) == ("rita", "own_request")

    # Mia approves: the request is decided, and Rita is told
    world.send(world.click(card, "approve", MIA))
    assert world.request(1).status == "approved"
    world.dispatch()
    [told] = world.slack_cards(RITA, "SO-R2")
    assert "approved by Mia Manager" in texts(told.blocks)


def test_slack_the_same_command_again_changes_nothing(world: World) -> None:
    slack_answer(world, RITA, "request C002 60000 SO-R2")
    again = slack_answer(world, RITA, "request C002 60,000.00 SO-R2")
    other = slack_answer(world, RITA, "request C002 70000 SO-R2")

    assert again.startswith("Raised before. ⏳ Request 1: order SO-R2")
    assert "Approval card sent to Max Wang, Mia Manager" in again
    assert other == (
        "Not done: order SO-R2 was raised before as request 1 for $60,000.00. Use that "
        "request, or a new order reference for another amount."
    )
    assert len(requests(world)) == 1 and cards_to(world) == ["max", "mia"]
    assert [a for _, a, _ in world.audit()].count("shipment.raise") == 1


def test_slack_far_over_the_limit_goes_to_the_credit_manager_only(world: World) -> None:
    answer = slack_answer(world, RITA, "request Birch Valves 150000 SO-R3")

    assert "waiting for the credit manager" in answer
    assert "Approval card sent to Carl Credit;" in answer
    assert cards_to(world) == ["carl"]
    world.dispatch()
    assert buttons_of(world.slack_card(CARL, "SO-R3").blocks) == ["approve", "reject"]
    assert world.slack_cards(MIA, "SO-R3") == [] and world.tg.messages(MAX_CHAT) == []


def test_slack_a_blacklisted_customer_is_refused_and_nobody_is_asked(world: World) -> None:
    answer = slack_answer(world, RITA, "request C003 1000 SO-R4")

    assert answer == (
        "✗ Request 1: order SO-R4 for Coal &amp; Coke Ltd (C003), CN¥1,000.00 — refused: "
        "blacklisted. No credit: nobody can approve it. Do not ship."
    )
    assert requests(world) == [("SO-R4", "refused", "1000.00", "CNY", "rita")]
    assert world.count(OutboxMessage) == 0
    world.dispatch()
    assert world.slack.calls("chat.postMessage") == [] and world.tg.calls("sendMessage") == []


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "request C002 abc SO-1",
            "Not done: abc is not an amount. Write it like 30000 or 30,000.00 (more than 0, "
            "at most two decimals).",
        ),
        ("request C002 -5 SO-1", "Not done: -5 is not an amount."),
        ("request C002 12.345 SO-1", "Not done: 12.345 is not an amount."),
        ("request C999 100 SO-1", "Not done: no customer with code or name C999."),
        ("request C002 100", "Usage: /credit request CUSTOMER AMOUNT ORDER"),
        ("REQUEST", "Usage: /credit request CUSTOMER AMOUNT ORDER"),
    ],
)
def test_slack_a_bad_request_is_explained_and_nothing_written(
    world: World, text: str, said: str
) -> None:
    assert slack_answer(world, RITA, text).startswith(said)
    nothing_written(world)


def test_slack_an_unknown_user_is_refused_and_audited(world: World) -> None:
    answer = slack_answer(world, NOBODY, "request C002 100 SO-1")

    assert "not linked to a CreditBot person" in answer
    assert world.count(ShipmentRequest) == 0 and world.count(OutboxMessage) == 0
    [entry] = world.audit_rows("slack.refused")
    assert (entry.actor, entry.entity, entry.entity_id) == (f"slack:{NOBODY}", "customer", "C002")


def test_slack_someone_who_may_not_see_the_customer_is_refused(world: World) -> None:
    answer = slack_answer(world, SAM, "request C002 100 SO-1")

    assert answer == "Not done: sam may not see customer C002"
    assert world.count(ShipmentRequest) == 0
    [entry] = world.audit_rows("slack.refused")
    assert (entry.actor, entry.entity_id, entry.channel) == ("sam", "C002", "slack")
    assert entry.after["command"] == "/credit request"


def test_slack_credit_without_request_still_shows_the_file(world: World) -> None:
    url = world.slash_command(RITA, "C002")
    [answer] = world.slack.responded(url)
    assert "Birch Valves (C002)" in answer["text"] and answer["blocks"]
    assert world.count(ShipmentRequest) == 0


def test_slack_an_approver_who_raised_the_request_cannot_decide_it(engine: Engine) -> None:
    for w in make_world(engine, nora=True):
        answer = slack_answer(w, MIA, "request C001 30000 SO-M1")
        assert answer.endswith(
            "waiting for the regional manager (over the credit limit; has overdue invoices). "
            "Approval card sent to Max Wang, Nora North; you will be told the decision."
        )
        assert cards_to(w) == ["max", "nora"]  # not Mia herself
        w.dispatch()
        assert w.slack_cards(MIA, "SO-M1") == []
        nora_card = w.slack_card(NORA, "SO-M1")

        w.send(w.click(nora_card, "approve", MIA))

        assert w.ephemerals(MIA) == [OWN_REQUEST]
        assert w.request(1).status == "pending"
        [refused] = w.audit_rows("shipment.decide.refused")
        assert (refused.actor, refused.after["refusal"]) == ("mia", "own_request")
        assert w.slack.calls("chat.update") == []


# --- Telegram: /request --------------------------------------------------------------------------


def tg_answers(w: World, chat: int, *lines: str) -> list[str]:
    """Send each line from ``chat``; the bot's answers there."""
    before = len(w.tg.messages(chat))

    async def body(w: World) -> None:
        for line in lines:
            await w.say(chat, line)

    w.run(body)
    return [m.plain for m in w.tg.messages(chat)[before:]]


@pytest.mark.usefixtures("ptb_timedelta")
def test_telegram_within_policy_is_approved_at_once(world: World) -> None:
    [answer] = tg_answers(world, RITA_CHAT, "/request C002 20000 SO-T1")

    assert answer == (
        "✓ Request 1: order SO-T1 for Birch Valves (C002), $20,000.00 — approved at once: "
        "within policy. You may ship."
    )
    assert requests(world) == [("SO-T1", "approved", "20000.00", "USD", "rita")]
    assert world.audit() == [("rita", "shipment.raise", "telegram")]
    assert world.count(OutboxMessage) == 0


@pytest.mark.usefixtures("ptb_timedelta")
def test_telegram_over_the_limit_sends_cards_to_the_regional_managers(world: World) -> None:
    [answer] = tg_answers(world, RITA_CHAT, "/request Birch Valves 60000 SO-T2")

    assert answer == (
        "⏳ Request 1: order SO-T2 for Birch Valves (C002), $60,000.00 — waiting for the "
        "regional manager (over the credit limit). Approval card sent to Max Wang, Mia Manager; "
        "you will be told the decision."
    )
    assert cards_to(world) == ["max", "mia"]
    assert world.audit() == [
        ("rita", "shipment.raise", "telegram"),
        ("creditbot", "shipment.notify", "telegram"),
    ]
    world.dispatch()
    card = world.telegram_card(MAX_CHAT, "SO-T2")
    assert [b["text"] for row in card.reply_markup["inline_keyboard"] for b in row] == [
        "批准",
        "拒绝",
    ]
    assert buttons_of(world.slack_card(MIA, "SO-T2").blocks) == ["approve", "reject"]
    assert world.slack_cards(SAM, "SO-T2") == [] and world.slack_cards(CARL, "SO-T2") == []
    assert world.tg.messages(EVE_CHAT) == []


@pytest.mark.usefixtures("ptb_timedelta")
def test_telegram_a_blacklisted_customer_is_refused_and_nobody_is_asked(world: World) -> None:
    [answer] = tg_answers(world, RITA_CHAT, "/request C003 1000 SO-T3")

    assert answer.startswith("✗ Request 1: order SO-T3 for Coal & Coke Ltd (C003), CN¥1,000.00")
    assert "refused: blacklisted" in answer
    assert requests(world) == [("SO-T3", "refused", "1000.00", "CNY", "rita")]
    assert world.count(OutboxMessage) == 0


@pytest.mark.usefixtures("ptb_timedelta")
def test_telegram_bad_requests_are_explained_and_nothing_written(world: World) -> None:
    answers = tg_answers(
        world,
        RITA_CHAT,
        "/request C002 lots SO-1",
        "/request C999 100 SO-1",
        "/request C002",
        "/request C001 100 SO-1 SO-2",  # AMOUNT and ORDER are the last two words
    )

    assert answers == [
        "Not done: lots is not an amount. Write it like 30000 or 30,000.00 (more than 0, at "
        "most two decimals).",
        "Not done: no customer with code or name C999.",
        "Usage: /request CUSTOMER AMOUNT ORDER (a customer code or exact name, the amount in "
        "the customer's currency, your order reference), e.g. /request C001 30000.00 SO-1001",
        "Not done: SO-1 is not an amount. Write it like 30000 or 30,000.00 (more than 0, at "
        "most two decimals).",
    ]
    nothing_written(world)


@pytest.mark.usefixtures("ptb_timedelta")
def test_telegram_an_unlinked_chat_gets_the_usual_refusal(world: World) -> None:
    [answer] = tg_answers(world, STRANGER_CHAT, "/request C002 100 SO-1")

    assert answer == "This chat is not linked to CreditBot; ask your administrator for a link code."
    nothing_written(world)


@pytest.mark.usefixtures("ptb_timedelta")
def test_telegram_a_manager_raising_a_request_is_answered_in_chinese_and_cannot_decide_it(
    world: World,
) -> None:
    [answer] = tg_answers(world, MAX_CHAT, "/request C001 30000 SO-T4")

    assert answer == (
        "⏳ 申请 1：Acme Pumps & Co (C001) 的订单 SO-T4，¥30,000.00 — 等待区域经理审批"
        "（超出信用额度；有逾期发票）。审批卡片已发送给 Mia Manager；审批结果将通知您。"
    )
    assert cards_to(world) == ["mia"]  # not Max, who raised it
    with write_session(world.engine) as s:
        max_id = s.execute(select(Person.id).where(Person.code == "max")).scalar_one()
        result = decide(
            s,
            world.settings,
            request_id=1,
            approver_person_id=max_id,
            decision="approve",
            channel="telegram",
            now=world.clock.now(),
        )
    assert (result.won, result.refusal) == (False, "own_request")
    assert world.request(1).status == "pending"


# --- the CLI -------------------------------------------------------------------------------------

CLI_NOW = datetime.combine(date(2026, 11, 25), time(10, 0), ZoneInfo("Asia/Shanghai")).astimezone(
    UTC
)


class Cli:
    def __init__(self, config: str, engine: Engine) -> None:
        self.config, self.engine = config, engine
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Any:
        return self.runner.invoke(cli_app, ["--config", self.config, *args])

    def count(self, model: Any) -> int:
        with read_session(self.engine) as s:
            return s.execute(select(func.count()).select_from(model)).scalar_one()

    def cards_to(self) -> list[str]:
        with read_session(self.engine) as s:
            return list(
                s.execute(
                    select(Person.code)
                    .join(OutboxMessage, OutboxMessage.recipient_id == Person.id)
                    .where(OutboxMessage.kind == "approval_card")
                    .order_by(Person.code)
                ).scalars()
            )


@pytest.fixture
def run(db_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:  # type: ignore[no-untyped-def]
    for var in ("CREDITBOT_CONFIG", "CREDITBOT_DATABASE__URL"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "{db_url}"\n\n[outbox]\nchannels = ["console"]\n',
        encoding="utf-8",
    )
    monkeypatch.setattr(cli, "_now", lambda: CLI_NOW)
    assert CliRunner().invoke(cli_app, ["--config", str(config), "db", "upgrade"]).exit_code == 0
    engine = make_engine(db_url)
    build_ledger(engine)
    add_customers(engine)
    try:
        yield Cli(str(config), engine)
    finally:
        engine.dispose()


def test_cli_within_policy_is_approved_at_once(run: Cli) -> None:
    result = run("request", "C002", "20000", "SO-C1", "--as", "rita")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "✓ Request 1: order SO-C1 for Birch Valves (C002), $20,000.00 — approved at once: "
        "within policy. You may ship."
    )
    assert run.count(OutboxMessage) == 0
    with read_session(run.engine) as s:
        audit = s.execute(select(AuditLog)).scalar_one()
    assert (audit.actor, audit.action, audit.channel) == ("rita", "shipment.raise", "cli")


def test_cli_over_the_limit_queues_the_cards_and_prints_the_request_as_json(run: Cli) -> None:
    result = run("request", "C002", "60,000.00", "SO-C2", "--as", "rita", "--format", "json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {k: data[k] for k in ("id", "customer_code", "order_ref", "amount", "currency")} == {
        "id": 1,
        "customer_code": "C002",
        "order_ref": "SO-C2",
        "amount": "60000.00",
        "currency": "USD",
    }
    assert (data["status"], data["reasons"], data["excess"]) == (
        "pending",
        ["over_limit"],
        "10000.00",
    )
    assert data["requested_by"] == {"code": "rita", "name": "Rita Rep"}
    assert [(a["level"], a["role"], a["decision"]) for a in data["approvals"]] == [
        (0, "regional_manager", None)
    ]
    assert data["created_at"] == "2026-11-25T02:00:00+00:00"
    assert run.cards_to() == ["max", "mia"]

    again = run("request", "C002", "60000", "SO-C2", "--as", "rita")
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("Raised before. ⏳ Request 1: order SO-C2")
    assert run.cards_to() == ["max", "mia"] and run.count(ShipmentRequest) == 1


def test_cli_a_blacklisted_customer_is_refused_and_the_erp_told(run: Cli) -> None:
    result = run(
        "request",
        "C003",
        "1000",
        "SO-C3",
        "--as",
        "rita",
        "--callback-url",
        "https://erp.example.com/decisions",
    )

    assert result.exit_code == 0, result.output
    assert "refused: blacklisted. No credit: nobody can approve it. Do not ship." in result.stdout
    assert run.cards_to() == []
    with read_session(run.engine) as s:
        [row] = s.execute(select(OutboxMessage)).scalars().all()
    assert (row.kind, row.channel, row.idempotency_key) == (
        "erp_callback",
        "erp",
        "erp_callback:1:refused",
    )
    assert row.payload["body"]["status"] == "refused"


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (("C002", "abc", "SO-1", "--as", "rita"), 2, "not an amount: 'abc'"),
        (("C002", "0", "SO-1", "--as", "rita"), 2, "not an amount: '0'"),
        (("C999", "100", "SO-1", "--as", "rita"), 2, "no customer with code or name 'C999'"),
        (("C002", "100", "SO-1", "--as", "nobody"), 2, "no active person with code 'nobody'"),
        (
            ("C002", "100", "SO-1", "--as", "rita", "--callback-url", "ftp://erp/x"),
            2,
            "callback_url: an http(s) URL",
        ),
        (("C002", "100", "SO-1", "--as", "sam"), 3, "not allowed: sam may not see customer C002"),
    ],
)
def test_cli_errors_say_what_is_wrong_and_write_no_request(
    run: Cli, args: tuple[str, ...], code: int, said: str
) -> None:
    result = run("request", *args)

    assert result.exit_code == code, result.output
    assert said in result.stderr
    assert run.count(ShipmentRequest) == 0 and run.count(OutboxMessage) == 0


def test_cli_a_manager_cannot_decide_the_request_she_raised(run: Cli) -> None:
    result = run("request", "C001", "30000", "SO-C5", "--as", "mia")
    assert result.exit_code == 0, result.output
    assert "waiting for the regional manager" in result.stdout
    assert "Approval card sent to Max Wang;" in result.stdout
    assert run.cards_to() == ["max"]

    with write_session(run.engine) as s:
        ids = dict(s.execute(select(Person.code, Person.id)).all())
        settings = cli.AppContext(config_path=run.config).settings
        refused = [
            decide(
                s,
                settings,
                request_id=1,
                approver_person_id=ids[who],
                decision="approve",
                channel="cli",
                now=CLI_NOW,
            ).refusal
            for who in ("mia", "rita")
        ]
    assert refused == ["own_request", "own_request"]
    with read_session(run.engine) as s:
        assert s.get(ShipmentRequest, 1).status == "pending"  # type: ignore[union-attr]
