"""A ``Message`` as Slack Block Kit: blocks plus the fallback text, within Slack's limits.

Layout: a header (the title), per section a section block (mrkdwn from
``templates/slack/section.mrkdwn.j2``), a context "… and N more" when lines were left out,
the section's buttons as an actions block; then the message's buttons and the footer.

Slack's limits (https://api.slack.com/reference/block-kit): 50 blocks a message, 3,000
characters of section text, 150 of header text, 75 of button text, 25 elements an actions
block, 255 characters in an ``action_id``/``block_id``. Trailing sections that do not fit are
dropped with "… and N more section(s)"; a section's text is cut on a line boundary and the
lines left out are counted in its "… and N more".
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import Environment

from bot.i18n import Translator
from bot.messages import Button, Message, Section
from bot.templating import template_env

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_ACTIONS_ELEMENTS = 25
MAX_ID = 255

Block = dict[str, Any]


def escape_mrkdwn(text: str) -> str:
    """Slack's escaping for text it parses: ``&``, ``<`` and ``>`` only."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@lru_cache(maxsize=1)
def _env() -> Environment:
    return template_env(mrkdwn=escape_mrkdwn)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def section_text(section: Section, lines: list[str] | None = None) -> str:
    """The section's mrkdwn (heading, text, facts, ``lines``; all of them by default)."""
    shown = section.lines if lines is None else lines
    rendered = _env().get_template("slack/section.mrkdwn.j2").render(s=section, lines=shown)
    return rendered.strip("\n")


def _fit_section(section: Section) -> tuple[str, int]:
    """Section text within 3,000 characters, and how many of its lines were left out."""
    text = section_text(section)
    if len(text) <= MAX_SECTION_TEXT:
        return text, 0
    lo, hi = 0, len(section.lines)  # the most lines that fit lies in [lo, hi)
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if len(section_text(section, section.lines[:mid])) <= MAX_SECTION_TEXT:
            lo = mid
        else:
            hi = mid
    text = section_text(section, section.lines[:lo])
    # still too long with no lines at all (a huge heading or text): cut it hard
    return _clip(text, MAX_SECTION_TEXT), len(section.lines) - lo


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "plain_text", "text": text, "emoji": True}]}


class _Ids:
    """Unique, bounded ``action_id``s: the button's id plus ``:n``."""

    def __init__(self) -> None:
        self.n = 0

    def action_id(self, base: str) -> str:
        self.n += 1
        suffix = f":{self.n}"
        return base[: MAX_ID - len(suffix)] + suffix


def _actions(buttons: list[Button], ids: _Ids) -> list[Block]:
    blocks = []
    for start in range(0, len(buttons), MAX_ACTIONS_ELEMENTS):
        elements = []
        for b in buttons[start : start + MAX_ACTIONS_ELEMENTS]:
            element: Block = {
                "type": "button",
                "text": {"type": "plain_text", "text": _clip(b.label, MAX_BUTTON_TEXT)},
                "action_id": ids.action_id(b.action_id),
                "value": b.value,
            }
            if b.style in ("primary", "danger"):
                element["style"] = b.style
            elements.append(element)
        blocks.append({"type": "actions", "elements": elements})
    return blocks


def render_blocks(message: Message) -> tuple[list[Block], str]:
    """Block Kit blocks for ``message`` and its fallback text (the summary)."""
    t = Translator(message.locale)
    ids = _Ids()
    head: list[Block] = []
    if message.title.strip():
        text = _clip(message.title, MAX_HEADER_TEXT)
        head.append({"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}})

    groups: list[list[Block]] = []
    for section in message.sections:
        text, cut = _fit_section(section)
        group: list[Block] = []
        if text.strip():
            group.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
        if section.more + cut > 0:
            group.append(_context(t("more", count=section.more + cut)))
        group += _actions(section.buttons, ids)
        if group:
            groups.append(group)

    tail = _actions(message.buttons, ids)
    if message.footer:
        tail.append(_context(message.footer))

    budget = MAX_BLOCKS - len(head) - len(tail)
    if sum(len(g) for g in groups) > budget:
        budget -= 1  # room for "… and N more section(s)"
        kept: list[list[Block]] = []
        for group in groups:
            if sum(len(g) for g in kept) + len(group) > budget:
                break
            kept.append(group)
        dropped = len(groups) - len(kept)
        groups = [*kept, [_context(t("more_sections", count=dropped))]]
    blocks = head + [b for g in groups for b in g] + tail
    if len(blocks) > MAX_BLOCKS:  # only with absurdly many message-level buttons
        blocks = [*blocks[: MAX_BLOCKS - 1], blocks[-1]] if message.footer else blocks[:MAX_BLOCKS]
    for n, block in enumerate(blocks):
        block["block_id"] = f"b{n}"
    return blocks, escape_mrkdwn(message.summary)
