"""A ``Message`` as Telegram HTML: one or more texts of at most 4,096 characters, and an
inline keyboard on the last one.

Layout (``templates/telegram/message.html.j2``): the title in bold, the summary, per section
the heading in bold, its text, facts ("label: value"), lines ("• …") and "… and N more" in
italics; the footer in italics. Every value is escaped for Telegram HTML (``&``, ``<``, ``>``),
and the template keeps each line's tags balanced within that line.

Telegram's limits (https://core.telegram.org/bots/api#sendmessage): 4,096 characters of text
after the markup is parsed out, 1,024 of a caption, 1–64 bytes of ``callback_data``. We measure
the HTML (always at least as long as what Telegram counts) in UTF-16 code units (at least the
number of characters, whatever Telegram counts in), split on line boundaries into several
messages when it is longer, and cut a single over-long line with "…" (closing its open tags).

Buttons: the section buttons, then the message buttons, at most two to a row, each section's
starting a new row; labels are plain text clipped to 64 characters. ``callback_data`` is an
opaque token from ``token_for(button)`` (the server keeps what it stands for, since a client
can forge callback data); a token outside 1–64 bytes is a ``ValueError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from jinja2 import Environment
from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.i18n import Translator
from bot.messages import Button, Message
from bot.templating import template_env

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_BUTTON_TEXT = 64
MAX_CALLBACK_DATA = 64  # bytes of UTF-8
BUTTONS_PER_ROW = 2
ELLIPSIS = "…"

# What our template emits: a tag, a character reference, or one character.
_TOKEN = re.compile(r"<[^<>]*>|&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z]+);|.", re.DOTALL)


@dataclass(frozen=True, slots=True)
class TelegramPart:
    """One Telegram message: HTML text, and the inline keyboard (on the last part only)."""

    text: str
    keyboard: InlineKeyboardMarkup | None = None


def escape_html(text: object) -> str:
    """Telegram HTML's escaping for text: ``&``, ``<`` and ``>``."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _oneline(text: object) -> str:
    return re.sub(r"\s*\n\s*", " ", str(text)).strip()


def text_length(text: str) -> int:
    """Length in UTF-16 code units: never less than the characters Telegram counts."""
    return len(text.encode("utf-16-le")) // 2


@lru_cache(maxsize=1)
def _env() -> Environment:
    return template_env(html=escape_html, oneline=_oneline)


def render_text(message: Message) -> str:
    """The whole message as one Telegram HTML string (no keyboard, no length limit)."""
    t = Translator(message.locale)
    first = message.sections[0].lines[:1] if message.sections else []
    summary = "" if message.summary in (message.title, *first) else message.summary
    html = (
        _env()
        .get_template("telegram/message.html.j2")
        .render(m=message, summary=summary, more_text=lambda n: t("more", count=n))
    )
    return html.strip("\n")


def cut_line(line: str, limit: int) -> str:
    """``line`` cut to ``limit`` with "…", never inside a tag or entity; open tags are closed."""
    if text_length(line) <= limit:
        return line
    kept: list[str] = []
    used = 0
    open_tags: list[str] = []
    for m in _TOKEN.finditer(line):
        token = m.group()
        tags = list(open_tags)
        if token.startswith("</"):
            if tags:
                tags.pop()
        elif token.startswith("<") and token.endswith(">"):
            tags.append(token[1:-1].split()[0].lower())
        closers = sum(len(f"</{tag}>") for tag in tags)
        if used + text_length(token) + len(ELLIPSIS) + closers > limit:
            break
        kept.append(token)
        used += text_length(token)
        open_tags = tags
    return "".join(kept) + ELLIPSIS + "".join(f"</{tag}>" for tag in reversed(open_tags))


def split_html(html: str, limit: int = MAX_TEXT) -> list[str]:
    """``html`` in pieces of at most ``limit``, cut between lines (the newline at each cut is
    dropped, so ``"\\n".join(pieces) == html`` when no single line was too long)."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in html.split("\n"):
        line = cut_line(line, limit)
        extra = text_length(line) + (1 if current else 0)
        if current and size + extra > limit:
            pieces.append("\n".join(current))
            current, size = [line], text_length(line)
        else:
            current.append(line)
            size += extra
    if current:
        pieces.append("\n".join(current))
    return [p for p in pieces if p.strip()]  # Telegram refuses a blank message


def clip_html(html: str, limit: int = MAX_TEXT) -> str:
    """The lines of ``html`` that fit in ``limit``, then "…" when some were left out."""
    if text_length(html) <= limit:
        return html
    head = split_html(html, limit - 2)[0]
    return f"{head}\n{ELLIPSIS}"


def clip_plain(text: str, limit: int) -> str:
    """Plain text within ``limit`` (UTF-16 units), cut with "…"."""
    if text_length(text) <= limit:
        return text
    out = text[: limit - 1]
    while text_length(out) > limit - 1:
        out = out[:-1]
    return out + ELLIPSIS


def message_buttons(message: Message) -> list[Button]:
    """Every button of ``message``, in keyboard order (sections first)."""
    return [b for s in message.sections for b in s.buttons] + list(message.buttons)


def render_keyboard(
    message: Message, token_for: Callable[[Button], str]
) -> InlineKeyboardMarkup | None:
    """The inline keyboard: two buttons a row, each section's buttons on rows of their own."""
    groups = [s.buttons for s in message.sections] + [message.buttons]
    rows: list[list[InlineKeyboardButton]] = []
    for buttons in groups:
        for start in range(0, len(buttons), BUTTONS_PER_ROW):
            rows.append([_button(b, token_for) for b in buttons[start : start + BUTTONS_PER_ROW]])
    return InlineKeyboardMarkup(rows) if rows else None


def _button(button: Button, token_for: Callable[[Button], str]) -> InlineKeyboardButton:
    data = token_for(button)
    size = len(data.encode("utf-8"))
    if not 1 <= size <= MAX_CALLBACK_DATA:
        raise ValueError(
            f"callback_data for button {button.action_id!r} is {size} bytes; Telegram takes "
            f"1–{MAX_CALLBACK_DATA}"
        )
    label = _oneline(button.label) or button.action_id
    return InlineKeyboardButton(clip_plain(label, MAX_BUTTON_TEXT), callback_data=data)


def render_parts(message: Message, token_for: Callable[[Button], str]) -> list[TelegramPart]:
    """``message`` as Telegram messages to send in order; the keyboard rides on the last."""
    keyboard = render_keyboard(message, token_for)
    texts = split_html(render_text(message))
    if not texts:  # nothing but blanks: Telegram refuses an empty text
        texts = [clip_html(escape_html(message.summary.strip() or ELLIPSIS))]
    *head, last = texts
    return [TelegramPart(text) for text in head] + [TelegramPart(last, keyboard)]
