"""Money: a ``Decimal`` amount with an ISO 4217 currency. Never a float."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# Plain amounts, optionally with thousands separators: 1234.5, 1,234.50, -12.
_AMOUNT = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?$")


class MoneyError(ValueError):
    """An amount or currency that cannot be money."""


def parse_amount(text: str | int | Decimal) -> Decimal:
    """Parse ``"1,234.50"``-style text into a Decimal with at most two decimals.

    Accepts thousands separators, a leading sign and surrounding spaces; refuses floats'
    exponent notation, more than two decimals and anything that is not a number.
    """
    if isinstance(text, Decimal):
        value = text
    elif isinstance(text, int):
        value = Decimal(text)
    else:
        cleaned = str(text).strip().replace("\u00a0", "").replace(" ", "")
        if not cleaned:
            raise MoneyError("amount is empty")
        if not _AMOUNT.match(cleaned):
            raise MoneyError(f"not an amount: {text!r}")
        try:
            value = Decimal(cleaned.replace(",", ""))
        except InvalidOperation as exc:  # pragma: no cover - the regex rules this out
            raise MoneyError(f"not an amount: {text!r}") from exc
    if not value.is_finite():
        raise MoneyError(f"not an amount: {text!r}")
    if value != value.quantize(CENT, rounding=ROUND_HALF_UP):
        raise MoneyError(f"more than two decimals: {text!r}")
    return value.quantize(CENT)


def check_currency(code: str) -> str:
    code = (code or "").strip().upper()
    if not _CURRENCY.match(code):
        raise MoneyError(f"not an ISO 4217 currency code: {code!r}")
    return code


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal):
            raise MoneyError(f"amount must be a Decimal, got {type(self.amount).__name__}")
        object.__setattr__(self, "currency", check_currency(self.currency))

    @classmethod
    def of(cls, amount: str | int | Decimal, currency: str) -> Money:
        return cls(parse_amount(amount), currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(Decimal("0.00"), currency)

    def _same(self, other: Money) -> None:
        if self.currency != other.currency:
            raise MoneyError(f"cannot mix {self.currency} and {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def __str__(self) -> str:
        return f"{self.currency} {self.amount:,.2f}"
