"""Pacing for outgoing messages: a global rate per channel, a gap per recipient, pauses.

Times are seconds on the dispatcher's clock (``clock.now().timestamp()``), so tests that move
a fake clock see exact schedules.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

_EPSILON = 1e-6  # clock readings near 1.8e9 s are exact to ~2e-7 s only


def earliest_free_slot(booked: list[float], at: float, gap: float) -> float:
    """The first moment from ``at`` that is at least ``gap`` from every slot in ``booked``
    (sorted): the earliest free gap, not the end of the queue."""
    while True:
        i = bisect.bisect_right(booked, at - gap + _EPSILON)
        if i < len(booked) and booked[i] < at + gap - _EPSILON:
            at = booked[i] + gap
            continue
        return at


@dataclass
class Pacer:
    """Books send slots: at most ``per_second`` overall, ``per_key_interval`` s apart per key.

    ``reserve(key, now)`` returns the moment the send may go (>= now) and books it, so
    concurrent callers get distinct slots. Overall slots fill the earliest free gap: a key
    booked a second ahead does not hold the other keys up behind it. ``settle(key, at)`` moves
    a key's next slot to ``per_key_interval`` after ``at`` (when the send was answered), so a
    send that took long, or reached the platform late, still leaves the full gap before the
    next one. ``pause_until`` (after a 429) holds every slot.
    """

    per_second: float
    per_key_interval: float
    _booked: list[float] = field(default_factory=list)  # overall: every booked slot, sorted
    _next_for: dict[str, float] = field(default_factory=dict)
    _paused_until: float = 0.0

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def reserve(self, key: str, now: float, latest: float | None = None) -> float:
        """The first free slot for ``key`` at or after ``now``; booked unless it is after
        ``latest`` (then it is only returned: the caller gives the send back)."""
        gap = 1.0 / self.per_second
        del self._booked[: bisect.bisect_left(self._booked, now - gap)]
        at = earliest_free_slot(
            self._booked, max(now, self._paused_until, self._next_for.get(key, 0.0)), gap
        )
        if latest is not None and at > latest:
            return at
        bisect.insort(self._booked, at)
        self._next_for[key] = at + self.per_key_interval
        return at

    def settle(self, key: str, at: float) -> None:
        """The send booked for ``key`` was answered at ``at``: the next one waits the full
        gap from then."""
        self._next_for[key] = max(self._next_for.get(key, 0.0), at + self.per_key_interval)

    def pause_until(self, moment: float) -> None:
        self._paused_until = max(self._paused_until, moment)

    def forget_idle(self, now: float) -> None:
        """Drop per-key bookings already in the past (keeps memory flat)."""
        self._next_for = {k: v for k, v in self._next_for.items() if v > now}
