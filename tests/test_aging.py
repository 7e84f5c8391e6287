"""Aging tiers and buckets: pure functions, no database."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credit.aging import (
    Tier,
    TierConfigError,
    TierTable,
    bucket_for,
    bucket_totals,
    days_past_due,
    default_tiers,
    make_buckets,
)

AS_OF = date(2026, 11, 25)
TIERS = default_tiers()


def test_days_past_due_is_negative_before_zero_on_and_positive_after_the_due_date():
    assert days_past_due(date(2026, 11, 30), AS_OF) == -5
    assert days_past_due(AS_OF, AS_OF) == 0
    assert days_past_due(date(2026, 11, 1), AS_OF) == 24
    assert days_past_due(date(2025, 11, 25), AS_OF) == 365


@pytest.mark.parametrize(
    ("days", "tier"),
    [
        (-31, None),
        (-30, "due_soon"),
        (0, "due_soon"),
        (1, "overdue"),
        (29, "overdue"),
        (30, "overdue_1m"),
        (59, "overdue_1m"),
        (60, "overdue_2_6m"),
        (180, "overdue_2_6m"),
        (181, "overdue_6m_plus"),
        (5000, "overdue_6m_plus"),
    ],
)
def test_default_tier_boundaries(days, tier):
    found = TIERS.tier_for(days)
    assert (found.name if found else None) == tier
    due = AS_OF - timedelta(days=days)
    via_dates = TIERS.tier_of(due, AS_OF)
    assert (via_dates.name if via_dates else None) == tier


def test_default_recipients_follow_the_design():
    assert TIERS.by_name("due_soon").notify == ("rep",)
    assert TIERS.by_name("overdue_1m").notify == ("rep", "regional_manager")
    assert "credit_manager" in TIERS.by_name("overdue_2_6m").notify
    assert set(TIERS.by_name("overdue_6m_plus").notify) == {"credit_manager", "legal"}


@given(st.integers(min_value=-100_000, max_value=100_000))
def test_every_day_lands_in_at_most_one_tier(days):
    matching = [t for t in TIERS.tiers if t.contains(days)]
    assert len(matching) <= 1
    assert (TIERS.tier_for(days) is None) == (not matching)
    # everything from the start of the first tier on is covered
    assert (days >= TIERS.tiers[0].min_days) == bool(matching)


@given(
    st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 1, 1)),
    st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 1, 1)),
)
def test_due_date_range_agrees_with_days_past_due(due, as_of):
    for tier in TIERS.tiers:
        earliest, latest = tier.due_date_range(as_of)
        in_range = due <= latest and (earliest is None or due >= earliest)
        assert in_range == tier.contains(days_past_due(due, as_of))


def _tier(name, lo, hi, notify=("rep",), every=1):
    return Tier(name, lo, hi, notify, every)


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([_tier("a", 0, 10), _tier("b", 10, 20)], "overlap"),
        ([_tier("a", 0, 10), _tier("b", 12, 20)], "gap between tiers 'a' and 'b': days 11..11"),
        ([_tier("a", 0, None), _tier("b", 12, 20)], "open-ended"),
        ([_tier("a", 5, 1)], "below min_days"),
        ([_tier("a", 0, 1), _tier("a", 2, 3)], "duplicate tier name"),
        ([_tier("a", 0, 1, notify=("boss",))], "unknown role"),
        ([_tier("a", 0, 1, notify=())], "at least one role"),
        ([_tier("a", 0, 1, every=0)], "repeat_every_days"),
        ([], "at least one tier"),
    ],
)
def test_bad_tier_tables_are_refused_with_a_clear_reason(tiers, message):
    with pytest.raises(TierConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        TierTable(tuple(tiers))


def test_buckets_cover_every_day_with_the_default_labels():
    buckets = make_buckets([0, 30, 60, 90, 180])
    assert [b.label for b in buckets] == ["current", "1-30", "31-60", "61-90", "91-180", ">180"]
    assert bucket_for(-400, buckets).label == "current"
    assert bucket_for(0, buckets).label == "current"
    assert bucket_for(1, buckets).label == "1-30"
    assert bucket_for(30, buckets).label == "1-30"
    assert bucket_for(31, buckets).label == "31-60"
    assert bucket_for(180, buckets).label == "91-180"
    assert bucket_for(181, buckets).label == ">180"


def test_bucket_edges_must_increase():
    with pytest.raises(TierConfigError, match="strictly increase"):
        make_buckets([0, 60, 30])


def test_bucket_totals_sum_open_amounts_per_bucket():
    buckets = make_buckets([0, 30, 60, 90, 180])
    items = [
        (AS_OF + timedelta(days=3), Decimal("100.00")),  # current
        (AS_OF - timedelta(days=1), Decimal("10.50")),  # 1-30
        (AS_OF - timedelta(days=30), Decimal("0.25")),  # 1-30
        (AS_OF - timedelta(days=200), Decimal("7.00")),  # >180
    ]
    totals = bucket_totals(items, AS_OF, buckets)
    assert totals == {
        "current": Decimal("100.00"),
        "1-30": Decimal("10.75"),
        "31-60": Decimal("0.00"),
        "61-90": Decimal("0.00"),
        "91-180": Decimal("0.00"),
        ">180": Decimal("7.00"),
    }
