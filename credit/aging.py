"""Aging: days past due, collection tiers and aging buckets. Pure functions only.

``days_past_due`` is negative while an invoice is not yet due, 0 on the due date and
positive once it is overdue. A *tier* decides who is reminded of an invoice and what they
are asked to do (DESIGN.md §1); an *aging bucket* is the reporting bracket for digests.
Both are inclusive day ranges; the last may be open-ended (``max_days=None``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

ROLES = ("rep", "regional_manager", "credit_manager", "finance", "legal", "executive", "admin")


class TierConfigError(ValueError):
    """The tier (or bucket) table does not cover days without gaps and overlaps."""


def days_past_due(due_date: date, as_of: date) -> int:
    return (as_of - due_date).days


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    min_days: int
    max_days: int | None
    notify: tuple[str, ...]
    repeat_every_days: int
    action: str = ""
    # entering this tier puts the customer on credit hold (stop supply)
    credit_hold: bool = False
    # tell the regional manager by name when the rep has not acknowledged within N days
    escalate_unacknowledged_after_days: int | None = None

    def contains(self, days: int) -> bool:
        return days >= self.min_days and (self.max_days is None or days <= self.max_days)

    def due_date_range(self, as_of: date) -> tuple[date | None, date]:
        """The due dates ``(earliest or None, latest)`` that fall in this tier on ``as_of``.

        ``min_days <= as_of - due <= max_days`` ⇔ ``as_of - max_days <= due <= as_of - min_days``,
        which lets a database select a tier with an index range on the due date.
        """
        latest = as_of - timedelta(days=self.min_days)
        earliest = None if self.max_days is None else as_of - timedelta(days=self.max_days)
        return earliest, latest


@dataclass(frozen=True, slots=True)
class TierTable:
    """Tiers ordered by day range, validated to be contiguous and non-overlapping."""

    tiers: tuple[Tier, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        validate_ranges([(t.name, t.min_days, t.max_days) for t in self.tiers], what="tier")
        for t in self.tiers:
            if not t.notify:
                raise TierConfigError(f"tier {t.name!r}: notify must name at least one role")
            unknown = [r for r in t.notify if r not in ROLES]
            if unknown:
                raise TierConfigError(
                    f"tier {t.name!r}: unknown role(s) {', '.join(unknown)}; "
                    f"roles are {', '.join(ROLES)}"
                )
            if t.repeat_every_days < 1:
                raise TierConfigError(f"tier {t.name!r}: repeat_every_days must be >= 1")

    def tier_for(self, days: int) -> Tier | None:
        """The tier an invoice ``days`` past due is in, or None (not yet in any window)."""
        for tier in self.tiers:
            if tier.contains(days):
                return tier
        return None

    def tier_of(self, due_date: date, as_of: date) -> Tier | None:
        return self.tier_for(days_past_due(due_date, as_of))

    def by_name(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)


def validate_ranges(ranges: Sequence[tuple[str, int, int | None]], *, what: str) -> None:
    """Check named inclusive ranges: unique names, min <= max, sorted, no gap, no overlap.

    Only the last range may be open-ended. Raises TierConfigError naming the culprit.
    """
    if not ranges:
        raise TierConfigError(f"at least one {what} is required")
    names = [name for name, _, _ in ranges]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TierConfigError(f"duplicate {what} name(s): {', '.join(dupes)}")
    for name, lo, hi in ranges:
        if hi is not None and hi < lo:
            raise TierConfigError(f"{what} {name!r}: max_days {hi} is below min_days {lo}")
    for (name, _lo, hi), (next_name, next_lo, _) in itertools.pairwise(ranges):
        if hi is None:
            raise TierConfigError(
                f"{what} {name!r} is open-ended (no max_days) but {what} {next_name!r} follows it"
            )
        if next_lo <= hi:
            raise TierConfigError(
                f"{what}s {name!r} and {next_name!r} overlap: {name!r} ends at day {hi}, "
                f"{next_name!r} starts at day {next_lo} (list them in day order, no overlap)"
            )
        if next_lo > hi + 1:
            raise TierConfigError(
                f"gap between {what}s {name!r} and {next_name!r}: days {hi + 1}..{next_lo - 1} "
                f"belong to no {what}"
            )


def default_tiers() -> TierTable:
    """The tiers of DESIGN.md §1 (also written out in ``config.example.toml``)."""
    return TierTable(
        (
            Tier("due_soon", -30, 0, ("rep",), 7, "Tell the customer the amount and the due date."),
            Tier("overdue", 1, 29, ("rep",), 3, "Chase the customer and find out why."),
            Tier(
                "overdue_1m",
                30,
                59,
                ("rep", "regional_manager"),
                3,
                "Warn of a supply stop and get a written repayment plan (promise to pay).",
                escalate_unacknowledged_after_days=5,
            ),
            Tier(
                "overdue_2_6m",
                60,
                180,
                ("rep", "regional_manager", "credit_manager"),
                7,
                "Credit hold: stop supply; finance dunning letter; lawyer letter.",
                credit_hold=True,
            ),
            Tier(
                "overdue_6m_plus",
                181,
                None,
                ("credit_manager", "legal"),
                14,
                "Legal track: site visit, settlement, collection agency, litigation.",
            ),
        )
    )


@dataclass(frozen=True, slots=True)
class Bucket:
    """An aging bucket for reporting, e.g. ``1-30`` days past due."""

    label: str
    min_days: int | None  # None: everything below max_days (the "current" bucket)
    max_days: int | None

    def contains(self, days: int) -> bool:
        return (self.min_days is None or days >= self.min_days) and (
            self.max_days is None or days <= self.max_days
        )


def make_buckets(edges: Sequence[int]) -> tuple[Bucket, ...]:
    """Buckets from upper edges in days past due, e.g. ``[0, 30, 60, 90, 180]`` gives
    current (<= 0), 1-30, 31-60, 61-90, 91-180 and >180."""
    if not edges:
        raise TierConfigError("aging bucket edges must not be empty")
    if list(edges) != sorted(set(edges)):
        raise TierConfigError(f"aging bucket edges must strictly increase, got {list(edges)}")
    buckets = [Bucket("current", None, edges[0])]
    for lo, hi in itertools.pairwise(edges):
        buckets.append(Bucket(f"{lo + 1}-{hi}", lo + 1, hi))
    buckets.append(Bucket(f">{edges[-1]}", edges[-1] + 1, None))
    return tuple(buckets)


DEFAULT_BUCKET_EDGES = (0, 30, 60, 90, 180)


def bucket_for(days: int, buckets: Sequence[Bucket]) -> Bucket:
    for bucket in buckets:
        if bucket.contains(days):
            return bucket
    raise ValueError(f"no bucket holds {days} days")  # make_buckets covers every integer


def bucket_totals(
    items: Iterable[tuple[date, Decimal]], as_of: date, buckets: Sequence[Bucket]
) -> dict[str, Decimal]:
    """Sum open amounts ``(due_date, open_amount)`` per bucket label, every bucket present."""
    totals = {b.label: Decimal("0.00") for b in buckets}
    for due, amount in items:
        totals[bucket_for(days_past_due(due, as_of), buckets).label] += amount
    return totals
