"""Run one receivables scan in a process of its own (see ``tests/test_scan_idempotency.py``).

Usage: ``python tests/support/scan_worker.py DB_URL YYYY-MM-DD NOW_ISO``

Connects to the database, prints ``ready``, waits for one line on stdin (the start signal, so
that several workers scan at the same moment), runs ``run_scan`` for the date with the default
settings and the CN calendar, and prints the result as one JSON line, with the wall-clock
start and end of the scan. Any exception leaves a traceback on stderr and exit code 1.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from datetime import date, datetime

from sqlalchemy import text

from credit.calendar import BusinessCalendar
from credit.settings import Settings
from credit.store.db import make_engine
from credit.store.escalation import run_scan


def main(url: str, as_of: str, now: str) -> int:
    settings = Settings()
    engine = make_engine(url, busy_timeout_ms=settings.database.busy_timeout_ms)
    with engine.connect() as conn:  # connect (and import everything) before the signal
        conn.execute(text("SELECT 1"))
    calendar = BusinessCalendar(settings.calendar.holiday_country)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.time()
    result = run_scan(
        engine, settings, calendar, date.fromisoformat(as_of), datetime.fromisoformat(now)
    )
    finished = time.time()
    engine.dispose()
    report = {**asdict(result), "started": started, "finished": finished}
    print(json.dumps(report, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
