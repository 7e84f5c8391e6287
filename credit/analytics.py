"""Receivables measures for the daily digests. Pure functions over plain data (no database).

Amounts are ``Decimal`` per currency (``{"CNY": Decimal("1200.00"), "USD": …}``): without
exchange rates nothing here adds two currencies together. The storage side
(``credit.store.digest``) aggregates the ledger in SQL and hands the sums to these functions.

**Aging buckets** come from ``[aging] bucket_edges`` (``credit.aging.make_buckets``); each has a
stable key for payloads and snapshots: ``current``, ``1_30``, ``31_60``, ``61_90``, ``91_180``,
``over_180`` with the default edges (``bucket_key``). *Open* is every bucket; *overdue* is
every bucket but the first (with the default first edge 0 that is exactly "days past due
≥ 1"). The *change* of a bucket is today's total minus the total of the previous snapshot
(a currency missing on one side counts as zero); with no previous snapshot there is no
change (``None``), never a made-up one.

**DSO** (days sales outstanding), the simple method — DESIGN.md §1 names DSO among the AR
measures without prescribing a formula, so we use the one a reader can check by hand::

    DSO = open receivables at the as-of date / credit sales in the period × days in the period

* open receivables: the open amount of every open invoice (current and overdue, disputed
  included) when the digest runs;
* credit sales: the invoiced amount (``invoice.amount``, paid or not) of invoices issued in
  the period;
* the period is month-to-date (the 1st of the as-of month to the as-of date) or
  quarter-to-date (the 1st of the calendar quarter to the as-of date), and "days in the
  period" counts both ends: the days elapsed so far (25 on 25 November for the month, 56 for
  the quarter starting 1 October).

It is computed per currency (``dso_by_currency``); the digest's headline figure is the
reporting currency's (``[policy] default_currency``). No sales in the period: no DSO
(``None``). One decimal, rounded half up. Early in a period the few days' sales make DSO
jumpy: that is the simple method's known weakness (the countback method smooths it).

**Collection rate** — as DESIGN.md §1 defines it, "collected / billed" per period::

    collection rate = payments received in the period / amount billed in the period

payments by ``payment.paid_on``, billing by ``invoice.issue_date`` in the same month-to-date
or quarter-to-date period, per currency. It can exceed 1 (old invoices collected). Nothing
billed: ``None``. Two decimals, rounded half up.

**Bad-debt provision** — DESIGN.md §1: "by aging bracket (2 %–60 %, configurable)". Each
bucket has a rate (``[digest] provision_percent``; default current 0 %, 1–30 days 2 %, 31–60
5 %, 61–90 10 %, 91–180 30 %, over 180 60 %); the provision of a bracket is its open amount
times its rate, rounded half up to the cent per bracket and currency. Customers of a rating in
``[digest] specific_provision_ratings`` (default H, blacklist) and blacklisted customers are
provided for specifically, at 100 % of everything they owe, and their invoices are left out of
the brackets (nothing is provided for twice). The total is the brackets plus the specific
items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal, TypeVar

from credit.aging import Bucket

Amounts = dict[str, Decimal]  # per currency
Period = Literal["month", "quarter"]
PERIODS: tuple[Period, ...] = ("month", "quarter")
CENT = Decimal("0.01")
ZERO = Decimal("0.00")
FULL = Decimal("1")  # a specific provision: 100 %

T = TypeVar("T")


# --- buckets -----------------------------------------------------------------------------------


def bucket_key(bucket: Bucket) -> str:
    """A bucket's key: ``current``, ``1_30``, …, ``over_180`` (labels ``1-30``, ``>180``)."""
    if bucket.min_days is None:
        return "current"
    if bucket.max_days is None:
        return f"over_{bucket.min_days - 1}"
    return f"{bucket.min_days}_{bucket.max_days}"


def bucket_keys(buckets: Sequence[Bucket]) -> tuple[str, ...]:
    return tuple(bucket_key(b) for b in buckets)


def add(*parts: Mapping[str, Decimal]) -> Amounts:
    """Per-currency sum of several amounts."""
    out: Amounts = {}
    for part in parts:
        for currency, amount in part.items():
            out[currency] = out.get(currency, ZERO) + amount
    return out


def subtract(a: Mapping[str, Decimal], b: Mapping[str, Decimal]) -> Amounts:
    """``a - b`` per currency, over the currencies of both (missing = zero)."""
    return {cur: a.get(cur, ZERO) - b.get(cur, ZERO) for cur in sorted({*a, *b})}


def with_currencies(amounts: Mapping[str, Decimal], currencies: Iterable[str]) -> Amounts:
    """``amounts`` with every one of ``currencies`` present (zero where missing)."""
    return {cur: amounts.get(cur, ZERO) for cur in currencies}


def currencies_of(*amounts: Mapping[str, Decimal], first: str | None = None) -> list[str]:
    """The currencies in ``amounts``, ``first`` (the reporting currency) first, then A–Z."""
    seen = {cur for a in amounts for cur in a}
    rest = sorted(seen - {first}) if first else sorted(seen)
    return [first, *rest] if first else rest


def bucket_totals(
    rows: Iterable[tuple[str, str, Decimal]], keys: Sequence[str]
) -> dict[str, Amounts]:
    """Open amounts per bucket from ``(bucket_key, currency, amount)`` rows; every bucket key
    present (empty when nothing is in it); rows of the same bucket and currency add up."""
    totals: dict[str, Amounts] = {k: {} for k in keys}
    for key, currency, amount in rows:
        if key not in totals:
            raise KeyError(f"unknown aging bucket {key!r}")
        bucket = totals[key]
        bucket[currency] = bucket.get(currency, ZERO) + amount
    return totals


def total_open(totals: Mapping[str, Mapping[str, Decimal]]) -> Amounts:
    return add(*totals.values())


def total_overdue(totals: Mapping[str, Mapping[str, Decimal]]) -> Amounts:
    """Every bucket but ``current`` (the first)."""
    return add(*(v for k, v in totals.items() if k != "current"))


def bucket_changes(
    today: Mapping[str, Mapping[str, Decimal]],
    previous: Mapping[str, Mapping[str, Decimal]] | None,
) -> dict[str, Amounts] | None:
    """Per bucket of ``today``, today minus ``previous`` per currency; ``None`` without a
    previous snapshot. A bucket missing from ``previous`` was empty then."""
    if previous is None:
        return None
    return {key: subtract(amounts, previous.get(key, {})) for key, amounts in today.items()}


# --- DSO and collection rate ----------------------------------------------------------------


def period_start(as_of: date, period: Period) -> date:
    """The first day of the month or calendar quarter of ``as_of``."""
    if period == "month":
        return as_of.replace(day=1)
    if period == "quarter":
        return date(as_of.year, 3 * ((as_of.month - 1) // 3) + 1, 1)
    raise ValueError(f"unknown period {period!r}")


def period_days(as_of: date, period: Period) -> int:
    """Days from the period's first day to ``as_of``, both counted."""
    return (as_of - period_start(as_of, period)).days + 1


def dso(open_receivables: Decimal, credit_sales: Decimal, days: int) -> Decimal | None:
    """Open receivables / credit sales in the period × days in the period, one decimal;
    ``None`` when nothing was sold on credit in the period."""
    if credit_sales <= 0:
        return None
    value = open_receivables / credit_sales * days
    return value.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def collection_rate(collected: Decimal, billed: Decimal) -> Decimal | None:
    """Collected / billed in the period, two decimals; ``None`` when nothing was billed."""
    if billed <= 0:
        return None
    return (collected / billed).quantize(CENT, rounding=ROUND_HALF_UP)


def dso_by_currency(
    open_receivables: Mapping[str, Decimal], credit_sales: Mapping[str, Decimal], days: int
) -> dict[str, Decimal | None]:
    return {
        cur: dso(open_receivables.get(cur, ZERO), credit_sales.get(cur, ZERO), days)
        for cur in sorted({*open_receivables, *credit_sales})
    }


def collection_rate_by_currency(
    collected: Mapping[str, Decimal], billed: Mapping[str, Decimal]
) -> dict[str, Decimal | None]:
    return {
        cur: collection_rate(collected.get(cur, ZERO), billed.get(cur, ZERO))
        for cur in sorted({*collected, *billed})
    }


# --- bad-debt provision ------------------------------------------------------------------------


def provision_rates(percents: Sequence[Decimal], buckets: Sequence[Bucket]) -> dict[str, Decimal]:
    """Bucket key → rate as a fraction (``2`` percent → ``0.02``), one percentage per bucket."""
    if len(percents) != len(buckets):
        raise ValueError(f"{len(buckets)} provision rates needed, got {len(percents)}")
    return {bucket_key(b): Decimal(p) / 100 for b, p in zip(buckets, percents, strict=True)}


def provide(amounts: Mapping[str, Decimal], rate: Decimal) -> Amounts:
    """``amounts × rate`` per currency, rounded half up to the cent."""
    return {cur: (a * rate).quantize(CENT, rounding=ROUND_HALF_UP) for cur, a in amounts.items()}


@dataclass(frozen=True, slots=True)
class ProvisionBracket:
    key: str
    rate: Decimal
    base: Amounts
    provision: Amounts


@dataclass(frozen=True, slots=True)
class SpecificProvision:
    customer: str
    base: Amounts
    provision: Amounts


@dataclass(frozen=True, slots=True)
class Provision:
    brackets: list[ProvisionBracket]
    specific: list[SpecificProvision]
    specific_total: Amounts = field(default_factory=dict)
    total: Amounts = field(default_factory=dict)


def bad_debt_provision(
    bracket_bases: Mapping[str, Mapping[str, Decimal]],
    rates: Mapping[str, Decimal],
    specific: Mapping[str, Mapping[str, Decimal]] | None = None,
    specific_total: Mapping[str, Decimal] | None = None,
) -> Provision:
    """Provision per aging bracket (``bracket_bases``: open amounts per bucket, the specific
    customers' invoices already left out) at ``rates``, plus 100 % of what each specifically
    provided customer owes (``specific``: customer → amounts). ``specific_total`` is the sum
    over *all* specific customers when ``specific`` lists only some of them (the largest);
    by default it is the sum of ``specific``."""
    brackets = [
        ProvisionBracket(key, rates[key], dict(base), provide(base, rates[key]))
        for key, base in bracket_bases.items()
    ]
    items = [
        SpecificProvision(customer, dict(base), provide(base, FULL))
        for customer, base in (specific or {}).items()
    ]
    spec_total = provide(
        specific_total if specific_total is not None else add(*(i.base for i in items)), FULL
    )
    total = add(*(b.provision for b in brackets), spec_total)
    return Provision(brackets, items, spec_total, total)


# --- rankings ----------------------------------------------------------------------------------


def top_n(items: Iterable[T], n: int, key: Callable[[T], object]) -> list[T]:
    """The first ``n`` of ``items`` in ``key`` order (stable)."""
    return sorted(items, key=key)[:n]


def face_value(amounts: Mapping[str, Decimal]) -> Decimal:
    """The sum of the amounts whatever their currency: only for ranking customers, who owe
    in one currency (their own) nearly always."""
    return sum(amounts.values(), ZERO)


# --- text for payloads -------------------------------------------------------------------------


def money_text(amounts: Mapping[str, Decimal]) -> dict[str, str]:
    """``{"CNY": "1200.00"}``: decimal strings with two decimals, currencies in given order."""
    return {cur: str(a.quantize(CENT, rounding=ROUND_HALF_UP)) for cur, a in amounts.items()}


def rate_text(rate: Decimal) -> str:
    """A rate as a fraction with at least two decimals: ``0.02``, ``0.60``, ``0.025``."""
    cents = rate.quantize(CENT)
    return str(cents) if cents == rate else str(rate.normalize())


def number_text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
