"""The ledger importer: people, customers, invoices and payments from CSV or XLSX files.

A file is all or nothing. Every row is read and checked first — types, required cells,
duplicate keys within the file, references to customers, reps, managers and invoices,
currencies, over-payments — and every problem is collected with its line and column. Only a
file without a single error is written, in one transaction, together with its audit entry.

Rows are upserted by their natural key (region code, person code, customer code, invoice
number, payment reference) and counted as created, updated or unchanged. A column that is in
the file sets the value (an empty cell means the column's default); a column that is not in
the file leaves an existing record's value alone.

Line numbers are the ones a spreadsheet user sees: the header is line 1, the first data row
line 2. Blank rows are skipped but still counted.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, Engine, Table, any_, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError

from credit.aging import ROLES
from credit.money import MoneyError, check_currency, parse_amount
from credit.ratings import RatingError, parse_rating
from credit.settings import Settings
from credit.store.db import write_session
from credit.store.models import AuditLog, Customer, Invoice, Payment, Person, Region
from credit.store.types import utcnow

KINDS = ("people", "customers", "invoices", "payments")
LOCALES = ("en", "zh_CN")

# Rows per INSERT/UPDATE batch, and the unit of keys per look-up query (900: under SQLite's
# oldest variable limit of 999; newer SQLite and PostgreSQL take more per query, see
# ``_lookup``). Module-level so tests can make them small.
WRITE_CHUNK = 5000
LOOKUP_CHUNK = 900

_MAX_BIGINT = 2**63 - 1


# --- results and errors ---------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    """One problem: ``line`` as a spreadsheet shows it (header = 1), the column, the reason."""

    line: int
    column: str
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}" if self.column else f"line {self.line}"
        return f"{where}: {self.reason}"


class ImportRejected(Exception):
    """The file has errors; nothing was written. ``str()`` lists every error, one per line."""

    def __init__(self, file: str, errors: list[RowError]) -> None:
        self.file = file
        self.errors = sorted(errors, key=lambda e: e.line)
        super().__init__(file, self.errors)

    def __str__(self) -> str:
        n = len(self.errors)
        head = f"{self.file}: {n} error{'s' if n != 1 else ''}, nothing was imported"
        return "\n".join([head, *(str(e) for e in self.errors)])


class ImportWriteError(RuntimeError):
    """The database refused the write; the transaction was rolled back, nothing was written."""

    def __init__(self, file: str, cause: BaseException) -> None:
        self.file = file
        self.cause = cause
        detail = str(getattr(cause, "orig", None) or cause).strip().splitlines()
        super().__init__(
            f"{file}: the database refused the import and nothing was written: "
            f"{detail[0] if detail else type(cause).__name__}"
        )


@dataclass
class ImportResult:
    kind: str
    rows: int
    created: int
    updated: int
    unchanged: int


# --- reading CSV and XLSX -------------------------------------------------------------------


def _normalise_header(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _column_letter(index: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(index + 1)


def _rows_to_dicts(
    header: list[str], records: Iterable[list[str]]
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, {column: value}) for each non-blank record; the header is line 1.

    A value under a blank header cell or beyond the header's width is kept under the key
    ``"(column F)"`` so the importer can report it.
    """
    for line, record in enumerate(records, start=2):
        values = [v.strip() for v in record]
        if not any(values):
            continue
        row: dict[str, str] = {}
        for i, value in enumerate(values):
            name = header[i] if i < len(header) else ""
            if name:
                row[name] = value
            elif value:
                row[f"(column {_column_letter(i)})"] = value
        yield line, row


def _sniff_delimiter(first_line: str) -> str:
    counts = {d: 0 for d in (",", ";", "\t")}
    quoted = False
    for ch in first_line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def _read_csv(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportRejected(
            str(path),
            [RowError(line, "", 'the file is not UTF-8 text (save it as "CSV UTF-8")')],
        ) from None
    end = text.find("\n")
    first_line = text if end < 0 else text[:end]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(first_line))

    def records() -> Iterator[list[str]]:
        try:
            yield from reader
        except csv.Error as exc:
            raise ImportRejected(
                str(path), [RowError(reader.line_num, "", f"not readable as CSV: {exc}")]
            ) from None

    rows = records()
    header = [_normalise_header(h) for h in next(rows, [])]
    return header, _rows_to_dicts(header, rows)


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        if value.time() == time(0):
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)


def _read_xlsx(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except OSError:  # a missing or unreadable file is the caller's to report
        raise
    except Exception as exc:  # openpyxl raises several kinds for a broken file
        raise ImportRejected(
            str(path), [RowError(1, "", f"cannot read the file as XLSX: {exc}")]
        ) from None
    sheet = workbook.worksheets[0]
    sheet.reset_dimensions()  # do not trust the writer's recorded dimensions
    rows = sheet.iter_rows(values_only=True)
    try:
        first = next(rows, None) or ()
        header = [_normalise_header(_cell_text(v)) for v in first]
    except BaseException:
        workbook.close()
        raise

    def records() -> Iterator[list[str]]:
        try:
            for row in rows:
                yield [_cell_text(v) for v in row]
        finally:
            workbook.close()

    return header, _rows_to_dicts(header, records())


def read_rows(path: str | Path) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """The header (lower-cased, trimmed) and the non-blank rows as ``(line, {column: text})``.

    CSV (UTF-8 with or without BOM; comma, semicolon or tab) or XLSX (the first sheet; dates
    come back as ``YYYY-MM-DD``). Raises ``ImportRejected`` for a file it cannot read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return _read_xlsx(path)
    if suffix in (".csv", ".txt", ".tsv"):
        return _read_csv(path)
    raise ImportRejected(
        str(path),
        [RowError(1, "", f"unsupported file type {suffix or '(none)'}: use .csv or .xlsx")],
    )


# --- cell parsers ---------------------------------------------------------------------------


class _Bad(ValueError):
    """A cell that cannot be read; the message is the reason shown to the user."""


def _text(max_len: int) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if len(raw) > max_len:
            raise _Bad(f"longer than {max_len} characters")
        return raw

    return parse


_DATE = re.compile(
    r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$"
)


def _date(raw: str) -> date:
    m = _DATE.match(raw)
    if m:
        try:
            return date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            pass
    raise _Bad(f"not a date: {raw!r} (use YYYY-MM-DD or YYYY/MM/DD)")


_TRUE = {"true", "yes", "y", "1", "是", "t"}
_FALSE = {"false", "no", "n", "0", "否", "f"}


def _bool(raw: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _Bad(f"not a yes/no value: {raw!r} (use true/false, yes/no, 1/0, 是/否)")


def _amount(raw: str) -> Decimal:
    try:
        return parse_amount(raw)
    except MoneyError as exc:
        raise _Bad(str(exc)) from None


def _positive_amount(raw: str) -> Decimal:
    value = _amount(raw)
    if value <= 0:
        raise _Bad(f"must be more than 0, got {value}")
    return value


def _nonnegative_amount(raw: str) -> Decimal:
    value = _amount(raw)
    if value < 0:
        raise _Bad(f"must not be negative, got {value}")
    return value


def _currency(raw: str) -> str:
    try:
        return check_currency(raw)
    except MoneyError:
        raise _Bad(f"not a currency code: {raw!r} (use three letters, e.g. CNY, USD)") from None


_INT = re.compile(r"^[+-]?\d+$")


def _int(raw: str) -> int:
    if not _INT.match(raw):
        raise _Bad(f"not a whole number: {raw!r}")
    value = int(raw)
    if abs(value) > _MAX_BIGINT:
        raise _Bad(f"number too large: {raw}")
    return value


def _days(raw: str) -> int:
    value = _int(raw)
    if not 0 <= value <= 3650:
        raise _Bad(f"must be between 0 and 3650 days, got {value}")
    return value


def _role(raw: str) -> str:
    role = _normalise_header(raw)
    if role not in ROLES:
        raise _Bad(f"unknown role {raw!r} (one of {', '.join(ROLES)})")
    return role


def _rating(raw: str) -> str:
    try:
        return parse_rating(raw).value
    except RatingError as exc:
        raise _Bad(str(exc)) from None


def _locale(raw: str) -> str:
    wanted = raw.replace("-", "_").lower()
    for locale in LOCALES:
        if locale.lower() == wanted:
            return locale
    raise _Bad(f"unsupported locale {raw!r} (one of {', '.join(LOCALES)})")


def _time_zone(raw: str) -> str:
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise _Bad(f"unknown time zone {raw!r} (use an IANA name like Asia/Shanghai)") from None
    return raw


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _email(raw: str) -> str:
    if len(raw) > 320 or not _EMAIL.match(raw):
        raise _Bad(f"not an email address: {raw!r}")
    return raw


_SLACK_ID = re.compile(r"^[A-Z0-9]{2,32}$")


def _slack_id(raw: str) -> str:
    if not _SLACK_ID.match(raw):
        raise _Bad(f"not a Slack user id: {raw!r} (like U012AB3CD)")
    return raw


@dataclass(frozen=True)
class _Col:
    parse: Callable[[str], Any]
    required: bool = False
    # What an empty cell means, before kind-specific defaults: None, or False for yes/no.
    empty: Any = None


_CODE = _text(64)

_SPECS: dict[str, dict[str, _Col]] = {
    "people": {
        "code": _Col(_CODE, required=True),
        "name": _Col(_text(200), required=True),
        "role": _Col(_role, required=True),
        "region": _Col(_CODE),
        "manager": _Col(_CODE),
        "email": _Col(_email),
        "slack_user_id": _Col(_slack_id),
        "telegram_chat_id": _Col(_int),
        "locale": _Col(_locale),
        "time_zone": _Col(_time_zone),
    },
    "customers": {
        "code": _Col(_CODE, required=True),
        "name": _Col(_text(300), required=True),
        "region": _Col(_CODE, required=True),
        "rep": _Col(_CODE, required=True),
        "rating": _Col(_rating),
        "credit_limit": _Col(_nonnegative_amount),
        "currency": _Col(_currency),
        "payment_terms_days": _Col(_days),
        "probation_until": _Col(_date),
        "blacklisted": _Col(_bool, empty=False),
        "credit_hold": _Col(_bool, empty=False),
        "credit_hold_reason": _Col(_text(500)),
    },
    "invoices": {
        "number": _Col(_CODE, required=True),
        "customer": _Col(_CODE, required=True),
        "issue_date": _Col(_date, required=True),
        "due_date": _Col(_date, required=True),
        "amount": _Col(_positive_amount, required=True),
        "open_amount": _Col(_nonnegative_amount),
        "currency": _Col(_currency),
        "disputed": _Col(_bool, empty=False),
        "dispute_reason": _Col(_text(1000)),
    },
    "payments": {
        "reference": _Col(_CODE, required=True),
        "customer": _Col(_CODE, required=True),
        "invoice": _Col(_CODE),
        "paid_on": _Col(_date, required=True),
        "amount": _Col(_positive_amount, required=True),
        "currency": _Col(_currency),
    },
}
_KEY = {"people": "code", "customers": "code", "invoices": "number", "payments": "reference"}


def columns(kind: str) -> dict[str, bool]:
    """The columns a kind of file may have, each with whether it is required."""
    return {name: col.required for name, col in _SPECS[kind].items()}


# --- the import -----------------------------------------------------------------------------


@dataclass
class _Row:
    line: int
    values: dict[str, Any]  # parsed cells of the columns present in the file
    bad: set[str] = field(default_factory=set)  # columns whose cell could not be read

    def ok(self, *cols: str) -> bool:
        return not any(c in self.bad for c in cols)


class _Progress:
    def __init__(self, callback: Callable[[int, int], None] | None, total: int) -> None:
        self.callback = callback
        self.total = total
        self.done = 0
        self.every = max(1, total // 200)
        self._last = -1

    def step(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if self.callback and (self.done - self._last >= self.every or self.done == self.total):
            self._last = self.done
            self.callback(self.done, self.total)

    def finish(self) -> None:
        if self.callback and self._last != self.total:
            self._last = self.done = self.total
            self.callback(self.total, self.total)


@dataclass
class _Context:
    conn: Connection
    settings: Settings
    present: set[str]
    errors: list[RowError]
    progress: _Progress
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    customer_codes: dict[int, str] = field(default_factory=dict)

    def error(self, row: _Row, column: str, reason: str) -> None:
        self.errors.append(RowError(row.line, column, reason))
        row.bad.add(column)


def _check_header(kind: str, header: list[str]) -> list[RowError]:
    spec = _SPECS[kind]
    errors: list[RowError] = []
    named = [h for h in header if h]
    if not named:
        return [RowError(1, "", "no header row: the first line must name the columns")]
    seen: set[str] = set()
    for name in named:
        if name in seen:
            errors.append(RowError(1, name, "the column appears twice"))
        seen.add(name)
    unknown = [h for h in dict.fromkeys(named) if h not in spec]
    for name in unknown:
        errors.append(
            RowError(1, name, f"unknown column (columns of {kind} files: {', '.join(spec)})")
        )
    for name, col in spec.items():
        if col.required and name not in seen:
            errors.append(RowError(1, name, "required column is missing"))
    return errors


def _parse_row(kind: str, line: int, raw: dict[str, str], errors: list[RowError]) -> _Row:
    spec = _SPECS[kind]
    row = _Row(line, {})
    for name, text in raw.items():
        if name not in spec:  # only "(column X)": a value without a header
            errors.append(RowError(line, name, f"a value without a column header: {text!r}"))
            continue
        col = spec[name]
        if not text:
            if col.required:
                errors.append(RowError(line, name, "required, but empty"))
                row.bad.add(name)
            else:
                row.values[name] = col.empty
            continue
        try:
            row.values[name] = col.parse(text)
        except _Bad as exc:
            errors.append(RowError(line, name, str(exc)))
            row.bad.add(name)
    return row


def _flag_duplicates(rows: list[_Row], column: str, errors: list[RowError]) -> None:
    first: dict[Any, int] = {}
    for row in rows:
        value = row.values.get(column)
        if value is None or not row.ok(column):
            continue
        if value in first:
            errors.append(
                RowError(
                    row.line, column, f"duplicate {column} {value!r} (also on line {first[value]})"
                )
            )
            row.bad.add(column)
        else:
            first[value] = row.line


def import_file(
    engine: Engine,
    kind: str,
    path: str | Path,
    *,
    settings: Settings,
    actor: str = "cli",
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Import one file of ``kind`` (people, customers, invoices or payments): all or nothing.

    Raises ``ImportRejected`` (nothing written) listing every bad row, or
    ``ImportWriteError`` when the database refuses the write (rolled back).
    ``progress(done, total)`` is called as rows are checked and then written; ``total`` is
    twice the number of rows (each row is checked once and written once).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r}: one of {', '.join(KINDS)}")
    path = Path(path)
    file = str(path)
    header, records = read_rows(path)
    errors = _check_header(kind, header)
    if errors:
        raise ImportRejected(file, errors)
    raw_rows = list(records)
    tracker = _Progress(progress, 2 * len(raw_rows))

    rows: list[_Row] = []
    for line, raw in raw_rows:
        rows.append(_parse_row(kind, line, raw, errors))
        tracker.step()
    del raw_rows
    _flag_duplicates(rows, _KEY[kind], errors)

    try:
        with write_session(engine) as session:
            ctx = _Context(session.connection(), settings, set(header), errors, tracker)
            _IMPORTERS[kind](ctx, rows)  # checks references, then writes if no errors
            if ctx.errors:
                order = {name: i for i, name in enumerate(_SPECS[kind])}
                ctx.errors.sort(key=lambda e: (e.line, order.get(e.column, len(order))))
                raise ImportRejected(file, ctx.errors)
            session.add(
                AuditLog(
                    actor=actor,
                    action=f"import.{kind}",
                    entity=kind,
                    after={
                        "file": path.name,
                        "created": ctx.created,
                        "updated": ctx.updated,
                        "unchanged": ctx.unchanged,
                    },
                )
            )
            session.flush()
    except SQLAlchemyError as exc:
        raise ImportWriteError(file, exc) from exc
    tracker.finish()
    return ImportResult(kind, len(rows), ctx.created, ctx.updated, ctx.unchanged)


# --- database helpers -----------------------------------------------------------------------


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _lookup(conn: Connection, table: Table, key: str, keys: Iterable[Any]) -> dict[Any, Any]:
    """Existing rows of ``table`` whose ``key`` is one of ``keys``: {key: row mapping}.

    PostgreSQL gets the keys as one array parameter (``= ANY(...)``), so a 100k-row file
    needs a couple of queries; SQLite gets ``IN (...)`` in chunks under its variable limit.
    """
    wanted = sorted({k for k in keys if k is not None})
    column = table.c[key]
    found: dict[Any, Any] = {}
    if conn.dialect.name == "postgresql":
        size = LOOKUP_CHUNK * 50

        def where(chunk: list[Any]) -> Any:
            return column == any_(bindparam("keys", chunk, type_=ARRAY(column.type)))
    else:
        size = LOOKUP_CHUNK * (30 if sqlite3.sqlite_version_info >= (3, 32) else 1)

        def where(chunk: list[Any]) -> Any:
            return column.in_(chunk)

    for chunk in _chunks(wanted, size):
        for row in conn.execute(select(table).where(where(chunk))).mappings():
            found[row[key]] = row
    return found


def _insert(ctx: _Context, table: Table, rows: list[dict[str, Any]]) -> None:
    for chunk in _chunks(rows, WRITE_CHUNK):
        ctx.conn.execute(insert(table), chunk)
        ctx.progress.step(len(chunk))


def _update(ctx: _Context, table: Table, rows: list[dict[str, Any]], count: bool = True) -> None:
    """Update by id; rows are grouped by the set of columns they change."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        cols = tuple(sorted(k for k in row if k != "id"))
        groups.setdefault(cols, []).append(row)
    for cols, group in groups.items():
        stmt = (
            update(table)
            .where(table.c.id == bindparam("_id"))
            .values({c: bindparam(f"_{c}") for c in cols})
        )
        for chunk in _chunks(group, WRITE_CHUNK):
            ctx.conn.execute(stmt, [{f"_{k}": v for k, v in r.items()} for r in chunk])
            if count:
                ctx.progress.step(len(chunk))


def _regions(ctx: _Context, rows: list[_Row]) -> dict[str, int]:
    """Region code → id, creating (name = code) the regions the rows name that are new."""
    table = Region.__table__
    known = {r.code: r.id for r in ctx.conn.execute(select(table.c.code, table.c.id))}
    if not ctx.errors:
        new = sorted({r.values["region"] for r in rows if r.values.get("region")} - set(known))
        if new:
            ctx.conn.execute(insert(table), [{"code": c, "name": c} for c in new])
            known = {r.code: r.id for r in ctx.conn.execute(select(table.c.code, table.c.id))}
    return known


def _diff(target: dict[str, Any], existing: Any) -> dict[str, Any]:
    return {k: v for k, v in target.items() if existing[k] != v}


# --- people ---------------------------------------------------------------------------------


def _import_people(ctx: _Context, rows: list[_Row]) -> None:
    table = Person.__table__
    existing = {p["code"]: p for p in ctx.conn.execute(select(table)).mappings()}
    code_of = {p["id"]: code for code, p in existing.items()}
    file_rows = {r.values["code"]: r for r in rows if r.ok("code")}
    has = ctx.present.__contains__

    # managers: a person in this file (earlier or later) or already in the database
    for row in rows:
        manager = row.values.get("manager")
        if manager is None or not row.ok("code"):
            continue
        if manager == row.values["code"]:
            ctx.error(row, "manager", "a person cannot be their own manager")
        elif manager not in file_rows and manager not in existing:
            ctx.error(
                row, "manager", f"unknown person {manager!r}: not in this file nor in the database"
            )

    # after the import: who manages whom, and who has which chat id — checked as a whole
    final: dict[str, dict[str, Any]] = {
        code: {
            "manager": code_of.get(p["manager_id"]),
            "slack_user_id": p["slack_user_id"],
            "telegram_chat_id": p["telegram_chat_id"],
        }
        for code, p in existing.items()
    }
    for code, row in file_rows.items():
        state = final.setdefault(
            code, {"manager": None, "slack_user_id": None, "telegram_chat_id": None}
        )
        for col in state:
            if has(col):
                state[col] = row.values.get(col)
    for col in ("slack_user_id", "telegram_chat_id"):
        holders: dict[Any, list[str]] = {}
        for code, state in final.items():
            if state[col] is not None:
                holders.setdefault(state[col], []).append(code)
        for value, codes in holders.items():
            if len(codes) < 2:
                continue
            for code in codes:
                row = file_rows.get(code)
                if row is not None and has(col) and row.ok(col):
                    others = ", ".join(c for c in codes if c != code)
                    ctx.error(row, col, f"{value} is also the {col} of {others}")
    for code, row in file_rows.items():
        if not has("manager") or not row.ok("manager"):
            continue
        seen = [code]
        boss = final[code]["manager"]
        while boss is not None and boss not in seen and boss in final:
            seen.append(boss)
            boss = final[boss]["manager"]
        if boss == code:
            ctx.error(row, "manager", "managers loop: " + " → ".join([*seen, code]))

    # a rep who still has customers keeps the rep role
    leaving = [
        existing[c]["id"]
        for c, r in file_rows.items()
        if c in existing
        and existing[c]["role"] == "rep"
        and r.values.get("role") not in (None, "rep")
    ]
    if leaving:
        cust = Customer.__table__
        counts = dict(
            ctx.conn.execute(
                select(cust.c.rep_id, func.count())
                .where(cust.c.rep_id.in_(leaving))
                .group_by(cust.c.rep_id)
            ).all()
        )
        for rep_id, n in counts.items():
            code = code_of[rep_id]
            ctx.error(
                file_rows[code],
                "role",
                f"{code} is still the rep of {n} customer(s): reassign them before the role "
                "changes",
            )

    if ctx.errors:
        return

    regions = _regions(ctx, rows)
    defaults = {"locale": "en", "time_zone": ctx.settings.calendar.timezone}
    simple = ("name", "role", "email", "slack_user_id", "telegram_chat_id", "locale", "time_zone")
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    new_managers: list[tuple[str, str]] = []
    for row in rows:
        v = row.values
        code = v["code"]
        target: dict[str, Any] = {}
        for col in simple:
            if has(col):
                value = v.get(col)
                target[col] = defaults.get(col) if value is None else value
        if has("region"):
            target["region_id"] = regions[v["region"]] if v.get("region") else None
        old = existing.get(code)
        if old is None:
            record = {
                "code": code,
                "region_id": None,
                "manager_id": None,
                "email": None,
                "slack_user_id": None,
                "telegram_chat_id": None,
                "active": True,
                "unreachable_reason": None,
                **defaults,
                **target,
            }
            inserts.append(record)
            if v.get("manager"):
                new_managers.append((code, v["manager"]))
            ctx.created += 1
            continue
        pending = False
        if has("manager"):
            manager = v.get("manager")
            if manager is None:
                target["manager_id"] = None
            elif manager in existing:
                target["manager_id"] = existing[manager]["id"]
            else:  # a manager created by this file: set once it has an id
                new_managers.append((code, manager))
                pending = True
        changed = _diff(target, old)
        if changed:
            updates.append({"id": old["id"], **changed})
            ctx.updated += 1
        elif pending:
            ctx.updated += 1
            ctx.progress.step()
        else:
            ctx.unchanged += 1
            ctx.progress.step()
    _insert(ctx, table, inserts)
    _update(ctx, table, updates)
    if new_managers:
        ids = dict(ctx.conn.execute(select(table.c.code, table.c.id)).all())
        _update(
            ctx,
            table,
            [{"id": ids[code], "manager_id": ids[boss]} for code, boss in new_managers],
            count=False,
        )


# --- customers ------------------------------------------------------------------------------


def _import_customers(ctx: _Context, rows: list[_Row]) -> None:
    table = Customer.__table__
    people = Person.__table__
    existing = _lookup(ctx.conn, table, "code", (r.values.get("code") for r in rows))
    reps = {
        code: (p["id"], p["role"])
        for code, p in _lookup(
            ctx.conn, people, "code", (r.values["rep"] for r in rows if r.ok("rep"))
        ).items()
    }
    has = ctx.present.__contains__
    default_currency = ctx.settings.policy.default_currency

    for row in rows:
        rep = row.values.get("rep")
        if rep is None or not row.ok("rep"):
            continue
        if rep not in reps:
            ctx.error(row, "rep", f"unknown person {rep!r}")
        elif reps[rep][1] != "rep":
            ctx.error(row, "rep", f"{rep} is a {reps[rep][1]}, not a rep")

    # a customer's currency cannot change under invoices or payments in the old one
    if has("currency"):
        moving = {
            existing[r.values["code"]]["id"]: r
            for r in rows
            if r.ok("code", "currency")
            and r.values["code"] in existing
            and (r.values.get("currency") or default_currency)
            != existing[r.values["code"]]["currency"]
        }
        for t in (Invoice.__table__, Payment.__table__):
            for chunk in _chunks(sorted(moving), LOOKUP_CHUNK):
                used = ctx.conn.execute(
                    select(t.c.customer_id, t.c.currency)
                    .where(t.c.customer_id.in_(chunk))
                    .distinct()
                ).all()
                for customer_id, currency in used:
                    row = moving[customer_id]
                    if "currency" not in row.bad:
                        ctx.error(
                            row,
                            "currency",
                            f"the customer has {t.name}s in {currency}: its currency cannot change",
                        )

    if ctx.errors:
        return

    regions = _regions(ctx, rows)
    now = utcnow()
    sourced = "credit_hold_source" in table.c  # who put the hold on: "manual" for imports
    defaults = {
        "rating": "C",
        "credit_limit": Decimal("0.00"),
        "currency": default_currency,
        "payment_terms_days": ctx.settings.policy.default_payment_terms_days,
    }
    simple = (
        "name",
        "rating",
        "credit_limit",
        "currency",
        "payment_terms_days",
        "probation_until",
        "blacklisted",
        "credit_hold",
        "credit_hold_reason",
    )
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for row in rows:
        v = row.values
        target: dict[str, Any] = {
            "region_id": regions[v["region"]],
            "rep_id": reps[v["rep"]][0],
        }
        for col in simple:
            if has(col):
                value = v.get(col)
                target[col] = defaults.get(col) if value is None else value
        old = existing.get(v["code"])
        if old is None:
            hold = target.get("credit_hold", False)
            inserts.append(
                {
                    "code": v["code"],
                    "probation_until": None,
                    "blacklisted": False,
                    "credit_hold": False,
                    "credit_hold_reason": None,
                    **defaults,
                    **target,
                    "credit_hold_since": now if hold else None,
                    **({"credit_hold_source": "manual" if hold else None} if sourced else {}),
                }
            )
            ctx.created += 1
            continue
        if has("credit_hold"):
            if target["credit_hold"] and not old["credit_hold"]:
                target["credit_hold_since"] = now
                if sourced:
                    target["credit_hold_source"] = "manual"
            elif not target["credit_hold"]:
                target["credit_hold_since"] = None
                if sourced:
                    target["credit_hold_source"] = None
                if not has("credit_hold_reason"):
                    target["credit_hold_reason"] = None
        changed = _diff(target, old)
        if changed:
            updates.append({"id": old["id"], **changed})
            ctx.updated += 1
        else:
            ctx.unchanged += 1
            ctx.progress.step()
    _insert(ctx, table, inserts)
    _update(ctx, table, updates)


# --- invoices -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CustomerRef:
    id: int
    code: str
    currency: str


def _customers(ctx: _Context, rows: list[_Row]) -> dict[str, _CustomerRef]:
    """The customers the rows name, by code; rows naming an unknown one are flagged."""
    wanted = (r.values["customer"] for r in rows if r.ok("customer"))
    found = {
        code: _CustomerRef(c["id"], code, c["currency"])
        for code, c in _lookup(ctx.conn, Customer.__table__, "code", wanted).items()
    }
    for row in rows:
        code = row.values.get("customer")
        if code is not None and row.ok("customer") and code not in found:
            ctx.error(row, "customer", f"unknown customer {code!r}")
    return found


def _check_currency(ctx: _Context, row: _Row, customer: Any) -> str | None:
    """The row's currency (default: the customer's); flags one that is not the customer's."""
    currency = row.values.get("currency") or customer.currency
    if currency != customer.currency and row.ok("currency"):
        ctx.error(
            row,
            "currency",
            f"{currency} is not the currency of customer {customer.code} ({customer.currency})",
        )
        return None
    return currency


def _import_invoices(ctx: _Context, rows: list[_Row]) -> None:
    table = Invoice.__table__
    has = ctx.present.__contains__
    for row in rows:  # checks within the row
        v = row.values
        if row.ok("issue_date", "due_date") and v["due_date"] < v["issue_date"]:
            ctx.error(
                row, "due_date", f"{v['due_date']} is before the issue date {v['issue_date']}"
            )
        opened = v.get("open_amount")
        if opened is not None and row.ok("amount", "open_amount") and opened > v["amount"]:
            ctx.error(row, "open_amount", f"{opened} is more than the amount {v['amount']}")
    customers = _customers(ctx, rows)
    existing = _lookup(ctx.conn, table, "number", (r.values.get("number") for r in rows))
    id_code = {c.id: code for code, c in customers.items()}

    plans: list[tuple[_Row, Any, dict[str, Any]]] = []
    for row in rows:
        v = row.values
        customer = customers.get(v.get("customer"))
        if customer is None or not row.ok("number", "customer"):
            continue
        currency = _check_currency(ctx, row, customer)
        old = existing.get(v["number"])
        if old is not None and old["customer_id"] != customer.id:
            other = id_code.get(old["customer_id"]) or _customer_code(ctx, old["customer_id"])
            ctx.error(row, "customer", f"invoice {v['number']} belongs to customer {other}")
            continue
        if currency is None or row.bad:
            continue
        opened = v.get("open_amount")
        if opened is None:
            if old is None:
                opened = v["amount"]
            else:  # what was paid stays paid
                paid = old["amount"] - old["open_amount"]
                opened = v["amount"] - paid
                if opened < 0:
                    ctx.error(
                        row,
                        "amount",
                        f"{paid} of invoice {v['number']} is already paid, "
                        f"more than the new amount {v['amount']}",
                    )
                    continue
        target = {
            "customer_id": customer.id,
            "issue_date": v["issue_date"],
            "due_date": v["due_date"],
            "amount": v["amount"],
            "open_amount": opened,
            "currency": currency,
        }
        if has("disputed"):
            target["disputed"] = v["disputed"]
        if has("dispute_reason"):
            target["dispute_reason"] = v["dispute_reason"]
        plans.append((row, old, target))
    if ctx.errors:
        return

    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for row, old, target in plans:
        if old is None:
            inserts.append(
                {
                    "number": row.values["number"],
                    "disputed": False,
                    "dispute_reason": None,
                    **target,
                }
            )
            ctx.created += 1
            continue
        changed = _diff(target, old)
        if changed:
            updates.append({"id": old["id"], **changed})
            ctx.updated += 1
        else:
            ctx.unchanged += 1
            ctx.progress.step()
    _insert(ctx, table, inserts)
    _update(ctx, table, updates)


def _customer_code(ctx: _Context, customer_id: int) -> str:
    """The code of a customer not named in the file (for error messages only; cached)."""
    if customer_id not in ctx.customer_codes:
        table = Customer.__table__
        code = ctx.conn.execute(select(table.c.code).where(table.c.id == customer_id)).scalar()
        ctx.customer_codes[customer_id] = code or f"#{customer_id}"
    return ctx.customer_codes[customer_id]


# --- payments -------------------------------------------------------------------------------


_PAYMENT_FIELDS = (
    ("customer_id", "customer"),
    ("invoice_id", "invoice"),
    ("paid_on", "paid_on"),
    ("amount", "amount"),
    ("currency", "currency"),
)


def _import_payments(ctx: _Context, rows: list[_Row]) -> None:
    table = Payment.__table__
    invoices_t = Invoice.__table__
    has = ctx.present.__contains__
    customers = _customers(ctx, rows)
    id_code = {c.id: code for code, c in customers.items()}
    invoices = _lookup(ctx.conn, invoices_t, "number", (r.values.get("invoice") for r in rows))
    invoice_number = {inv["id"]: number for number, inv in invoices.items()}
    existing = _lookup(ctx.conn, table, "reference", (r.values.get("reference") for r in rows))
    open_now = {inv["id"]: inv["open_amount"] for inv in invoices.values()}
    inserts: list[dict[str, Any]] = []
    for row in rows:
        v = row.values
        customer = customers.get(v.get("customer"))
        invoice = None
        if v.get("invoice") is not None and row.ok("invoice"):
            invoice = invoices.get(v["invoice"])
            if invoice is None:
                ctx.error(row, "invoice", f"unknown invoice {v['invoice']!r}")
            elif customer is not None and invoice["customer_id"] != customer.id:
                owner = id_code.get(invoice["customer_id"]) or _customer_code(
                    ctx, invoice["customer_id"]
                )
                ctx.error(
                    row,
                    "invoice",
                    f"invoice {v['invoice']} belongs to customer {owner}, not {customer.code}",
                )
                invoice = None
        if customer is None:
            continue
        currency = _check_currency(ctx, row, customer)
        if currency is None or row.bad:
            continue
        target = {
            "customer_id": customer.id,
            "invoice_id": invoice["id"] if invoice is not None else None,
            "paid_on": v["paid_on"],
            "amount": v["amount"],
            "currency": currency,
        }
        old = existing.get(v["reference"])
        if old is not None:
            for key, col in _PAYMENT_FIELDS:
                if old[key] == target[key] or (col == "invoice" and not has(col)):
                    continue
                was = old[key]
                if was is None:
                    was = "(none)"
                elif key == "customer_id":
                    was = id_code.get(was) or _customer_code(ctx, was)
                elif key == "invoice_id":
                    if was not in invoice_number:  # only for this message: not in the file
                        invoice_number[was] = ctx.conn.execute(
                            select(invoices_t.c.number).where(invoices_t.c.id == was)
                        ).scalar()
                    was = invoice_number[was]
                ctx.error(
                    row,
                    col,
                    f"payment {v['reference']} is already recorded with {col} {was}; "
                    "a recorded payment cannot be changed",
                )
                break
            else:
                ctx.unchanged += 1
            continue
        if invoice is not None:
            left = open_now[invoice["id"]]
            if v["amount"] > left:
                ctx.error(
                    row,
                    "amount",
                    f"{v['amount']} is more than the open amount {left} of invoice {v['invoice']}",
                )
                continue
            open_now[invoice["id"]] = left - v["amount"]
        inserts.append({"reference": v["reference"], **target})
    if ctx.errors:
        return

    ctx.created = len(inserts)
    ctx.progress.step(ctx.unchanged)
    _insert(ctx, table, inserts)
    paid = [
        {"id": inv["id"], "open_amount": open_now[inv["id"]]}
        for inv in invoices.values()
        if open_now[inv["id"]] != inv["open_amount"]
    ]
    _update(ctx, invoices_t, paid, count=False)


_IMPORTERS: dict[str, Callable[[_Context, list[_Row]], None]] = {
    "people": _import_people,
    "customers": _import_customers,
    "invoices": _import_invoices,
    "payments": _import_payments,
}

__all__ = [
    "KINDS",
    "ImportRejected",
    "ImportResult",
    "ImportWriteError",
    "RowError",
    "columns",
    "import_file",
    "read_rows",
]
