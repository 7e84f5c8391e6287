"""One digest measurement in a fresh process: ``python -m bench.digest_worker URL DATE``.

Builds every digest of DATE (``credit.store.digest.build_digests``: the ledger's aggregates in
SQL, one payload per person) and renders each regional manager's — the message composed in
their language and rendered for the console, Slack (Block Kit) and Telegram (HTML), and the
aging chart as PNG (``bot.charts.aging_chart``) — as the daily digest run and the dispatcher
would. Nothing is written. The clock starts after the imports.

Prints ``seconds=… payloads_s=… text_s=… chart_s=… peak_rss_mb=… managers=… digests=…
charts_drawn=… chart_each_s=… png_kb=…``.
"""

from __future__ import annotations

import resource
import sys
import time
from datetime import UTC, date, datetime
from datetime import time as dtime

from bot import charts
from bot.compose import compose
from bot.slack_render import render_blocks
from bot.telegram_render import render_parts
from bot.transports.console import render_text
from credit.calendar import BusinessCalendar
from credit.settings import Settings
from credit.store.db import make_engine, read_session
from credit.store.digest import build_digests


def main(url: str, day: str) -> None:
    as_of = date.fromisoformat(day)
    engine = make_engine(url)
    settings = Settings()
    calendar = BusinessCalendar("CN")
    now = datetime.combine(as_of, dtime(1, 0), UTC)  # 09:00 in Shanghai: the digest's hour
    started = time.perf_counter()
    with read_session(engine) as session:
        digests = build_digests(session, settings, as_of, now, calendar=calendar)
    built = time.perf_counter()
    managers = [d for d in digests if d.payload["recipient"]["role"] == "regional_manager"]
    text_s = chart_s = 0.0
    png_bytes = 0
    for d in managers:
        t0 = time.perf_counter()
        message = compose(d.payload)
        render_text(message)
        render_blocks(message)
        render_parts(message, lambda button: "t")
        t1 = time.perf_counter()
        png = charts.aging_chart(d.payload)
        chart_s += time.perf_counter() - t1
        text_s += t1 - t0
        png_bytes += len(png)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    drawn = charts.stats["drawn"]
    print(
        f"seconds={seconds:.4f} payloads_s={built - started:.4f} text_s={text_s:.4f} "
        f"chart_s={chart_s:.4f} peak_rss_mb={peak_mb:.1f} managers={len(managers)} "
        f"digests={len(digests)} charts_drawn={drawn} "
        f"chart_each_s={chart_s / max(1, drawn):.4f} "
        f"png_kb={png_bytes / max(1, len(managers)) / 1024:.1f}"
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
