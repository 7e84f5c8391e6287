"""The leader SIGKILLed in the middle of the receivables scan.

Three ``creditbot run`` replicas share one PostgreSQL database holding a generated ledger
large enough that the scan takes a few seconds (``bench.ledger``: 400,000 open invoices).
The first replica elected leader starts the day's scan (``catch_up``: the processes run on a
working day after the scan time); while the scan's transaction is open — seen in
``pg_stat_activity`` as the leader's backend (``application_name``) in a transaction more
than 0.3 s old — the leader is killed with SIGKILL. Then:

* another replica is elected within 10 s (``leader_check_seconds = 1``) and runs the scan
  itself; ``scan_run`` has exactly one row (the dead leader's transaction was rolled back);
* every reminder the scan queued reaches the fake Slack exactly once (the scan's messages
  were queued after the kill: nothing of them was in flight);
* shipment requests raised through a survivor's ERP API get their cards, and Approve pressed
  by both approvers on every surviving replica at the same moment decides each request once:
  one decision, the other presses audited as lost and told "Already decided by …".
"""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter

import pytest

from tests.fakes.slack_api import FakeSlackAPI
from tests.faults.conftest import (
    APPROVERS,
    Fleet,
    ShiftedTime,
    cards_for,
    decisions_by_request,
    migrate,
    outbox_by_status,
    post_all_at_once,
    probe_engine,
    raise_via_api,
    replica_env,
    rows,
    scalar,
    seed_approvals,
    seed_big_ledger,
    signed_click,
    slack_posts,
    wait_for,
)

pytestmark = [
    pytest.mark.faults,
    pytest.mark.postgres,
    pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL"),
]

INVOICES = 400_000  # about 2.5 s of scan on the development machine
ELECTION_BOUND_SECONDS = 10.0

IN_LONG_TRANSACTION = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = :name
  AND xact_start < now() - interval '0.3 seconds'
  AND coalesce(wait_event_type, '') <> 'Lock'
"""


def test_the_leader_killed_mid_scan_is_replaced_and_nothing_is_lost_or_doubled(
    fresh_pg_url: str, fleet: Fleet, fake_slack: FakeSlackAPI, shifted_time: ShiftedTime
) -> None:
    url = fresh_pg_url
    migrate(url)
    people = seed_big_ledger(
        url,
        shifted_time.start.date(),
        invoices=INVOICES,
        customers=INVOICES // 10,
        reps=40,
        regions=4,
    )
    seed_approvals(url)
    db = probe_engine(url)
    try:
        env = replica_env(db_url=url, slack=fake_slack)
        replicas = [fleet.start(f"replica{i}", env) for i in (1, 2, 3)]

        # the first leader runs the day's scan as soon as it is elected
        leader = fleet.wait_leader(replicas, timeout=60)

        def mid_scan() -> bool:
            assert scalar(db, "SELECT count(*) FROM scan_run") == 0, (
                "the scan finished before it could be killed (make the ledger larger)"
            )
            return scalar(db, IN_LONG_TRANSACTION, name=leader.name) > 0

        wait_for(mid_scan, timeout=30, what=f"{leader.name}'s scan transaction", interval=0.02)
        leader.kill(signal.SIGKILL)
        killed_at = time.monotonic()
        assert leader.proc.returncode == -signal.SIGKILL
        survivors = [r for r in replicas if r is not leader]

        # another replica takes over within the bound, and runs the scan again
        successor = fleet.wait_leader(survivors, timeout=ELECTION_BOUND_SECONDS + 5)
        elected_after = time.monotonic() - killed_at
        assert elected_after < ELECTION_BOUND_SECONDS, f"re-elected after {elected_after:.1f} s"
        wait_for(
            lambda: scalar(db, "SELECT count(*) FROM scan_run") > 0,
            timeout=60,
            what="the successor's scan",
        )
        assert scalar(db, "SELECT count(*) FROM scan_run") == 1
        done = f"scan {shifted_time.start.date().isoformat()}:"  # jobs.tasks.scan_job's log
        assert "today's scan was missed" in leader.log_text(), "it had started …"
        assert done not in leader.log_text(), "… and never finished"
        assert "today's scan was missed" in successor.log_text(), "the successor caught up"
        wait_for(lambda: done in successor.log_text(), timeout=10, what="the scan's log line")
        fleet.wait_ready(survivors, timeout=15)

        # one reminder per person with something to chase, each queued once
        queued = scalar(db, "SELECT messages FROM scan_run")
        reminders = rows(db, "SELECT recipient_id FROM outbox WHERE kind = 'reminder'")
        assert len(reminders) == queued > 0
        assert len({r for (r,) in reminders}) == len(reminders) <= people

        # shipment requests through a survivor's API; both approvers press Approve on every
        # surviving replica at the same moment
        orders = [f"SO-LEADER-{i}" for i in range(3)]
        request_ids = {}
        for order in orders:
            resp = raise_via_api(survivors[0], order)
            assert resp.status_code == 201, resp.text
            assert resp.json()["status"] == "pending"
            request_ids[order] = resp.json()["id"]
        approvers = (APPROVERS.rm1, APPROVERS.rm2)
        wait_for(
            lambda: all(len(cards_for(fake_slack, u, o)) == 1 for u in approvers for o in orders),
            timeout=30,
            what="the approval cards",
        )
        clicks = []
        for order in orders:
            for user in approvers:
                [card] = cards_for(fake_slack, user, order)
                for replica in survivors:
                    clicks.append((replica.url("/slack/events"), *signed_click(card, user)))
        statuses = post_all_at_once(clicks)
        assert statuses == [200] * len(clicks)
        presses = len(approvers) * len(survivors)  # per request

        def all_presses_answered() -> bool:
            seen = decisions_by_request(db)
            return all(
                sum(
                    seen.get(rid, {}).get(a, 0)
                    for a in ("shipment.approve", "shipment.decide.lost")
                )
                == presses
                for rid in request_ids.values()
            )

        wait_for(all_presses_answered, timeout=30, what="every press to be processed")
        seen = decisions_by_request(db)
        for order, rid in request_ids.items():
            assert seen[rid].get("shipment.approve") == 1, (order, seen[rid])
            assert seen[rid].get("shipment.decide.lost") == presses - 1, (order, seen[rid])
            assert seen[rid].get("shipment.reject", 0) == 0
            decided = rows(
                db,
                "SELECT count(*) FROM approval WHERE request_id = :r AND decision IS NOT NULL",
                r=rid,
            )
            assert decided == [(1,)]
            assert scalar(db, "SELECT status FROM shipment_request WHERE id = :r", r=rid) == (
                "approved"
            )
        losers = len(orders) * (presses - 1)
        told = wait_for(
            lambda: len(fake_slack.ephemerals) >= losers and list(fake_slack.ephemerals),
            timeout=20,
            what="the losers to be told",
        )
        assert len(told) == losers
        assert {e["text"] for e in told} <= {
            f"Already decided by {name}" for name in APPROVERS.names.values()
        }

        # everything queued reaches Slack exactly once: the posts the fake stored are the
        # ones the outbox recorded, one for one
        wait_for(
            lambda: set(outbox_by_status(db)) == {"sent"},
            timeout=60,
            what=f"every outbox row sent (now {outbox_by_status(db)})",
            interval=0.2,
        )
        recorded = Counter(
            (ref["channel"], ref["ts"])
            for (ref,) in rows(db, "SELECT platform_ref FROM outbox WHERE channel = 'slack'")
        )
        posted = Counter((m.channel, m.ts) for m in slack_posts(fake_slack))
        assert posted == recorded
        assert max(recorded.values()) == 1
        per_dm = Counter(
            ref["channel"]
            for (ref,) in rows(db, "SELECT platform_ref FROM outbox WHERE kind = 'reminder'")
        )
        assert len(per_dm) == queued and set(per_dm.values()) == {1}
        # and the replicas still answer, with one leader
        fleet.wait_ready(survivors, timeout=10)
        assert [r.name for r in fleet.leaders(survivors)] == [successor.name]
    finally:
        db.dispose()


def test_the_leaders_lock_never_blocks_the_leaders_own_scan(fresh_pg_url: str) -> None:
    """The regression under the test above: with the default ``leader_lock_key``
    (0x43524544, the scan's transaction-lock key too), the leader's scan waited for the
    leader's own lock for ever. The election now locks in the two-integer key space."""
    import asyncio

    from sqlalchemy import text

    from credit.settings import ReplicaSettings
    from credit.store.db import make_engine
    from credit.store.escalation import SCAN_LOCK_KEY
    from jobs.leader import LeaderElection

    engine = make_engine(fresh_pg_url)
    election = LeaderElection(engine, ReplicaSettings().leader_lock_key, check_seconds=1)
    try:
        assert asyncio.run(election.check()) is True
        with engine.connect() as conn:
            conn.execute(text("SET lock_timeout = '2s'"))
            got = conn.execute(
                text("SELECT pg_try_advisory_xact_lock(CAST(:k AS bigint))"), {"k": SCAN_LOCK_KEY}
            ).scalar_one()
            assert got is True
    finally:
        asyncio.run(election.resign())
        engine.dispose()
