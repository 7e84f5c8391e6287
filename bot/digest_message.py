"""The daily digest as a ``Message`` (outbox kind ``digest``; registered in ``bot.compose``).

The payload is the digest's contract (``credit.store.digest.build_digests``): amounts are
decimal strings per currency, dates ISO strings. The message, in the recipient's language:

* title (scope and business date) and a one-line summary (overdue of open);
* for a rep, "your day" first: promises due today, invoices entering a tier today, their
  pending shipment requests;
* the aging buckets with their totals and the change since the last digest, total open and
  overdue;
* DSO and collection rate (month, quarter);
* the most overdue customers, promises due today and broken, credit holds set and lifted,
  shipment requests waiting for a decision (with their age), the bad-debt provision;
* for the company-wide digest, one line per region (overdue, then per bucket).

Sections with nothing to say are left out (the aging and the ratios always show). The chart
(``bot.charts.aging_chart``) goes out after the message, sent by the transport.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from babel.numbers import format_decimal, format_percent

from bot.i18n import Translator
from bot.messages import Fact, Message, Section

DIGEST = "digest"
MAX_LINES = 10  # lines listed per section before "… and N more"


def bucket_label(t: Translator, bucket: dict[str, Any], prefix: str = "") -> str:
    """A bucket's name from its bounds: "current", "1–30 days", "over 180 days"; with
    ``prefix="chart_"`` the chart's short forms ("1–30", ">180")."""
    lo, hi = bucket.get("min_days"), bucket.get("max_days")
    if lo is None or bucket.get("key") == "current":
        return t(f"{prefix}bucket_current")
    if hi is None:
        return t(f"{prefix}bucket_over", edge=int(lo) - 1)
    return t(f"{prefix}bucket_range", lo=lo, hi=hi)


def scope_label(t: Translator, payload: dict[str, Any]) -> str:
    """Whose numbers: "company-wide", "region East", or the rep's name."""
    scope = payload.get("scope")
    name = payload.get("scope_name") or ""
    if scope == "company":
        return t("digest_scope_company")
    if scope == "region":
        return t("digest_scope_region", name=name)
    return t("digest_scope_rep", name=name)


def _totals(t: Translator, amounts: dict[str, str]) -> str:
    """``CN¥1,200.00 + US$50.00``, leaving out currencies at zero (all zero: the first)."""
    shown = {cur: v for cur, v in amounts.items() if Decimal(v) != 0}
    if not shown and amounts:
        first = next(iter(amounts))
        shown = {first: amounts[first]}
    return t.totals(shown)


def _signed_totals(t: Translator, change: dict[str, str]) -> str:
    """``+¥1,200.00 / -US$50.00``: each currency's change with its sign."""
    parts = []
    for cur, raw in sorted(change.items()):
        value = Decimal(raw)
        if value == 0:
            continue
        sign = "+" if value > 0 else "-"
        parts.append(sign + t.money(abs(value), cur))
    return " / ".join(parts)


def _percent(t: Translator, value: str | None) -> str:
    """A ratio (``"0.8534"``) as a percentage, or "n/a"."""
    if value is None or value == "":
        return t("digest_not_available")
    return format_percent(Decimal(value), "#,##0.#%", locale=t.locale)


def _days(t: Translator, value: str | None) -> str:
    if value is None or value == "":
        return t("digest_not_available")
    return t("digest_dso_days", days=format_decimal(Decimal(value), "#,##0.0", locale=t.locale))


def _age(t: Translator, hours: Any) -> str:
    whole = int(Decimal(str(hours or 0)))
    if whole < 48:
        return t("digest_age_hours", hours=whole)
    return t("digest_age_days", days=whole // 24, hours=whole % 24)


def _section(
    t: Translator,
    heading: str,
    lines: list[str],
    *,
    limit: int = MAX_LINES,
    total: int | None = None,
) -> Section:
    """Up to ``limit`` lines, then "… and N more" for the rest of ``total`` (the payload's
    ``counts``: its lists are capped) or of ``lines``. Said in a line of our own: the
    renderers' "… and N more" counts invoices in Chinese (张), these are items of any kind."""
    shown = lines[:limit]
    rest = max(len(lines), total or 0) - len(shown)
    if rest > 0:
        shown = [*shown, t("digest_more", count=rest)]
    return Section(heading=heading, lines=shown)


def _bucket_name(t: Translator, buckets: list[dict[str, Any]], key: str) -> str:
    for b in buckets:
        if b.get("key") == key:
            return bucket_label(t, b)
    return key


def _promise_line(t: Translator, p: dict[str, Any]) -> str:
    return t(
        "digest_promise_line",
        number=p["number"],
        customer=p["customer_name"],
        amount=t.money(p["amount"], p["currency"]),
        date=t.date(p["promised_date"]),
    )


def _approval_line(t: Translator, key: str, a: dict[str, Any]) -> str:
    return t(
        key,
        id=a["request_id"],
        customer=a["customer_name"],
        amount=t.money(a["amount"], a["currency"]),
        age=_age(t, a.get("age_hours")),
    )


def _your_day(t: Translator, day: dict[str, Any]) -> Section:
    lines = [
        t(
            "digest_your_promise",
            number=p["number"],
            customer=p["customer_name"],
            amount=t.money(p["amount"], p["currency"]),
        )
        for p in day.get("promises_due_today") or []
    ]
    lines += [
        t(
            "digest_entering_tier",
            number=e["number"],
            customer=e["customer_name"],
            amount=t.money(e["amount"], e["currency"]),
            tier=t.tier(e["tier"]),
        )
        for e in day.get("entering_tier") or []
    ]
    lines += [
        _approval_line(t, "digest_your_request", r) for r in day.get("pending_requests") or []
    ]
    counts = day.get("counts") or {}
    listed = ("promises_due_today", "entering_tier", "pending_requests")
    total = sum(max(len(day.get(k) or []), counts.get(k, 0)) for k in listed)
    section = _section(t, t("digest_your_day_heading"), lines, limit=2 * MAX_LINES, total=total)
    if not lines:
        section.text = t("digest_nothing_today")
    return section


def _aging(t: Translator, p: dict[str, Any]) -> Section:
    facts = []
    for b in p.get("buckets") or []:
        value = _totals(t, b.get("totals") or {})
        change = _signed_totals(t, b.get("change") or {})
        if change:
            value += t("digest_change", change=change)
        facts.append(Fact(bucket_label(t, b), value))
    facts.append(Fact(t("digest_total_open"), _totals(t, p.get("total_open") or {})))
    facts.append(Fact(t("digest_total_overdue"), _totals(t, p.get("total_overdue") or {})))
    return Section(heading=t("digest_aging_heading"), facts=facts)


def _ratios(t: Translator, p: dict[str, Any]) -> Section:
    dso = p.get("dso") or {}
    rate = p.get("collection_rate") or {}
    return Section(
        heading=t("digest_kpi_heading"),
        facts=[
            Fact(
                t("digest_dso"),
                t(
                    "digest_kpi_value",
                    month=_days(t, dso.get("month")),
                    quarter=_days(t, dso.get("quarter")),
                ),
            ),
            Fact(
                t("digest_collection_rate"),
                t(
                    "digest_kpi_value",
                    month=_percent(t, rate.get("month")),
                    quarter=_percent(t, rate.get("quarter")),
                ),
            ),
        ],
    )


def _provision(t: Translator, p: dict[str, Any]) -> Section | None:
    provision = p.get("provision") or {}
    buckets = p.get("buckets") or []
    lines = [
        t(
            "digest_provision_bracket",
            bucket=_bucket_name(t, buckets, str(b.get("key"))),
            rate=_percent(t, b.get("rate")),
            provision=_totals(t, b.get("provision") or {}),
            base=_totals(t, b.get("base") or {}),
        )
        for b in provision.get("brackets") or []
        if any(Decimal(v) for v in (b.get("provision") or {}).values())
    ]
    lines += [
        t(
            "digest_provision_specific",
            customer=s["customer_name"],
            code=s["customer"],
            provision=_totals(t, s.get("provision") or {}),
            base=_totals(t, s.get("base") or {}),
        )
        for s in provision.get("specific") or []
    ]
    total = provision.get("total") or {}
    if not lines and not any(Decimal(v) for v in total.values()):
        return None
    listed = len(provision.get("specific") or [])
    unlisted = max(0, int(provision.get("specific_count") or 0) - listed)
    section = _section(t, t("digest_provision_heading"), lines, total=len(lines) + unlisted)
    section.facts = [Fact(t("digest_provision_total"), _totals(t, total))]
    return section


def _regions(t: Translator, p: dict[str, Any]) -> Section | None:
    regions = p.get("regions") or []
    if not regions:
        return None
    buckets = p.get("buckets") or []
    lines = []
    for r in regions:
        per_bucket = [
            t("digest_region_bucket", bucket=_bucket_name(t, buckets, key), amount=_totals(t, amt))
            for key, amt in (r.get("buckets") or {}).items()
            if key != "current" and any(Decimal(v) for v in amt.values())
        ]
        lines.append(
            t(
                "digest_region_line",
                region=r["region"],
                overdue=_totals(t, r.get("total_overdue") or {}),
                buckets=" · ".join(per_bucket) or "—",
            )
        )
    return _section(t, t("digest_regions_heading"), lines, limit=len(lines))


def _top_line(t: Translator, c: dict[str, Any], with_region: bool) -> str:
    line = t(
        "digest_top_line",
        customer=c["customer_name"],
        code=c["customer"],
        overdue=_totals(t, c.get("overdue") or {}),
        days=c.get("max_days", "—"),
    )
    if with_region and c.get("region"):
        line += t("digest_top_region", region=c["region"])
    return line


def compose_digest(p: dict[str, Any], t: Translator) -> Message:
    """The digest payload ``p`` as a message in ``t``'s language."""
    counts = p.get("counts") or {}
    rep = p.get("your_day") is not None
    sections: list[Section] = []
    if rep:
        sections.append(_your_day(t, p["your_day"]))
    sections.append(_aging(t, p))
    sections.append(_ratios(t, p))
    lists: list[tuple[str, str, list[str]]] = [
        (
            "digest_top_heading",
            "",
            [_top_line(t, c, p.get("scope") == "company") for c in p.get("top_overdue") or []],
        ),
        (
            "digest_promises_due_heading",
            "promises_due_today",
            # a rep has them in "your day"
            [] if rep else [_promise_line(t, x) for x in p.get("promises_due_today") or []],
        ),
        (
            "digest_promises_broken_heading",
            "promises_broken",
            [_promise_line(t, x) for x in p.get("promises_broken") or []],
        ),
        (
            "digest_holds_on_heading",
            "holds_on",
            [
                t(
                    "digest_hold_on_line",
                    customer=h["customer_name"],
                    code=h["customer"],
                    reason=h.get("reason") or "—",
                )
                for h in p.get("holds_on") or []
            ],
        ),
        (
            "digest_holds_off_heading",
            "holds_off",
            [
                t("digest_hold_off_line", customer=h["customer_name"], code=h["customer"])
                for h in p.get("holds_off") or []
            ],
        ),
        (
            "digest_approvals_heading",
            "pending_approvals",
            []
            if rep
            else [
                _approval_line(t, "digest_approval_line", a)
                for a in p.get("pending_approvals") or []
            ],
        ),
    ]
    for heading, count_key, lines in lists:
        if lines:
            sections.append(_section(t, t(heading), lines, total=counts.get(count_key)))
    if not rep:  # the provision is the desk's and the managers' business
        provision = _provision(t, p)
        if provision is not None:
            sections.append(provision)
    regions = _regions(t, p)
    if regions is not None:
        sections.append(regions)
    return Message(
        title=t("digest_title", scope=scope_label(t, p), date=t.date(p["business_date"])),
        summary=t(
            "digest_summary",
            overdue=_totals(t, p.get("total_overdue") or {}),
            open=_totals(t, p.get("total_open") or {}),
        ),
        sections=sections,
        footer=t("digest_footer"),
        locale=t.locale,
    )


BUILDERS = {DIGEST: compose_digest}
