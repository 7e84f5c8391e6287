"""Dispatch benchmark: how close the outbox dispatcher comes to the platforms' rate limits.

The real ``jobs.dispatch.Dispatcher`` with the real Slack and Telegram transports (as
``creditbot run`` builds them) sends a backlog of reminders, queued as outbox rows in a real
database (a fresh SQLite file, and a fresh PostgreSQL database when a server answers), to the
fake Slack Web API and the fake Telegram Bot API (tests/fakes) over real HTTP on 127.0.0.1, on
the real clock. The rows are in random order across recipients (as several scans, digests and
approval cards would leave them) and the dispatcher is driven as the scheduler drives it:
``dispatch_once`` on the ``dispatch_every_seconds`` ticks, a tick skipped while a run is still
going (``max_instances=1``). Send windows are off (the benchmark runs at any hour).

Default workload, both channels at once: Slack, 16 users x 20 messages (320); Telegram, 25
private chats x 15 messages (375). Pacing is set to the documented limits: ``[outbox]
per_recipient_interval_seconds = 1``, ``global_per_second = 30``; ``[telegram]
per_chat_interval_seconds = 1``, ``group_interval_seconds = 3``, ``global_per_second = 30``.

Efficiency, per channel: (messages delivered per second) / (the most the fake's limits allow
for this workload) = ``T_min / T``, where ``T`` is the time from the first ``dispatch_once`` to
the fake accepting the channel's last message, and ``T_min`` the shortest time in which the
fake's limits let every message of the workload through (the first one accepted at 0):

* Slack (per-channel token bucket, capacity ``burst`` b, refill ``per_second`` r; optional
  workspace bucket B, R): ``T_min = max(max over DMs (m_c - b) / r, (N - B) / R)``, each term
  at least 0, where m_c is the messages to one DM and N all of them.
* Telegram (private chat: capacity 1, ``per_chat_per_second`` p; group: capacity and
  ``group_per_minute`` g per minute; overall: capacity and ``global_per_second`` G):
  ``T_min = max(max over private chats (m_c - 1) / p, max over groups (m_g - g) / (g / 60),
  (N - G) / G)``.

Each term is a bound each bucket sets on its own, so ``T_min`` is a lower bound (exact when,
as here, one term dominates and the others leave room): the efficiency is never overstated.
With the default workload the per-chat terms dominate: Slack (20 - 2) / 1 = 18 s, Telegram
(15 - 1) / 1 = 14 s (overall: (375 - 30) / 30 = 11.5 s). Our dispatcher does not spend
Slack's burst (it keeps 1 s between two messages to a person), so its own ceiling on Slack is
(m - 2) / (m - 1) = 0.947 with 20 messages a person.

Duplicates: messages the fake received more than once (each carries its outbox row's marker);
lost: outbox rows the fake never received or not marked ``sent`` at the end.

Targets: efficiency >= 0.9 on both channels, no duplicates, nothing lost, no 429.
Last lines: ``dispatch_efficiency_slack=…``, ``dispatch_efficiency_telegram=…``,
``dispatch_duplicates=…``, ``dispatch_lost=…`` (the worse engine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import func, select

from bot.transports.slack import SlackTransport, make_web_client
from bot.transports.telegram import TelegramTransport
from credit.settings import OutboxSettings, Settings, SlackSettings, TelegramSettings
from credit.store.db import make_engine, read_session, write_session
from credit.store.migrate import upgrade
from credit.store.models import OutboxMessage, Person
from credit.store.outbox import NewMessage, enqueue
from credit.store.telegram import DbTokenMinter
from jobs.clock import SystemClock
from jobs.dispatch import Dispatcher
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.telegram_api import FakeTelegramAPI

BUSINESS_DATE = date(2026, 11, 25)
MARKER = "BENCH-"


@dataclass(frozen=True)
class Workload:
    slack_users: int = 16
    slack_each: int = 20
    telegram_chats: int = 25
    telegram_each: int = 15
    seed: int = 20261125


@dataclass(frozen=True)
class Limits:
    """The fakes' limits (their defaults are the platforms' documented ones)."""

    slack_burst: float = 2.0
    slack_per_second: float = 1.0
    telegram_per_chat_per_second: float = 1.0
    telegram_group_per_minute: float = 20.0
    telegram_global_per_second: float = 30.0


@dataclass(frozen=True)
class Pacing:
    """Our settings: ``[outbox]`` and ``[telegram]`` pacing."""

    per_recipient_interval: float = 1.0
    global_per_second: float = 30.0
    telegram_per_chat_interval: float = 1.0
    telegram_group_interval: float = 3.0
    telegram_global_per_second: float = 30.0


@dataclass
class ChannelResult:
    messages: int
    delivered: int
    duplicates: int
    lost: int
    rate_limited: int  # 429s the fake answered
    seconds: float  # T: first dispatch_once to the last message accepted
    min_seconds: float  # T_min
    efficiency: float


@dataclass
class Result:
    channels: dict[str, ChannelResult] = field(default_factory=dict)
    runs: int = 0  # dispatch_once calls
    wall_s: float = 0.0


# --- the formula ---------------------------------------------------------------------------------


def slack_min_seconds(
    per_channel: list[int],
    burst: float,
    per_second: float,
    workspace_burst: float | None = None,
    workspace_per_second: float | None = None,
) -> float:
    """The shortest time the fake Slack lets these messages through (see the module doc)."""
    terms = [(m - burst) / per_second for m in per_channel]
    if workspace_per_second:
        total = sum(per_channel)
        terms.append((total - (workspace_burst or workspace_per_second)) / workspace_per_second)
    return max([0.0, *terms])


def telegram_min_seconds(
    per_chat: dict[int, int],
    per_chat_per_second: float,
    group_per_minute: float,
    global_per_second: float,
) -> float:
    """The shortest time the fake Telegram lets these messages through (see the module doc)."""
    terms = [
        (m - 1) / per_chat_per_second
        if chat > 0
        else (m - group_per_minute) / (group_per_minute / 60)
        for chat, m in per_chat.items()
    ]
    terms.append((sum(per_chat.values()) - global_per_second) / global_per_second)
    return max([0.0, *terms])


def efficiency(min_seconds: float, seconds: float) -> float:
    """Delivered per second over the most allowed: (N / T) / (N / T_min) = T_min / T."""
    return min_seconds / seconds if seconds > 0 else 1.0


# --- the workload --------------------------------------------------------------------------------


def slack_user(i: int) -> str:
    return f"UBEN{i:04d}"


def telegram_chat(i: int) -> int:
    return 5000 + i


def payload(person: Person, n: int) -> dict[str, Any]:
    """A reminder as the scan writes it, its one invoice numbered ``BENCH-n`` (the marker)."""
    return {
        "kind": "reminder",
        "business_date": BUSINESS_DATE.isoformat(),
        "recipient": {"code": person.code, "name": person.name, "role": "rep", "locale": "en"},
        "sections": [
            {
                "tier": "overdue",
                "action": "Chase the customer and find out why.",
                "count": 1,
                "new_count": 1,
                "totals": {"CNY": "12800.00"},
                "lines": [
                    {
                        "invoice_id": n,
                        "number": f"{MARKER}{n:06d}",
                        "customer": "C0001",
                        "customer_name": "宏达机械有限公司",
                        "open_amount": "12800.00",
                        "currency": "CNY",
                        "days": 12,
                        "due_date": (BUSINESS_DATE - timedelta(days=12)).isoformat(),
                        "disputed": False,
                        "new": True,
                    }
                ],
            }
        ],
        "broken_promises": [],
        "unacknowledged": [],
        "credit_holds": [],
        "credit_holds_total": 0,
    }


def queue(engine: Any, workload: Workload, now: datetime) -> dict[int, int]:
    """People and their outbox rows, in random order; returns marker number -> outbox id."""
    people = [
        Person(code=f"slk{i:03d}", name=f"Slack Rep {i}", role="rep", slack_user_id=slack_user(i))
        for i in range(workload.slack_users)
    ] + [
        Person(
            code=f"tg{i:03d}",
            name=f"Telegram Rep {i}",
            role="rep",
            telegram_chat_id=telegram_chat(i),
        )
        for i in range(workload.telegram_chats)
    ]
    with write_session(engine) as s:
        s.add_all(people)
        s.flush()
        plan = [
            (p, "slack") for p in people[: workload.slack_users] for _ in range(workload.slack_each)
        ]
        plan += [
            (p, "telegram")
            for p in people[workload.slack_users :]
            for _ in range(workload.telegram_each)
        ]
        random.Random(workload.seed).shuffle(plan)
        messages = [
            NewMessage(f"bench:{n}", p.id, channel, "reminder", BUSINESS_DATE, payload(p, n), now)
            for n, (p, channel) in enumerate(plan)
        ]
        enqueue(s, messages, now)
    with read_session(engine) as s:
        ids = dict(s.execute(select(OutboxMessage.idempotency_key, OutboxMessage.id)).all())
    return {int(key.split(":")[1]): i for key, i in ids.items()}


def bench_settings(slack: FakeSlackAPI, tg: FakeTelegramAPI, pacing: Pacing) -> Settings:
    return Settings(
        outbox=OutboxSettings(
            channels=["slack", "telegram"],
            per_recipient_interval_seconds=pacing.per_recipient_interval,
            global_per_second=pacing.global_per_second,
        ),
        slack=SlackSettings(
            bot_token=SecretStr(slack.token),
            signing_secret=SecretStr("bench-signing-secret"),
            api_base_url=slack.url,
        ),
        telegram=TelegramSettings(
            bot_token=SecretStr(tg.token),
            api_base_url=tg.base_url,
            per_chat_interval_seconds=pacing.telegram_per_chat_interval,
            group_interval_seconds=pacing.telegram_group_interval,
            global_per_second=pacing.telegram_global_per_second,
        ),
    )


def transports(engine: Any, settings: Settings, clock: SystemClock) -> dict[str, Any]:
    """As ``creditbot run`` builds them (bot.cli._transports)."""
    client = make_web_client(
        settings.slack.bot_token.get_secret_value(), settings.slack.api_base_url
    )
    minter = DbTokenMinter(engine, clock, settings.telegram.callback_ttl_days)
    return {
        "slack": SlackTransport(client, fallback_channel=settings.slack.fallback_channel),
        "telegram": TelegramTransport.from_settings(settings.telegram, minter=minter, clock=clock),
    }


def _waiting(engine: Any) -> int:
    with read_session(engine) as s:
        return s.execute(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.status.in_(["pending", "sending"]))
        ).scalar_one()


async def drive(dispatcher: Dispatcher, engine: Any, every: float, timeout: float) -> int:
    """``dispatch_once`` on the scheduler's ticks until nothing waits (or ``timeout``)."""
    start = time.monotonic()
    runs = 0
    while True:
        await dispatcher.dispatch_once()
        runs += 1
        if await asyncio.to_thread(_waiting, engine) == 0:
            return runs
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            return runs
        next_tick = (math.floor(elapsed / every) + 1) * every  # ticks during the run: skipped
        await asyncio.sleep(next_tick - elapsed)


# --- one run -------------------------------------------------------------------------------------


def _deliveries(slack: FakeSlackAPI, tg: FakeTelegramAPI, chats: list[int]) -> dict[str, Counter]:
    """Marker number -> how many times each fake received it."""
    found: dict[str, Counter] = {"slack": Counter(), "telegram": Counter()}
    for messages in slack.messages.values():
        for m in messages:
            for n in {int(part[:6]) for part in json.dumps(m.blocks).split(MARKER)[1:]}:
                found["slack"][n] += 1
    for chat in chats:
        for m in tg.messages(chat):
            for n in {int(part[:6]) for part in (m.text or "").split(MARKER)[1:]}:
                found["telegram"][n] += 1
    return found


def run_workload(
    url: str,
    workload: Workload = Workload(),
    limits: Limits = Limits(),
    pacing: Pacing = Pacing(),
    *,
    timeout: float = 120.0,
) -> Result:
    """Queue the workload in the database at ``url`` (empty), dispatch it to fresh fakes, and
    measure."""
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    engine = make_engine(url)
    upgrade(engine)
    clock = SystemClock()
    numbers = queue(engine, workload, clock.now() - timedelta(seconds=1))
    chats = [telegram_chat(i) for i in range(workload.telegram_chats)]
    with (
        FakeSlackAPI(burst=limits.slack_burst, per_second=limits.slack_per_second) as slack,
        FakeTelegramAPI(
            per_chat_per_second=limits.telegram_per_chat_per_second,
            group_per_minute=limits.telegram_group_per_minute,
            global_per_second=limits.telegram_global_per_second,
        ) as tg,
    ):
        settings = bench_settings(slack, tg, pacing)
        dispatcher = Dispatcher(
            engine, settings, transports(engine, settings, clock), clock, respect_send_windows=False
        )

        async def main() -> int:
            return await drive(
                dispatcher, engine, settings.schedule.dispatch_every_seconds, timeout
            )

        t0 = time.time()
        runs = asyncio.run(main())
        wall = time.time() - t0
        found = _deliveries(slack, tg, chats)
        posts = slack.calls("chat.postMessage")
        sends = tg.calls("sendMessage")
    with read_session(engine) as s:
        status = dict(s.execute(select(OutboxMessage.id, OutboxMessage.status)).all())
        channel_of = dict(s.execute(select(OutboxMessage.id, OutboxMessage.channel)).all())
    engine.dispose()

    result = Result(runs=runs, wall_s=wall)
    accepted = {
        "slack": [r.at for r in posts if r.status == 200],
        "telegram": [r.at for r in sends if r.status == 200],
    }
    limited = {
        "slack": sum(r.status == 429 for r in posts),
        "telegram": sum(r.status == 429 for r in sends),
    }
    per_channel = {
        "slack": [workload.slack_each] * workload.slack_users,
        "telegram": {chat: workload.telegram_each for chat in chats},
    }
    minimum = {
        "slack": slack_min_seconds(
            per_channel["slack"], limits.slack_burst, limits.slack_per_second
        ),
        "telegram": telegram_min_seconds(
            per_channel["telegram"],
            limits.telegram_per_chat_per_second,
            limits.telegram_group_per_minute,
            limits.telegram_global_per_second,
        ),
    }
    for channel in ("slack", "telegram"):
        mine = {n for n, i in numbers.items() if channel_of[i] == channel}
        got = found[channel]
        lost = sum(1 for n in mine if got[n] == 0 or status[numbers[n]] != "sent")
        seconds = (max(accepted[channel]) - t0) if accepted[channel] else math.inf
        result.channels[channel] = ChannelResult(
            messages=len(mine),
            delivered=sum(1 for n in mine if got[n] > 0),
            duplicates=sum(c - 1 for c in got.values() if c > 1),
            lost=lost,
            rate_limited=limited[channel],
            seconds=seconds,
            min_seconds=minimum[channel],
            efficiency=efficiency(minimum[channel], seconds),
        )
    return result


# --- the benchmark -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, str]:
    from bench.scan import _pg_database

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="sqlite,postgres")
    args, _ = parser.parse_known_args(argv)  # `python -m bench` passes every part's flags
    logging.basicConfig(level=logging.ERROR)
    workload = Workload()
    results: dict[str, Result] = {}
    engines = args.engines.split(",")
    if "sqlite" in engines:
        with tempfile.TemporaryDirectory() as tmp:
            results["sqlite"] = run_workload(f"sqlite:///{Path(tmp) / 'dispatch.db'}", workload)
    pg = _pg_database() if "postgres" in engines else None
    if pg is not None:
        results["postgres"] = run_workload(pg, workload)
    print(
        f"dispatch benchmark: Slack {workload.slack_users} users x {workload.slack_each}, "
        f"Telegram {workload.telegram_chats} chats x {workload.telegram_each}, both at once, "
        "real HTTP to the fakes, real clock"
    )
    print(
        f"{'engine':<10}{'channel':<10}{'messages':>9}{'delivered':>10}{'dupes':>6}{'lost':>6}"
        f"{'429s':>6}{'T s':>8}{'T_min s':>9}{'msg/s':>7}{'efficiency':>11}{'runs':>6}"
    )
    for engine, r in results.items():
        for channel, c in r.channels.items():
            print(
                f"{engine:<10}{channel:<10}{c.messages:>9}{c.delivered:>10}{c.duplicates:>6}"
                f"{c.lost:>6}{c.rate_limited:>6}{c.seconds:>8.2f}{c.min_seconds:>9.2f}"
                f"{c.delivered / c.seconds:>7.1f}{c.efficiency:>11.3f}{r.runs:>6}"
            )
    if not results:
        return {
            "dispatch_efficiency_slack": "n/a",
            "dispatch_efficiency_telegram": "n/a",
            "dispatch_duplicates": "n/a",
            "dispatch_lost": "n/a",
        }
    figures = {
        f"dispatch_efficiency_{ch}": f"{min(r.channels[ch].efficiency for r in rs):.3f}"
        for ch in ("slack", "telegram")
        for rs in [list(results.values())]
    }
    figures["dispatch_duplicates"] = str(
        max(sum(c.duplicates for c in r.channels.values()) for r in results.values())
    )
    figures["dispatch_lost"] = str(
        max(sum(c.lost for c in r.channels.values()) for r in results.values())
    )
    figures["dispatch_429s"] = str(
        max(sum(c.rate_limited for c in r.channels.values()) for r in results.values())
    )
    for engine, r in results.items():
        print(f"{engine}: {r}", file=sys.stderr, flush=True)
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    return figures


if __name__ == "__main__":
    main()
