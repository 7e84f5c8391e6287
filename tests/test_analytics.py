"""The digest's measures (credit.analytics), pure: every expected value is worked out by hand
in the comments, not by calling the code under test."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest

from credit import analytics as an
from credit.aging import DEFAULT_BUCKET_EDGES, make_buckets

BUCKETS = make_buckets(DEFAULT_BUCKET_EDGES)
KEYS = ("current", "1_30", "31_60", "61_90", "91_180", "over_180")


def test_bucket_keys_follow_the_configured_edges():
    assert an.bucket_keys(BUCKETS) == KEYS
    assert an.bucket_keys(make_buckets([0, 45])) == ("current", "1_45", "over_45")


def test_bucket_totals_add_up_per_bucket_and_currency_with_every_bucket_present():
    rows = [
        ("current", "CNY", D("100.00")),
        ("1_30", "CNY", D("50.50")),
        ("1_30", "CNY", D("20.25")),  # 50.50 + 20.25 = 70.75
        ("1_30", "USD", D("3.00")),
        ("over_180", "USD", D("7.00")),
    ]
    totals = an.bucket_totals(rows, KEYS)
    assert totals == {
        "current": {"CNY": D("100.00")},
        "1_30": {"CNY": D("70.75"), "USD": D("3.00")},
        "31_60": {},
        "61_90": {},
        "91_180": {},
        "over_180": {"USD": D("7.00")},
    }
    # open: CNY 100.00 + 70.75 = 170.75; USD 3.00 + 7.00 = 10.00
    assert an.total_open(totals) == {"CNY": D("170.75"), "USD": D("10.00")}
    # overdue: everything but "current": CNY 70.75; USD 10.00
    assert an.total_overdue(totals) == {"CNY": D("70.75"), "USD": D("10.00")}
    with pytest.raises(KeyError, match="unknown aging bucket"):
        an.bucket_totals([("1-30", "CNY", D("1.00"))], KEYS)


def test_change_since_the_previous_snapshot_per_bucket_and_currency():
    today = {"current": {"CNY": D("900.00")}, "1_30": {"CNY": D("300.00"), "USD": D("5.00")}}
    previous = {"current": {"CNY": D("1000.00"), "USD": D("2.00")}, "1_30": {"CNY": D("250.00")}}
    assert an.bucket_changes(today, previous) == {
        # 900 - 1000 = -100; USD was 2.00, now nothing: -2.00
        "current": {"CNY": D("-100.00"), "USD": D("-2.00")},
        # 300 - 250 = 50; USD new: 5.00
        "1_30": {"CNY": D("50.00"), "USD": D("5.00")},
    }
    # a bucket the previous snapshot lacks was empty then
    assert an.bucket_changes({"over_180": {"CNY": D("7.00")}}, {}) == {
        "over_180": {"CNY": D("7.00")}
    }
    # no previous snapshot: no change, not a made-up one
    assert an.bucket_changes(today, None) is None


@pytest.mark.parametrize(
    ("as_of", "period", "start", "days"),
    [
        (date(2026, 11, 25), "month", date(2026, 11, 1), 25),
        # October 1 … November 25: 31 + 25 = 56 days
        (date(2026, 11, 25), "quarter", date(2026, 10, 1), 56),
        (date(2026, 1, 1), "quarter", date(2026, 1, 1), 1),
        # January 31 + February 28 + March 31 = 90
        (date(2026, 3, 31), "quarter", date(2026, 1, 1), 90),
        (date(2026, 12, 31), "quarter", date(2026, 10, 1), 92),
    ],
)
def test_periods_are_month_and_calendar_quarter_to_date_counting_both_ends(
    as_of, period, start, days
):
    assert an.period_start(as_of, period) == start
    assert an.period_days(as_of, period) == days


def test_dso_is_open_receivables_over_credit_sales_times_days():
    # 150,000 open / 100,000 sold in 25 days × 25 = 37.5 days
    assert an.dso(D("150000.00"), D("100000.00"), 25) == D("37.5")
    # 100 / 300 × 25 = 8.333… → 8.3
    assert an.dso(D("100.00"), D("300.00"), 25) == D("8.3")
    # 1 / 4 × 1 = 0.25 → 0.3 (half up, not to even)
    assert an.dso(D("1.00"), D("4.00"), 1) == D("0.3")
    # nothing sold on credit in the period: no DSO
    assert an.dso(D("500.00"), D("0.00"), 25) is None
    # per currency: CNY 39,400 / 18,900 × 25 = 52.116… → 52.1; USD sold nothing → None
    assert an.dso_by_currency(
        {"CNY": D("39400.00"), "USD": D("4500.00")}, {"CNY": D("18900.00")}, 25
    ) == {"CNY": D("52.1"), "USD": None}


def test_collection_rate_is_collected_over_billed():
    assert an.collection_rate(D("83000.00"), D("100000.00")) == D("0.83")
    # 1 / 8 = 0.125 → 0.13 (half up)
    assert an.collection_rate(D("1.00"), D("8.00")) == D("0.13")
    # old invoices collected: more than billed
    assert an.collection_rate(D("150.00"), D("100.00")) == D("1.50")
    assert an.collection_rate(D("0.00"), D("900.00")) == D("0.00")
    assert an.collection_rate(D("10.00"), D("0.00")) is None
    # USD 700 / 1,500 = 0.4666… → 0.47; CNY billed nothing → None
    assert an.collection_rate_by_currency(
        {"USD": D("700.00"), "CNY": D("5.00")}, {"USD": D("1500.00")}
    ) == {"CNY": None, "USD": D("0.47")}


def test_provision_by_bracket_plus_specific_items_at_100_percent():
    rates = an.provision_rates([D(p) for p in (0, 2, 5, 10, 30, 60)], BUCKETS)
    assert rates == {
        "current": D("0"),
        "1_30": D("0.02"),
        "31_60": D("0.05"),
        "61_90": D("0.1"),
        "91_180": D("0.3"),
        "over_180": D("0.6"),
    }
    bases = {
        "current": {"CNY": D("1000.00")},
        "1_30": {"CNY": D("1000.00")},
        "31_60": {"CNY": D("333.33")},
        "61_90": {"CNY": D("0.25")},
        "91_180": {"USD": D("10.05")},
        "over_180": {"CNY": D("500.00")},
    }
    result = an.bad_debt_provision(bases, rates, {"C9": {"CNY": D("1234.56")}})
    by_key = {b.key: b.provision for b in result.brackets}
    assert by_key == {
        "current": {"CNY": D("0.00")},  # 0 %
        "1_30": {"CNY": D("20.00")},  # 1,000 × 2 %
        "31_60": {"CNY": D("16.67")},  # 333.33 × 5 % = 16.6665 → 16.67
        "61_90": {"CNY": D("0.03")},  # 0.25 × 10 % = 0.025 → 0.03 (half up)
        "91_180": {"USD": D("3.02")},  # 10.05 × 30 % = 3.015 → 3.02
        "over_180": {"CNY": D("300.00")},  # 500 × 60 %
    }
    assert [(s.customer, s.provision) for s in result.specific] == [("C9", {"CNY": D("1234.56")})]
    assert result.specific_total == {"CNY": D("1234.56")}
    # CNY 0 + 20.00 + 16.67 + 0.03 + 300.00 + 1,234.56 = 1,571.26; USD 3.02
    assert result.total == {"CNY": D("1571.26"), "USD": D("3.02")}


def test_specific_total_may_cover_more_customers_than_are_listed():
    rates = {"current": D("0.02")}
    result = an.bad_debt_provision(
        {"current": {"CNY": D("100.00")}},
        rates,
        {"C1": {"CNY": D("50.00")}},  # the largest one, listed
        {"CNY": D("80.00")},  # all specific customers: C1 50 + C2 30
    )
    assert result.specific_total == {"CNY": D("80.00")}
    # 100 × 2 % = 2.00, plus 80.00
    assert result.total == {"CNY": D("82.00")}


def test_provision_rates_need_one_per_bucket():
    with pytest.raises(ValueError, match="6 provision rates needed, got 2"):
        an.provision_rates([D(1), D(2)], BUCKETS)


def test_amounts_and_rates_as_payload_text():
    assert an.money_text({"CNY": D("1200"), "USD": D("-3.5")}) == {"CNY": "1200.00", "USD": "-3.50"}
    assert an.rate_text(D("0.02")) == "0.02"
    assert an.rate_text(D("0.6")) == "0.60"
    assert an.rate_text(D("0.025")) == "0.025"
    assert an.rate_text(D("0")) == "0.00"
    assert an.number_text(D("52.1")) == "52.1"
    assert an.number_text(None) is None


def test_currencies_reporting_first_then_alphabetical_and_zero_filled():
    assert an.currencies_of({"USD": D(1)}, {"EUR": D(1), "CNY": D(2)}, first="CNY") == [
        "CNY",
        "EUR",
        "USD",
    ]
    assert an.currencies_of({}, first="CNY") == ["CNY"]
    assert an.with_currencies({"USD": D("1.00")}, ["CNY", "USD"]) == {
        "CNY": D("0.00"),
        "USD": D("1.00"),
    }
    assert an.subtract({"CNY": D("5.00")}, {"USD": D("1.00")}) == {
        "CNY": D("5.00"),
        "USD": D("-1.00"),
    }
    assert an.add({"CNY": D("1.10")}, {"CNY": D("2.20"), "USD": D("1.00")}) == {
        "CNY": D("3.30"),
        "USD": D("1.00"),
    }


def test_top_n_and_face_value():
    items = [("B", 5), ("A", 9), ("C", 9)]
    assert an.top_n(items, 2, key=lambda t: (-t[1], t[0])) == [("A", 9), ("C", 9)]
    assert an.face_value({"CNY": D("1.50"), "USD": D("2.00")}) == D("3.50")
