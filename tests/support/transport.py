"""A scripted stand-in for a chat platform, for dispatcher tests.

``ScriptedTransport`` implements the ``Transport`` protocol. Every call is recorded with the
clock's time at the moment of the send; the payload is composed into a ``Message`` first (as
the real transports do), so a payload the composer cannot read fails loudly. Errors are
scripted per message id (``fail(id, ...)``) or for any message (``fail_any(...)``); ``None``
in a script means "this attempt goes through".
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bot.compose import compose
from bot.messages import Message
from bot.transports.base import Outgoing


class Clockish(Protocol):
    def now(self) -> datetime: ...


@dataclass(frozen=True)
class Call:
    message_id: int
    kind: str
    recipient: str | None  # the address' code
    at: datetime  # clock.now() when send was called
    delivered: bool
    error: str | None
    message: Message
    ref: dict[str, Any] | None  # what send returned (None when it raised)


class ScriptedTransport:
    def __init__(self, clock: Clockish, channel: str = "slack") -> None:
        self.channel = channel
        self.clock = clock
        self.calls: list[Call] = []
        self._per_id: dict[int, deque[BaseException | None]] = defaultdict(deque)
        self._any: deque[BaseException | None] = deque()

    # --- scripting ---------------------------------------------------------------------------

    def fail(self, message_id: int, *errors: BaseException | None) -> None:
        """The next attempts to send ``message_id`` raise ``errors`` in order."""
        self._per_id[message_id].extend(errors)

    def fail_any(self, *errors: BaseException | None) -> None:
        """The next sends (of any message without its own script) raise ``errors`` in order."""
        self._any.extend(errors)

    # --- what happened -------------------------------------------------------------------------

    @property
    def delivered(self) -> list[Call]:
        return [c for c in self.calls if c.delivered]

    def delivered_ids(self) -> list[int]:
        return [c.message_id for c in self.delivered]

    def attempts_for(self, message_id: int) -> list[Call]:
        return [c for c in self.calls if c.message_id == message_id]

    # --- the protocol ----------------------------------------------------------------------------

    async def send(self, message: Outgoing) -> dict[str, Any]:
        at = self.clock.now()
        rendered = compose(message.payload, message.address.get("locale"))
        script = self._per_id.get(message.id)
        error = script.popleft() if script else (self._any.popleft() if self._any else None)
        n = len(self.delivered) + 1
        ref = (
            None
            if error is not None
            else {"channel": self.channel, "ts": f"1700000000.{n:06d}", "message_id": message.id}
        )
        self.calls.append(
            Call(
                message.id,
                message.kind,
                message.address.get("code"),
                at,
                error is None,
                None if error is None else repr(error),
                rendered,
                ref,
            )
        )
        if error is not None:
            raise error
        assert ref is not None
        return ref
