"""Digest payloads exactly as the payload contract of the daily digest describes them
(``credit.store.digest.build_digests``), for the chart, composer and delivery tests.

Amounts are decimal strings per currency; buckets follow the default edges
``[0, 30, 60, 90, 180]``.
"""

from __future__ import annotations

import copy
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

BUSINESS_DATE = "2026-11-25"

BUCKETS = (
    ("current", None, 0, "812345.67", "12000.00"),
    ("1_30", 1, 30, "356000.00", "-8400.50"),
    ("31_60", 31, 60, "198500.25", "15000.00"),
    ("61_90", 61, 90, "87000.00", "0.00"),
    ("91_180", 91, 180, "143250.00", "2300.00"),
    ("over_180", 181, None, "65400.00", "-1200.00"),
)

REGIONS = ("East", "South", "North", "West")
CHINESE_REGIONS = ("华东区", "华南区", "华北区", "西部")
CHINESE_CUSTOMERS = ("上海浦东新材料有限公司", "杭州西湖电子科技", "南京长江机械制造厂")


def _money(value: str | Decimal) -> str:
    return f"{Decimal(value):.2f}"


def trend(days: int = 30, end: str = BUSINESS_DATE, start: str = "780000.00") -> list[dict]:
    """``days`` daily points ending on ``end``: the overdue total drifting up and down."""
    last = date.fromisoformat(end)
    base = Decimal(start)
    out = []
    for i in range(days):
        day = last - timedelta(days=days - 1 - i)
        wobble = Decimal((i * 7919) % 23 - 11) * Decimal("3100.00")
        out.append({"date": day.isoformat(), "overdue": {"CNY": _money(base + wobble + i * 1500)}})
    return out


def digest_payload(
    scope: str = "region",
    *,
    locale: str = "en",
    chinese: bool = False,
    trend_days: int = 30,
    many: int = 0,
) -> dict[str, Any]:
    """A digest for a regional manager (``scope="region"``), the credit desk (``"company"``)
    or a rep (``"rep"``, with ``your_day``). ``chinese``: Chinese customer, region and person
    names. ``many``: that many extra top-overdue customers, promises and approvals (long
    sections)."""
    names = CHINESE_CUSTOMERS if chinese else ("Acme Trading Co.", "Bolt & Nut Ltd", "Cobalt <Ltd>")
    region = "华东区" if chinese else "East"
    recipient = {
        "region": {
            "code": "rm-east",
            "name": "王丽" if chinese else "Li Wang",
            "role": "regional_manager",
            "locale": locale,
        },
        "company": {
            "code": "cm01",
            "name": "陈静" if chinese else "Jing Chen",
            "role": "credit_manager",
            "locale": locale,
        },
        "rep": {
            "code": "rep01",
            "name": "王磊" if chinese else "Lei Wang",
            "role": "rep",
            "locale": locale,
        },
    }[scope]
    scope_name = {"region": region, "company": "ACME", "rep": recipient["name"]}[scope]
    buckets = [
        {
            "key": key,
            "min_days": lo,
            "max_days": hi,
            "totals": {"CNY": total},
            "change": {"CNY": change},
        }
        for key, lo, hi, total, change in BUCKETS
    ]
    buckets[2]["totals"]["USD"] = "4200.00"  # a second currency in one bucket
    buckets[2]["change"]["USD"] = "4200.00"
    overdue = sum(Decimal(b["totals"]["CNY"]) for b in buckets[1:])
    open_ = overdue + Decimal(buckets[0]["totals"]["CNY"])
    top = [
        {
            "customer": f"C{i + 1:03d}",
            "customer_name": name,
            "overdue": {"CNY": _money(Decimal("98000.00") - i * Decimal("12500.50"))},
            "max_days": 200 - 40 * i,
        }
        for i, name in enumerate(names)
    ]
    top += [
        {
            "customer": f"X{i:03d}",
            "customer_name": f"{names[0]} branch {i}",
            "overdue": {"CNY": "1000.00"},
            "max_days": 5,
        }
        for i in range(many)
    ]
    promise = {
        "number": "INV-2026-000123",
        "customer_name": names[0],
        "amount": "25000.00",
        "currency": "CNY",
        "promised_date": BUSINESS_DATE,
    }
    broken = {
        **promise,
        "number": "INV-2026-000077",
        "customer_name": names[1],
        "amount": "8800.00",
        "promised_date": "2026-11-18",
    }
    approvals = [
        {
            "request_id": 41,
            "customer_name": names[2],
            "amount": "300000.00",
            "currency": "CNY",
            "age_hours": 5,
        },
        {
            "request_id": 38,
            "customer_name": names[1],
            "amount": "12500.00",
            "currency": "USD",
            "age_hours": 52,
        },
    ]
    approvals += [
        {
            "request_id": 100 + i,
            "customer_name": names[0],
            "amount": "1.00",
            "currency": "CNY",
            "age_hours": i,
        }
        for i in range(many)
    ]
    payload: dict[str, Any] = {
        "kind": "digest",
        "business_date": BUSINESS_DATE,
        "scope": scope,
        "scope_name": scope_name,
        "recipient": recipient,
        "reporting_currency": "CNY",
        "buckets": buckets,
        "total_open": {"CNY": _money(open_), "USD": "4200.00"},
        "total_overdue": {"CNY": _money(overdue), "USD": "4200.00"},
        "dso": {"month": "47.3", "quarter": "52.8"},
        "collection_rate": {"month": "0.8534", "quarter": None},
        "top_overdue": top,
        "promises_due_today": [promise] + [promise] * many,
        "promises_broken": [broken],
        "holds_on": [
            {
                "customer": "C003",
                "customer_name": names[2],
                "reason": "overdue 2–6 months (61 days)",
            }
        ],
        "holds_off": [{"customer": "C002", "customer_name": names[1]}],
        "pending_approvals": approvals,
        "provision": {
            "brackets": [
                {
                    "key": "1_30",
                    "rate": "0.02",
                    "base": {"CNY": "356000.00"},
                    "provision": {"CNY": "7120.00"},
                },
                {
                    "key": "over_180",
                    "rate": "0.60",
                    "base": {"CNY": "65400.00"},
                    "provision": {"CNY": "39240.00"},
                },
            ],
            "specific": [
                {
                    "customer": "C003",
                    "customer_name": names[2],
                    "base": {"CNY": "20000.00"},
                    "provision": {"CNY": "20000.00"},
                }
            ],
            "total": {"CNY": "66360.00"},
        },
        "regions": [],
        "trend": trend(trend_days),
        "your_day": None,
    }
    if scope == "company":
        payload["regions"] = [
            {
                "region": name,
                "buckets": {
                    key: {"CNY": _money(Decimal(total) / (n + 2))}
                    for key, _, _, total, _ in BUCKETS
                },
                "total_overdue": {"CNY": _money(overdue / (n + 2))},
            }
            for n, name in enumerate(CHINESE_REGIONS if chinese else REGIONS)
        ]
    if scope == "rep":
        payload["pending_approvals"] = []
        payload["your_day"] = {
            "promises_due_today": [promise],
            "entering_tier": [
                {
                    "number": "INV-2026-000200",
                    "customer_name": names[1],
                    "tier": "overdue_1m",
                    "amount": "43000.00",
                    "currency": "CNY",
                },
            ],
            "pending_requests": [approvals[0]],
        }
    return copy.deepcopy(payload)
