"""One measurement in a fresh process: ``python -m bench.scan_worker URL MODE DATE``.

MODE ``sql`` runs the hand-written GROUP BY; ``plan`` the scan's planning query (what
``creditbot scan --dry-run`` computes); ``first`` the full scan (plan, promises, credit
holds, outbox rows) of DATE in a fresh process; ``scan`` the same in a process that has
already scanned the previous working day — a running service, whose SQL is compiled and
whose holiday tables are loaded — after a day's payments (every 61st invoice paid).
Prints ``seconds=… peak_rss_mb=… rows=…``.
"""

from __future__ import annotations

import resource
import sys
import time
from datetime import UTC, date, datetime
from datetime import time as dtime

from sqlalchemy import text

from bench.ledger import baseline_sql_for
from credit.calendar import BusinessCalendar
from credit.settings import Settings
from credit.store.db import make_engine, read_session
from credit.store.escalation import plan_scan, run_scan


def main(url: str, mode: str, day: str) -> None:
    as_of = date.fromisoformat(day)
    engine = make_engine(url)
    settings = Settings()
    calendar = BusinessCalendar("CN")
    started = time.perf_counter()
    if mode == "sql":
        with engine.connect() as conn:
            rows = len(conn.execute(text(baseline_sql_for(engine.dialect.name, as_of))).all())
    elif mode == "plan":
        with read_session(engine) as s:
            rows = len(plan_scan(s, settings, as_of, 1).reminders)
    elif mode in ("first", "scan"):
        if mode == "scan":  # yesterday's scan again (queues nothing): the service is warm
            previous = calendar.previous_business_day(as_of)
            run_scan(
                engine,
                settings,
                calendar,
                previous,
                datetime.combine(previous, dtime(0, 30), UTC),
                force=True,
            )
            # a day's payments: every 61st invoice paid in full (1M open invoices turn over in
            # about 60 days), so the credit-hold lift has customers to look at
            with engine.begin() as conn:
                conn.execute(
                    text("UPDATE invoice SET open_amount = 0 WHERE id % 61 = 0 AND open_amount > 0")
                )
            started = time.perf_counter()
        now = datetime.combine(as_of, dtime(0, 30), UTC)
        rows = run_scan(engine, settings, calendar, as_of, now, force=True).queued
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"seconds={seconds:.4f} peak_rss_mb={peak_mb:.1f} rows={rows}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
