"""A dispatcher to kill: it claims due outbox rows, says which, then hangs before sending.

    python dispatch_victim.py claim    DB_URL NOW_ISO MARKER LIMIT LEASE_SECONDS
    python dispatch_victim.py dispatch DB_URL NOW_ISO MARKER LIMIT LEASE_SECONDS

``claim``: ``outbox.claim(...)`` then hang. ``dispatch``: a real ``Dispatcher`` (fake clock at
NOW) whose transport hangs inside its first ``send``. Either way MARKER is written (atomically,
as JSON) once the rows are claimed, and the process then sleeps until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HANG_SECONDS = 300


def write_marker(path: str, data: dict[str, Any]) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), **data}), encoding="utf-8")
    os.replace(tmp, path)


def hang() -> None:
    time.sleep(HANG_SECONDS)
    raise SystemExit("the victim was not killed")


class HangingTransport:
    channel = "slack"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    async def send(self, message: Any) -> dict[str, Any]:
        write_marker(self.marker, {"in_flight": message.id})
        hang()  # blocks the event loop on purpose: the process dies mid-send
        raise AssertionError("unreachable")


def main(argv: list[str]) -> None:
    mode, url, now_iso, marker, limit, lease = argv
    from credit.store import outbox
    from credit.store.db import make_engine

    engine = make_engine(url)
    now = datetime.fromisoformat(now_iso)
    if mode == "claim":
        rows = outbox.claim(
            engine, now, limit=int(limit), lease_seconds=int(lease), channels=["slack"]
        )
        write_marker(marker, {"claimed": [r.id for r in rows]})
        hang()
    elif mode == "dispatch":
        from credit.settings import OutboxSettings, Settings
        from jobs.clock import FakeClock
        from jobs.dispatch import Dispatcher

        settings = Settings(
            outbox=OutboxSettings(
                channels=["slack"], batch_size=int(limit), lease_seconds=int(lease)
            ),
            slack={"bot_token": "xoxb-fake-0000-token", "signing_secret": "test-signing-secret"},
        )
        clock = FakeClock(now)
        dispatcher = Dispatcher(engine, settings, {"slack": HangingTransport(marker)}, clock)
        asyncio.run(dispatcher.dispatch_once())
        raise SystemExit("the dispatcher finished without sending anything")
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
