"""Who may see and act on a customer's receivables. Pure rules, no storage."""

from __future__ import annotations

from dataclasses import dataclass

COMPANY_WIDE_ROLES = frozenset({"credit_manager", "finance", "legal", "executive", "admin"})


@dataclass(frozen=True, slots=True)
class Actor:
    id: int
    role: str
    region_id: int | None
    active: bool = True


@dataclass(frozen=True, slots=True)
class CustomerScope:
    rep_id: int
    region_id: int


def may_act_on(actor: Actor, customer: CustomerScope) -> bool:
    """The customer's rep, the managers of its region, and the company-wide desks."""
    if not actor.active:
        return False
    if actor.role in COMPANY_WIDE_ROLES:
        return True
    if actor.role == "regional_manager":
        return actor.region_id is not None and actor.region_id == customer.region_id
    if actor.role == "rep":
        return actor.id == customer.rep_id
    return False


may_view = may_act_on
