"""The scan sends nothing twice: not when run twice, not when two processes run it at once.

(a) in one process, on both engines: a second ``run_scan`` for the same date queues nothing,
puts nobody on hold again and audits nothing twice;
(b) two real processes (``tests/support/scan_worker.py``) released at the same moment on the
same database — PostgreSQL (advisory lock) and a SQLite file (``BEGIN IMMEDIATE``) — queue
every message exactly once: the same keys, and as many, as one scan of an identical ledger.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select

from credit.calendar import BusinessCalendar
from credit.settings import Settings
from credit.store.db import make_engine, read_session, write_session
from credit.store.demo import build_demo_ledger
from credit.store.escalation import run_scan
from credit.store.migrate import upgrade
from credit.store.models import AuditLog, Customer, OutboxMessage, PromiseToPay, ScanRun

AS_OF = date(2026, 11, 25)  # a Wednesday
NEXT = date(2026, 11, 26)
WORKER = Path(__file__).parent / "support" / "scan_worker.py"
REPO = Path(__file__).resolve().parents[1]


def _now(day: date) -> datetime:
    return datetime.combine(day, time(8, 30), ZoneInfo("Asia/Shanghai")).astimezone(UTC)


def _demo(engine: Engine, settings: Settings) -> None:
    with write_session(engine) as s:
        build_demo_ledger(s, as_of=AS_OF, settings=settings)


def _state(engine: Engine) -> dict[str, object]:
    with read_session(engine) as s:
        keys = Counter(s.execute(select(OutboxMessage.idempotency_key)).scalars())
        audits = Counter(
            (a, e)
            for a, e in s.execute(
                select(AuditLog.action, AuditLog.entity_id).where(
                    AuditLog.action.in_(["credit_hold.on", "credit_hold.off", "promise.broken"])
                )
            )
        )
        holds = set(
            s.execute(select(Customer.code).where(Customer.credit_hold.is_(True))).scalars()
        )
        broken = s.execute(
            select(func.count()).select_from(PromiseToPay).where(PromiseToPay.status == "broken")
        ).scalar_one()
        runs = {
            r.business_date: r.messages
            for r in s.execute(select(ScanRun).order_by(ScanRun.business_date)).scalars()
        }
    return {"keys": keys, "audits": audits, "holds": holds, "broken": broken, "runs": runs}


def test_a_second_scan_of_the_same_day_queues_nothing(engine):
    settings = Settings()
    calendar = BusinessCalendar("CN")
    _demo(engine, settings)

    first = run_scan(engine, settings, calendar, AS_OF, _now(AS_OF))
    after_first = _state(engine)
    second = run_scan(engine, settings, calendar, AS_OF, _now(AS_OF))
    after_second = _state(engine)

    assert first.skipped is None and first.queued > 10
    assert first.holds_on and first.promises_broken > 0  # the demo book has work for both
    assert first.queued == len(after_first["keys"]) == after_first["runs"][AS_OF]
    assert (second.queued, second.holds_on, second.holds_off, second.promises_broken) == (
        0,
        [],
        [],
        0,
    )
    assert second.planned == first.planned - _hold_only(first, engine)
    assert after_second == after_first
    assert all(n == 1 for n in after_second["audits"].values())
    assert sum(a == "credit_hold.on" for a, _ in after_second["audits"]) == len(first.holds_on)

    # the next working day is a day of its own: new messages, nothing from AS_OF repeated
    nxt = run_scan(engine, settings, calendar, NEXT, _now(NEXT))
    assert nxt.queued > 0 and nxt.window_days == 1
    keys = _state(engine)["keys"]
    assert all(n == 1 for n in keys.values())
    assert sum(k.endswith(f":{NEXT.isoformat()}") for k in keys) == nxt.queued


def _hold_only(result, engine: Engine) -> int:  # type: ignore[no-untyped-def]
    """People whose AS_OF message held only credit-hold changes (not planned on a re-run)."""
    with read_session(engine) as s:
        payloads = s.execute(
            select(OutboxMessage.payload).where(OutboxMessage.business_date == result.business_date)
        ).scalars()
        return sum(
            1
            for p in payloads
            if not (p["sections"] or p["broken_promises"] or p["unacknowledged"])
        )


def _scan_in_two_processes(url: str, day: date) -> list[dict[str, object]]:
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), url, day.isoformat(), _now(day).isoformat()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            line = p.stdout.readline()  # type: ignore[union-attr]
            assert line.strip() == "ready", (line, p.stderr.read())  # type: ignore[union-attr]
        for p in procs:  # the start signal, to both at once
            p.stdin.write("go\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = []
    for p, (out, errors) in zip(procs, outs, strict=True):
        assert "database is locked" not in errors
        assert p.returncode == 0, errors
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_two_processes_scanning_at_once_queue_each_message_once(db_url, engine, db_kind):
    """``db_url``: the database the two workers share (migrated); ``engine``: an identical
    ledger scanned once, in this process, as the reference."""
    settings = Settings()
    calendar = BusinessCalendar("CN")
    _demo(engine, settings)
    reference = {day: run_scan(engine, settings, calendar, day, _now(day)) for day in (AS_OF, NEXT)}
    expected = _state(engine)

    shared = make_engine(db_url)
    try:
        upgrade(shared)
        _demo(shared, settings)
        results = {day: _scan_in_two_processes(db_url, day) for day in (AS_OF, NEXT)}
        got = _state(shared)
    finally:
        shared.dispose()

    for day, pair in results.items():
        ref = reference[day]
        assert ref.queued > 0
        # the scans are serialised: one worker queued everything, the other found it queued
        assert sorted(r["queued"] for r in pair) == [0, ref.queued], (db_kind, day, pair)
        assert sorted(len(r["holds_on"]) for r in pair) == sorted([0, len(ref.holds_on)])
        assert sorted(r["promises_broken"] for r in pair) == sorted([0, ref.promises_broken])
        assert all(r["skipped"] is None for r in pair)
        # they really ran at the same time: each started before the other had finished
        assert max(r["started"] for r in pair) < min(r["finished"] for r in pair), pair
    assert all(n == 1 for n in got["keys"].values())
    assert got["keys"] == expected["keys"]  # the same messages as one scan, each once
    assert got["audits"] == expected["audits"]
    assert all(n == 1 for n in got["audits"].values())
    assert got["holds"] == expected["holds"]
    assert got["broken"] == expected["broken"]
    assert got["runs"] == expected["runs"] == {d: reference[d].queued for d in (AS_OF, NEXT)}
