"""Button presses acknowledged before Bolt sees them (``create_app(slack_ack_first=...)``, as
``creditbot run`` and ``serve`` build it): the answer costs a signature check; the press is
then processed by Bolt exactly as before. Forged or stale presses are refused with 401 and
never processed; modal submissions, whose answers carry content, still go through Bolt."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from starlette.testclient import TestClient

from bot.http import create_app
from bot.slack_app import build_slack_app
from credit.store.db import IMMEDIATE, make_engine
from tests.support.approvals import MIA, SECRET, World, make_world, texts
from tests.support.slack_requests import TrackingExecutor, slack_signature


class FirstWorld:
    """``World``'s ledger, fakes and cards, served by the app with presses acked first."""

    def __init__(
        self, world: World, quiet: float | None = None, app_engine: Engine | None = None
    ) -> None:
        self.world = world
        self.presses = TrackingExecutor()  # where the acked presses go to Bolt
        bolt = build_slack_app(
            app_engine or world.engine,
            world.settings,
            clock=world.clock,
            listener_executor=world.executor,
        )
        app = create_app(
            bolt,
            slack_ack_first=SECRET,
            slack_press_executor=self.presses,
            slack_press_quiet=quiet,  # None: handed over at once, so that tests can wait
        )
        self.http = TestClient(app, raise_server_exceptions=False)
        self.http.__enter__()

    def post(self, body: bytes, headers: dict[str, str]):  # type: ignore[no-untyped-def]
        return self.http.post("/slack/events", content=body, headers=headers)

    def settle(self) -> None:
        """Wait for the presses handed to Bolt, then for Bolt's listeners."""
        self.presses.drain()
        self.world.executor.drain()

    def close(self) -> None:
        self.http.__exit__(None, None, None)
        self.presses.shutdown(wait=True)


@pytest.fixture
def first(engine: Engine) -> Iterator[FirstWorld]:
    for world in make_world(engine):
        world.request_id = world.raise_request()  # type: ignore[attr-defined]
        world.dispatch()
        fw = FirstWorld(world)
        try:
            yield fw
        finally:
            fw.close()


def test_a_press_is_answered_before_it_is_processed_then_decided(first: FirstWorld) -> None:
    world = first.world
    request_id = world.request_id  # type: ignore[attr-defined]
    body, headers = world.signed(world.click(world.slack_card(MIA), "approve", MIA))

    # Bolt's listener pool taken: through Bolt the answer would wait for it (up to 3 s, then
    # a 404); acknowledged first, it comes at once
    blocked = _block(world)
    try:
        resp = first.post(body, headers)
        assert resp.status_code == 200 and resp.content == b""
        assert world.request(request_id).status == "pending"  # not yet processed
    finally:
        blocked.release()
    first.settle()
    assert world.request(request_id).status == "approved"
    assert "✓ Approved by Mia Manager" in texts(world.slack_card(MIA).blocks)


def _block(world: World):  # type: ignore[no-untyped-def]
    """Occupy every thread of Bolt's listener pool until released."""
    import threading

    release = threading.Event()
    started = threading.Barrier(world.executor._max_workers + 1)

    def hold() -> None:
        started.wait()
        release.wait(10)

    for _ in range(world.executor._max_workers):
        world.executor.submit(hold)
    started.wait(10)

    class Handle:
        @staticmethod
        def release() -> None:
            release.set()

    return Handle


@pytest.mark.parametrize("forgery", ["signature", "stale", "body"])
def test_forged_or_stale_presses_are_refused_and_never_processed(
    first: FirstWorld, forgery: str
) -> None:
    world = first.world
    request_id = world.request_id  # type: ignore[attr-defined]
    body, headers = world.signed(world.click(world.slack_card(MIA), "approve", MIA))
    if forgery == "signature":
        headers = {**headers, "X-Slack-Signature": "v0=" + "0" * 64}
    elif forgery == "stale":  # signed properly, but ten minutes ago
        stamp = str(int(time.time()) - 600)
        headers = {**headers, **slack_signature(body.decode(), stamp, SECRET)}
    else:  # the body changed after signing
        body = body.replace(b"approve", b"approvf", 1)
    resp = first.post(body, headers)
    assert resp.status_code == 401
    first.settle()
    assert first.presses.futures == []
    assert world.request(request_id).status == "pending"
    assert world.slack.calls("chat.update") == []


def test_modal_submissions_still_go_through_bolt_for_their_answer(first: FirstWorld) -> None:
    """A reject reason left empty: Bolt's answer carries the form error, so it cannot be
    acknowledged first."""
    world = first.world
    body, headers = world.signed(world.click(world.slack_card(MIA), "reject", MIA))
    assert first.post(body, headers).status_code == 200
    first.settle()
    [view] = world.slack.views.values()
    submission = world.submission(view["id"], "", MIA)
    resp = first.post(*world.signed(submission))
    assert resp.status_code == 200
    assert resp.json()["response_action"] == "errors"
    assert first.presses.futures and len(first.presses.futures) == 1  # only the press


def test_presses_are_handed_over_once_the_burst_is_quiet(engine: Engine) -> None:
    """While presses keep coming (each within the quiet period of the last) they are only
    answered; the decisions start once none has come for the quiet period."""
    for world in make_world(engine):
        first = FirstWorld(world, quiet=0.5)
        try:
            request_ids = [world.raise_request(order=f"SO-{n}") for n in (1, 2, 3)]
            world.dispatch()
            clicks = [
                world.signed(world.click(world.slack_card(MIA, f"SO-{n}"), "approve", MIA))
                for n in (1, 2, 3)
            ]
            started = time.monotonic()
            answers = [first.post(body, headers).status_code for body, headers in clicks]
            burst = time.monotonic() - started
            assert answers == [200, 200, 200]
            if burst < 0.5:  # (a slow machine may take longer to post three)
                assert first.presses.futures == []  # held while the burst goes on
            deadline = time.monotonic() + 10
            while len(first.presses.futures) < 3:
                assert time.monotonic() < deadline, "the presses were never handed over"
                time.sleep(0.01)
            first.settle()
            assert [world.request(r).status for r in request_ids] == ["approved"] * 3
        finally:
            first.close()


def _impatient(engine: Engine, db_kind: str) -> Engine:
    """Another engine on the test's database that gives up on a lock after 50 ms."""
    url = engine.url.render_as_string(hide_password=False)
    if db_kind == "sqlite":
        return make_engine(url, busy_timeout_ms=50)
    with engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
    return make_engine(url, connect_args={"options": f"-csearch_path={schema} -clock_timeout=50"})


def test_a_press_that_cannot_be_processed_tells_the_presser_to_press_again(
    engine: Engine, db_kind: str
) -> None:
    """The database refuses the decision's write (another connection holds SQLite's one write
    lock, or the request's row on PostgreSQL, past the app's 50 ms). The press was answered
    200 already; the presser is told through the press's response_url, and pressing again
    once the database is free decides it."""
    app_engine = _impatient(engine, db_kind)
    for world in make_world(engine):
        request_id = world.raise_request()
        world.dispatch()
        first = FirstWorld(world, app_engine=app_engine)
        try:
            payload = world.click(world.slack_card(MIA), "approve", MIA)
            payload["response_url"] = world.slack.response_url()
            with engine.connect() as conn:
                holder = conn.execution_options(**{IMMEDIATE: True})  # SQLite: BEGIN IMMEDIATE
                holder.begin()
                holder.execute(
                    text("SELECT id FROM shipment_request WHERE id = :id FOR UPDATE")
                    if db_kind == "postgres"
                    else text("SELECT 1"),
                    {"id": request_id},
                )
                assert first.post(*world.signed(payload)).status_code == 200
                first.settle()
                holder.rollback()
            assert world.request(request_id).status == "pending"
            [told] = world.slack.responded(payload["response_url"])
            assert told["response_type"] == "ephemeral" and "press again" in told["text"]

            assert first.post(*world.signed(payload)).status_code == 200  # pressed again
            first.settle()
            assert world.request(request_id).status == "approved"
        finally:
            first.close()
    app_engine.dispose()
