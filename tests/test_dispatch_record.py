"""A message the platform accepted while the database could not record it: the dispatcher
keeps trying to record it (with backoff, within the lease) instead of leaving the row to be
claimed and sent a second time when its lease runs out.

The database "goes away" by a second connection holding SQLite's one write lock (with a
short busy timeout, the dispatcher's write fails at once with "database is locked"); the
lock is held from the moment the platform accepts the message until the dispatcher's
``clock.sleep`` — its backoff — is reached N times.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Engine, text

from bot.transports.base import Outgoing
from credit.store.db import IMMEDIATE, make_engine
from credit.store.migrate import upgrade
from jobs.clock import FakeClock
from jobs.dispatch import RECORD_RETRY_FIRST_SECONDS, Dispatcher
from tests.support.outbox_data import NOW, put, reminders, row, seed_people, settings
from tests.support.transport import ScriptedTransport


class DatabaseAway:
    """Holds the write lock on the database while ``away``."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url, busy_timeout_ms=10_000)
        self.conn: Any = None

    def leave(self) -> None:
        self.conn = self.engine.connect().execution_options(**{IMMEDIATE: True})
        self.conn.begin()
        self.conn.execute(text("SELECT 1"))

    def come_back(self) -> None:
        if self.conn is not None:
            self.conn.rollback()
            self.conn.close()
            self.conn = None


class AwayClock(FakeClock):
    """The database comes back after the dispatcher has backed off ``sleeps`` times."""

    def __init__(self, db: DatabaseAway, sleeps: int) -> None:
        super().__init__(NOW)
        self.db, self.sleeps_left = db, sleeps

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        self.sleeps_left -= 1
        if self.sleeps_left == 0:
            self.db.come_back()


class LeavingTransport(ScriptedTransport):
    """The platform accepts the first message; then the database goes away."""

    def __init__(self, clock: FakeClock, db: DatabaseAway) -> None:
        super().__init__(clock)
        self.db = db

    async def send(self, message: Outgoing) -> dict[str, Any]:
        ref = await super().send(message)
        if len(self.calls) == 1:
            self.db.leave()
        return ref


Setup = tuple[Engine, Dispatcher, LeavingTransport, int]


def _setup(tmp_path, sleeps: int, **outbox: Any) -> Setup:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'away.db'}"
    engine = make_engine(url, busy_timeout_ms=50)  # "database is locked" at once
    upgrade(engine)
    seed_people(engine)
    [message_id] = put(engine, reminders(engine, ["rep01"]))
    db = DatabaseAway(url)
    clock = AwayClock(db, sleeps)
    transport = LeavingTransport(clock, db)
    dispatcher = Dispatcher(
        engine, settings(**outbox), {"slack": transport}, clock, respect_send_windows=False
    )
    return engine, dispatcher, transport, message_id


def test_a_sent_message_is_recorded_once_the_database_is_back(tmp_path) -> None:
    engine, dispatcher, transport, message_id = _setup(tmp_path, sleeps=3)
    report = asyncio.run(dispatcher.dispatch_once())
    assert report.sent == 1
    assert len(transport.calls) == 1  # sent once
    recorded = row(engine, message_id)
    assert recorded.status == "sent" and recorded.attempts == 1
    assert recorded.platform_ref == transport.calls[0].ref
    # backed off 0.25, 0.5, 1 s (on the fake clock) before the write went through
    assert dispatcher.clock.slept[-3:] == [  # type: ignore[attr-defined]
        RECORD_RETRY_FIRST_SECONDS,
        RECORD_RETRY_FIRST_SECONDS * 2,
        RECORD_RETRY_FIRST_SECONDS * 4,
    ]
    # nothing left to send: a later dispatcher, past the lease, finds nothing
    dispatcher.clock.advance(600)  # type: ignore[attr-defined]
    assert asyncio.run(dispatcher.dispatch_once()).claimed == 0
    assert len(transport.calls) == 1


def test_gives_up_recording_before_the_lease_runs_out(tmp_path) -> None:
    """Away for longer than the lease allows: the error surfaces (logged by the scheduler)
    and the row, still ``sending``, is sent again after its lease — the one in flight."""
    engine, dispatcher, transport, message_id = _setup(tmp_path, sleeps=10_000, lease_seconds=5)
    try:
        asyncio.run(dispatcher.dispatch_once())
    except Exception as exc:
        assert "locked" in str(exc)
    else:
        raise AssertionError("the failed write was swallowed")
    total_backoff = sum(dispatcher.clock.slept)  # type: ignore[attr-defined]
    assert total_backoff <= 5 * 0.8
    transport.db.come_back()
    assert row(engine, message_id).status == "sending"
    dispatcher.clock.advance(5)  # type: ignore[attr-defined]
    assert asyncio.run(dispatcher.dispatch_once()).sent == 1
    assert [c.message_id for c in transport.calls] == [message_id, message_id]
    assert row(engine, message_id).status == "sent"
