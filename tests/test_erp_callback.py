"""The decision goes back to the ERP: the outbox row sent by the real Dispatcher through the
``erp`` transport (bot.transports.erp) to a local HTTP receiver — a ThreadingHTTPServer on
127.0.0.1 that answers what each test scripts and checks every signature itself — on a
FakeClock, on SQLite and PostgreSQL. Retries are moved along by advancing the clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, select

from bot.transports.base import Outgoing, PermanentSendError, RateLimited, TransientSendError
from bot.transports.erp import ErpTransport, retry_after_seconds
from credit.settings import ApiSettings, OutboxSettings, Settings
from credit.store.approvals import decide, expire_requests, raise_request
from credit.store.db import read_session, write_session
from credit.store.models import AuditLog, OutboxMessage
from jobs.clock import FakeClock
from jobs.dispatch import Dispatcher
from tests.support.outbox_data import FixedRandom
from tests.test_approvals_store import CALLBACK_SECRET, NOW, build_ledger


@dataclass(frozen=True)
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool
    answered: int


class Receiver:
    """The ERP's callback endpoint: answers scripted statuses (then 200), records each call
    and whether its ``X-CreditBot-Signature`` is right for the body it carried."""

    def __init__(self, *script: int | tuple[int, dict[str, str]]) -> None:
        self.script: deque[int | tuple[int, dict[str, str]]] = deque(script)
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                given = self.headers.get("X-CreditBot-Signature", "")
                mac = hmac.new(CALLBACK_SECRET.encode(), body, hashlib.sha256).hexdigest()
                with receiver.lock:
                    step = receiver.script.popleft() if receiver.script else 200
                    status, extra = step if isinstance(step, tuple) else (step, {})
                    receiver.hits.append(
                        Hit(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            hmac.compare_digest(given, f"sha256={mac}"),
                            status,
                        )
                    )
                answer = b'{"ok": true}' if status < 300 else b'{"error": "scripted"}'
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/credit/decisions"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def settings(secret: str = CALLBACK_SECRET) -> Settings:
    return Settings(
        api=ApiSettings(callback_secret=SecretStr(secret)),
        outbox=OutboxSettings(channels=["console"], max_attempts=5),
    )


class Story:
    def __init__(self, engine: Engine, secret: str = CALLBACK_SECRET) -> None:
        self.engine = engine
        self.people = build_ledger(engine)
        self.settings = settings(secret)
        self.clock = FakeClock(NOW)

    def approved(self, url: str) -> int:
        """A pending request (over the limit) approved by the regional manager."""
        with write_session(self.engine) as s:
            rid = raise_request(
                s,
                self.settings,
                customer_code="OVER",
                order_ref="SO-77",
                amount="40000.00",
                currency="CNY",
                callback_url=url,
                now=self.clock.now(),
            ).request_id
        self.clock.advance(minutes=5)
        with write_session(self.engine) as s:
            outcome = decide(
                s,
                self.settings,
                request_id=rid,
                approver_person_id=self.people["rmn"],
                decision="approve",
                channel="slack",
                now=self.clock.now(),
            )
        assert outcome.won
        return rid

    def dispatcher(self) -> Dispatcher:
        """A dispatcher as ``creditbot run`` builds one (a fresh one is a restart)."""
        transport = ErpTransport.from_settings(self.settings, clock=self.clock)
        return Dispatcher(
            self.engine, self.settings, {"erp": transport}, self.clock, rng=FixedRandom(0.5)
        )

    def drain(self, dispatcher: Dispatcher | None = None) -> Any:
        return asyncio.run((dispatcher or self.dispatcher()).drain())

    def row(self, kind: str = "erp_callback") -> OutboxMessage:
        with read_session(self.engine) as s:
            return s.execute(select(OutboxMessage).where(OutboxMessage.kind == kind)).scalar_one()

    def rows(self, kind: str) -> list[OutboxMessage]:
        with read_session(self.engine) as s:
            return list(
                s.execute(select(OutboxMessage).where(OutboxMessage.kind == kind)).scalars()
            )


@pytest.fixture
def story(engine: Engine) -> Story:
    return Story(engine)


def test_a_failing_erp_gets_the_decision_exactly_once_after_retries(story: Story) -> None:
    with Receiver(500, 500) as erp:
        rid = story.approved(erp.url)
        first = story.drain()
        assert (first.retried, first.sent) == (1, 0)
        row = story.row()
        assert (row.status, row.attempts) == ("pending", 1)
        assert "500" in (row.last_error or "")
        # the process restarts: a new dispatcher finds the row in the outbox
        story.clock.set(row.next_attempt_at)
        second = story.drain()
        assert (second.retried, second.sent) == (1, 0)
        story.clock.set(story.row().next_attempt_at)
        sent_at = story.clock.now()
        third = story.drain()
        assert third.sent == 1
        story.clock.advance(hours=2)
        assert story.drain().claimed == 0  # nothing more to send, ever

    assert [h.answered for h in erp.hits] == [500, 500, 200]
    assert all(h.signature_ok for h in erp.hits)
    assert {h.body for h in erp.hits} == {erp.hits[0].body}  # the same bytes each time
    assert {h.path for h in erp.hits} == {"/credit/decisions"}
    body = json.loads(erp.hits[0].body)
    assert (body["request_id"], body["status"], body["decided_by"], body["amount"]) == (
        rid,
        "approved",
        "rmn",
        "40000.00",
    )
    keys = {h.headers["x-creditbot-idempotency-key"] for h in erp.hits}
    assert keys == {f"erp_callback:{rid}:approved"}
    last = erp.hits[-1]
    assert last.headers["x-creditbot-timestamp"] == str(int(sent_at.timestamp()))
    assert last.headers["content-type"] == "application/json"
    row = story.row()
    assert (row.status, row.attempts, row.platform_ref["status"]) == ("sent", 3, 200)
    assert row.platform_ref["url"] == erp.url


def test_backoff_grows_between_attempts(story: Story) -> None:
    with Receiver(503, 503, 503) as erp:
        story.approved(erp.url)
        times = []
        for _ in range(3):
            story.drain()
            row = story.row()
            times.append(row.next_attempt_at)
            story.clock.set(row.next_attempt_at)
        story.drain()
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert gaps == [60, 120]  # 30 s, 60 s, 120 s: doubling (jitter fixed at 1)
    assert [h.answered for h in erp.hits] == [503, 503, 503, 200]
    assert story.row().status == "sent"


def test_a_400_fails_at_once_and_the_admins_are_told(story: Story) -> None:
    with Receiver(400) as erp:
        story.approved(erp.url)
        report = story.drain()
        story.clock.advance(hours=3)
        again = story.drain()
    assert (report.failed, report.retried, again.claimed) == (1, 0, 0)
    assert len(erp.hits) == 1
    row = story.row()
    assert row.status == "failed"
    assert "ERP answered 400" in (row.last_error or "") and "scripted" in (row.last_error or "")
    (alert,) = story.rows("admin_alert")
    assert alert.recipient_id == story.people["adm"]
    assert (alert.payload["message_id"], alert.payload["message_kind"]) == (row.id, "erp_callback")
    with read_session(story.engine) as s:
        failed = s.execute(select(AuditLog).where(AuditLog.action == "outbox.failed")).scalar_one()
    assert failed.entity_id == str(row.id)


def test_a_429_waits_for_retry_after_without_counting_an_attempt(story: Story) -> None:
    with Receiver((429, {"Retry-After": "120"})) as erp:
        story.approved(erp.url)
        start = story.clock.now()
        report = story.drain()
        row = story.row()
        assert (report.rate_limited, row.status, row.attempts) == (1, "pending", 0)
        assert row.next_attempt_at == start + timedelta(seconds=120)
        story.clock.set(row.next_attempt_at)
        assert story.drain().sent == 1
    assert [h.answered for h in erp.hits] == [429, 200]


def test_an_erp_that_is_down_is_retried(story: Story) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/cb"
    story.approved(closed)
    report = story.drain()
    assert report.retried == 1
    assert "ConnectError" in (story.row().last_error or "")


def test_an_expired_request_is_sent_too(story: Story) -> None:
    with Receiver() as erp:
        with write_session(story.engine) as s:
            rid = raise_request(
                s,
                story.settings,
                customer_code="OVER",
                order_ref="SO-88",
                amount="40000.00",
                currency="CNY",
                callback_url=erp.url,
                now=story.clock.now(),
            ).request_id
        # Saturday 11:00 in Shanghai: not a working day, outside the chat send window — but the
        # ERP is a machine, and its callbacks go at any hour (jobs.dispatch.ALWAYS_OPEN)
        story.clock.advance(hours=73)
        with write_session(story.engine) as s:
            assert expire_requests(s, story.clock.now(), story.settings) == [rid]
        dispatcher = Dispatcher(
            story.engine,
            story.settings,
            {"erp": ErpTransport.from_settings(story.settings, clock=story.clock)},
            story.clock,
        )
        assert story.drain(dispatcher).sent == 1
    assert json.loads(erp.hits[0].body)["status"] == "expired"


def test_without_a_callback_secret_nothing_unsigned_is_sent(engine: Engine) -> None:
    story = Story(engine, secret="")
    with Receiver() as erp:
        story.approved(erp.url)
        report = story.drain()
    assert report.failed == 1 and erp.hits == []
    assert "callback_secret is not set" in (story.row().last_error or "")


# --- the transport alone -------------------------------------------------------------------------


def _send(status: int, headers: dict[str, str] | None = None, url: str | None = None) -> Any:
    """One send through the transport to a receiver answering ``status``."""
    clock = FakeClock(datetime(2026, 11, 25, 2, 0, tzinfo=UTC))
    with Receiver((status, headers or {})) as erp:
        message = Outgoing(
            1, "erp_callback", {}, {"callback_url": url or erp.url, "body": {"a": "ü"}}
        )
        return asyncio.run(ErpTransport("s3cret-value", clock=clock).send(message))


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_any_2xx_is_delivered(status: int) -> None:
    assert _send(status)["status"] == status


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_5xx_and_408_are_transient(status: int) -> None:
    with pytest.raises(TransientSendError):
        _send(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422, 301, 302])
def test_other_answers_are_permanent(status: int) -> None:
    with pytest.raises(PermanentSendError):
        _send(status, {"Location": "http://elsewhere/"} if status < 400 else None)


def test_429_carries_retry_after() -> None:
    with pytest.raises(RateLimited) as info:
        _send(429, {"Retry-After": "7"})
    assert info.value.retry_after == 7


def test_a_url_that_cannot_be_called_is_permanent() -> None:
    with pytest.raises(PermanentSendError):
        _send(200, url="ftp://erp.example.test/cb")


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    assert retry_after_seconds("90", now) == 90
    assert retry_after_seconds("Wed, 25 Nov 2026 02:02:00 GMT", now) == 120
    assert retry_after_seconds("soon", now) == 30 and retry_after_seconds(None, now) == 30
    assert retry_after_seconds("-5", now) == 1


def test_a_timeout_is_transient() -> None:
    class Slow(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("slow", request=request)

    clock = FakeClock(datetime(2026, 11, 25, 2, 0, tzinfo=UTC))

    async def main() -> None:
        async with httpx.AsyncClient(transport=Slow()) as client:
            transport = ErpTransport("s3cret-value", clock=clock, client=client)
            await transport.send(
                Outgoing(1, "erp_callback", {}, {"callback_url": "http://erp/cb", "body": {}})
            )

    with pytest.raises(TransientSendError, match="timed out"):
        asyncio.run(main())


def test_the_cli_dispatcher_has_the_erp_transport() -> None:
    from bot.cli import _transports

    transports = _transports(settings())
    assert isinstance(transports["erp"], ErpTransport)
    assert set(transports) == {"console", "erp"}
