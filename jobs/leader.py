"""Leader election among replicas: which ``creditbot run`` process runs the scheduled jobs.

Any number of replicas share one database. All of them dispatch the outbox (rows are claimed
with ``FOR UPDATE SKIP LOCKED`` and a lease, ``credit.store.outbox.claim``) and serve HTTP;
exactly one, the leader, runs the scans, digests, credit-hold reviews and approval
follow-ups.

* PostgreSQL: the leader holds a session-level advisory lock (``pg_try_advisory_lock``) on a
  connection of its own, kept open in autocommit mode. The database releases the lock the
  moment that connection ends — the process killed, the host gone, the server restarted —
  and another replica, trying every ``check_seconds``, takes it. The leader checks its own
  connection just as often: when it has broken, it stops leading at once (it may be
  replaced already) and tries again like any other replica.
* SQLite: one host. An exclusive ``flock`` on ``<database>.leader`` plays the lock's part
  (released by the kernel when the process dies); an in-memory database is always led by
  its only process.

Being leader twice for a moment (a leader whose connection died while it was mid-scan) is
harmless by construction: a scan is one transaction holding a lock row, ``scan_run`` has one
row per business date, and every queued message has a unique dedupe key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

log = logging.getLogger("creditbot.leader")

Callback = Callable[[], Awaitable[None] | None]


class LeaderElection:
    """Take, keep and lose the leadership; ``on_elected``/``on_deposed`` run on changes."""

    def __init__(
        self,
        engine: Engine,
        key: int,
        *,
        check_seconds: float = 2.0,
        on_elected: Callback | None = None,
        on_deposed: Callback | None = None,
        check_timeout: float | None = None,
    ) -> None:
        self.engine = engine
        self.key = key
        self.check_seconds = check_seconds
        self.check_timeout = check_timeout or max(5.0, 2 * check_seconds)
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.is_leader = False
        self.elected_times = 0
        self.rounds = 0  # checks made
        self._conn: Connection | None = None
        self._lock_fd: int | None = None
        self._stopped = asyncio.Event()

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Check every ``check_seconds`` until ``stop``; then give the leadership up."""
        try:
            while not self._stopped.is_set():
                await self.check()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), self.check_seconds)
        finally:
            await self.resign()

    def stop(self) -> None:
        self._stopped.set()

    async def check(self) -> bool:
        """One round: keep the lock if held and the connection lives, else try to take it."""
        self.rounds += 1
        try:
            held = await asyncio.wait_for(asyncio.to_thread(self._hold), self.check_timeout)
        except Exception as exc:  # the database unreachable, or the check hung
            log.warning("leader check failed: %s", _describe(exc))
            await asyncio.to_thread(self._drop_connection)
            held = False
        if held and not self.is_leader:
            self.is_leader = True
            self.elected_times += 1
            log.info("elected leader (lock %s)", self.key)
            await _call(self.on_elected)
        elif not held and self.is_leader:
            self.is_leader = False
            log.warning("no longer the leader (lock %s lost)", self.key)
            await _call(self.on_deposed)
        return held

    async def resign(self) -> None:
        """Release the lock (closing its connection) and stop leading."""
        was = self.is_leader
        self.is_leader = False
        await asyncio.to_thread(self._release)
        if was:
            log.info("resigned the leadership")
            await _call(self.on_deposed)

    # -- the lock, per engine --------------------------------------------------------------

    def _hold(self) -> bool:
        if self.engine.dialect.name == "postgresql":
            return self._hold_pg()
        return self._hold_file()

    def _hold_pg(self) -> bool:
        if self._conn is not None and self.is_leader:
            self._conn.execute(text("SELECT 1"))  # raises when the connection has died
            return True
        if self._conn is None:
            self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        high, low = lock_key_pair(self.key)
        got = self._conn.execute(
            text("SELECT pg_try_advisory_lock(CAST(:high AS integer), CAST(:low AS integer))"),
            {"high": high, "low": low},
        ).scalar_one()
        return bool(got)

    def _hold_file(self) -> bool:
        database = self.engine.url.database
        if not database or database == ":memory:":
            return True
        if self._lock_fd is not None:
            return True
        import fcntl

        path = Path(database).with_name(Path(database).name + ".leader")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken
                conn.invalidate()  # never back to the pool: the lock must die with it
                conn.close()

    def _release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # a broken connection holds no lock
                self._conn.execute(text("SELECT pg_advisory_unlock_all()"))
            self._drop_connection()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None


def lock_key_pair(key: int) -> tuple[int, int]:
    """The 64-bit key as the two signed 32-bit halves of ``pg_try_advisory_lock(int, int)``.

    PostgreSQL keeps two-``integer`` advisory locks apart from single-``bigint`` ones (the
    lock tag's ``objsubid`` is 2, not 1), and the store's transaction locks (the scan's, the
    digest's, the migrations') are ``bigint`` ones: the leader's lock can never be one of
    them, whatever ``[replicas] leader_lock_key`` says. (With a bigint key equal to the
    scan's — 0x43524544, the default — the leader's scan waited for the leader's own lock,
    for ever.) ``pg_locks`` shows the halves as ``classid`` and ``objid``."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    high, low = unsigned >> 32, unsigned & 0xFFFF_FFFF
    return (high - (1 << 32) if high >= 1 << 31 else high), (
        low - (1 << 32) if low >= 1 << 31 else low
    )


async def _call(callback: Callback | None) -> None:
    if callback is None:
        return
    result: Any = callback()
    if asyncio.iscoroutine(result):
        await result


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"
