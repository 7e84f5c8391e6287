"""Pacing for outgoing messages: a global rate per channel, a gap per recipient, pauses.

Times are seconds on the dispatcher's clock (``clock.now().timestamp()``), so tests that move
a fake clock see exact schedules.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Pacer:
    """Books send slots: at most ``per_second`` overall, ``per_key_interval`` s apart per key.

    ``reserve(key, now)`` returns the moment the send may go (>= now) and books it, so
    concurrent callers get distinct slots; ``pause_until`` (after a 429) holds every slot.
    """

    per_second: float
    per_key_interval: float
    _next_global: float = 0.0
    _next_for: dict[str, float] = field(default_factory=dict)
    _paused_until: float = 0.0

    def reserve(self, key: str, now: float) -> float:
        at = max(now, self._next_global, self._paused_until, self._next_for.get(key, 0.0))
        self._next_global = at + 1.0 / self.per_second
        self._next_for[key] = at + self.per_key_interval
        return at

    def pause_until(self, moment: float) -> None:
        self._paused_until = max(self._paused_until, moment)
        self._next_global = max(self._next_global, moment)

    def forget_idle(self, now: float) -> None:
        """Drop per-key bookings already in the past (keeps memory flat)."""
        self._next_for = {k: v for k, v in self._next_for.items() if v > now}
