"""The console transport: renders each message as text from ``templates/console``."""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Any, TextIO

from jinja2 import Environment

from bot.compose import compose
from bot.i18n import Translator
from bot.messages import Message
from bot.templating import template_env
from bot.transports.base import Outgoing


@lru_cache(maxsize=1)
def _env() -> Environment:
    return template_env()


def render_text(message: Message) -> str:
    t = Translator(message.locale)
    return (
        _env()
        .get_template("console/message.txt.j2")
        .render(m=message, more_text=lambda n: t("more", count=n))
    )


def chart_note(payload: dict[str, Any], locale: str | None = None) -> str:
    """``[chart: aging-<date>.png, N bytes]`` (the chart is drawn, not shown)."""
    from bot.charts import aging_chart, chart_filename

    try:
        png = aging_chart(payload, locale)
    except Exception as exc:  # a console line must not fail the message
        return f"[chart: failed: {type(exc).__name__}: {exc}]"
    return f"[chart: {chart_filename(payload)}, {len(png)} bytes]"


class ConsoleTransport:
    channel = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.sent = 0

    async def send(self, message: Outgoing) -> dict[str, Any]:
        rendered = render_text(compose(message.payload, message.address.get("locale")))
        to = message.address.get("name") or message.address.get("code") or "?"
        self.stream.write(f"\n>>> to {to} [{message.kind} #{message.id}]\n{rendered}")
        if message.kind == "digest":  # the chart a chat transport would attach
            self.stream.write(chart_note(message.payload, message.address.get("locale")) + "\n")
        self.stream.flush()
        self.sent += 1
        return {"channel": "console", "seq": self.sent}
