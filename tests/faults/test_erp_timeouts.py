"""Decision callbacks to an ERP that times out.

Two replicas; a fake ERP (``tests/faults/fake_erp.py``) on 127.0.0.1 that holds its first
two calls past our ERP transport's timeout (it got them, we saw a timeout), then answers 200.
Four shipment requests are raised through a replica's ERP API with a callback URL: two are
approved at once by policy, two wait for a regional manager and are approved from Slack —
both approvers pressing Approve, each on another replica, at the same moment.

* Each request is decided once (one decision, the other press lost and told so).
* Every decision's callback is delivered, signed, carrying ``X-CreditBot-Idempotency-Key``
  (= the body's ``idempotency_key``, ``erp_callback:<id>:<status>``) so the ERP can drop
  repeats; every ``erp`` outbox row ends ``sent``.
* Repeats are exactly the timed-out calls: the ERP saw 4 + 2 calls, each key once plus
  once more for each held call of it; a row's attempts are 1 + its timed-out calls.
"""

from __future__ import annotations

import sys
from collections import Counter

import pytest

from tests.fakes.slack_api import FakeSlackAPI
from tests.faults.conftest import (
    APPROVERS,
    CALLBACK_SECRET,
    OVER_LIMIT,
    WITHIN,
    Fleet,
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
    wait_for,
)
from tests.faults.fake_erp import FakeErp

pytestmark = [
    pytest.mark.faults,
    pytest.mark.postgres,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX sockets"),
]

TIMEOUTS = 2
CALLBACK_TIMEOUT = 3.0  # [api] callback_timeout_seconds of the replicas


def test_erp_callbacks_that_time_out_are_retried_until_delivered_and_repeat_only_those(
    fresh_pg_url: str, fleet: Fleet, fake_slack: FakeSlackAPI
) -> None:
    url = fresh_pg_url
    migrate(url)
    seed_approvals(url)
    db = probe_engine(url)
    with FakeErp(CALLBACK_SECRET, hold=TIMEOUTS, hold_max=3 * CALLBACK_TIMEOUT) as erp:
        try:
            env = replica_env(
                db_url=url,
                slack=fake_slack,
                extra={
                    "CREDITBOT_OUTBOX__BACKOFF_BASE_SECONDS": "1",
                    "CREDITBOT_OUTBOX__BACKOFF_CAP_SECONDS": "4",
                    "CREDITBOT_OUTBOX__MAX_ATTEMPTS": "10",
                    "CREDITBOT_API__CALLBACK_TIMEOUT_SECONDS": str(CALLBACK_TIMEOUT),
                },
            )
            a, b = fleet.start("a", env), fleet.start("b", env)
            fleet.wait_ready([a, b], timeout=60)

            at_once = {}
            for i in range(2):
                resp = raise_via_api(
                    a, f"SO-ERP-OK-{i}", customer=WITHIN, amount="1000.00", callback_url=erp.url
                )
                assert resp.status_code == 201, resp.text
                assert resp.json()["status"] == "approved"
                at_once[resp.json()["id"]] = "approved"
            pending = {}
            for i in range(2):
                order = f"SO-ERP-WAIT-{i}"
                resp = raise_via_api(b, order, customer=OVER_LIMIT, callback_url=erp.url)
                assert resp.status_code == 201, resp.text
                assert resp.json()["status"] == "pending"
                pending[order] = resp.json()["id"]

            approvers = (APPROVERS.rm1, APPROVERS.rm2)
            wait_for(
                lambda: all(
                    len(cards_for(fake_slack, u, o)) == 1 for u in approvers for o in pending
                ),
                timeout=30,
                what="the approval cards",
            )
            clicks = []
            for order in pending:
                for user, replica in zip(approvers, (a, b), strict=True):
                    [card] = cards_for(fake_slack, user, order)
                    clicks.append((replica.url("/slack/events"), *signed_click(card, user)))
            assert post_all_at_once(clicks) == [200] * len(clicks)

            def pressed() -> bool:
                seen = decisions_by_request(db)
                return all(
                    seen.get(rid, {}).get("shipment.approve", 0)
                    + seen.get(rid, {}).get("shipment.decide.lost", 0)
                    == 2
                    for rid in pending.values()
                )

            wait_for(pressed, timeout=30, what="both presses processed")
            seen = decisions_by_request(db)
            for rid in pending.values():
                assert seen[rid].get("shipment.approve") == 1
                assert seen[rid].get("shipment.decide.lost") == 1
            decided = {**at_once, **{rid: "approved" for rid in pending.values()}}

            # every callback delivered, through the timeouts
            wait_for(
                lambda: outbox_by_status(db, "erp") == {"sent": len(decided)},
                timeout=4 * CALLBACK_TIMEOUT + 30,
                what=f"every callback sent (now {outbox_by_status(db, 'erp')})",
                interval=0.2,
            )
            calls = erp.snapshot()
            held = [c for c in calls if c.held]
            assert len(held) == TIMEOUTS
            for c in held:  # the caller gave up at its timeout, not the ERP
                assert c.held_for is not None
                assert CALLBACK_TIMEOUT - 1 <= c.held_for < erp.hold_max
            assert all(c.signature_ok for c in calls)
            expected = {f"erp_callback:{rid}:{status}" for rid, status in decided.items()}
            for c in calls:
                assert c.key is not None and c.key == c.body["idempotency_key"]
                assert c.body["event"] == "shipment_request.decided"
            per_key = Counter(c.key for c in calls)
            assert set(per_key) == expected
            # repeats: exactly one per timed-out call, of that call's key
            assert len(calls) == len(decided) + TIMEOUTS
            assert per_key == Counter(expected) + Counter(c.key for c in held)
            for key in expected:  # the last call of each key was answered
                assert not [c for c in calls if c.key == key][-1].held
            # bounded retries: a row's attempts are its timed-out calls plus the one answered
            attempts = dict(
                rows(db, "SELECT idempotency_key, attempts FROM outbox WHERE channel = 'erp'")
            )
            assert attempts == {key: per_key[key] for key in expected}

            # and the replicas are fine
            fleet.wait_ready([a, b], timeout=10)
            fleet.wait_leader([a, b], timeout=10)
        finally:
            db.dispose()
