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
    force: Annotated[
        bool, typer.Option("--force", help="Scan even if the date is not a working day.")
    ] = False,
) -> None:
    """Scan the receivables for a business date and queue that day's reminders.

    With --dry-run, print what would be sent (one entry per person and tier) and change
    nothing. Running the scan twice for a date queues nothing twice.
    """
    from credit.calendar import BusinessCalendar
    from credit.store.db import read_session
    from credit.store.escalation import plan_scan, run_scan, scan_window_days

    app_ctx = _ctx(ctx)
    settings = _settings_or_exit(app_ctx)
    day = _parse_date(as_of) if as_of else _today(settings)
    _require_schema(app_ctx)
    calendar = BusinessCalendar(settings.calendar.holiday_country)
    if dry_run:
        with read_session(app_ctx.engine) as session:
            window = scan_window_days(session, day, calendar)
            plan = plan_scan(session, settings, day, window)
        if fmt is OutputFormat.json:
            _print_json(plan.as_json())
            return
        from bot.console import print_plan

        console.print(
            f"[bold]Scan for {day.isoformat()}[/bold] (dry run; cadence window {window} day(s))"
        )
        print_plan(console, plan.reminders, settings.tier_table)
        return
    result = run_scan(app_ctx.engine, settings, calendar, day, _now(), actor="cli", force=force)
    summary = {
        "date": day.isoformat(),
        "skipped": result.skipped,
        "window_days": result.window_days,
        "people": result.planned,
        "queued": result.queued,
        "credit_holds_on": result.holds_on,
        "credit_holds_off": result.holds_off,
        "promises_broken": result.promises_broken,
    }
    if fmt is OutputFormat.json:
        _print_json(summary)
    elif result.skipped:
        console.print(f"skipped: {result.skipped} (use --force to scan anyway)")
    else:
        console.print(
            f"scan {day}: {result.queued} message(s) queued for {result.planned} people; "
            f"{len(result.holds_on)} credit hold(s) on, {len(result.holds_off)} lifted; "
            f"{result.promises_broken} promise(s) broken"
        )


def _print_json(data: object) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _today(settings) -> date:  # type: ignore[no-untyped-def]
    return _now().astimezone(settings.zone).date()


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


MAX_ERRORS_SHOWN = 200


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

    from credit.store.importing import ImportRejected, ImportWriteError, import_file
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
            err.print(
                f"rejected: {file} — {len(exc.errors)} error(s), nothing was written",
                highlight=False,
                markup=False,
            )
            for e in exc.errors[:MAX_ERRORS_SHOWN]:
                err.print(f"  {e}", highlight=False, markup=False, soft_wrap=True)
            if len(exc.errors) > MAX_ERRORS_SHOWN:
                err.print(f"  … and {len(exc.errors) - MAX_ERRORS_SHOWN} more", highlight=False)
            raise typer.Exit(1) from None
        except ImportWriteError as exc:
            bar.stop()
            _fail(str(exc), code=1)
    console.print(
        f"{kind.value}: {result.rows} row(s) — {result.created} created, "
        f"{result.updated} updated, {result.unchanged} unchanged"
    )


DEMO_CHART = "demo-digest.png"


def _demo_chart(app_ctx: AppContext, settings, day: date, path: Path) -> None:  # type: ignore[no-untyped-def]
    """The company digest of ``day`` (the credit desk's): its text printed, its chart written
    to ``path``."""
    from bot.charts import aging_chart
    from credit.calendar import BusinessCalendar
    from credit.store.db import read_session
    from credit.store.digest import build_digests

    with read_session(app_ctx.engine) as session:
        digests = build_digests(
            session,
            settings,
            day,
            _digest_moment(settings, day),
            calendar=BusinessCalendar(settings.calendar.holiday_country),
        )
    company = next((d for d in digests if d.scope == "company"), None)
    if company is None:
        err.print("no company-wide digest (no credit desk in [digest] company_roles): no chart")
        return
    from bot.compose import compose
    from bot.transports.console import render_text

    console.print(render_text(compose(company.payload)), markup=False, highlight=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(aging_chart(company.payload))
    console.print(
        f"[bold]Company digest chart[/bold] ({company.payload['recipient']['name']}'s digest) "
        f"written to {path}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("demo")
def demo(
    ctx: typer.Context,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Business date YYYY-MM-DD (default: today).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed for the generated ledger.")] = 7,
    chart: Annotated[
        Path | None,
        typer.Option(
            "--chart",
            help=f"Where to write the company digest's aging chart (PNG; default: "
            f"{DEMO_CHART} next to the database).",
        ),
    ] = None,
) -> None:
    """Create a fresh demo database and show what today's scan would send to each person,
    and write the company digest's aging chart as a PNG."""
    from sqlalchemy.engine import make_url

    from bot.console import print_plan
    from credit.calendar import BusinessCalendar
    from credit.store.db import read_session, write_session
    from credit.store.demo import build_demo_ledger
    from credit.store.escalation import plan_scan, scan_window_days
    from credit.store.migrate import upgrade

    app_ctx = _ctx(ctx)
    settings = _settings_or_exit(app_ctx)
    day = _parse_date(as_of) if as_of else _today(settings)
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
    calendar = BusinessCalendar(settings.calendar.holiday_country)
    with read_session(app_ctx.engine) as session:
        window = scan_window_days(session, day, calendar)
        plan = plan_scan(session, settings, day, window)
    console.print(
        f"[bold]What the scan sends on {day.isoformat()}[/bold] (cadence window {window} day(s))"
    )
    print_plan(console, plan.reminders, settings.tier_table)
    _demo_chart(app_ctx, settings, day, chart or Path(url.database or ".").parent / DEMO_CHART)
    console.print(
        "\nNext: [bold]creditbot scan[/bold] queues these messages, "
        "[bold]creditbot dispatch --once[/bold] prints them, "
        "[bold]creditbot outbox[/bold] lists the queue."
    )


class DigestTarget(StrEnum):
    console = "console"
    file = "file"


def _digest_moment(settings, day: date):  # type: ignore[no-untyped-def]
    """When the digest of ``day`` runs (``[schedule] digest_at``), or now if that is later."""
    from datetime import datetime

    at = datetime.combine(day, settings.schedule.digest_at, settings.zone)
    return min(_now(), at)


def _safe_name(code: str) -> str:
    """A person code as a file name (anything but letters, digits, ``.``, ``_``, ``-`` → ``_``)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]", "_", code).lstrip(".") or "_"


@app.command("digest")
def digest_cmd(
    ctx: typer.Context,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Business date YYYY-MM-DD (default: today).")
    ] = None,
    to: Annotated[
        DigestTarget,
        typer.Option("--to", help="console: print each digest; file: write them into DIR."),
    ] = DigestTarget.console,
    directory: Annotated[
        Path,
        typer.Argument(help="With --to file: where to write <person>.txt and <person>.png."),
    ] = Path("digests"),
) -> None:
    """Render every digest of a date (text and aging chart) without sending anything.

    --to console prints each digest as the console channel shows it, with its chart's size;
    --to file writes DIR/<person code>.txt and DIR/<person code>.png. Nothing is queued and
    no snapshot is written (`creditbot run` sends the digests at [schedule] digest_at).
    """
    from bot.charts import aging_chart, chart_filename
    from bot.compose import compose
    from bot.transports.console import render_text
    from credit.calendar import BusinessCalendar
    from credit.store.db import read_session
    from credit.store.digest import build_digests

    app_ctx = _ctx(ctx)
    settings = _settings_or_exit(app_ctx)
    day = _parse_date(as_of) if as_of else _today(settings)
    _require_schema(app_ctx)
    calendar = BusinessCalendar(settings.calendar.holiday_country)
    with read_session(app_ctx.engine) as session:
        digests = build_digests(
            session, settings, day, _digest_moment(settings, day), calendar=calendar
        )
    if to is DigestTarget.file:
        directory.mkdir(parents=True, exist_ok=True)
    plain = {"highlight": False, "markup": False, "soft_wrap": True}
    for d in digests:
        payload = d.payload
        text = render_text(compose(payload))
        png = aging_chart(payload)
        if to is DigestTarget.console:
            recipient = payload["recipient"]
            console.print(f"\n>>> {recipient['name']} ({d.code}, {d.scope})", **plain)
            console.print(text, **plain)
            console.print(f"[chart: {chart_filename(payload)}, {len(png)} bytes]", **plain)
        else:
            name = _safe_name(d.code)
            (directory / f"{name}.txt").write_text(text, encoding="utf-8")
            (directory / f"{name}.png").write_bytes(png)
    where = f" in {directory}" if to is DigestTarget.file else ""
    err.print(f"{len(digests)} digest(s) for {day.isoformat()}{where}", **plain)


def _transports(settings, only: list[str] | None = None, engine=None, clock=None):  # type: ignore[no-untyped-def]
    """The transports for the configured channels (console, Slack, Telegram). Telegram
    stores a token per button (``engine``) whose expiry runs on ``clock``."""
    from bot.transports.console import ConsoleTransport

    wanted = only or settings.outbox.channels
    if only is None and "erp" not in wanted:  # decisions go back to the ERP's callback URLs
        wanted = [*wanted, "erp"]
    transports = {}
    for channel in wanted:
        if channel == "console":
            transports["console"] = ConsoleTransport()
        elif channel == "slack":
            from bot.transports.slack import SlackTransport, make_web_client

            token = settings.slack.bot_token.get_secret_value()
            if not token:
                _fail("slack.bot_token is not set (CREDITBOT_SLACK__BOT_TOKEN)")
            client = make_web_client(token, settings.slack.api_base_url)
            transports["slack"] = SlackTransport(
                client, fallback_channel=settings.slack.fallback_channel
            )
        elif channel == "telegram":
            from bot.transports.telegram import TelegramTransport
            from credit.store.telegram import DbTokenMinter
            from jobs.clock import SystemClock

            if not settings.telegram.bot_token.get_secret_value():
                _fail("telegram.bot_token is not set (CREDITBOT_TELEGRAM__BOT_TOKEN)")
            if engine is None:
                raise ValueError("the Telegram transport needs the database (callback tokens)")
            clock = clock or SystemClock()
            minter = DbTokenMinter(engine, clock, settings.telegram.callback_ttl_days)
            transports["telegram"] = TelegramTransport.from_settings(
                settings.telegram, minter=minter, clock=clock
            )
        elif channel == "erp":
            from bot.transports.erp import ErpTransport
            from jobs.clock import SystemClock

            transports["erp"] = ErpTransport.from_settings(settings, clock=clock or SystemClock())
        else:
            _fail(f"channel {channel!r} is not available in this build")
    return transports


@app.command("dispatch")
def dispatch(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Send what is due now, then exit.")] = False,
    now: Annotated[
        bool,
        typer.Option(
            "--now",
            help="Send every pending message now, ignoring send windows (audited; e.g. for "
            "the demo outside working hours).",
        ),
    ] = False,
) -> None:
    """Send due outbox messages through the configured transports."""
    import asyncio

    from jobs.clock import SystemClock
    from jobs.dispatch import Dispatcher, dispatch_summary

    if not once:
        _fail("use --once here; `creditbot run` dispatches continuously")
    app_ctx = _ctx(ctx)
    settings = _settings_or_exit(app_ctx)
    _require_schema(app_ctx)
    if now:
        from credit.store.db import write_session
        from credit.store.outbox import release_pending

        with write_session(app_ctx.engine) as session:
            released = release_pending(session, _now(), actor="cli")
        err.print(f"{released} pending message(s) released to send now", highlight=False)
    dispatcher = Dispatcher(
        app_ctx.engine,
        settings,
        _transports(settings, engine=app_ctx.engine),
        SystemClock(),
        respect_send_windows=not now,
    )
    report = asyncio.run(dispatcher.drain())
    err.print(f"dispatch: {dispatch_summary(report)}", highlight=False)


outbox_app = typer.Typer(help="The notification outbox.", invoke_without_command=True)
app.add_typer(outbox_app, name="outbox")


@outbox_app.callback()
def outbox_list(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option("--status", help="pending, sending, sent, failed or dead.")
    ] = None,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="text or json.")
    ] = OutputFormat.text,
    limit: Annotated[int, typer.Option(help="At most this many rows, newest first.")] = 50,
) -> None:
    """List outbox messages (newest first), optionally only those with one status."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from credit.store.db import read_session
    from credit.store.outbox import STATUSES, counts_by_status, list_messages

    if status is not None and status not in STATUSES:
        _fail(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
    app_ctx = _ctx(ctx.parent or ctx)
    _settings_or_exit(app_ctx)
    _require_schema(app_ctx)
    with read_session(app_ctx.engine) as session:
        rows = list_messages(session, status, limit)
        counts = counts_by_status(session)
    if fmt is OutputFormat.json:
        _print_json(
            [
                {
                    "id": r.id,
                    "key": r.idempotency_key,
                    "status": r.status,
                    "kind": r.kind,
                    "channel": r.channel,
                    "recipient_id": r.recipient_id,
                    "business_date": r.business_date,
                    "attempts": r.attempts,
                    "next_attempt_at": r.next_attempt_at,
                    "sent_at": r.sent_at,
                    "last_error": r.last_error,
                    "platform_ref": r.platform_ref,
                }
                for r in rows
            ]
        )
        return
    table = Table(title="outbox " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    for col in ("id", "status", "kind", "channel", "to", "date", "tries", "next / sent", "error"):
        table.add_column(col)
    for r in rows:
        when = r.sent_at or r.next_attempt_at
        table.add_row(
            str(r.id),
            r.status,
            r.kind,
            r.channel,
            str(r.payload.get("recipient", {}).get("code", r.recipient_id)),
            str(r.business_date or ""),
            str(r.attempts),
            when.strftime("%Y-%m-%d %H:%M") if when else "",
            (r.last_error or "")[:60],
        )
    console.print(table)


@outbox_app.command("retry")
def outbox_retry(
    ctx: typer.Context, message_id: Annotated[int, typer.Argument(help="Outbox message id.")]
) -> None:
    """Queue a failed or dead message again (attempts reset)."""
    from credit.store.db import write_session
    from credit.store.outbox import retry

    app_ctx = _ctx(ctx.parent.parent if ctx.parent and ctx.parent.parent else ctx)
    _settings_or_exit(app_ctx)
    _require_schema(app_ctx)
    try:
        with write_session(app_ctx.engine) as session:
            retry(session, message_id, _now(), actor="cli")
    except (LookupError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"message {message_id} queued again")


def _act(ctx: typer.Context, fn, **kwargs) -> None:  # type: ignore[no-untyped-def]
    from credit.store.actions import ActionError, NotAllowed, record_refusal
    from credit.store.db import write_session

    app_ctx = _ctx(ctx)
    _settings_or_exit(app_ctx)
    _require_schema(app_ctx)
    try:
        with write_session(app_ctx.engine) as session:
            result = fn(session, **kwargs)
    except NotAllowed as exc:
        record_refusal(app_ctx.engine, exc)
        _fail(f"not allowed: {exc}", code=3)
    except ActionError as exc:
        _fail(str(exc))
    console.print(f"{result.invoice} ({result.customer}): {result.detail} — by {result.by}")


PersonOpt = Annotated[str, typer.Option("--as", help="Your person code (who is acting).")]
InvoiceArg = Annotated[str, typer.Argument(help="Invoice number.")]


@app.command("ack")
def ack_cmd(ctx: typer.Context, invoice: InvoiceArg, person: PersonOpt) -> None:
    """Acknowledge an invoice's reminder (stops the escalation to the manager)."""
    from credit.store.actions import acknowledge

    settings = _settings_or_exit(_ctx(ctx))
    _act(
        ctx,
        lambda s, **kw: acknowledge(s, **kw),
        invoice_number=invoice,
        person_code=person,
        tiers=settings.tier_table,
        as_of=_today(settings),
        now=_now(),
    )


@app.command("promise")
def promise_cmd(
    ctx: typer.Context,
    invoice: InvoiceArg,
    person: PersonOpt,
    by: Annotated[str, typer.Option("--date", help="Promised payment date YYYY-MM-DD.")],
    amount: Annotated[
        str | None, typer.Option(help="Promised amount (default: all that is open).")
    ] = None,
    note: Annotated[str | None, typer.Option(help="Free text, e.g. who promised.")] = None,
) -> None:
    """Record a customer's promise to pay: silences reminders until the date (plus grace)."""
    from credit.money import MoneyError, parse_amount
    from credit.store.actions import promise_to_pay

    settings = _settings_or_exit(_ctx(ctx))
    try:
        value = parse_amount(amount) if amount is not None else None
    except MoneyError as exc:
        _fail(str(exc))
    _act(
        ctx,
        lambda s, **kw: promise_to_pay(s, **kw),
        invoice_number=invoice,
        person_code=person,
        promised_date=_parse_date(by),
        amount=value,
        today=_today(settings),
        now=_now(),
        note=note,
    )


@app.command("dispute")
def dispute_cmd(
    ctx: typer.Context,
    invoice: InvoiceArg,
    person: PersonOpt,
    reason: Annotated[str, typer.Option(help="Why the customer disputes the invoice.")],
) -> None:
    """Mark an invoice disputed: its reminders go to the credit desk instead of the rep."""
    from credit.store.actions import dispute

    _act(
        ctx,
        lambda s, **kw: dispute(s, **kw),
        invoice_number=invoice,
        person_code=person,
        reason=reason,
        now=_now(),
    )


@app.command("snooze")
def snooze_cmd(
    ctx: typer.Context,
    invoice: InvoiceArg,
    person: PersonOpt,
    until: Annotated[str, typer.Option(help="Pause reminders until YYYY-MM-DD (<= 14 days).")],
) -> None:
    """Pause an invoice's reminders for a few days."""
    from credit.store.actions import snooze

    settings = _settings_or_exit(_ctx(ctx))
    _act(
        ctx,
        lambda s, **kw: snooze(s, **kw),
        invoice_number=invoice,
        person_code=person,
        until=_parse_date(until),
        today=_today(settings),
        now=_now(),
    )


@app.command("request")
def request_cmd(
    ctx: typer.Context,
    customer: Annotated[str, typer.Argument(help="Customer code (or exact name).")],
    amount: Annotated[
        str, typer.Argument(help="Shipment amount in the customer's currency, e.g. 30000.00.")
    ],
    order: Annotated[str, typer.Argument(help="Order reference (one per customer).")],
    person: PersonOpt,
    callback_url: Annotated[
        str | None,
        typer.Option("--callback-url", help="Where the decision is POSTed (signed), if anywhere."),
    ] = None,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="text or json.")
    ] = OutputFormat.text,
) -> None:
    """Raise a shipment request: approved at once, refused, or pending approval (the
    approvers' cards are queued; `creditbot dispatch` or `run` sends them)."""
    from sqlalchemy import select

    from bot.i18n import Translator
    from bot.slack_app import raise_from_chat, raise_text
    from credit.store.models import Person

    app_ctx = _ctx(ctx)
    settings = _settings_or_exit(app_ctx)
    _require_schema(app_ctx)

    def find(session):  # type: ignore[no-untyped-def]
        return session.execute(select(Person).where(Person.code == person)).scalar_one_or_none()

    outcome = raise_from_chat(
        app_ctx.engine,
        settings,
        find_person=find,
        words=[customer, amount, order],
        channel="cli",
        now=_now(),
        refusal_action="request.refused",
        unknown_actor=None,
        command="creditbot request",
        callback_url=callback_url,
    )
    kind = outcome.kind
    if kind == "unknown_person":
        _fail(f"no active person with code {person!r}")
    elif kind == "bad_amount":
        _fail(f"not an amount: {amount!r} (more than 0, at most two decimals)")
    elif kind == "unknown_customer":
        _fail(f"no customer with code or name {customer!r}")
    elif kind == "ambiguous":
        _fail(f"several customers are named {customer!r}: {outcome.codes}; use the code")
    elif kind == "not_allowed":
        _fail(f"not allowed: {outcome.detail}", code=3)
    elif kind in ("invalid", "duplicate_order"):
        _fail(outcome.detail)
    assert outcome.request is not None
    if fmt is OutputFormat.json:
        _print_json(outcome.request)
        return
    text = raise_text(Translator(None), outcome, "creditbot request")
    console.print(text, highlight=False, markup=False, soft_wrap=True)


# the HTTP port of `run` and `serve`, and the one `health` asks
PORT_ENV = "CREDITBOT_PORT"
DEFAULT_PORT = 8080


@app.command("run")
def run(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="Address the HTTP app listens on (0.0.0.0 in a container).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar=PORT_ENV, help="Port of the HTTP app.", min=1, max=65535)
    ] = DEFAULT_PORT,
    http: Annotated[
        bool,
        typer.Option(
            "--http/--no-http",
            help="Serve the HTTP app: /healthz, /readyz, /metrics, the ERP API, and Slack's "
            "and Telegram's webhooks when configured.",
        ),
    ] = True,
    slack_socket_mode: Annotated[
        bool,
        typer.Option(
            "--slack-socket-mode",
            help="Also connect the Slack app through Socket Mode (needs [slack] app_token, "
            "xapp-…, and bot_token): buttons, modals, App Home and /credit without a "
            "public URL.",
        ),
    ] = False,
    telegram_polling: Annotated[
        bool,
        typer.Option(
            "--telegram-polling",
            help="Also run the Telegram bot by long polling (needs [telegram] bot_token; "
            "not with a webhook_url): /start CODE, buttons and commands without a public URL.",
        ),
    ] = False,
) -> None:
    """Run a CreditBot replica: migrate, then dispatch the outbox, serve HTTP and, while this
    replica is the leader, run the scheduled jobs (scan, credit-hold review, digest, approval
    follow-up) until stopped (SIGTERM or Ctrl-C).

    Several replicas may share one PostgreSQL database: all dispatch and serve, one leads
    (an advisory lock; another takes over within [replicas] leader_check_seconds when it
    dies). With --slack-socket-mode, the Slack app connects through Socket Mode too; with
    --telegram-polling, the Telegram bot polls."""

    from bot.logs import configure_logging
    from credit.store.migrate import upgrade
    from jobs.clock import clock_from_env
    from jobs.replica import Replica
    from jobs.runtime import Runtime, install

    app_ctx = _ctx(ctx)
    settings = _settings_or_exit(app_ctx)
    if slack_socket_mode:
        from bot.slack_socket import socket_mode_problems

        problems = socket_mode_problems(settings)
        if problems:
            _fail("; ".join(problems))
    if telegram_polling:
        if not settings.telegram.bot_token.get_secret_value():
            _fail("telegram.bot_token is not set (CREDITBOT_TELEGRAM__BOT_TOKEN)")
        if settings.telegram.webhook_url:
            _fail(
                "telegram.webhook_url is set: polling would delete the webhook "
                "(unset it, or run without --telegram-polling)"
            )
    configure_logging(settings)
    try:
        clock = clock_from_env()
    except ValueError as exc:
        _fail(str(exc))
    upgrade(app_ctx.engine)
    runtime = Runtime(
        app_ctx.engine, settings, clock, _transports(settings, engine=app_ctx.engine, clock=clock)
    )
    install(runtime)
    replica = Replica(runtime)

    socket = None
    if slack_socket_mode:
        from slack_sdk.errors import SlackApiError

        from bot.slack_app import build_slack_app
        from bot.slack_socket import socket_mode_handler

        socket = socket_mode_handler(
            build_slack_app(app_ctx.engine, settings, clock=clock), settings
        )
        try:
            socket.connect()  # its own threads; reconnects by itself
        except SlackApiError as exc:
            _fail(f"Slack Socket Mode: apps.connections.open failed: {exc.response.get('error')}")

    telegram = None
    if telegram_polling:
        from bot.telegram_app import build_telegram_application

        telegram = build_telegram_application(settings, app_ctx.engine, runtime.clock, polling=True)

    also = []
    server = None
    if http:
        server = _http_server(
            app_ctx,
            settings,
            host,
            port,
            status=replica.status,
            telegram_webhook=not telegram,
            clock=clock,
        )
        also.append(server.serve)

    async def main() -> None:
        def stop() -> None:  # gracefully: finish the requests, resign, exit 0
            if server is not None:
                server.should_exit = True
            replica.stop()

        _stop_on_signals(stop)
        if telegram is not None:
            from bot.telegram_app import start_polling, stop_polling

            await start_polling(telegram)
        try:
            await replica.run(*also)
        finally:
            if telegram is not None:
                await stop_polling(telegram)

    try:
        _run_loop(main)
    except KeyboardInterrupt:
        pass
    finally:
        if socket is not None:
            socket.close()


def _stop_on_signals(stop) -> None:  # type: ignore[no-untyped-def]
    """Call ``stop`` on SIGTERM and SIGINT (the running loop's handlers)."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


def _run_loop(main):  # type: ignore[no-untyped-def]
    """Run ``main()`` on uvloop where it is installed (it is a dependency, but for Windows),
    else on asyncio's own loop."""
    import asyncio

    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def _http_server(app_ctx, settings, host, port, *, status=None, telegram_webhook=True, clock=None):  # type: ignore[no-untyped-def]
    """uvicorn serving ``bot.http.create_app``: the ERP API, health, readiness and metrics,
    plus /slack/events and /telegram/webhook when their secrets are set; on ``clock`` (the
    replica's; default the system clock)."""
    import logging

    import uvicorn

    from bot.api import api_routes
    from bot.http import create_app
    from bot.logs import uvicorn_log_config

    log = logging.getLogger("creditbot.http")

    slack = settings.slack
    slack_app = None
    if slack.bot_token.get_secret_value() and slack.signing_secret.get_secret_value():
        from bot.slack_app import build_slack_app

        slack_app = build_slack_app(app_ctx.engine, settings, clock=clock)
    else:
        log.info("[slack] bot_token and signing_secret are not set: no /slack/events")
    telegram = settings.telegram
    telegram_app = None
    if not telegram_webhook:
        pass  # polling instead
    elif telegram.bot_token.get_secret_value() and telegram.webhook_secret.get_secret_value():
        from bot.telegram_app import build_telegram_application
        from jobs.clock import SystemClock

        telegram_app = build_telegram_application(
            settings, app_ctx.engine, clock or SystemClock()
        )
    else:
        log.info("[telegram] bot_token and webhook_secret are not set: no /telegram/webhook")
    web = create_app(
        slack_app,
        telegram_app=telegram_app,
        telegram_secret=telegram.webhook_secret.get_secret_value() or None,
        register_telegram_webhook=telegram_app is not None and telegram.webhook_url is not None,
        settings=settings,
        api=api_routes(app_ctx.engine, settings, clock),
        engine=app_ctx.engine,
        status=status,
        # button presses answered as soon as their signature checks out
        slack_ack_first=slack.signing_secret.get_secret_value() if slack_app else None,
    )
    config = uvicorn.Config(
        web, host=host, port=port, log_config=uvicorn_log_config(), access_log=False
    )
    return _uvicorn_server_class()(config)


def _uvicorn_server_class():  # type: ignore[no-untyped-def]
    import contextlib

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn without its own signal handling: ``run`` and ``serve`` stop it (and the
        rest of the replica) on SIGTERM/SIGINT themselves, and exit 0."""

        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[no-untyped-def,override]
            yield

    return Server



@app.command("health")
def health(
    port: Annotated[
        int, typer.Option(envvar=PORT_ENV, help="Port of the running replica.", min=1, max=65535)
    ] = DEFAULT_PORT,
    path: Annotated[str, typer.Option(help="/healthz (alive) or /readyz (ready).")] = "/healthz",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 3.0,
) -> None:
    """Ask the replica on this host whether it is alive (the container's health check):
    exit 0 on HTTP 200, 1 otherwise."""
    import httpx

    url = f"http://127.0.0.1:{port}{path}"
    try:
        answer = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        err.print(f"{url}: {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
    if answer.status_code != 200:
        err.print(f"{url}: HTTP {answer.status_code} {answer.text[:200]}")
        raise typer.Exit(1)
    console.print(f"{url}: {answer.text[:200]}", highlight=False, markup=False)


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar=PORT_ENV, help="Port to listen on.", min=1, max=65535)
    ] = DEFAULT_PORT,
) -> None:
    """Serve the HTTP app only (no scheduler, no dispatcher): Slack's requests at
    /slack/events, Telegram's updates at /telegram/webhook, the ERP API at /api/v1, /healthz,
    /readyz and /metrics. `creditbot run` serves the same app next to its jobs.

    /slack/events needs [slack] bot_token and signing_secret; /telegram/webhook needs
    [telegram] bot_token and webhook_secret (and registers itself with Telegram at start-up
    when webhook_url is set).
    """
    import contextlib

    from bot.logs import configure_logging
    from credit.store.migrate import upgrade

    app_ctx = _ctx(ctx)
    settings = _settings_or_exit(app_ctx)
    configure_logging(settings)
    upgrade(app_ctx.engine)
    server = _http_server(app_ctx, settings, host, port)

    async def main() -> None:
        def stop() -> None:
            server.should_exit = True

        _stop_on_signals(stop)
        await server.serve()

    with contextlib.suppress(KeyboardInterrupt):
        _run_loop(main)


people_app = typer.Typer(help="People: reps, managers, the credit desk.", no_args_is_help=True)
app.add_typer(people_app, name="people")


@people_app.command("link")
def people_link(
    ctx: typer.Context,
    person: Annotated[str, typer.Argument(help="The person's code.")],
) -> None:
    """Make a one-time code that links the person's Telegram chat (/start CODE to the bot)."""
    from datetime import timedelta

    from sqlalchemy import select

    from credit.store.db import write_session
    from credit.store.models import Person
    from credit.store.telegram import LinkError, create_link_code

    app_ctx = _ctx(ctx)
    settings = _settings_or_exit(app_ctx)
    _require_schema(app_ctx)
    ttl = timedelta(minutes=settings.telegram.link_code_ttl_minutes)
    now = _now()
    try:
        with write_session(app_ctx.engine) as session:
            row = session.execute(select(Person).where(Person.code == person)).scalar_one_or_none()
            if row is None:
                _fail(f"no person with code {person!r}")
            code = create_link_code(session, row, now, ttl)
            name = row.name
    except LinkError as exc:
        _fail(f"cannot link {person}: {exc}")
    expires = (now + ttl).astimezone(settings.zone)
    plain = {"highlight": False, "markup": False, "soft_wrap": True}
    console.print(f"Telegram link code for {person} ({name}): {code}", **plain)
    console.print(
        f"valid once, until {expires:%Y-%m-%d %H:%M} ({settings.calendar.timezone}); "
        f"in a private chat with the bot send: /start {code}",
        **plain,
    )
    if settings.telegram.bot_username:
        console.print(f"https://t.me/{settings.telegram.bot_username}?start={code}", **plain)


@app.command("openapi")
def openapi() -> None:
    """Print the ERP API's OpenAPI document (JSON): /api/v1 and the decision callback."""
    from bot.api import openapi_json

    sys.stdout.write(openapi_json() + "\n")


slack_cli = typer.Typer(help="The Slack app.", no_args_is_help=True)
app.add_typer(slack_cli, name="slack")


@slack_cli.command("manifest")
def slack_manifest(
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="CreditBot's public https URL (Slack posts to URL/slack/events)."
        ),
    ] = None,
    socket_mode: Annotated[
        bool, typer.Option("--socket-mode", help="A Socket Mode app: no public URL needed.")
    ] = False,
) -> None:
    """Print the Slack app manifest (JSON) to paste at api.slack.com/apps."""
    from bot.slack_manifest import ManifestError, build_manifest

    try:
        manifest = build_manifest(url, socket_mode=socket_mode)
    except ManifestError as exc:
        _fail(str(exc))
    _print_json(manifest)


if __name__ == "__main__":  # pragma: no cover
    app()
