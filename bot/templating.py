"""The Jinja environment every channel renders its templates in (``templates/``)."""

from __future__ import annotations

from collections.abc import Callable

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from bot.i18n import TEMPLATES


def template_env(**filters: Callable[[str], str]) -> Environment:
    """Templates from ``TEMPLATES``, an undefined name an error, no auto-escaping (each
    channel escapes with its own filter, passed here), text kept as written."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=False,
        keep_trailing_newline=True,
    )
    env.filters.update(filters)
    return env
