"""From an outbox payload (domain data) to a ``Message`` in the recipient's language."""

from __future__ import annotations

from typing import Any

from bot.i18n import Translator
from bot.messages import Button, Fact, Message, Section

# Lines listed per section before "… and N more" (Slack allows 50 blocks a message).
MAX_LINES_PER_SECTION = 10


def compose(payload: dict[str, Any], locale: str | None = None) -> Message:
    kind = payload.get("kind")
    locale = locale or payload.get("recipient", {}).get("locale")
    builder = _BUILDERS.get(str(kind))
    if builder is None:
        raise ValueError(f"no message composer for payload kind {kind!r}")
    return builder(payload, Translator(locale))


def _reminder(p: dict[str, Any], t: Translator) -> Message:
    count = sum(s["count"] for s in p["sections"])
    sections: list[Section] = []
    for s in p["sections"]:
        heading = t(
            "tier_heading",
            tier_label=t.tier(s["tier"], s.get("action", "")),
            count=s["count"],
            totals=t.totals(s["totals"]),
        )
        lines = [_line(t, ln) for ln in s["lines"][:MAX_LINES_PER_SECTION]]
        shown = len(lines)
        sections.append(
            Section(
                heading=heading,
                text=t("tier_new", new=s["new_count"]) if s.get("new_count") else "",
                lines=lines,
                more=s["count"] - shown,
                buttons=_line_buttons(t, s["tier"], s["lines"][0]) if s["lines"] else [],
            )
        )
    broken = p.get("broken_promises") or []
    if broken:
        sections.append(
            Section(
                heading=t("broken_heading"),
                lines=[
                    t(
                        "broken_line",
                        number=b["number"],
                        customer=b["customer_name"],
                        promised=t.money(b["promised_amount"], b["currency"]),
                        date=t.date(b["promised_date"]),
                        open=t.money(b["open_amount"], b["currency"]),
                    )
                    for b in broken
                ],
            )
        )
        count += len(broken)
    unacked = p.get("unacknowledged") or []
    if unacked:
        sections.append(
            Section(
                heading=t("unack_heading"),
                lines=[
                    t(
                        "unack_line",
                        rep=u["rep"],
                        number=u["number"],
                        customer=u["customer_name"],
                        amount=t.money(u["open_amount"], u["currency"]),
                        days=u["days"],
                        after=u["after_days"],
                    )
                    for u in unacked
                ],
            )
        )
        count += len(unacked)
    holds = p.get("credit_holds") or []
    if holds:
        sections.append(_holds_section(t, holds, p.get("credit_holds_total", len(holds))))
        count += len(holds)
    return Message(
        title=t("reminder_title", date=t.date(p["business_date"])),
        summary=t("reminder_summary", count=count),
        sections=sections,
        footer=t("footer"),
        locale=t.locale,
    )


def _line(t: Translator, ln: dict[str, Any]) -> str:
    text = t(
        "line",
        number=ln["number"],
        customer=ln["customer_name"],
        amount=t.money(ln["open_amount"], ln["currency"]),
        days_text=t.days_text(ln["days"]),
    )
    return text + (t("line_disputed") if ln.get("disputed") else "")


def _line_buttons(t: Translator, tier: str, ln: dict[str, Any]) -> list[Button]:
    """What the recipient can do about the section's most overdue invoice."""
    value = f"{ln['number']}|{tier}"
    return [
        Button(f"{t('button_ack')} · {ln['number']}", "ack", value, "primary"),
        Button(t("button_promise"), "promise", value),
        Button(t("button_dispute"), "dispute", value, "danger"),
        Button(t("button_snooze"), "snooze", value),
    ]


def _holds_section(t: Translator, holds: list[dict[str, Any]], total: int) -> Section:
    lines = []
    for h in holds[:MAX_LINES_PER_SECTION]:
        customer = f"{h['customer_name']} ({h['customer']})"
        if h["on"]:
            lines.append(
                t("hold_on_summary", customer=customer)
                + " — "
                + t("hold_on_text", reason=h.get("reason") or "")
            )
        else:
            lines.append(t("hold_off_summary", customer=customer))
    return Section(heading=t("holds_heading"), lines=lines, more=total - len(lines))


def _credit_hold(p: dict[str, Any], t: Translator) -> Message:
    """The credit-hold review's announcement: holds lifted since the scan."""
    holds = p.get("credit_holds") or []
    section = _holds_section(t, holds, p.get("credit_holds_total", len(holds)))
    return Message(
        title=t("holds_heading"),
        summary=section.lines[0] if len(holds) == 1 else t("holds_summary", count=len(holds)),
        sections=[section],
        locale=t.locale,
    )


def _admin_alert(p: dict[str, Any], t: Translator) -> Message:
    return Message(
        title=t("alert_title"),
        summary=t(
            "alert_summary",
            message_id=p["message_id"],
            recipient=p["recipient_code"],
            status=p["status"],
            reason=p["reason"],
        ),
        sections=[
            Section(
                heading="",
                facts=[
                    Fact("kind", str(p.get("message_kind", ""))),
                    Fact("channel", str(p.get("channel", ""))),
                    Fact("attempts", str(p.get("attempts", ""))),
                ],
            )
        ],
        locale=t.locale,
    )


_BUILDERS = {"reminder": _reminder, "credit_hold": _credit_hold, "admin_alert": _admin_alert}

# Shipment approvals: the approver's card, its reminder, the requester's answer.
from bot.approval_cards import BUILDERS as _APPROVAL_BUILDERS  # noqa: E402

_BUILDERS.update(_APPROVAL_BUILDERS)

# The daily digest (its chart is sent after it by the Slack and Telegram transports).
from bot.digest_message import BUILDERS as _DIGEST_BUILDERS  # noqa: E402

_BUILDERS.update(_DIGEST_BUILDERS)
