"""Outbox payload -> Message -> console text, in English and Simplified Chinese."""

from __future__ import annotations

import asyncio
import io

import pytest

from bot.compose import MAX_LINES_PER_SECTION, compose
from bot.i18n import normalise_locale
from bot.transports.base import Outgoing
from bot.transports.console import ConsoleTransport, render_text


def _line(i: int, days: int = 35) -> dict:
    return {
        "invoice_id": i,
        "number": f"INV-{i:04d}",
        "customer": "C0001",
        "customer_name": "上海宏达机械有限公司",
        "open_amount": "1234.50",
        "currency": "CNY",
        "days": days,
        "due_date": "2026-10-21",
        "disputed": i == 1,
        "new": False,
    }


def _payload(locale: str, lines: int = 3, count: int | None = None) -> dict:
    return {
        "kind": "reminder",
        "business_date": "2026-11-25",
        "recipient": {"code": "R1", "name": "张伟", "role": "rep", "locale": locale},
        "sections": [
            {
                "tier": "overdue_1m",
                "action": "Warn of a supply stop",
                "count": count or lines,
                "new_count": 1,
                "totals": {"CNY": "3703.50"},
                "lines": [_line(i) for i in range(1, lines + 1)],
            }
        ],
        "broken_promises": [
            {
                "number": "INV-0009",
                "customer": "C0002",
                "customer_name": "Acme",
                "promised_date": "2026-11-18",
                "promised_amount": "500.00",
                "open_amount": "800.00",
                "currency": "CNY",
            }
        ],
        "unacknowledged": [],
        "credit_holds": [
            {
                "customer": "C0003",
                "customer_name": "北方重工",
                "on": True,
                "reason": "overdue_2_6m: invoices 60+ days overdue",
            }
        ],
    }


def test_english_reminder_names_tier_amounts_and_actions():
    text = render_text(compose(_payload("en")))
    assert "Receivables to chase — Nov 25, 2026" in text
    assert "1 month overdue: warn of supply stop" in text
    assert "CN¥1,234.50" in text and "35 days overdue" in text
    assert "INV-0001 · 上海宏达机械有限公司" in text and "(disputed)" in text
    assert "Broken promises to pay" in text and "promised CN¥500.00 by Nov 18, 2026" in text
    assert "北方重工 (C0003) is on credit hold" in text
    assert "5 invoice(s) need your attention today" in text  # 3 lines + 1 broken + 1 hold


def test_chinese_reminder_uses_chinese_strings_and_formats():
    text = render_text(compose(_payload("zh_CN")))
    assert "应收账款催收提醒 — 2026年11月25日" in text
    assert "逾期 1 个月" in text and "逾期 35 天" in text
    assert "¥1,234.50" in text
    assert "未兑现的付款承诺" in text
    assert "信用冻结" in text


def test_long_sections_are_cut_with_and_n_more():
    message = compose(_payload("en", lines=MAX_LINES_PER_SECTION + 5, count=40))
    section = message.sections[0]
    assert len(section.lines) == MAX_LINES_PER_SECTION
    assert section.more == 40 - MAX_LINES_PER_SECTION
    assert f"… and {40 - MAX_LINES_PER_SECTION} more" in render_text(message)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("zh-CN", "zh_CN"),
        ("zh_cn", "zh_CN"),
        ("zh", "zh_CN"),
        ("en_US", "en"),
        (None, "en"),
        ("fr", "en"),
    ],
)
def test_locales_normalise_with_english_fallback(given, expected):
    assert normalise_locale(given) == expected


def test_unknown_payload_kind_is_an_error():
    with pytest.raises(ValueError, match="no message composer"):
        compose({"kind": "mystery"})


def test_console_transport_prints_and_returns_a_reference():
    out = io.StringIO()
    transport = ConsoleTransport(out)
    ref = asyncio.run(
        transport.send(Outgoing(7, "reminder", {"name": "张伟", "locale": "en"}, _payload("en")))
    )
    assert ref == {"channel": "console", "seq": 1}
    assert ">>> to 张伟 [reminder #7]" in out.getvalue()


def test_each_tier_section_offers_the_four_actions_on_its_most_overdue_invoice():
    message = compose(_payload("en"))
    buttons = message.sections[0].buttons
    assert [b.action_id for b in buttons] == ["ack", "promise", "dispute", "snooze"]
    assert {b.value for b in buttons} == {"INV-0001|overdue_1m"}
    assert buttons[0].label == "Acknowledge · INV-0001"
    zh = compose(_payload("zh_CN")).sections[0].buttons
    assert [b.label for b in zh][1:] == ["承诺付款", "争议", "稍后提醒"]
