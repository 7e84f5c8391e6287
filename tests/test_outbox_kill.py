"""A dispatcher process SIGKILLed between claiming rows and sending them loses nothing.

The victim (tests/support/dispatch_victim.py) claims rows in a real process against a real
database (SQLite file, or a PostgreSQL database of its own), reports what it holds and hangs;
the test kills it with SIGKILL, then a dispatcher in this process — on a fake clock past the
lease — sends every message exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from credit.store.db import make_engine
from credit.store.migrate import upgrade
from jobs.clock import FakeClock
from jobs.dispatch import Dispatcher
from tests.support.outbox_data import NOW, put, reminders, row, rows, seed_people, settings
from tests.support.transport import ScriptedTransport

VICTIM = Path(__file__).parent / "support" / "dispatch_victim.py"
ROOT = Path(__file__).parent.parent
LEASE = 120
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")


def _wait_for(marker: Path, proc: subprocess.Popen[bytes], log: Path) -> dict:
    deadline = time.monotonic() + 60
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"victim exited early ({proc.returncode}):\n{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"victim never claimed anything:\n{log.read_text()}")
        time.sleep(0.05)  # real time: waiting for another process
    return json.loads(marker.read_text())


@pytest.mark.parametrize("mode", ["claim", "dispatch"])
def test_a_dispatcher_killed_between_claim_and_send_loses_nothing(db_url, tmp_path, mode):
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        seed_people(engine)
        ids = put(engine, reminders(engine, ["rep01", "rep02", "rep03"]))
        marker, log = tmp_path / "claimed.json", tmp_path / "victim.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(VICTIM), mode, db_url, NOW.isoformat(), str(marker), "2",
                 str(LEASE)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
        try:
            info = _wait_for(marker, proc, log)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert info["pid"] == proc.pid

        # the victim held two rows when it died; the third it never touched
        held = [r.id for r in rows(engine, status="sending")]
        assert len(held) == 2 and set(held) <= set(ids)
        if mode == "claim":
            assert sorted(info["claimed"]) == sorted(held)
        else:
            assert info["in_flight"] in held
        for i in held:
            stored = row(engine, i)
            assert (stored.attempts, stored.sent_at, stored.platform_ref) == (1, None, None)
            assert stored.lease_until == NOW + timedelta(seconds=LEASE)
        (untouched,) = set(ids) - set(held)

        clock = FakeClock(NOW)
        transport = ScriptedTransport(clock)
        dispatcher = Dispatcher(engine, settings(), {"slack": transport}, clock)

        clock.advance(LEASE / 2)  # while the lease runs, only the untouched row goes
        asyncio.run(dispatcher.drain())
        assert transport.delivered_ids() == [untouched]

        clock.set(NOW + timedelta(seconds=LEASE + 1))  # the dead dispatcher's lease has lapsed
        asyncio.run(dispatcher.drain())

        assert Counter(transport.delivered_ids()) == Counter(ids)
        assert len(transport.calls) == len(ids)
        for i in ids:
            stored = row(engine, i)
            assert stored.status == "sent"
            assert stored.platform_ref is not None and stored.platform_ref["message_id"] == i
        assert {r.attempts for r in rows(engine) if r.id in held} == {2}
    finally:
        engine.dispose()
