"""Approval click-to-ack benchmark: 200 Approve clicks on Slack at once, each on another
pending shipment request; how long Slack waits for each HTTP answer (the ack).

The real HTTP app (``bot.http.create_app`` around ``bot.slack_app.build_slack_app``, as
``creditbot serve`` builds it) runs under uvicorn on 127.0.0.1 in a process of its own (as in
production: Slack is a remote client), on a real database (PostgreSQL, and a SQLite file),
with its Slack client pointed at the fake Slack Web API and its Telegram bot at the fake
Telegram Bot API (tests/fakes, in this process). Set-up: the ledger of tests/support/
approvals.py (Mia approves for North on Slack, Max on Telegram), 200 shipment requests raised
for Acme Pumps & Co, their cards dispatched by the real dispatcher to both fakes (fast limits:
set-up only). Then 200 signed ``block_actions`` requests (Mia presses Approve on each card,
as Slack sends them) are fired at once with ``httpx.AsyncClient``; each POST's round trip to
its HTTP answer is the ack latency. The listeners' work (the decision, every copy of the card
edited on Slack and Telegram) runs after the ack, in the server; the benchmark waits for it
(a bounded poll of the database) and checks that every request was decided exactly once.

Target: p99 < 100 ms. Last line: ``approval_ack_p99_ms=…`` (PostgreSQL; SQLite when
PostgreSQL is not available).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from pydantic import SecretStr
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
CLICKS = 200


@dataclass
class AckResult:
    clicks: int
    statuses: dict[int, int]
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    burst_s: float  # first request sent to last answer received
    settled_s: float  # first request sent to every request decided (the listeners' work)
    decided_once: int  # requests approved with exactly one decision recorded
    problems: list[str]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def _settings(slack_url: str, slack_token: str, tg_url: str, tg_token: str) -> Any:
    from credit.settings import OutboxSettings, Settings, SlackSettings, TelegramSettings
    from tests.support.approvals import SECRET, WEBHOOK_SECRET

    return Settings(
        outbox=OutboxSettings(channels=["slack", "telegram"]),
        slack=SlackSettings(
            bot_token=SecretStr(slack_token),
            signing_secret=SecretStr(SECRET),
            api_base_url=slack_url,
        ),
        telegram=TelegramSettings(
            bot_token=SecretStr(tg_token),
            api_base_url=tg_url,
            webhook_secret=SecretStr(WEBHOOK_SECRET),
        ),
    )


# --- the server process --------------------------------------------------------------------------


def serve(argv: list[str]) -> None:
    """``python -m bench.approval_ack serve DB_URL SLACK_URL SLACK_TOKEN TG_URL TG_TOKEN PORT``:
    the app as ``creditbot serve`` runs it (Slack interactivity only)."""
    import uvicorn

    from bot.http import create_app
    from bot.slack_app import build_slack_app
    from credit.store.db import make_engine

    url, slack_url, slack_token, tg_url, tg_token, port = argv
    engine = make_engine(url)
    settings = _settings(slack_url, slack_token, tg_url, tg_token)
    app = create_app(
        build_slack_app(engine, settings),
        slack_ack_first=settings.slack.signing_secret.get_secret_value(),  # as `serve` does
    )
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _wait_idle(pid: int, timeout: float = 30.0) -> None:
    """Until the process used under 5 % of a core over a quarter of a second (Linux; else
    at once)."""
    if not Path(f"/proc/{pid}/stat").exists():
        return
    deadline = time.monotonic() + timeout
    before = _cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        after = _cpu_seconds(pid)
        if after - before < 0.0125:
            return
        before = after


def fire(argv: list[str]) -> None:
    """``python -m bench.approval_ack fire PORT CLICKS_JSON``: open one connection per click,
    then send every click at once (HTTP/1.1 over asyncio streams: microseconds of client
    work each) and time each from its request written to its response read. Prints JSON."""
    port, path = int(argv[0]), Path(argv[1])
    clicks = json.loads(path.read_text())

    def request(body: str, headers: dict[str, str]) -> bytes:
        raw = body.encode()
        head = ["POST /slack/events HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(raw)}"]
        head += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "content-length"]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + raw

    async def run() -> dict[str, Any]:
        payloads = [request(body, headers) for body, headers in clicks]
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in payloads]

        async def one(i: int) -> tuple[float, int]:
            reader, writer = conns[i]
            t = time.perf_counter()
            writer.write(payloads[i])
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            elapsed = time.perf_counter() - t
            writer.close()
            return elapsed, status

        began = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(len(payloads))))
        return {
            "seconds": [r[0] for r in results],
            "statuses": [r[1] for r in results],
            "elapsed": time.perf_counter() - began,
        }

    sys.stdout.write(json.dumps(asyncio.run(run())))


# --- set-up --------------------------------------------------------------------------------------


def _prepare(url: str, slack: Any, tg: Any) -> list[int]:
    """The ledger, CLICKS pending requests, their cards dispatched to the fakes."""
    from bot.transports.slack import SlackTransport, make_web_client
    from bot.transports.telegram import TelegramTransport
    from credit.settings import OutboxSettings
    from credit.store.db import make_engine
    from credit.store.migrate import upgrade
    from credit.store.telegram import DbTokenMinter
    from jobs.clock import SystemClock
    from jobs.dispatch import Dispatcher
    from tests.support.approvals import build_ledger, raise_and_notify

    engine = make_engine(url)
    upgrade(engine)
    build_ledger(engine)
    clock = SystemClock()
    settings = _settings(slack.url, slack.token, tg.base_url, tg.token)
    ids = [
        raise_and_notify(engine, settings, clock.now(), order=f"SO-{n:04d}", amount="30000.00")
        for n in range(CLICKS)
    ]
    fast = settings.model_copy(
        update={
            "outbox": OutboxSettings(
                channels=["slack", "telegram"],
                per_recipient_interval_seconds=0,
                global_per_second=1000,
                batch_size=1000,
            )
        }
    )
    minter = DbTokenMinter(engine, clock, settings.telegram.callback_ttl_days)
    transports = {
        "slack": SlackTransport(make_web_client(slack.token, slack.url)),
        "telegram": TelegramTransport(
            tg.bot(), minter=minter, clock=clock, per_chat_interval=0, global_per_second=1000
        ),
    }
    report = asyncio.run(
        Dispatcher(engine, fast, transports, clock, respect_send_windows=False).drain()
    )
    if report.errors:
        raise RuntimeError(f"dispatching the cards: {report.errors[:3]}")
    engine.dispose()
    return ids


def _clicks(slack: Any) -> list[tuple[bytes, dict[str, str]]]:
    """One signed Approve click per card in Mia's DM."""
    from tests.fakes.slack_api import FakeSlackAPI
    from tests.support.approvals import MIA, SECRET
    from tests.support.slack_requests import block_actions_payload, slack_signature

    out = []
    cards = slack.messages.get(FakeSlackAPI.dm_for(MIA), [])
    for n, card in enumerate(cards):
        button = next(
            {**e, "block_id": b["block_id"]}
            for b in card.blocks
            for e in b.get("elements", [])
            if str(e.get("action_id", "")).split(":")[0] == "approve"
        )
        payload = block_actions_payload(
            user=MIA,
            channel=card.channel,
            ts=card.ts,
            text=card.text,
            blocks=card.blocks,
            button=button,
            n=n + 1,
            trigger="5000",
        )
        body = urlencode({"payload": json.dumps(payload)})
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            **slack_signature(body, str(int(time.time())), SECRET),
        }
        out.append((body.encode(), headers))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _decisions(url: str, ids: list[int]) -> tuple[int, int]:
    """(requests no longer pending, requests approved with exactly one decision recorded)."""
    from credit.store.db import make_engine, read_session
    from credit.store.models import Approval, ShipmentRequest

    engine = make_engine(url)
    try:
        with read_session(engine) as s:
            status = dict(
                s.execute(
                    select(ShipmentRequest.id, ShipmentRequest.status).where(
                        ShipmentRequest.id.in_(ids)
                    )
                ).all()
            )
            decisions = dict(
                s.execute(
                    select(Approval.request_id, func.count())
                    .where(Approval.request_id.in_(ids), Approval.decision.is_not(None))
                    .group_by(Approval.request_id)
                ).all()
            )
    finally:
        engine.dispose()
    done = sum(1 for i in ids if status.get(i) != "pending")
    once = sum(1 for i in ids if status.get(i) == "approved" and decisions.get(i) == 1)
    return done, once


def measure(url: str) -> AckResult:
    from tests.fakes.slack_api import FakeSlackAPI
    from tests.fakes.telegram_api import FakeTelegramAPI

    os.environ.setdefault("PTB_TIMEDELTA", "true")
    problems: list[str] = []
    # the listeners edit 2 cards a click: Slack's per-channel limit would answer 429s to
    # chat.update too in this fake (it limits chat.postMessage only); Telegram edits are free
    with (
        FakeSlackAPI(burst=10_000, per_second=10_000) as slack,
        FakeTelegramAPI(per_chat_per_second=10_000, global_per_second=10_000) as tg,
    ):
        ids = _prepare(url, slack, tg)
        clicks = _clicks(slack)
        if len(clicks) != CLICKS:
            problems.append(f"{len(clicks)} cards in Mia's DM, not {CLICKS}")
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.approval_ack", "serve", url, slack.url, slack.token,
             tg.base_url, tg.token, str(port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the app did not start")
                time.sleep(0.1)
            _wait_idle(server.pid)  # start-up done: measure the serving, not the importing

            # the clicks come from a process of their own (as Slack's do), so that neither
            # the fakes' threads here nor a client library's overhead counts as the server's
            spec = Path(tempfile.mkdtemp()) / "clicks.json"
            spec.write_text(json.dumps([[b.decode(), h] for b, h in clicks]))
            fired = subprocess.run(
                [sys.executable, "-m", "bench.approval_ack", "fire", str(port), str(spec)],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
                timeout=120,
            )
            if fired.returncode != 0:
                raise RuntimeError(f"the clicker failed: {fired.stderr[-2000:]}")
            report = json.loads(fired.stdout)
            burst = report["elapsed"]
            began = time.perf_counter() - burst
            times, statuses = report["seconds"], report["statuses"]
            deadline = time.monotonic() + 120
            while True:  # the listeners' work, after the acks
                done, once = _decisions(url, ids)
                if done == len(ids) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            settled = time.perf_counter() - began
            if done != len(ids):
                problems.append(f"{len(ids) - done} requests still pending after 120 s")
        finally:
            server.terminate()
            server.wait(timeout=30)
    ms = [t * 1000 for t in times]
    counted: dict[int, int] = {}
    for code in statuses:
        counted[code] = counted.get(code, 0) + 1
    if counted != {200: CLICKS}:
        problems.append(f"HTTP answers {counted}")
    return AckResult(
        clicks=len(clicks),
        statuses=counted,
        p50_ms=statistics.median(ms),
        p95_ms=_percentile(ms, 0.95),
        p99_ms=_percentile(ms, 0.99),
        max_ms=max(ms),
        burst_s=burst,
        settled_s=settled,
        decided_once=once,
        problems=problems,
    )


def main(argv: list[str] | None = None) -> dict[str, str]:
    from bench.scan import _pg_database

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="sqlite,postgres")
    args, _ = parser.parse_known_args(argv)
    results: dict[str, AckResult] = {}
    engines = args.engines.split(",")
    pg = _pg_database() if "postgres" in engines else None
    if pg is not None:
        results["postgres"] = measure(pg)
    if "sqlite" in engines:
        with tempfile.TemporaryDirectory() as tmp:
            results["sqlite"] = measure(f"sqlite:///{Path(tmp) / 'approvals.db'}")
    print(
        f"approval ack benchmark: {CLICKS} Approve clicks on Slack at once, each on its own request"
    )
    print(
        f"{'engine':<10}{'clicks':>7}{'HTTP 200':>9}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}"
        f"{'max ms':>8}{'burst s':>9}{'settled s':>10}{'decided once':>13}"
    )
    for engine, r in results.items():
        print(
            f"{engine:<10}{r.clicks:>7}{r.statuses.get(200, 0):>9}{r.p50_ms:>8.1f}{r.p95_ms:>8.1f}"
            f"{r.p99_ms:>8.1f}{r.max_ms:>8.1f}{r.burst_s:>9.2f}{r.settled_s:>10.2f}"
            f"{r.decided_once:>13}"
        )
        for problem in r.problems:
            print(f"{engine}: PROBLEM: {problem}")
    chosen = results.get("postgres") or results.get("sqlite")
    figures = {"approval_ack_p99_ms": f"{chosen.p99_ms:.1f}" if chosen else "n/a"}
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2:])
    elif sys.argv[1:2] == ["fire"]:
        fire(sys.argv[2:])
    else:
        main(sys.argv[1:])
