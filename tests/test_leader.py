"""Leader election (``jobs.leader``) and the replica around it (``jobs.replica``).

PostgreSQL: a session-level advisory lock on a connection of the leader's own; SQLite: a
``flock`` beside the database file. Each test takes a lock key of its own, so that tests
running side by side on one server do not elect each other.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select, text

from credit.settings import Settings
from credit.store.db import make_engine, read_session
from credit.store.models import ScanRun
from jobs.clock import CLOCK_START_ENV, FakeClock, OffsetClock, clock_from_env
from jobs.leader import LeaderElection
from jobs.replica import LEADER_JOBS, Replica
from jobs.runtime import Runtime, install
from tests.conftest import PG_URL


def _key() -> int:
    return random.randrange(1, 2**62)


def _twin(engine: Engine) -> Engine:
    """A second engine on the same database: another replica's connections."""
    return make_engine(engine.url.render_as_string(hide_password=False))


class Events:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def elected(self) -> None:
        self.seen.append("elected")

    def deposed(self) -> None:
        self.seen.append("deposed")


def _election(engine: Engine, key: int, events: Events | None = None) -> LeaderElection:
    events = events or Events()
    return LeaderElection(
        engine, key, check_seconds=0.05, on_elected=events.elected, on_deposed=events.deposed
    )


def test_one_leader_and_the_next_takes_over_on_resignation(engine: Engine) -> None:
    other = _twin(engine)
    key = _key()
    a_events, b_events = Events(), Events()
    a, b = _election(engine, key, a_events), _election(other, key, b_events)

    async def scenario() -> None:
        assert await a.check() is True
        assert await b.check() is False
        assert await a.check() is True  # keeps it
        assert (a.is_leader, b.is_leader) == (True, False)
        await a.resign()
        assert await b.check() is True
        assert await a.check() is False
        await b.resign()

    try:
        asyncio.run(scenario())
    finally:
        other.dispose()
    assert a_events.seen == ["elected", "deposed"]
    assert b_events.seen == ["elected", "deposed"]


@pytest.mark.postgres
def test_a_dead_leader_connection_is_replaced_and_the_old_leader_steps_down() -> None:
    from tests.conftest import require_postgres

    require_postgres()
    key = _key()
    first, second, admin = make_engine(PG_URL), make_engine(PG_URL), make_engine(PG_URL)
    a_events, b_events = Events(), Events()
    a, b = _election(first, key, a_events), _election(second, key, b_events)

    async def scenario() -> None:
        assert await a.check() is True
        assert await b.check() is False
        # the leader's lock connection dies (its host gone, the server restarted...)
        with admin.begin() as conn:
            killed = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted "
                    "AND ((classid::bigint << 32) | objid::bigint) = :key"
                ),
                {"key": key},
            ).scalars().all()
        assert killed == [True]
        assert await b.check() is True  # the lock went with the connection
        assert await a.check() is False  # the old leader notices and steps down
        assert await a.check() is False  # and does not get it back while b holds it
        await b.resign()
        assert await a.check() is True

    try:
        asyncio.run(scenario())
        asyncio.run(a.resign())
    finally:
        for e in (first, second, admin):
            e.dispose()
    assert a_events.seen == ["elected", "deposed", "elected", "deposed"]
    assert b_events.seen == ["elected", "deposed"]


def test_an_unreachable_database_means_no_leadership() -> None:
    # nothing listens on port 9 (discard) on these machines
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:9/test")
    election = _election(engine, _key())
    try:
        assert asyncio.run(election.check()) is False
        assert election.is_leader is False
    finally:
        engine.dispose()


def test_an_in_memory_sqlite_database_is_led_by_its_only_process() -> None:
    engine = make_engine("sqlite://")
    election = _election(engine, _key())
    assert asyncio.run(election.check()) is True
    asyncio.run(election.resign())


def test_the_loop_stops_and_gives_the_lock_up(engine: Engine) -> None:
    other = _twin(engine)
    key = _key()
    a, b = _election(engine, key), _election(other, key)

    async def scenario() -> None:
        loop = asyncio.create_task(a.run())
        while not a.is_leader:
            await asyncio.sleep(0.01)
        assert await b.check() is False
        a.stop()
        await asyncio.wait_for(loop, 5)
        assert a.is_leader is False
        assert await b.check() is True
        await b.resign()

    try:
        asyncio.run(scenario())
    finally:
        other.dispose()


# -- the replica -------------------------------------------------------------------------

# a Monday in March 2026 (a working day in China), after the scan's 08:30
MONDAY_MORNING = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai


def _settings() -> Settings:
    return Settings.model_validate(
        {
            "replicas": {"leader_check_seconds": 0.05, "leader_lock_key": _key()},
            "schedule": {"digest_at": "23:00"},  # no digest in these tests
        }
    )


def _scan_runs(engine: Engine) -> list[str]:
    with read_session(engine) as s:
        return [d.isoformat() for d in s.execute(select(ScanRun.business_date)).scalars()]


def test_a_replica_pauses_the_leader_jobs_until_elected_then_catches_up(engine: Engine) -> None:
    settings = _settings()
    runtime = Runtime(engine, settings, FakeClock(MONDAY_MORNING), {})
    install(runtime)
    replica = Replica(runtime)

    async def until_scanned() -> None:
        paused_at_start = [
            replica.scheduler.get_job(job_id).next_run_time for job_id in LEADER_JOBS
        ]
        assert paused_at_start == [None] * len(LEADER_JOBS)
        while not _scan_runs(engine):
            await asyncio.sleep(0.02)
        assert replica.status() == {"scheduler": "running", "leader": True}
        resumed = [replica.scheduler.get_job(job_id).next_run_time for job_id in LEADER_JOBS]
        assert None not in resumed
        assert replica.scheduler.get_job("outbox_dispatch").next_run_time is not None

    try:
        asyncio.run(asyncio.wait_for(replica.run(until_scanned), 30))
    finally:
        install(None)
    assert _scan_runs(engine) == ["2026-03-02"]
    assert replica.status() == {"scheduler": "stopped", "leader": False}


def test_a_follower_does_not_scan_while_another_replica_leads(engine: Engine) -> None:
    other = _twin(engine)
    settings = _settings()
    holder = _election(other, settings.replicas.leader_lock_key)
    assert asyncio.run(holder.check()) is True
    runtime = Runtime(engine, settings, FakeClock(MONDAY_MORNING), {})
    install(runtime)
    replica = Replica(runtime)

    async def for_a_while() -> None:
        # twenty election rounds as a follower
        while replica.election.rounds < 20:
            await asyncio.sleep(0.01)
        assert replica.status()["leader"] is False
        assert replica.scheduler.get_job("receivables_scan").next_run_time is None

    try:
        asyncio.run(asyncio.wait_for(replica.run(for_a_while), 30))
    finally:
        install(None)
        asyncio.run(holder.resign())
        other.dispose()
    assert replica.election.elected_times == 0
    assert _scan_runs(engine) == []


def test_clock_from_env() -> None:
    assert type(clock_from_env({})).__name__ == "SystemClock"
    shifted = clock_from_env({CLOCK_START_ENV: "2026-03-02T09:00:00+08:00"})
    assert isinstance(shifted, OffsetClock)
    assert abs((shifted.now() - MONDAY_MORNING).total_seconds()) < 60
    with pytest.raises(ValueError, match="needs a UTC offset"):
        clock_from_env({CLOCK_START_ENV: "2026-03-02T09:00:00"})
    with pytest.raises(ValueError, match="not an ISO-8601"):
        clock_from_env({CLOCK_START_ENV: "tomorrow"})
