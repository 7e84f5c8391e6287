"""App Home and ``/credit`` end to end: signed Slack requests over HTTP into the ASGI app
(bot.http), the Bolt app (bot.slack_app) reading a real database (SQLite and PostgreSQL), the
home view published through a real WebClient to the fake Slack Web API and the ``/credit``
answer posted by ``respond()`` to a response_url the fake hands out.

The expected numbers below are worked out by hand from the ledger in ``build_ledger``.
"""

from __future__ import annotations

import itertools
import json
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from starlette.testclient import TestClient

from bot.http import create_app
from bot.i18n import TEMPLATES, Translator
from bot.slack_app import build_slack_app
from bot.slack_home import Scope, scope_text
from credit.settings import Settings, SlackSettings
from credit.store.db import read_session, write_session
from credit.store.models import (
    AuditLog,
    Customer,
    Invoice,
    Person,
    PromiseToPay,
    Region,
    ShipmentRequest,
)
from jobs.clock import FakeClock
from tests.fakes.slack_api import FakeSlackAPI
from tests.support.slack_requests import TrackingExecutor, slack_signature

SECRET = "0a9b8c7d6e5f40312233445566778899"
AS_OF = date(2026, 11, 25)
NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
REP, NORTH_REP, SOUTH_REP, MANAGER, DESK, NOBODY = (
    "UREP1", "UREP3", "UREP2", "UMGR1", "UCM1", "UNOBODY",
)  # fmt: skip


# --- the ledger -------------------------------------------------------------------------------


def _invoice(customer: Customer, number: str, days: int, amount: str, **kw: Any) -> Invoice:
    """An invoice ``days`` past due on AS_OF (negative: not yet due)."""
    open_amount = kw.pop("open_amount", amount)
    return Invoice(
        number=number,
        customer_id=customer.id,
        issue_date=AS_OF - timedelta(days=days + 30),
        due_date=AS_OF - timedelta(days=days),
        amount=Decimal(amount),
        open_amount=Decimal(open_amount),
        currency=kw.pop("currency", "CNY"),
        **kw,
    )


def build_ledger(engine) -> None:
    with write_session(engine) as s:
        north, south = Region(code="N", name="North"), Region(code="S", name="South")
        s.add_all([north, south])
        s.flush()
        manager = Person(
            code="mgr1", name="Mia Manager", role="regional_manager", region_id=north.id,
            slack_user_id=MANAGER,
        )  # fmt: skip
        desk = Person(code="cm1", name="Cai Desk", role="credit_manager", slack_user_id=DESK)
        s.add_all([manager, desk])
        s.flush()
        rep = Person(
            code="rep1", name="Rita Rep", role="rep", region_id=north.id, manager_id=manager.id,
            slack_user_id=REP,
        )  # fmt: skip
        north_rep = Person(
            code="rep3", name="Nils North", role="rep", region_id=north.id, slack_user_id=NORTH_REP
        )
        south_rep = Person(
            code="rep2", name="Sam South", role="rep", region_id=south.id, slack_user_id=SOUTH_REP
        )
        s.add_all([rep, north_rep, south_rep])
        s.flush()
        acme = Customer(
            code="C1", name="Acme Pumps", region_id=north.id, rep_id=rep.id, rating="B",
            credit_limit=Decimal("50000.00"), credit_hold=True,
            credit_hold_reason="invoice over 60 days", probation_until=AS_OF + timedelta(days=30),
        )  # fmt: skip
        birch = Customer(code="C2", name="Birch Valves", region_id=north.id, rep_id=north_rep.id)
        south_co = Customer(code="C3", name="South Co", region_id=south.id, rep_id=south_rep.id)
        s.add_all([acme, birch, south_co])
        s.flush()
        invoices = [
            # Acme (rep1): tier by days past due: due_soon -30..0, overdue 1..29,
            # overdue_1m 30..59, overdue_2_6m 60..180, overdue_6m_plus 181..
            _invoice(acme, "I1", 5, "1000.00"),
            _invoice(acme, "I2", 20, "2500.50"),
            _invoice(acme, "I3", 45, "12500.00"),
            _invoice(acme, "I4", 100, "3000.00", disputed=True, dispute_reason="quantity"),
            _invoice(acme, "I5", -10, "700.00"),
            _invoice(acme, "I6", -40, "400.00"),  # in no tier yet; still exposure
            _invoice(acme, "I7", 200, "5000.00", open_amount="0.00"),  # paid
            _invoice(acme, "I8", 10, "300.00", currency="USD"),
            # Birch (rep3, same region)
            _invoice(birch, "I9", 70, "8000.00"),
            _invoice(birch, "I10", 3, "500.00"),
            # South Co (rep2, south)
            _invoice(south_co, "I11", 190, "9999.00"),
        ]
        s.add_all(invoices)
        s.flush()
        by_number = {i.number: i for i in invoices}

        def promise(number: str, days: int, amount: str, status: str = "open") -> PromiseToPay:
            return PromiseToPay(
                invoice_id=by_number[number].id,
                promised_date=AS_OF + timedelta(days=days),
                amount=Decimal(amount),
                currency="CNY",
                status=status,
            )

        s.add_all(
            [
                promise("I3", 3, "5000.00"),
                promise("I9", 6, "8000.00"),
                promise("I2", 10, "2500.50"),  # beyond the 7 days
                promise("I1", 1, "1000.00", status="kept"),
                promise("I11", 2, "9999.00"),  # south
            ]
        )

        def request(customer: Customer, ref: str, amount: str, status: str) -> ShipmentRequest:
            return ShipmentRequest(
                customer_id=customer.id,
                order_ref=ref,
                amount=Decimal(amount),
                currency="CNY",
                status=status,
            )

        s.add_all(
            [
                request(acme, "SO-1", "2000.00", "pending"),
                request(acme, "SO-2", "1500.00", "approved"),
                request(south_co, "SO-3", "7000.00", "pending"),
            ]
        )


# --- fixtures -----------------------------------------------------------------------------------


def signed_headers(body: str, ts: str | None = None, secret: str = SECRET) -> dict[str, str]:
    ts = ts or str(int(time.time()))
    return slack_signature(body, ts, secret)


class Harness:
    def __init__(self, engine, slack: FakeSlackAPI, http: TestClient, executor) -> None:
        self.engine, self.slack, self.http, self.executor = engine, slack, http, executor
        self._seq = itertools.count(1)

    def open_home(self, user: str, tab: str = "home", secret: str = SECRET):
        n = next(self._seq)
        body = json.dumps(
            {
                "token": "legacy-verification-token",
                "team_id": "T0000FAKE",
                "api_app_id": "A0000FAKE",
                "type": "event_callback",
                "event_id": f"Ev{n:08d}",
                "event_time": int(time.time()),
                "event": {
                    "type": "app_home_opened",
                    "user": user,
                    "channel": FakeSlackAPI.dm_for(user),
                    "tab": tab,
                    "event_ts": f"{int(time.time())}.{n:06d}",
                },
            }
        )
        headers = {"Content-Type": "application/json", **signed_headers(body, secret=secret)}
        resp = self.http.post("/slack/events", content=body.encode(), headers=headers)
        self.executor.drain()
        return resp

    def home(self, user: str) -> dict[str, Any]:
        return self.slack.home_views[user]

    def credit(self, user: str, text: str) -> tuple[Any, str]:
        """``/credit TEXT`` typed by ``user``: the HTTP answer and the response_url used."""
        n = next(self._seq)
        response_url = self.slack.response_url()
        body = urlencode(
            {
                "token": "legacy-verification-token",
                "team_id": "T0000FAKE",
                "team_domain": "fake",
                "channel_id": FakeSlackAPI.dm_for(user),
                "channel_name": "directmessage",
                "user_id": user,
                "user_name": user.lower(),
                "command": "/credit",
                "text": text,
                "api_app_id": "A0000FAKE",
                "response_url": response_url,
                "trigger_id": f"3000.{n}.trigger",
            }
        )
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            **signed_headers(body),
        }
        resp = self.http.post("/slack/events", content=body.encode(), headers=headers)
        self.executor.drain()
        return resp, response_url

    def audit(self) -> list[tuple[str, str, str | None]]:
        with read_session(self.engine) as s:
            rows = s.execute(select(AuditLog).order_by(AuditLog.id)).scalars().all()
            return [(r.actor, r.action, r.entity_id) for r in rows]


@pytest.fixture
def harness(engine) -> Iterator[Harness]:
    build_ledger(engine)
    with FakeSlackAPI() as slack:
        settings = Settings(
            slack=SlackSettings(
                bot_token=SecretStr(slack.token),
                signing_secret=SecretStr(SECRET),
                api_base_url=slack.url,
            )
        )
        executor = TrackingExecutor()
        app = build_slack_app(engine, settings, clock=FakeClock(NOW), listener_executor=executor)
        with TestClient(create_app(app), raise_server_exceptions=False) as http:
            yield Harness(engine, slack, http, executor)
        executor.shutdown(wait=True)


def section(view_or_blocks: dict[str, Any] | list[dict[str, Any]], block_id: str) -> str:
    blocks = view_or_blocks["blocks"] if isinstance(view_or_blocks, dict) else view_or_blocks
    [found] = [b for b in blocks if b.get("block_id") == block_id]
    return found["text"]["text"]


def tier_lines(view: dict[str, Any]) -> dict[str, str]:
    """Tier name → its "N invoices · totals" line."""
    return {
        b["block_id"].removeprefix("tier:"): b["text"]["text"].split("\n")[1]
        for b in view["blocks"]
        if str(b.get("block_id", "")).startswith("tier:")
    }


def overdue_numbers(view: dict[str, Any]) -> list[str]:
    lines = section(view, "most_overdue").split("\n")[1:]
    return [line.removeprefix("• ").split(" · ")[0] for line in lines]


# --- App Home -----------------------------------------------------------------------------------


def test_the_home_of_a_rep_shows_only_their_customers(harness):
    resp = harness.open_home(REP)
    assert resp.status_code == 200
    [call] = harness.slack.calls("views.publish")
    assert call.error is None and call.params["user_id"] == REP
    view = harness.home(REP)
    assert view["type"] == "home"
    # I5 (due in 10 days); I1 + I2 in CNY and I8 in USD; I3; I4 (disputed, still open);
    # nothing over 6 months (I7 is paid); I6 is not yet in any tier
    assert tier_lines(view) == {
        "due_soon": "1 invoice · CN¥700.00",
        "overdue": "3 invoices · CN¥3,500.50 + $300.00",
        "overdue_1m": "1 invoice · CN¥12,500.00",
        "overdue_2_6m": "1 invoice · CN¥3,000.00",
        "overdue_6m_plus": "0 invoices · —",
    }
    assert overdue_numbers(view) == ["I4", "I3", "I2", "I8", "I1"]
    assert "100 days overdue" in section(view, "most_overdue")
    assert "disputed" in section(view, "most_overdue")
    text = json.dumps(view)
    for other in ("I9", "I10", "I11", "Birch", "South Co", "SO-3"):
        assert other not in text
    promises = section(view, "promises")
    assert promises.startswith("1 promise due within 7 days")
    assert "I3" in promises and "CN¥5,000.00" in promises
    assert "I2" not in promises and "I1 " not in promises  # too late; kept
    approvals = section(view, "approvals")
    assert approvals.startswith("1 shipment request pending")
    assert "SO-1" in approvals and "SO-2" not in approvals


def test_a_regional_manager_sees_the_region(harness):
    harness.open_home(MANAGER)
    view = harness.home(MANAGER)
    assert "region N" in json.dumps(view)
    # rep1's numbers plus Birch Valves: I10 (3 days) and I9 (70 days)
    assert tier_lines(view) == {
        "due_soon": "1 invoice · CN¥700.00",
        "overdue": "4 invoices · CN¥4,000.50 + $300.00",
        "overdue_1m": "1 invoice · CN¥12,500.00",
        "overdue_2_6m": "2 invoices · CN¥11,000.00",
        "overdue_6m_plus": "0 invoices · —",
    }
    assert overdue_numbers(view) == ["I4", "I9", "I3", "I2", "I8"]
    assert "I11" not in json.dumps(view)
    promises = section(view, "promises")
    assert promises.startswith("2 promises due within 7 days")
    assert promises.index("I3") < promises.index("I9")  # by promised date
    assert section(view, "approvals").startswith("1 shipment request pending")


def test_the_credit_desk_sees_the_whole_company(harness):
    harness.open_home(DESK)
    view = harness.home(DESK)
    assert "company-wide" in json.dumps(view)
    assert tier_lines(view)["overdue_6m_plus"] == "1 invoice · CN¥9,999.00"
    assert overdue_numbers(view) == ["I11", "I4", "I9", "I3", "I2"]
    assert section(view, "promises").startswith("3 promises due within 7 days")
    approvals = section(view, "approvals")
    assert approvals.startswith("2 shipment requests pending")
    assert "SO-1" in approvals and "SO-3" in approvals


def test_an_unlinked_slack_user_gets_the_not_linked_home(harness):
    harness.open_home(NOBODY)
    view = harness.home(NOBODY)
    assert "not linked to a CreditBot person" in section(view, "not_linked")
    assert [b.get("block_id") for b in view["blocks"] if b.get("block_id")] == ["not_linked"]
    assert "CN¥" not in json.dumps(view)


def test_the_messages_tab_and_a_forged_request_publish_nothing(harness):
    harness.open_home(REP, tab="messages")
    assert harness.open_home(REP, secret="not-the-secret").status_code == 401
    assert harness.slack.calls("views.publish") == []


# --- /credit ------------------------------------------------------------------------------------


def test_credit_shows_the_file_to_the_rep(harness):
    resp, url = harness.credit(REP, "C1")
    assert resp.status_code == 200
    [answer] = harness.slack.responded(url)
    assert answer["response_type"] == "ephemeral"
    blocks = answer["blocks"]
    assert section(blocks, "rating") == "*Rating:* B\n*Credit limit:* CN¥50,000.00"
    # open: I1 1,000.00 + I2 2,500.50 + I3 12,500.00 + I4 3,000.00 + I5 700.00 + I6 400.00
    # = CNY 20,100.50, and I8 USD 300.00; I7 is paid
    assert section(blocks, "exposure") == (
        "*Exposure (open receivables):* CN¥20,100.50 + $300.00\n*Open invoices:* 7"
    )
    assert section(blocks, "aging").split("\n")[1:] == [
        "• current: CN¥1,100.00",  # I5 + I6
        "• 1-30: CN¥3,500.50 + $300.00",  # I1 + I2, I8
        "• 31-60: CN¥12,500.00",  # I3
        "• 61-90: —",
        "• 91-180: CN¥3,000.00",  # I4
        "• &gt;180: —",  # I7 is paid (mrkdwn-escaped ">")
    ]
    assert section(blocks, "status") == (
        "*Credit hold:* Yes — invoice over 60 days\n*Blacklisted:* No\n"
        "*Probation:* Yes, until Dec 25, 2026"
    )
    assert "Acme Pumps" in answer["text"]
    assert harness.audit() == []


def test_credit_by_exact_name_for_the_regions_manager(harness):
    _, url = harness.credit(MANAGER, "birch valves")
    [answer] = harness.slack.responded(url)
    assert "Birch Valves (C2)" in answer["text"]
    assert "*Exposure (open receivables):* CN¥8,500.00" in section(answer["blocks"], "exposure")
    assert section(answer["blocks"], "status").startswith("*Credit hold:* No")


def test_credit_refuses_a_rep_of_another_region_and_audits_it(harness):
    _, url = harness.credit(SOUTH_REP, "C1")
    [answer] = harness.slack.responded(url)
    assert answer["text"] == "Not done: rep2 may not see customer C1"
    assert "blocks" not in answer or not answer["blocks"]
    assert "50,000" not in json.dumps(answer)
    assert harness.audit() == [("rep2", "slack.refused", "C1")]
    with read_session(harness.engine) as s:
        entry = s.execute(select(AuditLog)).scalar_one()
        assert (entry.entity, entry.channel) == ("customer", "slack")
        assert entry.after["command"] == "/credit"


def test_credit_refuses_a_rep_of_the_same_region_for_anothers_customer(harness):
    _, url = harness.credit(NORTH_REP, "Acme Pumps")
    [answer] = harness.slack.responded(url)
    assert answer["text"].startswith("Not done: rep3 may not see customer C1")
    assert harness.audit() == [("rep3", "slack.refused", "C1")]


def test_credit_for_an_unknown_customer_says_so(harness):
    _, url = harness.credit(REP, "C999")
    [answer] = harness.slack.responded(url)
    assert answer["text"] == "No customer with code or name 'C999'."
    assert harness.audit() == []


def test_credit_from_an_unlinked_slack_user_is_refused_and_audited(harness):
    _, url = harness.credit(NOBODY, "C1")
    [answer] = harness.slack.responded(url)
    assert "not linked" in answer["text"]
    assert harness.audit() == [(f"slack:{NOBODY}", "slack.refused", "C1")]


def test_credit_without_a_customer_explains_the_usage(harness):
    _, url = harness.credit(REP, "  ")
    [answer] = harness.slack.responded(url)
    assert answer["text"].startswith("Usage: /credit CUSTOMER")


# --- Chinese ------------------------------------------------------------------------------------


def set_locale(harness, code: str, locale: str) -> None:
    with write_session(harness.engine) as s:
        s.execute(select(Person).where(Person.code == code)).scalar_one().locale = locale


def visible_text(blocks: list[dict[str, Any]]) -> str:
    """The text a person sees (headers, sections, context), not block ids."""
    out = []
    for b in blocks:
        if "text" in b:
            out.append(b["text"]["text"])
        out += [e.get("text", "") for e in b.get("elements", [])]
    return "\n".join(out)


def test_a_zh_cn_persons_home_has_chinese_labels(harness):
    set_locale(harness, "rep1", "zh_CN")
    harness.open_home(REP)
    view = harness.home(REP)
    headers = [b["text"]["text"] for b in view["blocks"] if b["type"] == "header"]
    assert headers == [
        "CreditBot — Rita Rep",
        "我的未收应收账款（按阶段）",
        "我的到期付款承诺",
        "我的待审批",
    ]
    [context] = [b for b in view["blocks"] if b["type"] == "context"]
    assert context["elements"][0]["text"] == "范围：您的客户 · 截至 2026年11月25日"
    # The same numbers as in English, in Chinese, with zh_CN money.
    assert tier_lines(view) == {
        "due_soon": "1 张发票 · ¥700.00",
        "overdue": "3 张发票 · ¥3,500.50 + US$300.00",
        "overdue_1m": "1 张发票 · ¥12,500.00",
        "overdue_2_6m": "1 张发票 · ¥3,000.00",
        "overdue_6m_plus": "0 张发票 · —",
    }
    most = section(view, "most_overdue")
    assert most.startswith("*逾期最久*\n")
    assert overdue_numbers(view) == ["I4", "I3", "I2", "I8", "I1"]
    assert "逾期 100 天 · 有争议" in most
    promises = section(view, "promises")
    assert promises.startswith("7 天内到期的付款承诺：1 项\n")
    assert "I3" in promises and "¥5,000.00" in promises
    assert section(view, "approvals").startswith("待审批的发货申请：1 个\n")
    shown = visible_text(view["blocks"])
    for english in ("invoice", "Most overdue", "promise", "pending", "Scope", "as of",
                    "disputed", "days overdue", "your customers", "My ", "due "):  # fmt: skip
        assert english not in shown, english
    # Other people keep their own language.
    harness.open_home(MANAGER)
    assert section(harness.home(MANAGER), "promises").startswith("2 promises due within 7 days")


def test_a_zh_cn_manager_and_desk_see_their_scope_in_chinese(harness):
    set_locale(harness, "mgr1", "zh_CN")
    set_locale(harness, "cm1", "zh-CN")
    harness.open_home(MANAGER)
    harness.open_home(DESK)
    assert "范围：N 区域 ·" in json.dumps(harness.home(MANAGER), ensure_ascii=False)
    desk = harness.home(DESK)
    assert "范围：全公司 ·" in json.dumps(desk, ensure_ascii=False)
    assert section(desk, "promises").startswith("7 天内到期的付款承诺：3 项")
    assert section(desk, "approvals").startswith("待审批的发货申请：2 个")


def test_a_zh_cn_persons_credit_file_has_chinese_labels(harness):
    set_locale(harness, "rep1", "zh_CN")
    _, url = harness.credit(REP, "C1")
    [answer] = harness.slack.responded(url)
    blocks = answer["blocks"]
    assert blocks[0]["text"]["text"] == "信用档案：Acme Pumps (C1)"
    assert section(blocks, "rating") == "*信用等级：* B\n*信用额度：* ¥50,000.00"
    assert section(blocks, "exposure") == (
        "*风险敞口（未收应收账款）：* ¥20,100.50 + US$300.00\n*未结发票：* 7"
    )
    aging = section(blocks, "aging").split("\n")
    assert aging[0] == "*账龄（逾期天数）*"
    assert aging[1] == "• 未逾期: ¥1,100.00"
    assert section(blocks, "status") == (
        "*信用冻结：* 是 — invoice over 60 days\n*黑名单：* 否\n*观察期：* 是，至 2026年12月25日"
    )
    assert answer["text"].startswith("Acme Pumps (C1)：信用等级 B，额度 ¥50,000.00")


def test_the_not_linked_home_is_english_and_chinese(harness):
    harness.open_home(NOBODY)
    text = section(harness.home(NOBODY), "not_linked")
    assert "not linked to a CreditBot person" in text
    assert "尚未关联 CreditBot 人员" in text


def test_every_home_and_credit_label_is_in_both_catalogs():
    def keys(locale: str) -> set[str]:
        with open(TEMPLATES / "i18n" / f"{locale}.toml", "rb") as fh:
            return {k for k in tomllib.load(fh) if k.startswith(("home_", "credit_"))}

    # zh_CN would silently fall back to English for a missing key: its own file has them all
    assert len(keys("en")) > 30 and keys("zh_CN") == keys("en")
    scope = scope_text("regional_manager", "N")
    assert isinstance(scope, Scope) and scope == "region N"  # English until translated
    assert scope_text("rep", None, Translator("zh_CN")) == "您的客户"
    assert scope_text("regional_manager", None) == "no region"
    assert scope_text("credit_manager", None, Translator("zh_CN")) == "全公司"
