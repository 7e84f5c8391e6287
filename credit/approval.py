"""Shipment approvals: the credit check, the authority matrix and the approval states.

Pure rules, no storage (DESIGN.md §1, "during the sale"):

* ``check_request`` decides whether a shipment may go at once, needs someone's approval, or
  can be approved by nobody. A shipment that takes the customer's *exposure* (open invoices
  + approved but unshipped requests + this shipment) over its limit, or ships while it has
  overdue invoices, needs approval; so does any shipment to a risky (D) or dishonoured (X)
  customer, a customer on probation or one on credit hold. Blacklisted customers (rating H
  or the blacklist flag) get no credit at all: their requests are refused outright.
* ``AuthorityMatrix`` says whose authority covers a request: each level may approve up to
  an amount over the limit and up to an overdue amount; the lowest level whose caps cover
  both decides (optionally with every level below it approving first, in order).
* ``refusal_to_decide`` says why a person may not decide a request (segregation of duties:
  whoever brings the risk in never approves it).
* ``after_decision`` is the approval state machine; a decided request stays decided.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from credit.ratings import Rating

ZERO = Decimal("0.00")


# --- the credit check ------------------------------------------------------------------------


class Outcome(StrEnum):
    APPROVE = "approve"  # within policy: ships at once
    NEEDS_APPROVAL = "needs_approval"  # someone whose authority covers it must approve
    REFUSE = "refuse"  # no credit at all: nobody may approve it


# Reason codes in the order they are reported (``CreditCheck.reasons``).
REASON_CODES = (
    "blacklisted",
    "rating_h",
    "rating_x",
    "rating_d",
    "probation",
    "credit_hold",
    "over_limit",
    "over_term",
)
WITHIN_POLICY = "within_policy"
# These make a request impossible to approve (``Outcome.REFUSE``).
REFUSAL_REASONS = frozenset({"blacklisted", "rating_h"})


def _decimal(value: object, what: str) -> Decimal:
    """An exact amount: a Decimal, or an int (e.g. a SQL ``coalesce(sum(...), 0)``)."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"{what} must be a Decimal, got {type(value).__name__}")
    amount = Decimal(value)
    if not amount.is_finite():
        raise ValueError(f"{what} must be a finite amount, got {value}")
    return amount


@dataclass(frozen=True, slots=True)
class CreditPosition:
    """A customer's standing when a shipment is requested, all amounts in the limit's currency.

    ``open_receivables`` may be negative (credit notes or an overpayment); the limit, the
    approved-but-unshipped amount and the overdue amount may not.
    """

    rating: Rating
    credit_limit: Decimal  # standing limit (0 for per-deal customers)
    open_receivables: Decimal  # open invoices
    approved_unshipped: Decimal  # approved shipment requests not yet invoiced/shipped
    overdue_beyond_terms: Decimal  # open amount past its due date
    credit_hold: bool
    blacklisted: bool
    on_probation: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "rating", Rating(self.rating))
        for name in ("credit_limit", "open_receivables", "approved_unshipped"):
            object.__setattr__(self, name, _decimal(getattr(self, name), name))
        object.__setattr__(
            self,
            "overdue_beyond_terms",
            _decimal(self.overdue_beyond_terms, "overdue_beyond_terms"),
        )
        for name in ("credit_limit", "approved_unshipped", "overdue_beyond_terms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class CreditCheck:
    outcome: Outcome
    # codes in REASON_CODES order; ("within_policy",) when approved at once. A refused
    # request lists every reason that applies, not only the ones that refuse it.
    reasons: tuple[str, ...]
    exposure: Decimal  # open_receivables + approved_unshipped + amount
    excess: Decimal  # max(0, exposure - credit_limit): the amount over the limit
    overdue: Decimal  # overdue_beyond_terms


def check_request(position: CreditPosition, amount: Decimal) -> CreditCheck:
    """Check a shipment of ``amount`` (> 0) against the customer's credit position.

    Refused (nobody may approve): rating H or the blacklist flag. Needs approval: rating D
    or X, probation, credit hold, exposure above the limit (exposure *equal* to the limit
    is still within it) or anything overdue. Otherwise approved at once ("within_policy").
    """
    amount = _decimal(amount, "amount")
    if amount <= 0:
        raise ValueError(f"a shipment amount must be positive, got {amount}")
    exposure = position.open_receivables + position.approved_unshipped + amount
    excess = max(ZERO, exposure - position.credit_limit)
    overdue = position.overdue_beyond_terms
    applies = {
        "blacklisted": position.blacklisted,
        "rating_h": position.rating is Rating.H,
        "rating_x": position.rating is Rating.X,
        "rating_d": position.rating is Rating.D,
        "probation": position.on_probation,
        "credit_hold": position.credit_hold,
        "over_limit": excess > 0,
        "over_term": overdue > 0,
    }
    reasons = tuple(code for code in REASON_CODES if applies[code])
    if REFUSAL_REASONS.intersection(reasons):
        outcome = Outcome.REFUSE
    elif reasons:
        outcome = Outcome.NEEDS_APPROVAL
    else:
        outcome, reasons = Outcome.APPROVE, (WITHIN_POLICY,)
    return CreditCheck(outcome, reasons, exposure, excess, overdue)


# --- the authority matrix --------------------------------------------------------------------


def _covers(cap: Decimal | None, amount: Decimal) -> bool:
    """A cap covers an amount up to and including the cap; no cap covers everything."""
    return cap is None or amount <= cap


@dataclass(frozen=True, slots=True)
class AuthorityLevel:
    role: str  # e.g. "regional_manager"
    # the largest amount over the limit this level may approve; None = no cap
    max_excess: Decimal | None
    # the largest overdue amount (shipping over term) it may approve; None = no cap
    max_overdue: Decimal | None

    def __post_init__(self) -> None:
        if not isinstance(self.role, str) or not self.role.strip():
            raise ValueError("an authority level needs a role")
        for name in ("max_excess", "max_overdue"):
            cap = getattr(self, name)
            if cap is None:
                continue
            cap = _decimal(cap, f"{self.role}: {name}")
            if cap < 0:
                raise ValueError(f"authority level {self.role!r}: {name} must not be negative")
            object.__setattr__(self, name, cap)

    @property
    def uncapped(self) -> bool:
        return self.max_excess is None and self.max_overdue is None

    def covers(self, excess: Decimal, overdue: Decimal) -> bool:
        """Whether this level's caps cover both the excess and the overdue amount."""
        return _covers(self.max_excess, excess) and _covers(self.max_overdue, overdue)


def _non_decreasing(levels: tuple[AuthorityLevel, ...], name: str) -> None:
    for lower, higher in itertools.pairwise(levels):
        lo, hi = getattr(lower, name), getattr(higher, name)
        if lo is None and hi is not None:
            raise ValueError(
                f"authority levels: {name} must not decrease up the levels, but "
                f"{lower.role!r} has no cap and {higher.role!r} above it is capped at {hi}"
            )
        if lo is not None and hi is not None and hi < lo:
            raise ValueError(
                f"authority levels: {name} must not decrease up the levels, but "
                f"{higher.role!r} ({hi}) is below {lower.role!r} ({lo}) "
                "(list the levels lowest authority first)"
            )


@dataclass(frozen=True, slots=True)
class AuthorityMatrix:
    """Who may approve how much, lowest authority first.

    Validated: at least one level, each role once, caps that never decrease up the levels,
    and a top level without caps, so every request that may be approved has someone to
    decide it. The customer's rep is never an approver (DESIGN.md §1: whoever brings the
    risk in never approves it), so ``"rep"`` is not allowed as a level.
    """

    levels: tuple[AuthorityLevel, ...]
    # True: every level below the deciding one approves first, in order
    chain: bool = False

    def __post_init__(self) -> None:
        levels = tuple(self.levels)
        object.__setattr__(self, "levels", levels)
        if not levels:
            raise ValueError("authority levels: at least one level is required")
        roles = [level.role for level in levels]
        dupes = sorted({r for r in roles if roles.count(r) > 1})
        if dupes:
            raise ValueError(f"authority levels: role(s) listed more than once: {', '.join(dupes)}")
        if "rep" in roles:
            raise ValueError(
                "authority levels: 'rep' cannot approve (whoever brings the risk in never "
                "approves it)"
            )
        _non_decreasing(levels, "max_excess")
        _non_decreasing(levels, "max_overdue")
        if not levels[-1].uncapped:
            raise ValueError(
                f"authority levels: the top level ({levels[-1].role!r}) must have no caps "
                "(leave out max_excess and max_overdue) so every request has someone to decide it"
            )

    def deciding_level(self, check: CreditCheck) -> int:
        """Index of the lowest level whose caps cover both ``check.excess`` and
        ``check.overdue``. A refused check has no deciding level (ValueError)."""
        if check.outcome is Outcome.REFUSE:
            raise ValueError(
                f"a refused request ({', '.join(check.reasons)}) cannot be approved by anyone"
            )
        for index, level in enumerate(self.levels):
            if level.covers(check.excess, check.overdue):
                return index
        raise AssertionError("the top level is uncapped")  # pragma: no cover - validated

    def required_levels(self, check: CreditCheck) -> tuple[int, ...]:
        """The levels that must approve, in order: with ``chain`` every level up to the
        deciding one, else the deciding level alone."""
        deciding = self.deciding_level(check)
        return tuple(range(deciding + 1)) if self.chain else (deciding,)

    def level_of(self, role: str) -> int | None:
        for index, level in enumerate(self.levels):
            if level.role == role:
                return index
        return None

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(level.role for level in self.levels)


def default_matrix() -> AuthorityMatrix:
    """The built-in matrix (also written out in ``config.example.toml``)."""
    return AuthorityMatrix(
        (
            AuthorityLevel("regional_manager", Decimal("50000.00"), Decimal("50000.00")),
            AuthorityLevel("credit_manager", Decimal("200000.00"), Decimal("200000.00")),
            AuthorityLevel("executive", None, None),
        )
    )


# --- who may decide --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Approver:
    person_id: int
    role: str
    region_id: int | None
    active: bool = True


@dataclass(frozen=True, slots=True)
class RequestParty:
    """Who brought a request in, and whose customer it is."""

    requester_id: int | None  # the person who raised the request (None: raised by the ERP)
    region_id: int  # the customer's region
    # the customer's rep: the person who brings the risk in, barred like the requester
    rep_id: int | None = None


# Roles that decide only for customers of their own region; other roles are company-wide.
REGIONAL_APPROVER_ROLES = frozenset({"regional_manager"})

REFUSAL_CODES = ("inactive", "own_request", "not_an_approver", "above_authority", "other_region")


def refusal_to_decide(
    approver: Approver, party: RequestParty, matrix: AuthorityMatrix, level: int
) -> str | None:
    """None when ``approver`` may decide the request at ``level``, else why not.

    Checked in this order: "inactive"; "own_request" (the requester — or the customer's
    rep — never approves their own risk, whatever their role); "not_an_approver" (role not
    in the matrix); "above_authority" (their level is below ``level``; a higher level may
    decide a lower level's request); "other_region" (regional roles decide only for their
    own region).
    """
    if not 0 <= level < len(matrix.levels):
        raise ValueError(f"no authority level {level} (the matrix has {len(matrix.levels)})")
    if not approver.active:
        return "inactive"
    if approver.person_id in {party.requester_id, party.rep_id} - {None}:
        return "own_request"
    own_level = matrix.level_of(approver.role)
    if own_level is None:
        return "not_an_approver"
    if own_level < level:
        return "above_authority"
    if approver.role in REGIONAL_APPROVER_ROLES and (
        approver.region_id is None or approver.region_id != party.region_id
    ):
        return "other_region"
    return None


# --- the approval state machine --------------------------------------------------------------


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    REFUSED = "refused"


DECIDED = frozenset({Status.APPROVED, Status.REJECTED, Status.EXPIRED, Status.REFUSED})


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    EXPIRE = "expire"


class IllegalTransition(ValueError):
    """A decision on a request that is already decided (e.g. a stale button)."""


def initial_status(check: CreditCheck) -> Status:
    """Approved at once, refused outright, or pending someone's approval."""
    return {
        Outcome.APPROVE: Status.APPROVED,
        Outcome.REFUSE: Status.REFUSED,
        Outcome.NEEDS_APPROVAL: Status.PENDING,
    }[Outcome(check.outcome)]


def after_decision(status: Status, decision: str, *, final_level: bool) -> Status:
    """The status after ``decision`` ("approve", "reject" or "expire") on a request.

    An approval at the final required level approves the request; below it the request stays
    pending for the next level (chain). One rejection rejects it; expiry expires it. A decided
    request (approved, rejected, expired or refused) takes no further decision
    (``IllegalTransition``); an unknown decision is a ValueError.
    """
    try:
        decision = Decision(decision)
    except ValueError:
        raise ValueError(
            f"unknown decision {decision!r} (one of {', '.join(d.value for d in Decision)})"
        ) from None
    status = Status(status)
    if status in DECIDED:
        raise IllegalTransition(f"already {status}")
    if decision is Decision.APPROVE:
        return Status.APPROVED if final_level else Status.PENDING
    if decision is Decision.REJECT:
        return Status.REJECTED
    return Status.EXPIRED
