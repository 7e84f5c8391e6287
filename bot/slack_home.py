"""Block Kit for the App Home tab and the ``/credit`` answer, from ``credit.store.views`` data.

Pure functions: data in, Slack JSON out. Sections carry stable ``block_id``s (``tier:NAME``,
``most_overdue``, ``promises``, ``approvals``, ``not_linked``; ``rating``, ``exposure``,
``aging``, ``status`` in a credit file) so they can be found again. Amounts and dates are
formatted for the person's locale, and so are the labels: every one is a ``home_…`` or
``credit_…`` string in ``templates/i18n/<locale>.toml`` (counts choose ``…_one``/``…_other``).
The "not linked" view has no person, hence no locale: it is English and Chinese.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from bot.i18n import Translator
from bot.slack_render import MAX_HEADER_TEXT, MAX_SECTION_TEXT, escape_mrkdwn
from credit.aging import TierTable
from credit.store.views import CreditFile, PendingApprovals, PromiseDue, Receivables

Block = dict[str, Any]
PROMISES_LISTED = 10


def _header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:MAX_HEADER_TEXT]}}


def _section(block_id: str, text: str) -> Block:
    if len(text) > MAX_SECTION_TEXT:
        text = text[: MAX_SECTION_TEXT - 1] + "…"
    return {"type": "section", "block_id": block_id, "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def money_text(t: Translator, totals: dict[str, Decimal]) -> str:
    """Totals per currency, e.g. ``CN¥12,500.00 + US$300.00``; ``—`` when empty."""
    return t.totals({cur: str(amount) for cur, amount in totals.items() if amount})


class Scope(str):
    """What a person sees, as ``scope_text`` says it in English; ``home_view`` translates it."""

    key: str
    region: str | None

    def __new__(cls, key: str, region: str | None) -> Scope:
        obj = super().__new__(cls, _scope_in(Translator(None), key, region))
        obj.key, obj.region = key, region
        return obj


def _scope_in(t: Translator, key: str, region: str | None) -> str:
    return t(key, region=region or "")


def scope_text(role: str, region: str | None, t: Translator | None = None) -> str:
    """The scope in ``t``'s language; without ``t`` a ``Scope`` (English until translated)."""
    if role == "rep":
        key = "home_scope_rep"
    elif role == "regional_manager":
        key = "home_scope_region" if region else "home_scope_no_region"
    else:
        key = "home_scope_company"
    return _scope_in(t, key, region) if t is not None else Scope(key, region)


def _count(t: Translator, key: str, count: int, **values: Any) -> str:
    """``key_one`` for 1, else ``key_other``, filled with ``count`` and ``values``."""
    return t(f"{key}_one" if count == 1 else f"{key}_other", count=count, **values)


def home_view(
    t: Translator,
    *,
    name: str,
    scope: str,
    as_of: date,
    tiers: TierTable,
    receivables: Receivables,
    promises: Sequence[PromiseDue],
    approvals: PendingApprovals,
    horizon_days: int,
) -> dict[str, Any]:
    if isinstance(scope, Scope):
        scope = _scope_in(t, scope.key, scope.region)
    blocks: list[Block] = [
        _header(t("home_title", name=name)),
        _context(t("home_scope", scope=escape_mrkdwn(scope), date=t.date(as_of))),
        _header(t("home_receivables")),
    ]
    for total in receivables.tiers:
        label = t.tier(total.tier, tiers.by_name(total.tier).action)
        blocks.append(
            _section(
                f"tier:{total.tier}",
                f"*{escape_mrkdwn(label)}*\n"
                + _count(t, "home_tier_line", total.count, totals=money_text(t, total.totals)),
            )
        )
    if receivables.most_overdue:
        lines = [
            f"• {escape_mrkdwn(i.number)} · {escape_mrkdwn(i.customer_name)} "
            f"({escape_mrkdwn(i.customer_code)}) · {t.money(i.open_amount, i.currency)} · "
            f"{t.days_text(i.days)}" + (t("home_disputed") if i.disputed else "")
            for i in receivables.most_overdue
        ]
        text = f"*{t('home_most_overdue')}*\n" + "\n".join(lines)
    else:
        text = f"*{t('home_most_overdue')}*\n{t('home_nothing_overdue')}"
    blocks.append(_section("most_overdue", text))

    blocks += [{"type": "divider"}, _header(t("home_promises"))]
    if promises:
        lines = [
            f"• {t.date(p.promised_date)} · {escape_mrkdwn(p.invoice)} · "
            f"{escape_mrkdwn(p.customer_name)} · {t.money(p.amount, p.currency)}"
            for p in promises[:PROMISES_LISTED]
        ]
        if len(promises) > PROMISES_LISTED:
            lines.append(t("home_more", count=len(promises) - PROMISES_LISTED))
        text = _count(t, "home_promises_due", len(promises), days=horizon_days) + "\n"
        text += "\n".join(lines)
    else:
        text = t("home_no_promises", days=horizon_days)
    blocks.append(_section("promises", text))

    blocks += [{"type": "divider"}, _header(t("home_approvals"))]
    if approvals.count:
        lines = [
            f"• {escape_mrkdwn(r.order_ref)} · {escape_mrkdwn(r.customer_name)} "
            f"({escape_mrkdwn(r.customer_code)}) · {t.money(r.amount, r.currency)}"
            for r in approvals.listed
        ]
        if approvals.count > len(approvals.listed):
            lines.append(t("home_more", count=approvals.count - len(approvals.listed)))
        text = _count(t, "home_approvals_pending", approvals.count) + "\n" + "\n".join(lines)
    else:
        text = t("home_no_approvals")
    blocks.append(_section("approvals", text))
    return {"type": "home", "blocks": blocks}


def not_linked_view() -> dict[str, Any]:
    """No person, no locale: the message in English, then in Chinese."""
    en, zh = Translator("en"), Translator("zh_CN")
    return {
        "type": "home",
        "blocks": [
            _header(en("home_not_linked_title")),
            _section("not_linked", f"{en('home_not_linked')}\n\n{zh('home_not_linked')}"),
        ],
    }


def credit_file_message(t: Translator, f: CreditFile, as_of: date) -> tuple[list[Block], str]:
    """The ``/credit`` answer: blocks and the fallback text."""
    title = f"{f.name} ({f.code})"
    yes, no = t("credit_yes"), t("credit_no")
    hold = no
    if f.credit_hold:
        hold = (
            t("credit_hold_reason", reason=escape_mrkdwn(f.credit_hold_reason))
            if f.credit_hold_reason
            else yes
        )
    probation = no
    if f.on_probation and f.probation_until is not None:
        probation = t("credit_probation_until", date=t.date(f.probation_until))
    status = [
        t("credit_hold", value=hold),
        t("credit_blacklisted", value=yes if f.blacklisted else no),
        t("credit_probation", value=probation),
    ]
    aging = [
        f"• {escape_mrkdwn(t('credit_aging_current') if label == 'current' else label)}: "
        f"{money_text(t, totals)}"
        for label, totals in f.aging
    ]
    limit, exposure = t.money(f.credit_limit, f.currency), money_text(t, f.exposure)
    blocks = [
        _header(t("credit_file_title", title=title)),
        _section(
            "rating",
            t("credit_rating", rating=f.rating) + "\n" + t("credit_limit", limit=limit),
        ),
        _section(
            "exposure",
            t("credit_exposure", exposure=exposure)
            + "\n"
            + t("credit_open_invoices", count=f.open_invoices),
        ),
        _section("aging", t("credit_aging") + "\n" + "\n".join(aging)),
        _section("status", "\n".join(status)),
        _context(t("credit_as_of", date=t.date(as_of))),
    ]
    text = t("credit_text", title=title, rating=f.rating, limit=limit, exposure=exposure)
    return blocks, text


__all__ = [
    "Scope",
    "credit_file_message",
    "home_view",
    "money_text",
    "not_linked_view",
    "scope_text",
]
