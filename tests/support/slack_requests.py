"""What the Slack tests share: signing requests as Slack does, and waiting for Bolt's
listeners (which run after the HTTP answer) without sleeping."""

from __future__ import annotations

import hashlib
import hmac
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures


def slack_signature(body: str, ts: str, secret: str) -> dict[str, str]:
    """The two headers Slack signs a request with: ``v0=`` HMAC-SHA256 of ``v0:ts:body``."""
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


class TrackingExecutor(ThreadPoolExecutor):
    """Bolt's listener executor: remembers its work so a test can wait for it (and re-raise
    its errors)."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.futures: list[Future] = []

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        future = super().submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future

    def drain(self, timeout: float = 10.0) -> None:
        done, pending = wait_futures(list(self.futures), timeout=timeout)
        assert not pending, "listeners still running"
        for future in done:
            future.result()
