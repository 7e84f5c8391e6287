"""The ledger importer on SQLite and PostgreSQL: good files, upserts and every kind of bad row.

A rejected file must write nothing at all, so every bad-input test counts the rows of every
ledger table (and the audit log) before and after.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import func, text
from sqlmodel import select

from credit.settings import Settings
from credit.store import importing
from credit.store.db import read_session
from credit.store.importing import (
    KINDS,
    ImportRejected,
    ImportResult,
    ImportWriteError,
    RowError,
    import_file,
    read_rows,
)
from credit.store.models import AuditLog, Customer, Invoice, Payment, Person, Region

DATA = Path(__file__).parent / "data" / "import"
SETTINGS = Settings()


# --- helpers --------------------------------------------------------------------------------


def csv_file(tmp_path: Path, name: str, content: str, *, bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + content.encode("utf-8"))
    return path


def xlsx_file(tmp_path: Path, name: str, rows: list[list[object]]) -> Path:
    wb = Workbook()
    ws = wb.active
    for row in rows:
        ws.append(row)
    path = tmp_path / name
    wb.save(path)
    return path


def run(engine, kind: str, path: Path, **kw) -> ImportResult:
    return import_file(engine, kind, path, settings=SETTINGS, **kw)


def counts(engine) -> dict[str, int]:
    with read_session(engine) as s:
        return {
            m.__tablename__: s.exec(select(func.count()).select_from(m)).one()
            for m in (Region, Person, Customer, Invoice, Payment, AuditLog)
        }


def rejected(engine, kind: str, path: Path) -> list[RowError]:
    """Import a bad file: it must be refused and must write nothing."""
    before = counts(engine)
    with pytest.raises(ImportRejected) as info:
        run(engine, kind, path)
    assert counts(engine) == before, "a rejected file wrote something"
    assert info.value.errors, "rejected without a reason"
    return info.value.errors


def where(errors: list[RowError]) -> list[tuple[int, str]]:
    return [(e.line, e.column) for e in errors]


def load_fixture(engine) -> None:
    """The ledger in tests/data/import: two regions, four people, three customers."""
    assert run(engine, "people", DATA / "people.csv").created == 4
    assert run(engine, "customers", DATA / "customers.csv").created == 3


def invoice(engine, number: str) -> Invoice:
    with read_session(engine) as s:
        return s.exec(select(Invoice).where(Invoice.number == number)).one()


def person(engine, code: str) -> Person:
    with read_session(engine) as s:
        return s.exec(select(Person).where(Person.code == code)).one()


def customer(engine, code: str) -> Customer:
    with read_session(engine) as s:
        return s.exec(select(Customer).where(Customer.code == code)).one()


INVOICE_HEADER = "number,customer,issue_date,due_date,amount,open_amount,currency,disputed\n"


# --- good files -----------------------------------------------------------------------------


def test_a_whole_ledger_imports_with_chinese_names_and_a_bom(engine, tmp_path):
    people = (DATA / "people.csv").read_bytes()
    assert people.startswith(b"\xef\xbb\xbf")  # saved by Excel as "CSV UTF-8"

    r = run(engine, "people", DATA / "people.csv", actor="alice")
    assert (r.kind, r.rows, r.created, r.updated, r.unchanged) == ("people", 4, 4, 0, 0)
    r = run(engine, "customers", DATA / "customers.csv", actor="alice")
    assert (r.rows, r.created) == (3, 3)
    invoices = csv_file(
        tmp_path,
        "发票.csv",
        INVOICE_HEADER
        + "INV-1,C-HD,2026-01-05,2026-02-04,10000.00,,,\n"
        + "INV-2,C-HD,2026-01-20,2026-02-19,5000,4000,CNY,是\n"
        + "INV-3,C-USD,2026-02-01,2026-03-03,800.5,,USD,no\n",
        bom=True,
    )
    assert run(engine, "invoices", invoices).created == 3
    payments = csv_file(
        tmp_path,
        "payments.csv",
        "reference,customer,invoice,paid_on,amount\n"
        "PAY-1,C-HD,INV-1,2026-02-01,2500\n"
        "PAY-2,C-HD,INV-1,2026-02-10,500.00\n"
        "PAY-3,C-HD,,2026-02-11,99.99\n",
    )
    r = run(engine, "payments", payments)
    assert (r.rows, r.created, r.updated, r.unchanged) == (3, 3, 0, 0)

    east = person(engine, "M-EAST")
    rep = person(engine, "R-ZW")
    assert rep.name == "张伟"
    assert rep.manager_id == east.id  # the manager is on a later line of the file
    assert rep.locale == "zh_CN" and rep.time_zone == "Asia/Shanghai"
    assert person(engine, "R-LN").telegram_chat_id == -1001234567890
    with read_session(engine) as s:
        regions = {r.code: r.name for r in s.exec(select(Region))}
    assert regions == {"EAST": "EAST", "SOUTH": "SOUTH"}  # created, named by their code
    hd = customer(engine, "C-HD")
    assert hd.name == "上海宏达机械有限公司"
    assert hd.rep_id == rep.id
    assert (hd.rating, hd.credit_limit, hd.currency, hd.payment_terms_days) == (
        "B",
        Decimal("1200000.00"),
        "CNY",
        30,
    )
    usd = customer(engine, "C-USD")
    assert (usd.rating, usd.currency, usd.payment_terms_days) == ("D", "USD", 60)  # score 7 → D
    assert usd.credit_hold and usd.credit_hold_reason == "逾期" and usd.credit_hold_since
    assert customer(engine, "C-GZ").rating == "C"  # the default

    inv1 = invoice(engine, "INV-1")
    assert (inv1.amount, inv1.open_amount, inv1.currency) == (
        Decimal("10000.00"),
        Decimal("7000.00"),  # 10000 - 2500 - 500
        "CNY",
    )
    inv2 = invoice(engine, "INV-2")
    assert (inv2.open_amount, inv2.disputed) == (Decimal("4000.00"), True)
    assert invoice(engine, "INV-3").currency == "USD"  # defaulted from the customer
    with read_session(engine) as s:
        free = s.exec(select(Payment).where(Payment.reference == "PAY-3")).one()
        audit = s.exec(select(AuditLog).order_by(AuditLog.id)).all()
    assert free.invoice_id is None and free.amount == Decimal("99.99")
    assert [a.action for a in audit] == [f"import.{k}" for k in KINDS]
    assert (audit[0].actor, audit[0].entity) == ("alice", "people")
    assert audit[2].after == {"file": "发票.csv", "created": 3, "updated": 0, "unchanged": 0}


def test_xlsx_with_date_cells_numbers_and_chinese_text(engine, tmp_path):
    load_fixture(engine)
    path = xlsx_file(
        tmp_path,
        "invoices.xlsx",
        [
            ["Number", "Customer", "Issue Date", "Due Date", "Amount", "Open Amount", None],
            ["INV-X1", "C-HD", datetime(2026, 3, 5), date(2026, 4, 4), 1234.5, None, None],
            [10002, "C-HD", "2026/03/06", "2026-04-05", "2,000.00", 1500, None],
            [None, None, None, None, None, None, None],  # a blank row in the middle
            ["INV-X3", "C-GZ", datetime(2026, 3, 7), datetime(2026, 4, 6), 99, 0, None],
            [None, None, None, None, None, None, None],
        ],
    )
    header, rows = read_rows(path)
    assert header[:4] == ["number", "customer", "issue_date", "due_date"]
    lines = [(line, row["number"], row["issue_date"]) for line, row in rows]
    assert lines == [
        (2, "INV-X1", "2026-03-05"),
        (3, "10002", "2026/03/06"),
        (5, "INV-X3", "2026-03-07"),
    ]

    assert run(engine, "invoices", path).created == 3
    x1 = invoice(engine, "INV-X1")
    assert (x1.issue_date, x1.due_date, x1.amount, x1.open_amount) == (
        date(2026, 3, 5),
        date(2026, 4, 4),
        Decimal("1234.50"),
        Decimal("1234.50"),
    )
    assert invoice(engine, "10002").open_amount == Decimal("1500.00")
    assert invoice(engine, "INV-X3").open_amount == Decimal("0.00")

    people = xlsx_file(
        tmp_path,
        "people.xlsx",
        [
            ["code", "name", "role", "telegram_chat_id", "locale"],
            ["R-XL", "陈静", "rep", -1009876543210, "zh-cn"],
        ],
    )
    assert run(engine, "people", people).created == 1
    chen = person(engine, "R-XL")
    assert (chen.name, chen.telegram_chat_id, chen.locale) == ("陈静", -1009876543210, "zh_CN")


def test_xlsx_errors_name_the_spreadsheet_line(engine, tmp_path):
    load_fixture(engine)
    path = xlsx_file(
        tmp_path,
        "bad.xlsx",
        [
            ["number", "customer", "issue_date", "due_date", "amount"],
            ["A1", "C-HD", date(2026, 3, 5), date(2026, 4, 4), 10],
            [],
            ["A2", "C-HD", date(2026, 3, 5), "next week", 10],
        ],
    )
    assert where(rejected(engine, "invoices", path)) == [(4, "due_date")]


def test_thousands_separators_and_slash_dates(engine, tmp_path):
    load_fixture(engine)
    path = csv_file(
        tmp_path,
        "inv.csv",
        INVOICE_HEADER
        + 'INV-T1,C-HD,2026/03/05,2026/4/4,"1,234,567.89","1,000.5",CNY,\n'
        + "INV-T2,C-HD,2026-03-05,2026-03-05,12,,,\n",
    )
    assert run(engine, "invoices", path).created == 2
    t1 = invoice(engine, "INV-T1")
    assert (t1.issue_date, t1.due_date) == (date(2026, 3, 5), date(2026, 4, 4))
    assert (t1.amount, t1.open_amount) == (Decimal("1234567.89"), Decimal("1000.50"))


def test_semicolon_and_tab_delimited_files(engine, tmp_path):
    load_fixture(engine)
    semi = csv_file(
        tmp_path,
        "semi.csv",
        'number;customer;issue_date;due_date;amount\nS1;C-HD;2026-03-05;2026-04-04;"1,500.00"\n',
    )
    tab = csv_file(
        tmp_path,
        "tab.tsv",
        "number\tcustomer\tissue_date\tdue_date\tamount\nT1\tC-HD\t"
        "2026-03-05\t2026-04-04\t2,500.00\n",
    )
    assert run(engine, "invoices", semi).created == 1
    assert run(engine, "invoices", tab).created == 1
    assert invoice(engine, "S1").amount == Decimal("1500.00")
    assert invoice(engine, "T1").amount == Decimal("2500.00")


def test_header_names_ignore_case_and_spaces(engine, tmp_path):
    path = csv_file(tmp_path, "p.csv", " Code ,NAME, Role,Time Zone\nP1,王芳,REP,Europe/Berlin\n")
    assert run(engine, "people", path).created == 1
    assert (person(engine, "P1").role, person(engine, "P1").time_zone) == ("rep", "Europe/Berlin")


def test_header_only_file_and_trailing_blank_lines(engine, tmp_path):
    empty = csv_file(tmp_path, "empty.csv", "code,name,role\n")
    r = run(engine, "people", empty)
    assert (r.rows, r.created, r.updated, r.unchanged) == (0, 0, 0, 0)
    trailing = csv_file(tmp_path, "t.csv", "code,name,role\r\nP1,A,rep\r\n,,\r\n\r\n  ,\r\n")
    r = run(engine, "people", trailing)
    assert (r.rows, r.created) == (1, 1)
    with read_session(engine) as s:
        audit = s.exec(select(AuditLog).order_by(AuditLog.id)).all()
    assert [a.after for a in audit] == [
        {"file": "empty.csv", "created": 0, "updated": 0, "unchanged": 0},
        {"file": "t.csv", "created": 1, "updated": 0, "unchanged": 0},
    ]


# --- upserts --------------------------------------------------------------------------------


def test_second_import_updates_by_natural_key_and_counts(engine, tmp_path):
    load_fixture(engine)
    before = customer(engine, "C-HD")
    path = csv_file(
        tmp_path,
        "customers2.csv",
        "code,name,region,rep,rating,credit_limit\n"
        "C-HD,上海宏达机械有限公司,EAST,R-ZW,B,1200000\n"  # unchanged
        "C-GZ,广州新名字,SOUTH,R-LN,A,50000\n"  # updated: name, rating, limit
        "C-NEW,新客户,NORTH,R-LN,,\n",  # created, and a new region
    )
    r = run(engine, "customers", path)
    assert (r.rows, r.created, r.updated, r.unchanged) == (3, 1, 1, 1)
    gz = customer(engine, "C-GZ")
    assert (gz.name, gz.rating, gz.credit_limit) == ("广州新名字", "A", Decimal("50000.00"))
    new = customer(engine, "C-NEW")
    assert (new.rating, new.credit_limit, new.currency) == ("C", Decimal("0.00"), "CNY")
    # columns absent from the file are left alone
    assert customer(engine, "C-USD").payment_terms_days == 60
    assert customer(engine, "C-HD").model_dump() == before.model_dump()

    again = run(engine, "customers", path)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    with read_session(engine) as s:
        assert s.exec(select(func.count()).select_from(Customer)).one() == 4
        assert s.exec(select(Region.name).where(Region.code == "NORTH")).one() == "NORTH"


def test_people_upsert_and_unchanged_reimport(engine):
    first = run(engine, "people", DATA / "people.csv")
    second = run(engine, "people", DATA / "people.csv")
    assert (first.created, first.updated, first.unchanged) == (4, 0, 0)
    assert (second.created, second.updated, second.unchanged) == (0, 0, 4)


def test_reimporting_invoices_keeps_what_was_paid(engine, tmp_path):
    load_fixture(engine)
    inv = csv_file(
        tmp_path,
        "inv.csv",
        "number,customer,issue_date,due_date,amount\nI1,C-HD,2026-01-01,2026-01-31,1000\n",
    )
    run(engine, "invoices", inv)
    pay = csv_file(
        tmp_path,
        "pay.csv",
        "reference,customer,invoice,paid_on,amount\nP1,C-HD,I1,2026-02-01,300\n",
    )
    run(engine, "payments", pay)
    assert run(engine, "invoices", inv).unchanged == 1
    assert invoice(engine, "I1").open_amount == Decimal("700.00")
    raised = csv_file(
        tmp_path,
        "inv2.csv",
        "number,customer,issue_date,due_date,amount\nI1,C-HD,2026-01-01,2026-02-28,1200\n",
    )
    assert run(engine, "invoices", raised).updated == 1
    i1 = invoice(engine, "I1")
    assert (i1.amount, i1.open_amount, i1.due_date) == (
        Decimal("1200.00"),
        Decimal("900.00"),
        date(2026, 2, 28),
    )


def test_payment_reimport_is_idempotent(engine, tmp_path):
    load_fixture(engine)
    run(
        engine,
        "invoices",
        csv_file(
            tmp_path,
            "inv.csv",
            "number,customer,issue_date,due_date,amount\nI1,C-HD,2026-01-01,2026-01-31,1000\n",
        ),
    )
    pay = csv_file(
        tmp_path,
        "pay.csv",
        "reference,customer,invoice,paid_on,amount,currency\n"
        "P1,C-HD,I1,2026-02-01,600,CNY\n"
        "P2,C-HD,,2026-02-02,50,\n",
    )
    first = run(engine, "payments", pay)
    second = run(engine, "payments", pay)
    assert (first.created, first.unchanged) == (2, 0)
    assert (second.created, second.updated, second.unchanged) == (0, 0, 2)
    assert invoice(engine, "I1").open_amount == Decimal("400.00")  # applied once, not twice
    assert counts(engine)["payment"] == 2
    # one more, new payment in a file with the old ones: only it is applied
    more = csv_file(
        tmp_path,
        "pay2.csv",
        "reference,customer,invoice,paid_on,amount\n"
        "P1,C-HD,I1,2026-02-01,600\n"
        "P3,C-HD,I1,2026-02-03,400\n",
    )
    r = run(engine, "payments", more)
    assert (r.created, r.unchanged) == (1, 1)
    assert invoice(engine, "I1").open_amount == Decimal("0.00")


def test_manager_forward_reference_and_existing_manager(engine, tmp_path):
    path = csv_file(
        tmp_path,
        "p.csv",
        "code,name,role,manager\n"
        "R1,Rep One,rep,M1\n"  # M1 comes two lines later
        "R2,Rep Two,rep,\n"
        "M1,Manager,regional_manager,CM\n"
        "CM,Credit Manager,credit_manager,\n",
    )
    assert run(engine, "people", path).created == 4
    ids = {c: person(engine, c).id for c in ("R1", "R2", "M1", "CM")}
    assert person(engine, "R1").manager_id == ids["M1"]
    assert person(engine, "M1").manager_id == ids["CM"]
    assert person(engine, "R2").manager_id is None
    # a later file refers to a manager already in the database, and to one it creates
    later = csv_file(
        tmp_path,
        "p2.csv",
        "code,name,role,manager\nR3,Rep Three,rep,M1\nR2,Rep Two,rep,M2\nM2,New Mgr,rep,\n",
    )
    r = run(engine, "people", later)
    assert (r.created, r.updated, r.unchanged) == (2, 1, 0)
    assert person(engine, "R3").manager_id == ids["M1"]
    assert person(engine, "R2").manager_id == person(engine, "M2").id


def test_progress_is_reported_up_to_the_total(engine, tmp_path):
    load_fixture(engine)
    lines = [f"N{i},C-HD,2026-01-01,2026-02-01,{i + 1}" for i in range(300)]
    path = csv_file(
        tmp_path, "i.csv", "number,customer,issue_date,due_date,amount\n" + "\n".join(lines) + "\n"
    )
    seen: list[tuple[int, int]] = []
    run(engine, "invoices", path, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (600, 600)  # each row checked, then written
    assert all(total == 600 for _, total in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert 10 < len(seen) <= 400  # reported as it goes, but not for every single step


def test_large_file_in_many_batches(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(importing, "WRITE_CHUNK", 7)
    monkeypatch.setattr(importing, "LOOKUP_CHUNK", 1)
    load_fixture(engine)
    lines = [f"B{i:04d},C-HD,2026-01-01,2026-02-01,{i + 1}.25" for i in range(250)]
    path = csv_file(
        tmp_path,
        "big.csv",
        "number,customer,issue_date,due_date,amount\n" + "\n".join(lines) + "\n",
    )
    assert run(engine, "invoices", path).created == 250
    changed = [line.replace(".25", ".50") if i % 5 == 0 else line for i, line in enumerate(lines)]
    path.write_text("number,customer,issue_date,due_date,amount\n" + "\n".join(changed) + "\n")
    r = run(engine, "invoices", path)
    assert (r.created, r.updated, r.unchanged) == (0, 50, 200)
    with read_session(engine) as s:
        total = s.exec(select(func.sum(Invoice.amount))).one()
    assert (
        total
        == sum(Decimal(i + 1) for i in range(250)) + Decimal("0.25") * 200 + Decimal("0.50") * 50
    )


# --- bad files: every error found, nothing written -------------------------------------------

PEOPLE = "code,name,role,region,manager,time_zone,locale\n"
CUSTOMERS = "code,name,region,rep,rating,credit_limit,currency,blacklisted\n"
PAYMENTS = "reference,customer,invoice,paid_on,amount,currency\n"
GOOD_INVOICE = "G1,C-HD,2026-01-01,2026-01-31,1000,,,\n"

BAD = {
    "bad amount": (
        "invoices",
        INVOICE_HEADER + GOOD_INVOICE + "B1,C-HD,2026-01-01,2026-01-31,12x.00,,,\n",
        [(3, "amount")],
    ),
    "amount with three decimals": (
        "invoices",
        INVOICE_HEADER + "B1,C-HD,2026-01-01,2026-01-31,1.005,,,\n",
        [(2, "amount")],
    ),
    "zero amount": (
        "invoices",
        INVOICE_HEADER + "B1,C-HD,2026-01-01,2026-01-31,0,,,\n",
        [(2, "amount")],
    ),
    "bad date": (
        "invoices",
        INVOICE_HEADER
        + GOOD_INVOICE
        + GOOD_INVOICE.replace("G1", "G2")
        + "B1,C-HD,2026-02-30,2026-03-31,10,,,\n",
        [(4, "issue_date")],
    ),
    "due before issue": (
        "invoices",
        INVOICE_HEADER + "B1,C-HD,2026-03-01,2026-02-28,10,,,\n",
        [(2, "due_date")],
    ),
    "open more than amount": (
        "invoices",
        INVOICE_HEADER + "B1,C-HD,2026-01-01,2026-01-31,10,11,,\n",
        [(2, "open_amount")],
    ),
    "unknown customer": (
        "invoices",
        INVOICE_HEADER + GOOD_INVOICE + "B1,C-NOPE,2026-01-01,2026-01-31,10,,,\n",
        [(3, "customer")],
    ),
    "bad currency": (
        "invoices",
        INVOICE_HEADER + "B1,C-HD,2026-01-01,2026-01-31,10,,US$,\n",
        [(2, "currency")],
    ),
    "currency not the customer's": (
        "invoices",
        INVOICE_HEADER + GOOD_INVOICE + "B1,C-HD,2026-01-01,2026-01-31,10,,USD,\n",
        [(3, "currency")],
    ),
    "bad bool in invoices": (
        "invoices",
        INVOICE_HEADER + "B1,C-HD,2026-01-01,2026-01-31,10,,,maybe\n",
        [(2, "disputed")],
    ),
    "duplicate invoice number": (
        "invoices",
        INVOICE_HEADER + GOOD_INVOICE + "X,C-HD,2026-01-01,2026-01-31,10,,,\n" + GOOD_INVOICE,
        [(4, "number")],
    ),
    "required cell empty": (
        "invoices",
        INVOICE_HEADER + ",C-HD,2026-01-01,2026-01-31,10,,,\n",
        [(2, "number")],
    ),
    "missing required column": (
        "invoices",
        "number,customer,issue_date,amount\nB1,C-HD,2026-01-01,10\n",
        [(1, "due_date")],
    ),
    "unknown column": (
        "invoices",
        "number,customer,issue_date,due_date,amount,colour\nB1,C-HD,2026-01-01,2026-01-31,10,red\n",
        [(1, "colour")],
    ),
    "column twice": (
        "people",
        "code,name,role,name\nP1,a,rep,b\n",
        [(1, "name")],
    ),
    "value without a header": (
        "people",
        "code,name,role\nP1,a,rep\nP2,b,rep,stray\n",
        [(3, "(column D)")],
    ),
    "unknown rep": (
        "customers",
        CUSTOMERS + "C1,甲,EAST,R-NOBODY,,,,\n",
        [(2, "rep")],
    ),
    "rep who is not a rep": (
        "customers",
        CUSTOMERS + "C1,甲,EAST,M-EAST,,,,\n",
        [(2, "rep")],
    ),
    "bad rating": (
        "customers",
        CUSTOMERS + "C1,甲,EAST,R-ZW,B,,,\nC2,乙,EAST,R-ZW,Z,,,\n",
        [(3, "rating")],
    ),
    "rating score out of range": (
        "customers",
        CUSTOMERS + "C1,甲,EAST,R-ZW,11,,,\n",
        [(2, "rating")],
    ),
    "bad bool": (
        "customers",
        CUSTOMERS + "C1,甲,EAST,R-ZW,,,,maybe\n",
        [(2, "blacklisted")],
    ),
    "negative credit limit": (
        "customers",
        CUSTOMERS + "C1,甲,EAST,R-ZW,,-5,,\n",
        [(2, "credit_limit")],
    ),
    "customer currency not ISO-like": (
        "customers",
        CUSTOMERS + "C1,甲,EAST,R-ZW,,,RMB1,\n",
        [(2, "currency")],
    ),
    "duplicate customer code": (
        "customers",
        CUSTOMERS + "C1,甲,EAST,R-ZW,,,,\nC1,乙,EAST,R-ZW,,,,\n",
        [(3, "code")],
    ),
    "currency change under existing invoices": (
        "customers",
        CUSTOMERS + "C-HD,上海宏达机械有限公司,EAST,R-ZW,B,,USD,\n",
        [(2, "currency")],
    ),
    "bad role": (
        "people",
        PEOPLE + "P1,a,rep,,,,\nP2,b,boss,,,,\n",
        [(3, "role")],
    ),
    "bad time zone": (
        "people",
        PEOPLE + "P1,a,rep,,,Mars/Olympus,\n",
        [(2, "time_zone")],
    ),
    "bad locale": (
        "people",
        PEOPLE + "P1,a,rep,,,,fr\n",
        [(2, "locale")],
    ),
    "unknown manager": (
        "people",
        PEOPLE + "P1,a,rep,,NOBODY,,\n",
        [(2, "manager")],
    ),
    "own manager": (
        "people",
        PEOPLE + "P1,a,rep,,P1,,\n",
        [(2, "manager")],
    ),
    "managers in a loop": (
        "people",
        PEOPLE + "P1,a,rep,,P2,,\nP2,b,regional_manager,,P1,,\n",
        [(2, "manager"), (3, "manager")],
    ),
    "rep with customers changes role": (
        "people",
        "code,name,role\nR-ZW,张伟,finance\n",
        [(2, "role")],
    ),
    "bad telegram chat id": (
        "people",
        "code,name,role,telegram_chat_id\nP1,a,rep,@someone\n",
        [(2, "telegram_chat_id")],
    ),
    "telegram chat id taken by another person": (
        "people",
        "code,name,role,telegram_chat_id\nP1,a,rep,-1001234567890\n",
        [(2, "telegram_chat_id")],
    ),
    "over-payment": (
        "payments",
        PAYMENTS + "P1,C-HD,INV-A,2026-02-01,600,\nP2,C-HD,INV-A,2026-02-02,401,\n",
        [(3, "amount")],
    ),
    "payment for another customer's invoice": (
        "payments",
        PAYMENTS + "P1,C-GZ,INV-A,2026-02-01,10,\n",
        [(2, "invoice")],
    ),
    "payment for an unknown invoice": (
        "payments",
        PAYMENTS + "P1,C-HD,INV-NONE,2026-02-01,10,\n",
        [(2, "invoice")],
    ),
    "payment in the wrong currency": (
        "payments",
        PAYMENTS + "P1,C-HD,,2026-02-01,10,USD\n",
        [(2, "currency")],
    ),
    "payment reference recorded with other values": (
        "payments",
        PAYMENTS + "PAY-OLD,C-HD,INV-A,2026-01-15,101,\n",
        [(2, "amount")],
    ),
    "payment reference recorded against another invoice": (
        "payments",
        PAYMENTS + "PAY-OLD,C-HD,,2026-01-15,100,\n",
        [(2, "invoice")],
    ),
    "invoice number of another customer": (
        "invoices",
        INVOICE_HEADER + "INV-A,C-GZ,2026-01-01,2026-01-31,1100,,,\n",
        [(2, "customer")],
    ),
    "duplicate payment reference": (
        "payments",
        PAYMENTS + "P1,C-HD,,2026-02-01,10,\nP1,C-HD,,2026-02-01,10,\n",
        [(3, "reference")],
    ),
    "negative payment": (
        "payments",
        PAYMENTS + "P1,C-HD,,2026-02-01,-10,\n",
        [(2, "amount")],
    ),
}


@pytest.fixture
def ledger(engine, tmp_path):
    """The fixture ledger plus invoice INV-A (1000, C-HD) and payment PAY-OLD (100 on it)."""
    load_fixture(engine)
    run(
        engine,
        "invoices",
        csv_file(tmp_path, "a.csv", INVOICE_HEADER + "INV-A,C-HD,2026-01-01,2026-01-31,1100,,,\n"),
    )
    run(
        engine,
        "payments",
        csv_file(tmp_path, "old.csv", PAYMENTS + "PAY-OLD,C-HD,INV-A,2026-01-15,100,\n"),
    )
    assert invoice(engine, "INV-A").open_amount == Decimal("1000.00")
    return engine


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_row_rejects_the_whole_file(ledger, tmp_path, case):
    kind, content, expected = BAD[case]
    errors = rejected(ledger, kind, csv_file(tmp_path, "bad.csv", content))
    assert where(errors) == expected, [str(e) for e in errors]
    assert all(e.reason for e in errors)


def test_messages_say_what_is_wrong(ledger, tmp_path):
    cases = {
        "payments": (
            PAYMENTS + "PAY-OLD,C-HD,,2026-01-15,100,\nP9,C-HD,INV-A,2026-02-01,2000,\n",
            [
                "line 2, column invoice: payment PAY-OLD is already recorded with invoice INV-A; "
                "a recorded payment cannot be changed",
                "line 3, column amount: 2000.00 is more than the open amount 1000.00 of "
                "invoice INV-A",
            ],
        ),
        "invoices": (
            INVOICE_HEADER + "INV-A,C-GZ,2026-01-01,2026-01-31,1100,,,\n",
            ["line 2, column customer: invoice INV-A belongs to customer C-HD"],
        ),
        "customers": (
            CUSTOMERS + "C1,甲,EAST,M-EAST,,,,\n",
            ["line 2, column rep: M-EAST is a regional_manager, not a rep"],
        ),
    }
    for kind, (content, expected) in cases.items():
        errors = rejected(ledger, kind, csv_file(tmp_path, f"{kind}.csv", content))
        assert [str(e) for e in errors] == expected


def test_99_good_rows_and_1_bad_row_write_nothing(engine, tmp_path):
    load_fixture(engine)
    lines = [f'N{i:03d},C-HD,2026-01-01,2026-02-01,"{1000 + i:,}.00"' for i in range(100)]
    lines[57] = "N057,C-HD,2026-01-01,2026-02-01,lots"
    path = csv_file(
        tmp_path, "i.csv", "number,customer,issue_date,due_date,amount\n" + "\n".join(lines) + "\n"
    )
    errors = rejected(engine, "invoices", path)
    assert where(errors) == [(59, "amount")]  # data row 58 is line 59
    assert counts(engine)["invoice"] == 0


def test_every_error_is_reported_in_line_order_with_its_message(engine, tmp_path):
    load_fixture(engine)
    path = csv_file(
        tmp_path,
        "i.csv",
        INVOICE_HEADER
        + "OK1,C-HD,2026-01-01,2026-01-31,10,,,\n"
        + "E1,C-NOPE,2026-01-01,2026-01-31,10,,,\n"  # line 3: unknown customer
        + "\n"
        + "E2,C-HD,2026-01-01,2026-01-31,1O,,,\n"  # line 5: letter O in the amount
        + "OK2,C-HD,2026-01-01,2026-01-31,10,,,\n"
        + "E3,C-HD,2026-01-01,31.01.2026,10,,,\n"  # line 7: not a date
        + "E4,C-NOPE,2026-01-01,2026-01-31,-1,,,\n",  # line 8: two errors
    )
    with pytest.raises(ImportRejected) as info:
        run(engine, "invoices", path)
    exc = info.value
    assert where(exc.errors) == [
        (3, "customer"),
        (5, "amount"),
        (7, "due_date"),
        (8, "customer"),  # in the order of the columns
        (8, "amount"),
    ]
    assert exc.file == str(path)
    lines = str(exc).splitlines()
    assert lines[0] == f"{path}: 5 errors, nothing was imported"
    assert lines[1] == "line 3, column customer: unknown customer 'C-NOPE'"
    assert lines[3].startswith("line 7, column due_date: not a date: '31.01.2026'")
    assert len(lines) == 6


def test_a_file_that_is_not_utf8_is_rejected_with_its_line(engine, tmp_path):
    path = tmp_path / "gbk.csv"
    path.write_bytes("code,name,role\nP1,ok,rep\nP2,张伟,rep\n".encode("gbk"))
    assert where(rejected(engine, "people", path)) == [(3, "")]


def test_unsupported_file_type_is_rejected(engine, tmp_path):
    path = tmp_path / "people.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0")
    errors = rejected(engine, "people", path)
    assert "unsupported file type .xls" in errors[0].reason


def test_unknown_kind_is_a_programming_error(engine, tmp_path):
    with pytest.raises(ValueError, match="unknown import kind"):
        run(engine, "widgets", csv_file(tmp_path, "w.csv", "a\n"))


def test_a_database_error_while_writing_rolls_everything_back(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(importing, "WRITE_CHUNK", 2)  # so earlier batches are already written
    load_fixture(engine)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER boom BEFORE INSERT ON invoice WHEN NEW.number = 'BOOM' "
                    "BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.number = 'BOOM' THEN RAISE EXCEPTION 'boom refused'; END IF; "
                    "RETURN NEW; END; $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER boom BEFORE INSERT ON invoice FOR EACH ROW EXECUTE "
                    "FUNCTION boom()"
                )
            )
    rows = [f"W{i},C-HD,2026-01-01,2026-02-01,10" for i in range(6)] + [
        "BOOM,C-HD,2026-01-01,2026-02-01,10"
    ]
    path = csv_file(
        tmp_path, "w.csv", "number,customer,issue_date,due_date,amount\n" + "\n".join(rows) + "\n"
    )
    before = counts(engine)
    with pytest.raises(ImportWriteError, match="boom refused") as info:
        run(engine, "invoices", path)
    assert "nothing was written" in str(info.value)
    assert counts(engine) == before


def test_every_kind_has_its_columns_documented():
    for kind in KINDS:
        cols = importing.columns(kind)
        assert cols[importing._KEY[kind]] is True
    assert "manager" in importing.columns("people")


def test_a_broken_xlsx_is_rejected_and_a_missing_file_is_not_found(engine, tmp_path):
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"this is not a zip file")
    errors = rejected(engine, "people", broken)
    assert where(errors) == [(1, "")] and "cannot read the file as XLSX" in errors[0].reason
    for name in ("missing.xlsx", "missing.csv"):
        with pytest.raises(FileNotFoundError):
            run(engine, "people", tmp_path / name)
