"""What the Slack tests share: signing requests as Slack does, and waiting for Bolt's
listeners (which run after the HTTP answer) without sleeping."""

from __future__ import annotations

import hashlib
import hmac
import time
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


def block_actions_payload(
    *,
    user: str,
    channel: str,
    ts: str,
    text: str,
    blocks: list,
    button: dict,
    n: int,
    trigger: str = "1000",
    action_ts: str | None = None,
) -> dict:
    """A ``block_actions`` payload as Slack sends it: ``user`` presses ``button`` (with its
    ``block_id``) on the bot's message ``ts`` in ``channel``; ``n`` makes ids unique."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0000FAKE"},
        "api_app_id": "A0000FAKE",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": ts,
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "trigger_id": f"{trigger}.{n}.trigger",
        "team": {"id": "T0000FAKE", "domain": "fake"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "directmessage"},
        "message": {"type": "message", "user": "UBOT", "ts": ts, "text": text, "blocks": blocks},
        "response_url": "https://hooks.slack.invalid/actions/T0000FAKE/1/x",
        "actions": [
            {
                "type": "button",
                "action_id": button["action_id"],
                "block_id": button["block_id"],
                "text": button["text"],
                "value": button["value"],
                "action_ts": action_ts or f"{int(time.time())}.{n:06d}",
            }
        ],
    }
