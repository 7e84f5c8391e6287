"""Terminal output (Rich): what the scan would send each person, grouped by tier."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from credit.aging import TierTable
from credit.store.scan import Reminder


def _money(amount, currency: str) -> str:  # type: ignore[no-untyped-def]
    return f"{currency} {amount:,.2f}"


def print_reminders(
    console: Console, reminders: Sequence[Reminder], tiers: TierTable, *, limit_lines: int = 8
) -> None:
    """One panel per person; inside it one table per tier, most overdue first, with totals."""
    if not reminders:
        console.print("[green]Nothing to send today.[/green]")
        return
    for (code, name), group in groupby(reminders, key=lambda r: (r.recipient, r.recipient_name)):
        tables = []
        for reminder in group:
            tier = tiers.by_name(reminder.tier)
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
            lines = sorted(reminder.lines, key=lambda ln: -ln.days)
            for line in lines[:limit_lines]:
                flag = " (disputed)" if line.disputed else ""
                table.add_row(
                    line.number,
                    f"{line.customer_name}{flag}",
                    _money(line.open_amount, line.currency),
                    str(line.days),
                )
            if len(lines) > limit_lines:
                table.add_row(f"… and {len(lines) - limit_lines} more", "", "", "")
            totals = ", ".join(_money(v, k) for k, v in reminder.totals().items())
            table.caption = f"{len(lines)} invoice(s), total {totals} (as {reminder.role})"
            tables.append(table)
        from rich.console import Group

        console.print(
            Panel(Group(*tables), title=f"[bold]{name}[/bold] ({code})", title_align="left")
        )
