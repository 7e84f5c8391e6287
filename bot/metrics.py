"""Prometheus metrics: what the process counts, and what the database holds at scrape time.

Counted in this process (``REGISTRY``, a registry of our own, so a test can read values with
``REGISTRY.get_sample_value`` and several apps in one process share the counters):

* ``creditbot_messages_sent_total{channel}``, ``…_failed_total``, ``…_dead_total``,
  ``…_rate_limited_total`` and ``…_retried_total``: the dispatcher's outcomes
  (``jobs.dispatch``). ``failed``: a permanent error (or no chat identity: channel
  ``unroutable``); ``dead``: gave up after ``max_attempts``; ``rate_limited``: a 429, put back
  without counting an attempt; ``retried``: a transient error, retried with backoff.
* ``creditbot_scan_duration_seconds``: one receivables scan (``jobs.tasks.scan_job``).
* ``creditbot_approval_decision_seconds{status}``: from a shipment request's creation to its
  decision (``approved``/``rejected``) or lapse (``expired``), observed when the decided
  request's cards are updated (``bot.approval_cards.update_card_copies``: the one place every
  channel's decision goes through).
* ``creditbot_http_request_duration_seconds{route,method,status}``: each HTTP request, by
  route template (``/api/v1/shipment-requests/{request_id:int}``, ``unmatched`` for anything
  no route serves), through ``HttpMetrics`` — for Slack, the click-to-ack latency.
* The process collectors (CPU, memory, file descriptors, GC, Python version).

Read from the database at scrape time (``DatabaseCollector``: correct with several replicas,
since every replica reports the same shared state):

* ``creditbot_outbox_messages{channel,status}``: outbox rows waiting (``pending``), leased
  by a dispatcher (``sending``), or given up on (``failed``, ``dead``) — the queue depth.
* ``creditbot_approvals_pending``: shipment requests waiting for a decision.
* ``creditbot_database_up``: 1 when those queries answered, else 0 (the gauges above are
  then left out rather than reported as zero).

This module never logs or exports a URL, a token or a query's parameters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

MESSAGES_SENT = Counter(
    "creditbot_messages_sent_total",
    "Outbox messages delivered, by channel.",
    ["channel"],
    registry=REGISTRY,
)
MESSAGES_FAILED = Counter(
    "creditbot_messages_failed_total",
    "Outbox messages failed for good at once (a permanent error or no chat identity).",
    ["channel"],
    registry=REGISTRY,
)
MESSAGES_DEAD = Counter(
    "creditbot_messages_dead_total",
    "Outbox messages given up on after max_attempts transient failures.",
    ["channel"],
    registry=REGISTRY,
)
MESSAGES_RATE_LIMITED = Counter(
    "creditbot_messages_rate_limited_total",
    "Sends refused by the platform's rate limit (HTTP 429); the message waits Retry-After.",
    ["channel"],
    registry=REGISTRY,
)
MESSAGES_RETRIED = Counter(
    "creditbot_messages_retried_total",
    "Sends that failed transiently and were rescheduled with backoff.",
    ["channel"],
    registry=REGISTRY,
)
# how a given-up message is counted: jobs.dispatch's status -> counter
GIVEN_UP = {"failed": MESSAGES_FAILED, "dead": MESSAGES_DEAD}

SCAN_DURATION = Histogram(
    "creditbot_scan_duration_seconds",
    "How long one receivables scan took.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)

_MINUTE, _HOUR = 60.0, 3600.0
_DECISION_BUCKETS = (
    _MINUTE, 5 * _MINUTE, 15 * _MINUTE, 30 * _MINUTE, _HOUR, 2 * _HOUR, 4 * _HOUR,
    8 * _HOUR, 12 * _HOUR, 24 * _HOUR, 48 * _HOUR, 72 * _HOUR, 168 * _HOUR,
)  # fmt: skip
APPROVAL_DECISION = Histogram(
    "creditbot_approval_decision_seconds",
    "From a shipment request's creation to its decision (approved/rejected) or lapse (expired).",
    ["status"],
    buckets=_DECISION_BUCKETS,
    registry=REGISTRY,
)
DECISION_STATUSES = frozenset({"approved", "rejected", "expired"})

HTTP_REQUEST_DURATION = Histogram(
    "creditbot_http_request_duration_seconds",
    "HTTP requests by route template, method and status (Slack: click-to-ack latency).",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10),
    registry=REGISTRY,
)
UNMATCHED_ROUTE = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def observe_approval_decision(
    status: str, created_at: datetime | None, decided_at: datetime | None
) -> None:
    """Record one request's decision latency (``status``: approved, rejected or expired)."""
    if status not in DECISION_STATUSES or created_at is None or decided_at is None:
        return
    seconds = (_aware(decided_at) - _aware(created_at)).total_seconds()
    APPROVAL_DECISION.labels(status).observe(max(0.0, seconds))


# --- read from the database at scrape time ---------------------------------------------------

OUTBOX_STATUSES = ("pending", "sending", "failed", "dead")


class DatabaseCollector(Collector):
    """Outbox queue depth and pending approvals, counted in the database at each scrape."""

    def __init__(self, engine: Engine, channels: Sequence[str] = ()) -> None:
        self.engine = engine
        # these channels report every status, 0 when no row has it (a series that appears
        # and vanishes with its rows is hard to alert on)
        self.channels = tuple(channels)

    def describe(self) -> Iterable[Metric]:
        return []  # nothing is queried at registration

    def collect(self) -> Iterable[Metric]:
        from credit.store.models import OutboxMessage, ShipmentRequest

        up = GaugeMetricFamily(
            "creditbot_database_up", "1 when the database answered the scrape's queries."
        )
        try:
            with self.engine.connect() as conn:
                depth = conn.execute(
                    select(OutboxMessage.channel, OutboxMessage.status, func.count())
                    .where(OutboxMessage.status.in_(OUTBOX_STATUSES))  # type: ignore[attr-defined]
                    .group_by(OutboxMessage.channel, OutboxMessage.status)
                ).all()
                pending = conn.execute(
                    select(func.count())
                    .select_from(ShipmentRequest)
                    .where(ShipmentRequest.status == "pending")
                ).scalar_one()
        except Exception as exc:  # the server away: say so, never the URL
            log.warning("metrics: database query failed: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        queue = GaugeMetricFamily(
            "creditbot_outbox_messages",
            "Outbox rows by channel and status (pending, sending, failed, dead).",
            labels=["channel", "status"],
        )
        counted = {(ch, st): 0 for ch in self.channels for st in OUTBOX_STATUSES}
        counted.update({(channel, status): count for channel, status, count in depth})
        for (channel, status), count in sorted(counted.items()):
            queue.add_metric([channel, status], count)
        yield queue
        approvals = GaugeMetricFamily(
            "creditbot_approvals_pending", "Shipment requests waiting for a decision."
        )
        approvals.add_metric([], pending)
        yield approvals


def database_registry(engine: Engine, channels: Sequence[str] = ()) -> CollectorRegistry:
    """A registry holding just ``DatabaseCollector(engine, channels)`` (one per HTTP app)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(engine, channels))
    return registry


def exposition(*registries: CollectorRegistry) -> bytes:
    """The Prometheus text format of ``REGISTRY`` and ``registries`` (their names differ)."""
    return b"".join(generate_latest(r) for r in (REGISTRY, *registries))


# --- HTTP request duration -------------------------------------------------------------------


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str | None:
    """The template of the route that serves ``scope`` (a full match, else a partial one:
    the path is known but not the method), mounts included; None when nothing matches."""
    partial: str | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        path = getattr(route, "path", "")
        if isinstance(route, Mount):
            inner = route_template(route.routes, {**scope, **child})
            if inner is None:
                continue
            found = path + inner
        else:
            found = path
        if match is Match.FULL:
            return found
        partial = partial or found
    return partial


class HttpMetrics:
    """ASGI middleware: times each HTTP request into ``creditbot_http_request_duration_seconds``
    (from the request's arrival to the end of its response)."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        # before the app runs: the router rewrites the scope's root_path for a mount
        route = route_template(self.routes, scope) or UNMATCHED_ROUTE
        status = 500  # unless the app starts a response

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            method = scope.get("method", "")
            HTTP_REQUEST_DURATION.labels(
                route, method if method in _METHODS else "other", str(status)
            ).observe(time.perf_counter() - start)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """A value of ``REGISTRY`` (0 when not yet observed), e.g.
    ``sample("creditbot_messages_sent_total", {"channel": "slack"})``."""
    value = REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


__all__ = [
    "APPROVAL_DECISION",
    "CONTENT_TYPE_LATEST",
    "GIVEN_UP",
    "HTTP_REQUEST_DURATION",
    "MESSAGES_DEAD",
    "MESSAGES_FAILED",
    "MESSAGES_RATE_LIMITED",
    "MESSAGES_RETRIED",
    "MESSAGES_SENT",
    "REGISTRY",
    "SCAN_DURATION",
    "DatabaseCollector",
    "HttpMetrics",
    "database_registry",
    "exposition",
    "generate_latest",
    "observe_approval_decision",
    "route_template",
    "sample",
]
