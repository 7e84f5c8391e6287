"""Message strings per locale (``templates/i18n/<locale>.toml``) and Babel formatting."""

from __future__ import annotations

import os
import tomllib
from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.dates import format_date
from babel.numbers import format_currency


def _templates_dir() -> Path:
    """``$CREDITBOT_TEMPLATES``, else ``templates/`` beside the source tree (a checkout or an
    editable install), else ``./templates`` (the container's working directory)."""
    if os.environ.get("CREDITBOT_TEMPLATES"):
        return Path(os.environ["CREDITBOT_TEMPLATES"])
    beside = Path(__file__).resolve().parent.parent / "templates"
    return beside if beside.is_dir() else Path.cwd() / "templates"


TEMPLATES = _templates_dir()
DEFAULT_LOCALE = "en"


def normalise_locale(locale: str | None) -> str:
    """``zh-CN``/``zh_cn``/``zh`` → ``zh_CN``; unknown locales fall back to English."""
    raw = (locale or DEFAULT_LOCALE).replace("-", "_")
    lang, _, region = raw.partition("_")
    candidate = f"{lang.lower()}_{region.upper()}" if region else lang.lower()
    if candidate == "zh":
        candidate = "zh_CN"
    return candidate if (TEMPLATES / "i18n" / f"{candidate}.toml").exists() else DEFAULT_LOCALE


@lru_cache(maxsize=16)
def catalog(locale: str) -> dict[str, Any]:
    with open(TEMPLATES / "i18n" / f"{normalise_locale(locale)}.toml", "rb") as fh:
        strings = tomllib.load(fh)
    if locale != DEFAULT_LOCALE:
        fallback = catalog(DEFAULT_LOCALE)
        tiers = {**fallback["tiers"], **strings.get("tiers", {})}
        strings = {**fallback, **strings, "tiers": tiers}
    return strings


class Translator:
    def __init__(self, locale: str | None) -> None:
        self.locale = normalise_locale(locale)
        self.strings = catalog(self.locale)

    def __call__(self, key: str, **values: Any) -> str:
        return str(self.strings[key]).format(**values)

    def tier(self, name: str, fallback: str = "") -> str:
        return self.strings["tiers"].get(name) or fallback or name

    def money(self, amount: str | Decimal, currency: str) -> str:
        return format_currency(Decimal(amount), currency, locale=self.locale)

    def totals(self, totals: dict[str, str]) -> str:
        return " + ".join(self.money(v, cur) for cur, v in sorted(totals.items())) or "—"

    def date(self, value: str | date) -> str:
        day = date.fromisoformat(value) if isinstance(value, str) else value
        return format_date(day, format="medium", locale=self.locale)

    def days_text(self, days: int) -> str:
        if days > 0:
            return self("days_overdue", days=days)
        if days == 0:
            return self("days_due_today")
        return self("days_due_in", days=-days)
