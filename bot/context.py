"""What every command needs: the settings and an engine, built once per invocation."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine

from credit.settings import Settings, load_settings
from credit.store.db import make_engine


@dataclass
class AppContext:
    config_path: str | None = None
    _settings: Settings | None = field(default=None, repr=False)

    @cached_property
    def settings(self) -> Settings:
        return self._settings or load_settings(self.config_path)

    @cached_property
    def engine(self) -> Engine:
        db = self.settings.database
        return make_engine(db.url, busy_timeout_ms=db.busy_timeout_ms, echo=db.echo)
