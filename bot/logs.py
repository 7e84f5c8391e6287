"""Logging for ``creditbot run`` and ``serve``: text for a terminal or JSON lines for a log
collector (``[logging] format``), secrets redacted in both.

``configure_logging(settings)`` puts one handler on the root logger (replacing whatever was
there: calling it again does not duplicate lines) at ``[logging] level``; uvicorn's loggers
lose their own handlers and propagate to it. Give uvicorn ``log_config=uvicorn_log_config()``
so that it does not install its handlers again.

Redaction is applied to the final text of each record — message, arguments, exception and
stack text — and, in JSON, to every string of every field (``extra`` ones too):

* every secret of the settings: each ``SecretStr`` anywhere in them (Slack's tokens and
  signing secret, Telegram's token and webhook secret, the API keys, HMAC and callback
  secrets) and the password in ``[database] url``, also URL-encoded;
* patterns for secrets the settings do not know: Slack tokens (``xoxb-…``, ``xapp-…``),
  Telegram bot tokens (``/bot123456:ABC…/`` in the URLs httpx logs at INFO, and bare),
  ``Authorization``/``X-API-Key`` header values, ``Bearer …``, ``password=…``/``token=…``
  pairs and the password in ``scheme://user:password@host``.

Each becomes ``***`` (a token's kind prefix is kept: ``xoxb-***``, ``/bot***``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, SecretStr
from sqlalchemy.engine import make_url

from credit.settings import Settings

REDACTED = "***"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Slack: bot, user, app-level, refresh, config tokens
    (re.compile(r"\b(xox[abposre]|xapp)-[A-Za-z0-9-]+"), rf"\1-{REDACTED}"),
    # Telegram: the token in the Bot API's URLs, then a bare one
    (re.compile(r"/bot\d+:[A-Za-z0-9_-]+"), f"/bot{REDACTED}"),
    (re.compile(r"(?<![A-Za-z0-9_])\d{5,20}:[A-Za-z0-9_-]{30,}"), REDACTED),
    # header values, as text ("Authorization: Bearer …") or a dict's repr ('x-api-key': '…')
    (
        re.compile(
            r"(?i)\b((?:proxy-)?authorization|x-api-key|x-telegram-bot-api-secret-token)"
            r"""(["']?\s*[:=]\s*["']?)((?:bearer|basic|token|bot)\s+)?[^\s"',;}]+"""
        ),
        rf"\1\2\3{REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    # key=value pairs (query strings, DSNs)
    (
        re.compile(
            r"(?i)((?<![A-Za-z0-9])(?:password|passwd|pwd|secret|token|api[_-]?key)=)"
            r"""[^\s&;,'"]+"""
        ),
        rf"\1{REDACTED}",
    ),
    # scheme://user:password@host (the password may hold an unencoded @)
    (
        re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/?#@\s]*):[^\s/?#]*@"),
        rf"\1:{REDACTED}@",
    ),
)


def _secrets_in(value: Any) -> Iterator[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secrets_in(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secrets_in(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _secrets_in(item)


def secret_values(settings: Settings) -> list[str]:
    """Every secret in ``settings``: each ``SecretStr`` (nested models and lists included)
    and the database URL's password — as given and URL-encoded; longest first."""
    found = set(_secrets_in(settings))
    try:
        url = make_url(settings.database.url)
    except Exception:  # not a URL SQLAlchemy reads: the patterns still cover user:pw@
        url = None
    if url is not None and url.password:
        found.add(str(url.password))
    encoded = {form for s in found for form in (quote(s, safe=""), quote_plus(s))}
    return sorted({s for s in found | encoded if s}, key=lambda s: (-len(s), s))


class Redactor:
    """Replaces the given secrets, and the patterns above, by ``***`` in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, values))) if values else None

    def __call__(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub(REDACTED, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def deep(self, value: Any) -> Any:
        """``value`` made JSON-safe (anything else becomes its ``str``), strings redacted."""
        if isinstance(value, str):
            return self(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, dict):
            return {self(str(k)): self.deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.deep(v) for v in value]
        try:
            return self(str(value))
        except Exception:  # a __str__ that raises must not lose the line
            return f"<unprintable {type(value).__name__}>"


def _utc_iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


# the attributes every LogRecord has: anything else came in through ``extra``
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's copy of the message with terminal colours
}


class TextFormatter(logging.Formatter):
    """``2026-11-25T02:00:00.123+00:00 INFO creditbot.jobs: message`` (UTC), redacted."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redactor = redactor

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_iso(record.created)

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO-8601), ``level``, ``logger``, ``message``,
    ``exc_info`` and ``stack_info`` when present, then the record's ``extra`` fields (never
    overriding those); every string redacted."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception as exc:  # bad %-arguments: keep what there is
            message = f"{record.msg!s} (formatting failed: {type(exc).__name__})"
        entry: dict[str, Any] = {
            "ts": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        return json.dumps(self.redactor.deep(entry), ensure_ascii=False)


_HANDLER_MARK = "_creditbot_handler"


def make_handler(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """The handler ``configure_logging`` installs (for ``stream``, default stderr)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    redactor = Redactor(secret_values(settings))
    if settings.logging.format == "json":
        handler.setFormatter(JsonFormatter(redactor))
    else:
        handler.setFormatter(TextFormatter(redactor))
    setattr(handler, _HANDLER_MARK, True)
    return handler


def configure_logging(settings: Settings, *, stream: IO[str] | None = None) -> None:
    """Send every log record through one redacting handler on the root logger, in
    ``[logging] format`` at ``[logging] level``. Idempotent: the root logger's handlers are
    replaced, not added to; uvicorn's loggers drop their own handlers and propagate."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if getattr(old, _HANDLER_MARK, False):
            old.close()
    root.addHandler(make_handler(settings, stream))
    root.setLevel(settings.logging.level)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
        logger.disabled = False


def uvicorn_log_config() -> dict[str, Any]:
    """For ``uvicorn.Config(log_config=...)``: uvicorn's loggers keep no handlers of their own
    and propagate to the root logger's (``configure_logging``). Incremental, so applying it
    neither closes nor replaces any handler. (The empty formatters are there for uvicorn's
    ``use_colors``, which it writes into them; an incremental config ignores them.)"""
    return {
        "version": 1,
        "incremental": True,
        "formatters": {"default": {}, "access": {}},
        "loggers": {name: {"propagate": True} for name in UVICORN_LOGGERS},
    }


__all__ = [
    "REDACTED",
    "JsonFormatter",
    "Redactor",
    "TextFormatter",
    "configure_logging",
    "make_handler",
    "secret_values",
    "uvicorn_log_config",
]
