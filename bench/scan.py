"""Scan benchmark: the daily scan on a generated ledger of 1,000,000 open invoices, 100,000
customers and 1,000 reps, timed against a single hand-written SQL ``GROUP BY`` over the same
tables in the same run, on SQLite and on PostgreSQL; plus the scan process's peak memory.

Each measurement runs in a fresh process (``bench.scan_worker``), so peak RSS is the scan's
own. The scan measured is the full daily one (plan, promises, credit holds, outbox rows) on a
working day after a scan of the previous working day, in a process that ran that scan —
the steady state of a running service. The first scan on a fresh ledger (which puts every
long-overdue customer on credit hold at once) is reported too, with its own peak memory.

Targets: ratio <= 2 on both engines, peak RSS <= 300 MB.
Last line: ``scan_vs_sql_sqlite=… scan_vs_sql_postgres=… scan_peak_rss_mb=…``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from sqlalchemy import text

from bench.ledger import LedgerSize, build
from credit.calendar import BusinessCalendar
from credit.store.db import make_engine

PG_ADMIN_URL = os.environ.get(
    "CREDITBOT_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
AS_OF = date(2026, 11, 25)  # a Wednesday, a working day in CN


def _worker(url: str, mode: str, day: date) -> dict[str, float]:
    out = (
        subprocess.run(
            [sys.executable, "-m", "bench.scan_worker", url, mode, day.isoformat()],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    return {k: float(v) for k, v in (part.split("=") for part in out.split())}


def _pg_database() -> str | None:
    """A fresh PostgreSQL database for the benchmark, or None when no server answers."""
    try:
        admin = make_engine(
            PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS creditbot_bench WITH (FORCE)"))
            conn.execute(text("CREATE DATABASE creditbot_bench"))
        admin.dispose()
    except Exception as exc:  # no server here
        print(f"postgres: skipped ({exc.__class__.__name__}: {exc})", file=sys.stderr)
        return None
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/creditbot_bench"


def measure(url: str, size: LedgerSize, repeats: int) -> dict[str, float]:
    engine = make_engine(url)
    started = time.perf_counter()
    build(engine, AS_OF, size)
    engine.dispose()
    built = time.perf_counter() - started
    previous = BusinessCalendar("CN").previous_business_day(AS_OF)
    first = _worker(url, "first", previous)
    sql_times = [_worker(url, "sql", AS_OF)["seconds"] for _ in range(repeats)]
    scan = _worker(url, "scan", AS_OF)
    plan_times = [_worker(url, "plan", AS_OF)["seconds"] for _ in range(repeats)]
    sql = min(sql_times)
    return {
        "build_s": built,
        "sql_s": sql,
        "first_scan_s": first["seconds"],
        "scan_s": scan["seconds"],
        "plan_s": min(plan_times),
        "ratio": scan["seconds"] / sql,
        "plan_ratio": min(plan_times) / sql,
        "peak_rss_mb": scan["peak_rss_mb"],
        "first_peak_rss_mb": first["peak_rss_mb"],
        "queued": scan["rows"],
    }


def main(argv: list[str] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", default="sqlite,postgres")
    args = parser.parse_args(argv)
    size = LedgerSize(
        invoices=args.invoices,
        customers=max(10, args.invoices // 10),
        reps=max(10, args.invoices // 1000),
    )
    results: dict[str, dict[str, float]] = {}
    engines = args.engines.split(",")
    if "sqlite" in engines:
        with tempfile.TemporaryDirectory() as tmp:
            results["sqlite"] = measure(f"sqlite:///{Path(tmp) / 'bench.db'}", size, args.repeats)
        print(f"sqlite: {results['sqlite']}", file=sys.stderr, flush=True)
    pg = _pg_database() if "postgres" in engines else None
    if pg is not None:
        results["postgres"] = measure(pg, size, args.repeats)
        print(f"postgres: {results['postgres']}", file=sys.stderr, flush=True)
    print(
        f"scan benchmark: {size.invoices:,} open invoices, {size.customers:,} customers, "
        f"{size.reps:,} reps"
    )
    print(
        f"{'engine':<10}{'build s':>9}{'GROUP BY s':>12}{'plan s':>9}{'scan s':>9}"
        f"{'scan/sql':>10}{'peak MB':>9}{'first scan s':>14}{'first MB':>10}{'queued':>8}"
    )
    for engine, r in results.items():
        print(
            f"{engine:<10}{r['build_s']:>9.1f}{r['sql_s']:>12.2f}{r['plan_s']:>9.2f}"
            f"{r['scan_s']:>9.2f}{r['ratio']:>10.2f}{r['peak_rss_mb']:>9.0f}"
            f"{r['first_scan_s']:>14.2f}{r['first_peak_rss_mb']:>10.0f}{r['queued']:>8.0f}"
        )
    figures = {
        "scan_vs_sql_sqlite": (
            f"{results['sqlite']['ratio']:.2f}" if "sqlite" in results else "n/a"
        ),
        "scan_vs_sql_postgres": (
            f"{results['postgres']['ratio']:.2f}" if "postgres" in results else "n/a"
        ),
        "scan_peak_rss_mb": f"{max(r['peak_rss_mb'] for r in results.values()):.0f}",
    }
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    return figures


if __name__ == "__main__":
    main()
