"""Cadence rules (pure): reminder days, new-in-tier, escalation day, and the due-date list
the scan uses must agree with them."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from credit.aging import days_past_due, default_tiers
from credit.cadence import (
    is_new_in_tier,
    is_reminder_day,
    is_unacknowledged_escalation_day,
    reminder_due_dates,
)

TIERS = default_tiers()
AS_OF = date(2026, 11, 25)


def test_reminder_days_in_the_overdue_tier_fall_every_three_days_from_entry():
    overdue = TIERS.by_name("overdue")  # days 1..29, every 3
    daily = [d for d in range(1, 30) if is_reminder_day(d, overdue, window_days=1)]
    assert daily == [1, 4, 7, 10, 13, 16, 19, 22, 25, 28]
    # a Monday scan covers Saturday and Sunday too: points on days 6 and 7 are not lost
    assert is_reminder_day(8, overdue, window_days=3)  # point at 7 (Sunday)
    assert is_reminder_day(9, overdue, window_days=3)  # point at 7 two days ago
    assert not is_reminder_day(9, overdue, window_days=2)


def test_new_in_tier_and_escalation_day():
    one_month = TIERS.by_name("overdue_1m")  # 30..59, escalate after 5 days
    assert is_new_in_tier(30, one_month, 1) and not is_new_in_tier(31, one_month, 1)
    assert is_new_in_tier(32, one_month, 3)
    assert [d for d in range(30, 60) if is_unacknowledged_escalation_day(d, one_month, 1)] == [35]
    assert is_unacknowledged_escalation_day(37, one_month, 3)  # 35 fell on a weekend
    assert not is_unacknowledged_escalation_day(40, TIERS.by_name("overdue"), 1)


@given(
    window=st.integers(min_value=1, max_value=12),
    as_of=st.dates(min_value=date(2024, 1, 1), max_value=date(2028, 12, 31)),
    depth=st.integers(min_value=0, max_value=900),
)
def test_due_date_list_selects_exactly_the_invoices_at_a_cadence_point(window, as_of, depth):
    oldest = as_of - timedelta(days=200 + depth)
    dates = reminder_due_dates(TIERS, as_of, window, oldest, limit=100_000)
    assert dates is not None
    chosen = set(dates)
    due = oldest
    while due <= as_of + timedelta(days=40):
        days = days_past_due(due, as_of)
        tier = TIERS.tier_for(days)
        expected = tier is not None and is_reminder_day(days, tier, window)
        assert (due in chosen) == expected, (due, days, tier)
        due += timedelta(days=1)


def test_due_date_list_gives_up_when_the_window_covers_too_much():
    assert reminder_due_dates(TIERS, AS_OF, 30, AS_OF - timedelta(days=3000), limit=500) is None
