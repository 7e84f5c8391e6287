"""The transport-neutral message: what we say, before a channel decides how it looks.

Outbox rows carry domain data (``payload``); ``bot.compose`` turns a payload into a
``Message`` in the recipient's language, and each channel renders a ``Message`` from its
templates in ``templates/`` (console text here; Slack Block Kit and Telegram HTML in their
adapters).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Fact:
    label: str
    value: str


@dataclass(frozen=True, slots=True)
class Button:
    label: str
    action_id: str  # e.g. "ack", "promise", "dispute", "snooze", "approve", "reject"
    value: str  # what the action acts on (resolved and checked server-side)
    style: str | None = None  # "primary" | "danger" | None


@dataclass(slots=True)
class Section:
    heading: str
    text: str = ""
    facts: list[Fact] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    more: int = 0  # lines left out ("and N more")
    buttons: list[Button] = field(default_factory=list)


@dataclass(slots=True)
class Message:
    title: str
    summary: str  # one line: notification text and fallback for clients without rich text
    sections: list[Section] = field(default_factory=list)
    buttons: list[Button] = field(default_factory=list)
    footer: str = ""
    locale: str = "en"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
