from __future__ import annotations

from decimal import Decimal

import pytest

from credit.money import Money, MoneyError, parse_amount
from credit.ratings import Rating, RatingError, allows_standing_limit, parse_rating


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1,234.50", Decimal("1234.50")),
        ("1234.5", Decimal("1234.50")),
        (" 12 ", Decimal("12.00")),
        ("-3.10", Decimal("-3.10")),
        ("1,234,567.89", Decimal("1234567.89")),
        ("0", Decimal("0.00")),
    ],
)
def test_amounts_parse_to_decimals_with_two_places(text, value):
    parsed = parse_amount(text)
    assert parsed == value
    assert parsed.as_tuple().exponent == -2


@pytest.mark.parametrize("text", ["", "abc", "1.234,50", "12,34", "1e5", "1.005", "NaN", "1,2345"])
def test_bad_amounts_are_refused(text):
    with pytest.raises(MoneyError):
        parse_amount(text)


def test_money_refuses_floats_and_mixed_currencies():
    with pytest.raises(MoneyError, match="Decimal"):
        Money(1.5, "CNY")  # type: ignore[arg-type]
    with pytest.raises(MoneyError, match="cannot mix"):
        Money.of("1", "CNY") + Money.of("1", "USD")
    assert Money.of("1.10", "cny") + Money.of("2.20", "CNY") == Money.of("3.30", "CNY")
    assert str(Money.of("1234.5", "CNY")) == "CNY 1,234.50"


@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("a", Rating.A),
        ("H", Rating.H),
        ("1", Rating.A),
        ("2", Rating.A),
        ("4", Rating.B),
        ("6", Rating.C),
        ("7", Rating.D),
        ("8", Rating.D),
        ("9", Rating.H),
        ("10", Rating.H),
    ],
)
def test_ratings_read_letters_and_scores(text, rating):
    assert parse_rating(text) is rating


@pytest.mark.parametrize("text", ["0", "11", "E", "", "AA"])
def test_bad_ratings_are_refused(text):
    with pytest.raises(RatingError):
        parse_rating(text)


def test_only_a_b_c_carry_a_standing_limit():
    assert [r.value for r in Rating if allows_standing_limit(r)] == ["A", "B", "C"]
