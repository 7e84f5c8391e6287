"""Reminder cadence, as pure functions (the scan evaluates the same rule in SQL).

An invoice *enters* a tier on ``due_date + tier.min_days`` and has a *cadence point* then and
every ``repeat_every_days`` after, while it stays open in that tier. A scan on a business day
covers the days since the previous scan (``window_days``; 3 on a Monday after a normal week,
more after holidays or downtime), so a point that fell on a weekend, a holiday or a day the
service was down is caught up once on the next scan — and never twice.
"""

from __future__ import annotations

from datetime import date, timedelta

from credit.aging import Tier, TierTable


def days_in_tier(days_past_due: int, tier: Tier) -> int:
    """0 on the day the invoice entered ``tier``, 1 the day after, …"""
    return days_past_due - tier.min_days


def is_reminder_day(days_past_due: int, tier: Tier, window_days: int) -> bool:
    """Does a cadence point of ``tier`` fall within the last ``window_days`` days (today
    included)? ``t % N < window`` ⇔ the latest point ``t - t % N`` is inside the window."""
    if window_days < 1:
        raise ValueError("window_days must be >= 1")
    t = days_in_tier(days_past_due, tier)
    return tier.contains(days_past_due) and t % tier.repeat_every_days < window_days


def is_new_in_tier(days_past_due: int, tier: Tier, window_days: int) -> bool:
    """Did the invoice enter ``tier`` within the window (first announcement, not a repeat)?"""
    return 0 <= days_in_tier(days_past_due, tier) < window_days


def is_unacknowledged_escalation_day(days_past_due: int, tier: Tier, window_days: int) -> bool:
    """Is this the scan on which an unacknowledged invoice is escalated to the manager?

    That is the first scan on or after ``entry + escalate_unacknowledged_after_days``.
    """
    after = tier.escalate_unacknowledged_after_days
    if after is None or not tier.contains(days_past_due):
        return False
    return 0 <= days_in_tier(days_past_due, tier) - after < window_days


def reminder_due_dates(
    tiers: TierTable, as_of: date, window_days: int, oldest_due: date, *, limit: int = 2000
) -> list[date] | None:
    """Every due date whose invoice has a cadence point in the window, oldest first.

    The scan selects invoices by these dates (an index lookup per date) instead of computing
    the cadence for every open invoice. ``oldest_due`` bounds the open-ended last tier.
    Returns None when there would be more than ``limit`` dates (after long downtime the
    window covers nearly everything, and a full pass is cheaper).
    """
    dates: list[date] = []
    for tier in tiers.tiers:
        deepest = tier.max_days if tier.max_days is not None else (as_of - oldest_due).days
        for days in range(tier.min_days, deepest + 1):
            if (days - tier.min_days) % tier.repeat_every_days < window_days:
                dates.append(as_of - timedelta(days=days))
                if len(dates) > limit:
                    return None
    return sorted(dates)
