"""Prometheus metrics (``bot.metrics``), on SQLite and PostgreSQL: the dispatcher's outcome
counters by channel, the queue depth and pending approvals read from the database at scrape
time, the approval decision latency, the scan duration and the HTTP request durations.

The counters and histograms live in one registry for the whole process, so each test reads
values before and after what it does and compares the difference.
"""

from __future__ import annotations

import asyncio
import io
from datetime import date, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from bot.api import api_routes
from bot.approval_cards import update_card_copies
from bot.http import create_app
from bot.metrics import sample
from bot.transports.base import PermanentSendError, RateLimited, TransientSendError
from bot.transports.console import ConsoleTransport
from credit.settings import ApiSettings, Settings
from credit.store import outbox
from credit.store.approval_notices import decide_from_card
from credit.store.approvals import approval_rows
from credit.store.db import read_session, write_session
from credit.store.demo import build_demo_ledger
from credit.store.models import Person, ShipmentRequest
from credit.store.outbox import NewMessage
from jobs import tasks
from jobs.clock import FakeClock
from jobs.dispatch import Dispatcher
from jobs.runtime import Runtime, install
from tests.support.approvals import build_ledger, raise_and_notify
from tests.support.outbox_data import NOW, put, reminders, rows, seed_people, settings
from tests.support.transport import ScriptedTransport

OUTCOMES = ("sent", "failed", "dead", "rate_limited", "retried")


def counts(channel: str) -> dict[str, float]:
    return {o: sample(f"creditbot_messages_{o}_total", {"channel": channel}) for o in OUTCOMES}


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics, parsed: (sample name, sorted labels) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# --- the dispatcher's outcomes ---------------------------------------------------------------


def test_dispatch_outcomes_move_the_counters_by_channel(engine):
    people = seed_people(engine)
    ok, permanent, transient, limited = put(
        engine, reminders(engine, ["rep01", "rep02", "rep03", "rep01"])
    )
    # one row nobody can be reached for: it fails on the "unroutable" channel
    (lost,) = put(
        engine,
        [
            NewMessage(
                "reminder:lost", people["rep02"], outbox.UNROUTABLE, "reminder", None, {}, NOW
            )
        ],
    )
    clock = FakeClock(NOW)
    transport = ScriptedTransport(clock)
    dispatcher = Dispatcher(engine, settings(max_attempts=1), {"slack": transport}, clock)
    transport.fail(permanent, PermanentSendError("channel_not_found"))
    transport.fail(transient, TransientSendError("upstream 502"))  # max_attempts=1: dead
    transport.fail(limited, RateLimited(7))
    slack, unroutable, console = counts("slack"), counts(outbox.UNROUTABLE), counts("console")

    report = asyncio.run(dispatcher.drain())

    # the four reminders, then the alerts to the two admins about each row given up on
    assert (report.failed, report.dead, report.rate_limited) == (2, 1, 1)
    assert len(rows(engine, kind="admin_alert")) == 3 * 2
    assert report.sent == len(transport.delivered) == 2 + 3 * 2
    assert {r.status for r in rows(engine, kind="admin_alert")} == {"sent"}
    assert moved(slack, counts("slack")) == {
        "sent": 8,
        "failed": 1,
        "dead": 1,
        "rate_limited": 1,
        "retried": 0,
    }
    assert moved(unroutable, counts(outbox.UNROUTABLE)) == {
        "sent": 0,
        "failed": 1,
        "dead": 0,
        "rate_limited": 0,
        "retried": 0,
    }
    assert moved(console, counts("console")) == dict.fromkeys(OUTCOMES, 0)
    status = {r.id: r.status for r in rows(engine)}
    assert (status[ok], status[limited], status[lost]) == ("sent", "sent", "failed")


def test_a_transient_failure_counts_as_retried_until_the_row_is_dead(engine):
    seed_people(engine)
    (a,) = put(engine, reminders(engine, ["rep01"]))
    clock = FakeClock(NOW)
    transport = ScriptedTransport(clock)
    dispatcher = Dispatcher(engine, settings(max_attempts=3), {"slack": transport}, clock)
    transport.fail(a, *[TransientSendError("timeout")] * 3)
    before = counts("slack")

    for _ in range(3):
        asyncio.run(dispatcher.drain())
        clock.advance(hours=2)  # past any backoff

    assert [r.status for r in rows(engine, id=a)] == ["dead"]
    changed = moved(before, counts("slack"))
    # two retries, then dead; the two admin alerts about it are sent
    assert (changed["retried"], changed["dead"], changed["sent"]) == (2, 1, 2)


# --- read from the database at scrape time ---------------------------------------------------


def test_queue_depth_is_read_from_the_database_at_scrape_time(engine):
    seed_people(engine)
    put(engine, reminders(engine, ["rep01", "rep02", "rep03"], channel="slack"))
    put(engine, reminders(engine, ["rep01", "rep02"], channel="telegram", tag="tg"))
    put(engine, reminders(engine, ["rep03"], channel="slack", tag="later"))
    with TestClient(create_app(engine=engine)) as client:
        first = scrape(client)
        (claimed,) = outbox.claim(engine, NOW, limit=1, lease_seconds=60, channels=["telegram"])
        second = scrape(client)

    def depth(values: dict, channel: str, status: str) -> float | None:
        return values.get(("creditbot_outbox_messages", (("channel", channel), ("status", status))))

    assert first[("creditbot_database_up", ())] == 1
    assert depth(first, "slack", "pending") == 4
    assert depth(first, "telegram", "pending") == 2
    assert depth(first, "telegram", "sending") is None  # no such rows: no series
    assert first[("creditbot_approvals_pending", ())] == 0
    assert claimed.channel == "telegram"
    assert depth(second, "telegram", "pending") == 1
    assert depth(second, "telegram", "sending") == 1
    assert depth(second, "slack", "pending") == 4


def test_the_configured_channels_report_every_status_even_with_no_rows(engine):
    seed_people(engine)
    put(engine, reminders(engine, ["rep01"], channel="slack"))
    configured = Settings.model_validate({"outbox": {"channels": ["console"]}})
    with TestClient(create_app(engine=engine, settings=configured)) as client:
        values = scrape(client)
    queue = {
        (dict(labels)["channel"], dict(labels)["status"]): value
        for (name, labels), value in values.items()
        if name == "creditbot_outbox_messages"
    }
    assert queue == {
        **{("console", status): 0 for status in ("pending", "sending", "failed", "dead")},
        **{("erp", status): 0 for status in ("pending", "sending", "failed", "dead")},
        ("slack", "pending"): 1,  # not configured, but it has rows
    }


def test_without_a_database_the_scrape_still_serves_the_process_metrics():
    with TestClient(create_app()) as client:
        values = scrape(client)
    assert ("creditbot_database_up", ()) not in values
    assert any(name == "python_info" for name, _ in values)


def test_an_unreachable_database_is_reported_as_down(tmp_path):
    from sqlalchemy import create_engine

    engine: Engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    with TestClient(create_app(engine=engine)) as client:
        values = scrape(client)
    assert values[("creditbot_database_up", ())] == 0
    assert not any(name == "creditbot_outbox_messages" for name, _ in values)


# --- approvals -------------------------------------------------------------------------------


def test_a_decision_observes_its_latency_from_the_requests_creation(engine):
    settings_ = Settings()
    build_ledger(engine)
    request_id = raise_and_notify(engine, settings_, NOW)
    decided_at = NOW + timedelta(hours=3, minutes=20)
    labels = {"status": "approved"}
    count = sample("creditbot_approval_decision_seconds_count", labels)
    total = sample("creditbot_approval_decision_seconds_sum", labels)
    under_4h = sample("creditbot_approval_decision_seconds_bucket", {**labels, "le": "14400.0"})
    under_2h = sample("creditbot_approval_decision_seconds_bucket", {**labels, "le": "7200.0"})
    app = create_app(engine=engine)
    with TestClient(app) as client:
        assert scrape(client)[("creditbot_approvals_pending", ())] == 1

        with write_session(engine) as s:
            mia = s.execute(select(Person).where(Person.code == "mia")).scalar_one()
            level = next(r.level for r in approval_rows(s, request_id) if r.decision is None)
            decision = decide_from_card(
                s,
                settings_,
                request_id=request_id,
                card_level=level,
                approver_person_id=mia.id,  # type: ignore[arg-type]
                decision="approve",
                channel="slack",
                now=decided_at,
            )
        assert decision.result.won and decision.result.final and decision.outcome is not None
        # what the Slack and Telegram apps do next: every copy of the card shows the decision
        asyncio.run(
            update_card_copies(
                engine, {}, request_id, decision.outcome, level=decision.level, now=decided_at
            )
        )
        assert scrape(client)[("creditbot_approvals_pending", ())] == 0

        # a press that lost only repairs the pressed copy: not a second decision
        asyncio.run(
            update_card_copies(
                engine, {}, request_id, decision.outcome, only={"channel": "C1", "ts": "1.2"}
            )
        )

    assert sample("creditbot_approval_decision_seconds_count", labels) == count + 1
    assert sample("creditbot_approval_decision_seconds_sum", labels) == pytest.approx(
        total + 3 * 3600 + 20 * 60
    )
    assert (
        sample("creditbot_approval_decision_seconds_bucket", {**labels, "le": "14400.0"})
        == under_4h + 1
    )
    assert (
        sample("creditbot_approval_decision_seconds_bucket", {**labels, "le": "7200.0"}) == under_2h
    )
    with read_session(engine) as s:
        request = s.get(ShipmentRequest, request_id)
        assert request is not None and request.status == "approved"


# --- the scan ----------------------------------------------------------------------------------


def test_the_scan_job_observes_its_duration(engine):
    settings_ = Settings()
    with write_session(engine) as s:
        build_demo_ledger(
            s, as_of=date(2026, 11, 25), seed=3, settings=settings_, customers=8, invoices=40
        )
    rt = Runtime(engine, settings_, FakeClock(NOW), {"console": ConsoleTransport(io.StringIO())})
    count = sample("creditbot_scan_duration_seconds_count")
    total = sample("creditbot_scan_duration_seconds_sum")
    install(rt)
    try:
        result = asyncio.run(tasks.scan_job())
    finally:
        install(None)
    assert result["date"] == "2026-11-25"
    assert sample("creditbot_scan_duration_seconds_count") == count + 1
    assert sample("creditbot_scan_duration_seconds_sum") > total


# --- HTTP requests -----------------------------------------------------------------------------


def http_count(route: str, method: str, status: int) -> float:
    return sample(
        "creditbot_http_request_duration_seconds_count",
        {"route": route, "method": method, "status": str(status)},
    )


def test_http_requests_are_timed_by_route_template_method_and_status(engine):
    api = api_routes(engine, Settings(api=ApiSettings(api_keys=["k-0123456789abcdef"])))
    item = "/api/v1/shipment-requests/{request_id:int}"
    before = {
        "healthz": http_count("/healthz", "GET", 200),
        "item": http_count(item, "GET", 401),
        "item_ok": http_count(item, "GET", 404),
        "unmatched": http_count("unmatched", "GET", 404),
        "wrong_method": http_count("/healthz", "POST", 405),
    }
    with TestClient(create_app(api=api)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/api/v1/shipment-requests/7").status_code == 401
        assert client.get("/api/v1/shipment-requests/8").status_code == 401
        assert (
            client.get(
                "/api/v1/shipment-requests/9", headers={"X-API-Key": "k-0123456789abcdef"}
            ).status_code
            == 404
        )
        assert client.get("/no/such/page").status_code == 404
        assert client.post("/healthz").status_code == 405
        text = client.get("/metrics").text

    assert http_count("/healthz", "GET", 200) == before["healthz"] + 2
    assert http_count(item, "GET", 401) == before["item"] + 2
    assert http_count(item, "GET", 404) == before["item_ok"] + 1
    assert http_count("unmatched", "GET", 404) == before["unmatched"] + 1
    assert http_count("/healthz", "POST", 405) == before["wrong_method"] + 1
    # the exposition carries them, by template (never the raw path with an id)
    assert 'route="/api/v1/shipment-requests/{request_id:int}"' in text
    assert "/shipment-requests/7" not in text
