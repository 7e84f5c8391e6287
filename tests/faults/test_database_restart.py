"""The database restarted under load, twice: ``pg_ctl restart -m fast``, then a stop, a few
seconds down (until every replica's ``/readyz`` says so), and a start.

A private PostgreSQL cluster (initdb into a temporary directory, its own port) so the shared
server is untouched. Two replicas dispatch a stream of reminders (one per person, written by a
feeder thread that retries while the database is away) to the fake Slack, serve the ERP API
(shipment requests) and Slack's Approve presses, during and after the outages.

* The replicas recover by themselves: ``/readyz`` answers 200 again, and one leads.
* Nothing is lost: every reminder is sent, every request raised once (the ERP retries its
  call while we answer 5xx; the same order again is the same request).
* No duplicates beyond the ones in flight: a post Slack took whose ``sent`` record failed
  with the database (the only way to repeat) is sent again after its lease; every extra
  post is accounted for that way — unrecorded, made during an outage, its row claimed again
  — and there are no more than the sends a replica has on the wire (``IN_FLIGHT``) per
  replica per outage. (The dispatcher retries recording a sent message for most of its
  lease, so a short outage repeats nothing.)
* No approval decided twice: presses during the outage decide nothing; afterwards, both
  approvers pressing on both replicas decide each request exactly once.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.exc import SQLAlchemyError

from jobs.dispatch import IN_FLIGHT
from tests.fakes.slack_api import FakeSlackAPI
from tests.faults.conftest import (
    APPROVERS,
    Fleet,
    PrivateCluster,
    cards_for,
    decisions_by_request,
    migrate,
    outbox_by_status,
    post_all_at_once,
    probe_engine,
    raise_via_api,
    replica_env,
    rows,
    seed_approvals,
    signed_click,
    slack_posts,
    wait_for,
)
from tests.support.outbox_data import put, reminders, seed_people

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(sys.platform == "win32", reason="pg_ctl, POSIX processes"),
]

STREAM = 60  # reminders, one per person
STREAM_PER_SECOND = 5.0
LEASE = 5
REPLICAS = ("a", "b")
OUTAGES = 2
MARGIN = 2.0  # seconds around an outage in which a post's record may have failed


class Feeder(threading.Thread):
    """Writes one reminder at a time (as the business would), retrying each while the
    database is away; the key makes a retry after an unknown outcome harmless."""

    def __init__(self, url: str, codes: list[str]) -> None:
        super().__init__(daemon=True, name="feeder")
        self.url, self.codes = url, codes
        self.failures = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        engine = probe_engine(self.url)
        try:
            for code in self.codes:
                start = time.monotonic()
                while True:
                    try:
                        messages = reminders(
                            engine,
                            [code],
                            tag="stream",
                            not_before=datetime.now(UTC) - timedelta(seconds=1),
                        )
                        put(engine, messages)
                        break
                    except SQLAlchemyError:
                        self.failures += 1
                        if time.monotonic() - start > 60:
                            raise
                        time.sleep(0.1)  # the database is away: try again shortly
                time.sleep(1 / STREAM_PER_SECOND)  # the pace of the stream
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            engine.dispose()


def test_the_replicas_ride_out_database_restarts_losing_and_doubling_nothing(
    private_cluster: PrivateCluster, fleet: Fleet, fake_slack: FakeSlackAPI
) -> None:
    cluster = private_cluster
    url = cluster.create_database("creditbot")
    migrate(url)
    db = probe_engine(url)
    try:
        seed_people(db, reps=STREAM)
        seed_approvals(url)
        env = replica_env(
            db_url=url,
            slack=fake_slack,
            lease_seconds=LEASE,
            extra={
                "CREDITBOT_OUTBOX__BATCH_SIZE": "5",
                "CREDITBOT_OUTBOX__BACKOFF_BASE_SECONDS": "1",
                "CREDITBOT_OUTBOX__BACKOFF_CAP_SECONDS": "4",
                "CREDITBOT_OUTBOX__MAX_ATTEMPTS": "20",
            },
        )
        replicas = [fleet.start(name, env) for name in REPLICAS]
        fleet.wait_ready(replicas, timeout=60)
        fleet.wait_leader(replicas, timeout=15)
        approvers = (APPROVERS.rm1, APPROVERS.rm2)
        orders = ["SO-DB-1", "SO-DB-2", "SO-DB-3"]
        request_ids: dict[str, int] = {}
        for order in orders[:2]:
            resp = raise_via_api(replicas[0], order)
            assert resp.status_code == 201, resp.text
            request_ids[order] = resp.json()["id"]
        wait_for(
            lambda: all(
                len(cards_for(fake_slack, u, o)) == 1 for u in approvers for o in orders[:2]
            ),
            timeout=30,
            what="the first cards",
        )

        feeder = Feeder(url, [f"rep{i:02d}" for i in range(1, STREAM + 1)])
        feeder.start()
        windows: list[tuple[float, float]] = []

        # outage 1: a fast restart, with the stream flowing
        wait_for(
            lambda: outbox_by_status(db).get("sent", 0) >= 5,
            timeout=30,
            what="the stream under way",
        )
        began = time.time()
        cluster.restart("fast")
        windows.append((began, time.time()))

        # outage 2: stopped until every replica says it is not ready, then started
        wait_for(
            lambda: outbox_by_status(db).get("sent", 0) >= 20,
            timeout=60,
            what="the stream under way again",
        )
        began = time.time()
        cluster.stop("fast")

        def all_unready() -> bool:
            answers = [r.readyz() for r in replicas]
            return all(a is not None and a[0] == 503 for a in answers)

        wait_for(all_unready, timeout=20, what="/readyz to report the database away")
        # while it is down: the ERP raises a request (refused, it will retry), approvers
        # press Approve (acknowledged; nothing can be decided)
        try:
            refused: int | str = raise_via_api(replicas[1], orders[2]).status_code
        except httpx.HTTPError as exc:
            refused = type(exc).__name__
        assert refused == 500 or isinstance(refused, str), refused
        presses = [
            (r.url("/slack/events"), *signed_click(cards_for(fake_slack, u, orders[0])[0], u))
            for u in approvers
            for r in replicas
        ]
        during = post_all_at_once(presses)
        # Answered, not hung. Ideally 200 (acknowledged) every time; but when a listener
        # raises (the database is away) right after its ack(), slack_bolt's thread runner
        # overwrites the ack it had, and Slack gets 404 "unhandled request" or 500 instead
        # (reported: bot/slack_app.py's listeners let the error escape). Nothing is decided.
        assert set(during) <= {200, 404, 500}, during
        assert all(r.alive for r in replicas)
        cluster.start()
        windows.append((began, time.time()))
        restarted = time.monotonic()

        # recovery, by themselves
        fleet.wait_ready(replicas, timeout=30)
        leader = fleet.wait_settled_leader(replicas, timeout=20)
        recovered_in = time.monotonic() - restarted
        assert recovered_in < 30

        # the ERP's retry of the request refused during the outage, twice (the same order
        # again is the same request)
        resp = raise_via_api(replicas[1], orders[2])
        assert resp.status_code == 201, resp.text
        request_ids[orders[2]] = resp.json()["id"]
        again = raise_via_api(replicas[0], orders[2])
        assert again.status_code == 200 and again.json()["id"] == request_ids[orders[2]]
        wait_for(
            lambda: all(len(cards_for(fake_slack, u, orders[2])) == 1 for u in approvers),
            timeout=30,
            what="the third request's cards",
        )

        # every request: both approvers press on both replicas at once
        presses = [
            (r.url("/slack/events"), *signed_click(cards_for(fake_slack, u, order)[0], u))
            for order in orders
            for u in approvers
            for r in replicas
        ]
        assert post_all_at_once(presses) == [200] * len(presses)

        def decided() -> bool:
            seen = decisions_by_request(db)
            losers = len(approvers) * len(REPLICAS) - 1
            return all(
                seen.get(rid, {}).get("shipment.approve") == 1
                and seen[rid].get("shipment.decide.lost", 0) >= losers
                for rid in request_ids.values()
            )

        wait_for(decided, timeout=30, what="each request decided")
        seen = decisions_by_request(db)
        for order, rid in request_ids.items():
            assert seen[rid].get("shipment.approve") == 1, (order, seen[rid])
            assert seen[rid].get("shipment.reject", 0) == 0
            [(n,)] = rows(
                db,
                "SELECT count(*) FROM approval WHERE request_id = :r AND decision IS NOT NULL",
                r=rid,
            )
            assert n == 1
        assert rows(
            db,
            "SELECT order_ref, count(*) FROM shipment_request GROUP BY order_ref "
            "ORDER BY order_ref",
        ) == [(o, 1) for o in orders]

        # the stream: all of it, each once but for the posts whose record the outage lost
        feeder.join(timeout=90)
        assert not feeder.is_alive() and feeder.error is None, feeder.error
        assert feeder.failures > 0  # it did write through the outages
        wait_for(
            lambda: set(outbox_by_status(db)) == {"sent"},
            timeout=60,
            what=f"every message sent (now {outbox_by_status(db)})",
            interval=0.2,
        )
        sent = rows(
            db,
            "SELECT o.id, o.kind, o.attempts, o.platform_ref, p.slack_user_id "
            "FROM outbox o JOIN person p ON p.id = o.recipient_id",
        )
        assert sum(kind == "reminder" for _, kind, *_ in sent) == STREAM
        recorded = {(ref["channel"], ref["ts"]) for _, _, _, ref, _ in sent}
        assert len(recorded) == len(sent)
        posts = slack_posts(fake_slack)
        assert recorded <= {(m.channel, m.ts) for m in posts}
        extra = [m for m in posts if (m.channel, m.ts) not in recorded]
        assert len(posts) == len(sent) + len(extra)
        # at most the sends each replica had on the wire when an outage began (the
        # dispatcher keeps trying to record a sent message for most of its lease)
        assert len(extra) <= len(REPLICAS) * OUTAGES * IN_FLIGHT, [m.channel for m in extra]
        retried = {FakeSlackAPI.dm_for(user) for _, _, attempts, _, user in sent if attempts > 1}
        for m in extra:
            assert m.channel in retried, f"an unexplained repeat in {m.channel}"
            second = int(m.ts.split(".")[0])  # the fake's ts: the post's Unix second
            assert any(b - MARGIN - 1 <= second <= e + MARGIN for b, e in windows), (
                f"a repeat in {m.channel} posted outside the outages"
            )
        stream = {FakeSlackAPI.dm_for(user) for _, kind, _, _, user in sent if kind == "reminder"}
        per_dm = Counter(m.channel for m in posts if m.channel in stream)
        assert set(per_dm) == stream
        assert sum(n - 1 for n in per_dm.values()) == len([m for m in extra if m.channel in stream])

        # and they stay well: ready, one leader
        fleet.wait_ready(replicas, timeout=10)
        assert [r.name for r in fleet.leaders(replicas)] == [leader.name]  # settled: no change
    finally:
        db.dispose()
