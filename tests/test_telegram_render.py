"""Telegram HTML rendering: escaping, Chinese, splitting at 4,096 characters, the inline
keyboard, and every rendered part accepted by the fake Bot API's Telegram-HTML parser through a
real ``telegram.Bot``.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from typing import Any

import pytest
from telegram.constants import ParseMode

from bot.compose import compose
from bot.messages import Button, Fact, Message, Section
from bot.telegram_render import (
    MAX_TEXT,
    TelegramPart,
    clip_html,
    escape_html,
    render_parts,
    render_text,
    split_html,
)
from credit.store.models import Person
from tests.fakes.telegram_api import FakeTelegramAPI, parse_telegram_html
from tests.support.outbox_data import reminder_payload

CHAT = 4242


def token(button: Button) -> str:
    return f"{button.action_id}:{button.value}"[:64]


def payload(locale: str = "en", customer: str = "宏达机械有限公司") -> dict[str, Any]:
    """A reminder payload as the scan builds it, for a rep in ``locale``."""
    rep = Person(id=7, code="rep07", name="Rep 7", role="rep", locale=locale)
    p = copy.deepcopy(reminder_payload(rep))
    p["sections"][0]["lines"][0]["customer_name"] = customer
    return p


class Clock:
    """The fake's time: ``deliver`` moves it a second per message (Telegram's pace)."""

    def __init__(self) -> None:
        self.t = 1_790_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def tg(clock: Clock) -> Iterator[FakeTelegramAPI]:
    with FakeTelegramAPI(now=clock) as fake:
        yield fake


def deliver(tg: FakeTelegramAPI, chat_id: int, parts: list[TelegramPart]) -> list[Any]:
    """Send every part through a real Bot; returns the messages as the fake stored them."""

    async def main() -> None:
        async with tg.bot() as bot:
            for part in parts:
                tg.now.t += 1  # type: ignore[attr-defined]
                await bot.send_message(
                    chat_id, part.text, parse_mode=ParseMode.HTML, reply_markup=part.keyboard
                )

    asyncio.run(main())
    return tg.messages(chat_id)


def test_customer_names_and_every_other_value_are_escaped(tg):
    message = compose(payload(customer="A&B <Ltd>"), "en")
    message.title = "Receivables <today> & tomorrow"
    message.sections[0].facts.append(Fact("owner <rep>", "x > y & z"))
    message.footer = "<i>not markup</i>"

    html = render_text(message)

    assert "A&amp;B &lt;Ltd&gt;" in html
    assert "A&B" not in html and "<Ltd>" not in html
    assert html.startswith("<b>Receivables &lt;today&gt; &amp; tomorrow</b>\n")
    assert "<b>owner &lt;rep&gt;:</b> x &gt; y &amp; z" in html
    assert html.endswith("<i>&lt;i&gt;not markup&lt;/i&gt;</i>")
    plain, entities = parse_telegram_html(html)  # valid Telegram HTML
    assert "INV-2026-0001 · A&B <Ltd> · CN¥12,800.00 · 12 days overdue" in plain
    assert {e["type"] for e in entities} == {"bold", "italic"}

    (stored,) = deliver(tg, 1001, render_parts(message, token))
    assert stored.parse_mode == "HTML"
    assert stored.plain == plain.strip()
    assert "Receivables <today> & tomorrow" in stored.plain


def test_escape_html_escapes_what_telegram_parses():
    assert escape_html("a & b <c> \"d\" 'e'") == "a &amp; b &lt;c&gt; \"d\" 'e'"
    assert escape_html(12) == "12"


def test_a_chinese_reminder_renders_in_chinese(tg):
    message = compose(payload("zh_CN", customer="上海<宏达>&机械"), "zh_CN")
    html = render_text(message)

    lines = html.split("\n")
    assert lines[0].startswith("<b>应收账款催收提醒 — 2026年11月25日</b>")
    assert lines[1] == "今天有 1 张发票需要您跟进"
    assert "• INV-2026-0001 · 上海&lt;宏达&gt;&amp;机械 · ¥12,800.00 · 逾期 12 天" in lines
    assert lines[-1] == "<i>CreditBot · 可通过按钮确认、承诺付款或提出争议</i>"

    parts = render_parts(message, token)
    (stored,) = deliver(tg, 1002, parts)
    assert "上海<宏达>&机械" in stored.plain
    labels = [b["text"] for row in stored.reply_markup["inline_keyboard"] for b in row]
    assert labels == ["确认 · INV-2026-0001", "承诺付款", "争议", "稍后提醒"]


def test_the_keyboard_has_two_buttons_a_row_and_carries_the_tokens():
    section_buttons = [Button(f"S{i}", "ack", f"v{i}") for i in range(3)]
    message = Message(
        "T",
        "s",
        sections=[Section("H", lines=["x"], buttons=section_buttons)],
        buttons=[Button("Approve " + "y" * 100, "approve", "req-1", "primary")],
    )
    (part,) = render_parts(message, lambda b: f"tok-{b.value}")

    assert part.keyboard is not None
    rows = [[(b.text, b.callback_data) for b in row] for row in part.keyboard.inline_keyboard]
    assert rows[:2] == [[("S0", "tok-v0"), ("S1", "tok-v1")], [("S2", "tok-v2")]]
    ((text, data),) = rows[2]  # the message's buttons start a row of their own
    assert data == "tok-req-1"
    assert len(text) == 64 and text.endswith("…")


def test_a_message_without_buttons_has_no_keyboard():
    (part,) = render_parts(Message("T", "s", [Section("H", lines=["a"])]), token)
    assert part.keyboard is None
    assert part.text == "<b>T</b>\ns\n\n<b>H</b>\n• a"


def test_callback_data_over_64_bytes_is_refused():
    message = Message("T", "s", buttons=[Button("Ack", "ack", "INV-1")])
    with pytest.raises(ValueError, match="65 bytes"):
        render_parts(message, lambda b: "x" * 65)
    with pytest.raises(ValueError, match="66 bytes"):  # 22 characters, 66 bytes of UTF-8
        render_parts(message, lambda b: "确" * 22)
    with pytest.raises(ValueError, match="0 bytes"):
        render_parts(message, lambda b: "")
    (part,) = render_parts(message, lambda b: "确" * 21 + "x")  # 64 bytes: fine
    assert part.keyboard is not None


def test_a_long_message_is_split_on_line_boundaries_with_the_keyboard_last(tg):
    lines = [f"INV-{i:04d} · Customer <{i}> & Sons · ¥{i}.00 · {i} days late" for i in range(600)]
    message = Message(
        "Receivables",
        "600 invoices",
        sections=[
            Section("Overdue", lines=lines[:300], more=7, buttons=[Button("Ack", "ack", "a")]),
            Section("Broken promises", text="still open", lines=lines[300:]),
        ],
        buttons=[Button("Snooze", "snooze", "s")],
        footer="CreditBot",
    )
    whole = render_text(message)
    parts = render_parts(message, token)

    assert len(whole) > 3 * MAX_TEXT
    assert len(parts) >= 4
    assert all(len(p.text) <= MAX_TEXT for p in parts)
    assert "\n".join(p.text for p in parts) == whole  # cut only between lines, nothing lost
    assert [p.keyboard is not None for p in parts] == [False] * (len(parts) - 1) + [True]
    for p in parts:  # every part is valid Telegram HTML on its own
        parse_telegram_html(p.text)

    stored = deliver(tg, 1003, parts)
    assert [m.text for m in stored] == [p.text for p in parts]
    assert [m.reply_markup is not None for m in stored] == [p.keyboard is not None for p in parts]
    shown = "\n".join(m.plain for m in stored)
    assert all(f"• {line}" in shown for line in lines)


def test_a_single_over_long_line_is_cut_with_an_ellipsis_and_its_tags_closed(tg):
    message = Message("T", "s", [Section("&" * 3000, lines=["<" * 5000])])
    parts = render_parts(message, token)

    assert all(len(p.text) <= MAX_TEXT for p in parts)
    assert parts[0].text == "<b>T</b>\ns\n"  # the next line would not fit beside them
    heading = parts[1].text
    assert heading.startswith("<b>&amp;") and heading.endswith("&amp;…</b>")  # not in "&amp;"
    assert parts[-1].text.endswith("&lt;…")
    stored = deliver(tg, 1004, parts)
    assert len(stored) == len(parts)


def test_clip_html_keeps_whole_lines_for_edits():
    html = "\n".join(f"<b>line {i}</b> &amp; more" for i in range(500))
    clipped = clip_html(html, MAX_TEXT)
    assert len(clipped) <= MAX_TEXT
    head, tail = clipped.rsplit("\n", 1)
    assert tail == "…"
    assert html.startswith(head + "\n")
    parse_telegram_html(clipped)
    assert clip_html("<b>short</b>") == "<b>short</b>"


def test_split_html_drops_blank_pieces_telegram_would_refuse():
    assert split_html("a\n\n\n\n\nb", limit=2) == ["a\n", "b"]  # not "\n\n"
    assert split_html("\n\n") == []


def test_the_summary_is_shown_once_and_an_admin_alert_keeps_its_reason():
    alert = compose(
        {
            "kind": "admin_alert",
            "message_id": 12,
            "message_kind": "reminder",
            "recipient_code": "rep01",
            "channel": "telegram",
            "status": "failed",
            "reason": "Forbidden: bot was blocked by the user",
            "attempts": 1,
        },
        "en",
    )
    html = render_text(alert)
    assert "Message 12 to rep01 failed: Forbidden: bot was blocked by the user" in html
    assert "<b>kind:</b> reminder" in html

    hold = Message("Holds", "C1 is on hold", [Section("Credit holds", lines=["C1 is on hold"])])
    assert render_text(hold).count("C1 is on hold") == 1
