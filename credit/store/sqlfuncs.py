"""Small SQL helpers that read the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Date, Integer, literal
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class days_between(FunctionElement[int]):
    """``later - earlier`` in whole days, for a ``date`` parameter and a DATE column."""

    type = Integer()
    inherit_cache = True
    name = "days_between"


def days_since(column: Any, as_of: date) -> days_between:
    return days_between(literal(as_of, Date), column)


@compiles(days_between)
def _days_between_default(element: days_between, compiler: Any, **kw: Any) -> str:
    later, earlier = list(element.clauses)
    return f"(CAST({compiler.process(later, **kw)} AS DATE) - {compiler.process(earlier, **kw)})"


@compiles(days_between, "sqlite")
def _days_between_sqlite(element: days_between, compiler: Any, **kw: Any) -> str:
    later, earlier = list(element.clauses)
    return (
        f"CAST(julianday({compiler.process(later, **kw)}) - "
        f"julianday({compiler.process(earlier, **kw)}) AS INTEGER)"
    )


def insert_ignoring_duplicates(dialect_name: str, table: Any) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` for either engine."""
    if dialect_name == "postgresql":
        return pg_insert(table).on_conflict_do_nothing()
    return sqlite_insert(table).on_conflict_do_nothing()


class unindexed(FunctionElement[Any]):
    """A column the planner should not reach through an index (SQLite's unary ``+``): for
    filters that keep most rows, where a table scan beats an index walk."""

    inherit_cache = True
    name = "unindexed"

    @property
    def type(self) -> Any:  # the wrapped column's type, so comparisons bind alike
        return next(iter(self.clauses)).type


@compiles(unindexed)
def _unindexed_default(element: unindexed, compiler: Any, **kw: Any) -> str:
    return compiler.process(next(iter(element.clauses)), **kw)


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: unindexed, compiler: Any, **kw: Any) -> str:
    return "+" + compiler.process(next(iter(element.clauses)), **kw)
