"""Terminal output (Rich): what the scan sends each person, grouped by tier."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from credit.aging import TierTable
from credit.store.escalation import PersonReminder


def _money(amount: str | Decimal, currency: str) -> str:
    return f"{currency} {Decimal(amount):,.2f}"


def print_plan(
    console: Console,
    reminders: Sequence[PersonReminder],
    tiers: TierTable,
    *,
    limit_lines: int = 8,
) -> None:
    """One panel per person; inside, one table per tier (most overdue first) with totals."""
    if not reminders:
        console.print("[green]Nothing to send today.[/green]")
        return
    for r in reminders:
        parts: list[Table] = []
        for s in r.sections:
            tier = tiers.by_name(s.tier)
            table = Table(
                title=f"{tier.name} — {tier.action}",
                title_justify="left",
                expand=True,
                show_edge=False,
            )
            table.add_column("Invoice")
            table.add_column("Customer")
            table.add_column("Open", justify="right")
            table.add_column("Days", justify="right")
            for line in s.lines[:limit_lines]:
                flags = (" (disputed)" if line["disputed"] else "") + (
                    " NEW" if line["new"] else ""
                )
                table.add_row(
                    line["number"],
                    f"{line['customer_name']}{flags}",
                    _money(line["open_amount"], line["currency"]),
                    str(line["days"]),
                )
            if s.count > min(limit_lines, len(s.lines)):
                table.add_row(f"… and {s.count - min(limit_lines, len(s.lines))} more", "", "", "")
            totals = ", ".join(_money(v, k) for k, v in sorted(s.totals.items()))
            table.caption = f"{s.count} invoice(s) ({s.new_count} new), total {totals}"
            parts.append(table)
        if r.broken_promises:
            table = Table(
                title="Broken promises to pay", title_justify="left", expand=True, show_edge=False
            )
            for col in ("Invoice", "Customer", "Promised", "By", "Still open"):
                table.add_column(col)
            for b in r.broken_promises:
                table.add_row(
                    b["number"],
                    b["customer_name"],
                    _money(b["promised_amount"], b["currency"]),
                    b["promised_date"],
                    _money(b["open_amount"], b["currency"]),
                )
            parts.append(table)
        if r.unacknowledged:
            table = Table(
                title="Not acknowledged by the rep",
                title_justify="left",
                expand=True,
                show_edge=False,
            )
            for col in ("Rep", "Invoice", "Customer", "Open", "Days"):
                table.add_column(col)
            for u in r.unacknowledged:
                table.add_row(
                    u["rep"],
                    u["number"],
                    u["customer_name"],
                    _money(u["open_amount"], u["currency"]),
                    str(u["days"]),
                )
            parts.append(table)
        console.print(
            Panel(
                Group(*parts),
                title=f"[bold]{r.name}[/bold] ({r.code}, {r.role})",
                title_align="left",
            )
        )
