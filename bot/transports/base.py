"""What a transport is, and the three ways a send can fail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class SendError(Exception):
    """A send did not go through."""


class TransientSendError(SendError):
    """Worth trying again later (timeouts, 5xx, dropped connections)."""


class PermanentSendError(SendError):
    """Trying again will not help (unknown channel, revoked token, bot blocked by the user)."""

    def __init__(self, reason: str, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable  # the person cannot be reached on this channel


class RateLimited(SendError):
    """The platform said 429: wait ``retry_after`` seconds (for the whole channel)."""

    def __init__(self, retry_after: float, detail: str = "") -> None:
        super().__init__(f"rate limited, retry after {retry_after}s {detail}".strip())
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One claimed outbox row, as a transport sees it."""

    id: int
    kind: str
    address: dict[str, Any]  # the recipient's identities: slack_user_id, telegram_chat_id, …
    payload: dict[str, Any]
    platform_ref: dict[str, Any] | None = None


class Transport(Protocol):
    channel: str

    async def send(self, message: Outgoing) -> dict[str, Any]:
        """Deliver ``message``; return the platform's reference (to update it later)."""
        ...
