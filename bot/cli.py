"""The ``creditbot`` command."""

from __future__ import annotations

import json
import sys
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bot.context import AppContext
from credit.settings import ConfigError

app = typer.Typer(
    help="CreditBot: receivable aging, escalating reminders and credit approvals in chat.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console()
err = Console(stderr=True)


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


def _ctx(ctx: typer.Context) -> AppContext:
    return ctx.ensure_object(AppContext)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="config.toml to read (default: $CREDITBOT_CONFIG "
            "or ./config.toml; without one, built-in defaults).",
        ),
    ] = None,
) -> None:
    """CreditBot: receivable aging, escalating reminders and credit approvals in chat."""
    ctx.obj = AppContext(config_path=config)


def _settings_or_exit(app_ctx: AppContext):  # type: ignore[no-untyped-def]
    try:
        return app_ctx.settings
    except ConfigError as exc:
        _fail(str(exc))


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, revision: str = typer.Argument("head")) -> None:
    """Create or migrate the database schema (Alembic) up to REVISION."""
    from credit.store.migrate import current_revision, upgrade

    app_ctx = _ctx(ctx)
    _settings_or_exit(app_ctx)
    upgrade(app_ctx.engine, revision)
    console.print(f"database at revision {current_revision(app_ctx.engine)}")


@app.command("scan")
def scan(
    ctx: typer.Context,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Business date YYYY-MM-DD (default: today).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be sent; change nothing.")
    ] = False,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="text or json.")
    ] = OutputFormat.text,
) -> None:
    """Scan the receivables: who is told about which invoices on a business date."""
    from credit.store.db import read_session
    from credit.store.scan import reminders_for

    app_ctx = _ctx(ctx)
    settings = _settings_or_exit(app_ctx)
    day = _parse_date(as_of) if as_of else date.today()
    _require_schema(app_ctx)
    if not dry_run:
        _fail("only --dry-run is available yet: sending comes with the outbox (issue 3)")
    with read_session(app_ctx.engine) as session:
        reminders = reminders_for(session, settings.tier_table, day)
    if fmt is OutputFormat.json:
        json.dump([r.as_json() for r in reminders], sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return
    from bot.console import print_reminders

    console.print(f"[bold]Scan for {day.isoformat()}[/bold] (dry run)")
    print_reminders(console, reminders, settings.tier_table)


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text.replace("/", "-"))
    except ValueError:
        _fail(f"not a date (use YYYY-MM-DD): {text!r}")
        raise  # unreachable


def _require_schema(app_ctx: AppContext) -> None:
    from credit.store.migrate import current_revision

    if current_revision(app_ctx.engine) is None:
        _fail(
            f"no CreditBot schema in {app_ctx.engine.url.render_as_string()}: "
            "run `creditbot db upgrade` (or `creditbot demo` for demo data) first"
        )


class ImportKind(StrEnum):
    people = "people"
    customers = "customers"
    invoices = "invoices"
    payments = "payments"


@app.command("import")
def import_(
    ctx: typer.Context,
    kind: Annotated[ImportKind, typer.Argument(help="What the file holds.")],
    file: Annotated[Path, typer.Argument(help="A .csv (UTF-8, BOM or not) or .xlsx file.")],
) -> None:
    """Import people, customers, invoices or payments from CSV or XLSX (upsert by natural key).

    A file with any bad row is rejected whole: every bad row is listed and nothing is written.
    """
    from rich.progress import Progress

    from credit.store.importing import ImportRejected, import_file
    from credit.store.migrate import upgrade

    app_ctx = _ctx(ctx)
    settings = _settings_or_exit(app_ctx)
    if not file.exists():
        _fail(f"no such file: {file}")
    upgrade(app_ctx.engine)
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(f"importing {kind.value}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = import_file(
                app_ctx.engine, kind.value, file, settings=settings, progress=progress
            )
        except ImportRejected as exc:
            bar.stop()
            err.print(f"[red]rejected:[/red] {file} — nothing was written", highlight=False)
            for e in exc.errors:
                err.print(
                    f"  line {e.line}, column {e.column}: {e.reason}", highlight=False, markup=False
                )
            raise typer.Exit(1) from None
    console.print(
        f"{kind.value}: {result.rows} row(s) — {result.created} created, "
        f"{result.updated} updated, {result.unchanged} unchanged"
    )


@app.command("demo")
def demo(
    ctx: typer.Context,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Business date YYYY-MM-DD (default: today).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed for the generated ledger.")] = 7,
) -> None:
    """Create a fresh demo database and show what today's scan would send to each person."""
    from sqlalchemy.engine import make_url

    from bot.console import print_reminders
    from credit.store.db import read_session, write_session
    from credit.store.demo import build_demo_ledger
    from credit.store.migrate import upgrade
    from credit.store.scan import reminders_for

    app_ctx = _ctx(ctx)
    settings = _settings_or_exit(app_ctx)
    day = _parse_date(as_of) if as_of else date.today()
    url = make_url(app_ctx.engine.url)
    if url.get_backend_name() != "sqlite":
        _fail("the demo writes a fresh SQLite database; point database.url at a sqlite file")
    if url.database and url.database != ":memory:":
        app_ctx.engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(url.database + suffix).unlink(missing_ok=True)
    upgrade(app_ctx.engine)
    with write_session(app_ctx.engine) as session:
        summary = build_demo_ledger(session, as_of=day, seed=seed, settings=settings)
    console.print(f"[bold]Demo ledger[/bold] written to {url.database}: {summary}")
    with read_session(app_ctx.engine) as session:
        reminders = reminders_for(session, settings.tier_table, day)
    console.print(f"[bold]What the scan would send on {day.isoformat()}[/bold]")
    print_reminders(console, reminders, settings.tier_table)


if __name__ == "__main__":  # pragma: no cover
    app()
