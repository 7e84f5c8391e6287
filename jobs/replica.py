"""One ``creditbot run`` process: the scheduler, the leader election, and whatever else it
serves (the HTTP app, Telegram polling), started and stopped together.

Every replica dispatches the outbox (the ``outbox_dispatch`` job runs everywhere); the jobs
in ``LEADER_JOBS`` are paused except on the leader (``jobs.leader``). A replica elected
leader resumes them and runs ``catch_up`` — today's scan or digest, if it is due and has not
run, which is how a scan the old leader died in the middle of is run again (its transaction
was rolled back with the connection).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.interval import IntervalTrigger

from jobs.leader import LeaderElection
from jobs.runtime import Runtime, current
from jobs.scheduler import build_scheduler, catch_up

log = logging.getLogger("creditbot.replica")

LEADER_JOBS = (
    "receivables_scan",
    "daily_digest",
    "credit_hold_review",
    "approval_followup",
    "catch_up",
)
# the leader looks this often for a scan or digest due today that has not run (one that
# failed with the database away, say)
CATCH_UP_EVERY_SECONDS = 600
STOP_GRACE_SECONDS = 10.0


async def catch_up_job() -> bool:
    return await catch_up(current())


class Replica:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.scheduler: AsyncIOScheduler = build_scheduler(settings)
        self.scheduler.add_job(
            catch_up_job,
            IntervalTrigger(seconds=CATCH_UP_EVERY_SECONDS),
            id="catch_up",
            name="catch up on a missed scan or digest",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=CATCH_UP_EVERY_SECONDS,
        )
        self.election = LeaderElection(
            runtime.engine,
            settings.replicas.leader_lock_key,
            check_seconds=settings.replicas.leader_check_seconds,
            on_elected=self._lead,
            on_deposed=self._follow,
        )
        self._catch_up: asyncio.Task[Any] | None = None
        self._stopping = asyncio.Event()

    def status(self) -> dict[str, object]:
        """For ``/readyz``: is the scheduler running, is this replica the leader."""
        running = self.scheduler.state == STATE_RUNNING
        return {"scheduler": "running" if running else "stopped", "leader": self.election.is_leader}

    async def run(self, *also: Callable[[], Awaitable[Any]]) -> None:
        """Run until ``stop`` is called, one of ``also`` (the HTTP server, say) returns, or
        this task is cancelled; then stop everything, giving the leadership up. ``also``
        are given ``STOP_GRACE_SECONDS`` to finish after ``stop`` (the server to close its
        connections) before they are cancelled."""
        self.scheduler.start()
        self._follow()  # leader jobs wait for the election
        election = asyncio.create_task(self.election.run(), name="leader-election")
        others = [asyncio.create_task(fn()) for fn in also]
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait([*others, stopping], return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopping}:
                task.result()  # a server that failed to start: raise it
        finally:
            stopping.cancel()
            if others:
                await asyncio.wait(others, timeout=STOP_GRACE_SECONDS)
            for task in others:
                task.cancel()
            self.election.stop()
            if self._catch_up is not None:
                self._catch_up.cancel()
            await asyncio.gather(election, *others, return_exceptions=True)
            if self.scheduler.running:
                self.scheduler.shutdown(wait=False)
            log.info("replica stopped")

    def stop(self) -> None:
        """Ask ``run`` to return (SIGTERM)."""
        self._stopping.set()

    def _lead(self) -> None:
        for job_id in LEADER_JOBS:
            self.scheduler.resume_job(job_id)
        if self._catch_up is None or self._catch_up.done():
            self._catch_up = asyncio.create_task(self._catch_up_logged(), name="catch-up")

    def _follow(self) -> None:
        for job_id in LEADER_JOBS:
            self.scheduler.pause_job(job_id)

    async def _catch_up_logged(self) -> None:
        """``catch_up`` once elected, retried with backoff while this replica leads."""
        delay = 1.0
        while self.election.is_leader:
            try:
                await catch_up(self.runtime)
                return
            except Exception as exc:
                log.warning("catch-up after the election failed (%s): again in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(60.0, delay * 2)
