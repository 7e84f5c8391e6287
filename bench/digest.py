"""Digest benchmark: the daily digests of 100 regional managers over the generated ledger of
1,000,000 open invoices (``bench.ledger``: 100,000 customers, 1,000 reps, 10 regions, here with
10 managers a region, in English and Simplified Chinese), on SQLite and on PostgreSQL.

Measured in a fresh process (``bench.digest_worker``), so time and peak RSS are the digest's
own: ``build_digests`` (every person's payload: the managers', the company-wide desks', and a
"your day" for each rep with something on it), then, for each of the 100 managers, the
message composed and rendered (console text, Slack Block Kit, Telegram HTML) and the aging
chart drawn as PNG. Before that, the ledger gets a history like a running service's: the
previous business day's aging snapshot (from its own digest plan) and, for the trend, the
business days of the 30 before it (copies of it, scaled a little) — so the changes and the
30-day trend panel are real work.

Targets: <= 30 s and <= 400 MB. Last line:
``digest_100_managers_s=… digest_peak_rss_mb=…`` (the slower engine, the larger peak).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path

from bench.ledger import LedgerSize, build
from bench.scan import _pg_database
from credit.calendar import BusinessCalendar
from credit.settings import Settings
from credit.store.db import make_engine, read_session, write_session
from credit.store.digest import plan_digests, write_snapshot

AS_OF = date(2026, 11, 25)  # a Wednesday, a working day in CN
TREND_DAYS = 30


def _worker(url: str, day: date) -> dict[str, float]:
    out = (
        subprocess.run(
            [sys.executable, "-m", "bench.digest_worker", url, day.isoformat()],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    return {k: float(v) for k, v in (part.split("=") for part in out.split())}


def history(url: str, as_of: date) -> int:
    """The previous business day's snapshot (from its digest plan), and scaled copies of it
    for the business days of the trend window before that. Returns the snapshot dates."""
    engine = make_engine(url)
    settings = Settings()
    calendar = BusinessCalendar(settings.calendar.holiday_country)
    previous = calendar.previous_business_day(as_of)
    at = datetime.combine(previous, dtime(1, 0), UTC)
    with read_session(engine) as s:
        plan = plan_digests(s, settings, previous, at, calendar=calendar)
    days = [previous]
    day = previous
    while True:
        day = calendar.previous_business_day(day)
        if day <= as_of - timedelta(days=TREND_DAYS):
            break
        days.append(day)
    with write_session(engine) as s:
        for n, day in enumerate(days):
            factor = Decimal(100 - n + (n * 7) % 5) / 100  # the overdue drifts up towards today
            scaled = {
                region: {
                    key: {
                        cur: ((amount * factor).quantize(Decimal("0.01")), count)
                        for cur, (amount, count) in by_cur.items()
                    }
                    for key, by_cur in by_bucket.items()
                }
                for region, by_bucket in plan.snapshot.items()
            }
            write_snapshot(s, day, scaled, datetime.combine(day, dtime(1, 0), UTC))
    engine.dispose()
    return len(days)


def measure(url: str, size: LedgerSize) -> dict[str, float]:
    engine = make_engine(url)
    started = time.perf_counter()
    build(engine, AS_OF, size)
    engine.dispose()
    built = time.perf_counter() - started
    started = time.perf_counter()
    snapshots = history(url, AS_OF)
    history_s = time.perf_counter() - started
    result = _worker(url, AS_OF)
    return {"build_s": built, "history_s": history_s, "snapshots": snapshots, **result}


def main(argv: list[str] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=1_000_000)
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--managers", type=int, default=100, help="regional managers in all")
    args, _ = parser.parse_known_args(argv)  # `python -m bench` passes the scan's flags too
    regions = 10
    size = LedgerSize(
        invoices=args.invoices,
        customers=max(10, args.invoices // 10),
        reps=max(10, args.invoices // 1000),
        regions=regions,
        managers_per_region=max(1, args.managers // regions),
    )
    results: dict[str, dict[str, float]] = {}
    engines = args.engines.split(",")
    if "sqlite" in engines:
        with tempfile.TemporaryDirectory() as tmp:
            results["sqlite"] = measure(f"sqlite:///{Path(tmp) / 'bench.db'}", size)
        print(f"sqlite: {results['sqlite']}", file=sys.stderr, flush=True)
    pg = _pg_database() if "postgres" in engines else None
    if pg is not None:
        results["postgres"] = measure(pg, size)
        print(f"postgres: {results['postgres']}", file=sys.stderr, flush=True)
    managers = size.regions * size.managers_per_region
    print(
        f"digest benchmark: {size.invoices:,} open invoices, {size.customers:,} customers, "
        f"{size.reps:,} reps, {managers} regional managers in {size.regions} regions"
    )
    print(
        f"{'engine':<10}{'build s':>9}{'digests':>9}{'payloads s':>12}{'text s':>8}"
        f"{'charts s':>10}{'drawn':>7}{'each s':>8}{'PNG kB':>8}{'total s':>9}{'peak MB':>9}"
    )
    for engine, r in results.items():
        print(
            f"{engine:<10}{r['build_s']:>9.1f}{r['digests']:>9.0f}{r['payloads_s']:>12.2f}"
            f"{r['text_s']:>8.2f}{r['chart_s']:>10.2f}{r['charts_drawn']:>7.0f}"
            f"{r['chart_each_s']:>8.2f}{r['png_kb']:>8.0f}{r['seconds']:>9.2f}"
            f"{r['peak_rss_mb']:>9.0f}"
        )
    if not results:
        figures = {"digest_100_managers_s": "n/a", "digest_peak_rss_mb": "n/a"}
    else:
        figures = {
            "digest_100_managers_s": f"{max(r['seconds'] for r in results.values()):.2f}",
            "digest_peak_rss_mb": f"{max(r['peak_rss_mb'] for r in results.values()):.0f}",
        }
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    return figures


if __name__ == "__main__":
    main()
