"""A replica SIGKILLed while a message it sends is in flight to Slack.

Two replicas dispatch 20 messages (one per person) to the fake Slack, which holds the
first ``chat.postMessage`` it gets (``FakeSlackAPI.hold_posts``) — a send in flight. The
replica that sent it is killed with SIGKILL; then Slack lets the held call through (Slack had
it: the message is posted, but nobody records it), and the killed replica is started again.

* Nothing is lost: every row ends ``sent``, every person has their message.
* Duplicates are exactly the messages in flight at the kill — the held one, and any other
  the victim had on the wire (the dispatcher has up to ``IN_FLIGHT`` sends going per
  channel): posted twice, the first post from the victim before it died and unrecorded.
* The rows the dead replica had claimed wait for their lease (``[outbox] lease_seconds = 5``,
  the minimum) before anyone sends them again: the held message's second post comes after
  the ``lease_until`` its row had when the replica died.
* The replicas are ready again and one leads, by themselves.

The messages are admin alerts (sent at any hour: no send window makes the test depend on the
time of day), and the replicas run on the real clock, the fake's: lease times compare exactly.
"""

from __future__ import annotations

import signal
import sys
from collections import Counter
from datetime import UTC, datetime

import pytest

from jobs.dispatch import IN_FLIGHT
from tests.fakes.slack_api import FakeSlackAPI
from tests.faults.conftest import (
    Fleet,
    migrate,
    outbox_by_status,
    probe_engine,
    replica_env,
    rows,
    scalar,
    slack_admins,
    slack_posts,
    wait_for,
)
from tests.support.outbox_data import admin_alert_message, put, seed_people

pytestmark = [
    pytest.mark.faults,
    pytest.mark.postgres,
    pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL"),
]

LEASE = 5
PEOPLE = 20


def test_a_replica_killed_mid_send_loses_nothing_and_repeats_only_the_message_in_flight(
    fresh_pg_url: str, fleet: Fleet, fake_slack: FakeSlackAPI
) -> None:
    url = fresh_pg_url
    migrate(url)
    db = probe_engine(url)
    try:
        admins = slack_admins(PEOPLE)
        seed_people(db, reps=0, **admins)
        now = datetime.now(UTC)
        ids = put(db, [admin_alert_message(db, code, f"kill:{code}", now) for code in admins])
        slack_of = dict(rows(db, "SELECT id, slack_user_id FROM person"))

        fake_slack.hold_posts(1, timeout=120)
        env = replica_env(
            db_url=url,
            slack=fake_slack,
            lease_seconds=LEASE,
            extra={"CREDITBOT_OUTBOX__BATCH_SIZE": "5"},
        )
        replicas = [fleet.start(name, env, clock=False) for name in ("a", "b")]
        [held] = wait_for(lambda: list(fake_slack.held), timeout=60, what="a send in flight")
        [victim] = [r for r in replicas if f"/api/{r.name}/" in held.path]
        survivor = next(r for r in replicas if r is not victim)
        victim.kill(signal.SIGKILL)
        assert victim.proc.returncode == -signal.SIGKILL
        [(held_row, status, attempts, lease_until)] = rows(
            db,
            "SELECT o.id, o.status, o.attempts, o.lease_until FROM outbox o JOIN person p "
            "ON p.id = o.recipient_id WHERE p.slack_user_id = :user",
            user=held.params["channel"],
        )
        assert (status, attempts) == ("sending", 1)  # claimed, never recorded
        fake_slack.release_held()  # Slack had it: posted now, the caller long gone
        dm = FakeSlackAPI.dm_for(held.params["channel"])
        wait_for(lambda: fake_slack.messages.get(dm), timeout=10, what="the held post")

        restarted = fleet.start(f"{victim.name}2", env, clock=False)
        wait_for(
            lambda: outbox_by_status(db) == {"sent": PEOPLE},
            timeout=60,
            what=f"every message sent (now {outbox_by_status(db)})",
            interval=0.2,
        )

        posts = slack_posts(fake_slack)
        per_dm = Counter(m.channel for m in posts)
        assert set(per_dm) == {
            FakeSlackAPI.dm_for(slack_of[r]) for (r,) in rows(db, "SELECT recipient_id FROM outbox")
        }
        twice = sorted(d for d, n in per_dm.items() if n == 2)
        assert set(per_dm.values()) <= {1, 2} and dm in twice
        assert len(posts) == PEOPLE + len(twice)
        # the messages sent twice are exactly those in flight at the kill: Slack accepted
        # them from the victim before it died, and nobody recorded that post
        recorded = {
            (ref["channel"], ref["ts"]) for (ref,) in rows(db, "SELECT platform_ref FROM outbox")
        }
        unrecorded = sorted(m.channel for m in posts if (m.channel, m.ts) not in recorded)
        assert unrecorded == twice
        first_post = {}
        for call in fake_slack.calls("chat.postMessage"):
            first_post.setdefault(FakeSlackAPI.dm_for(call.params["channel"]), call)
        for d in twice:  # (the victim's own URL: sent before it died, restarted as "a2")
            assert f"/api/{victim.name}/" in first_post[d].path, d
        assert len(twice) <= IN_FLIGHT  # the dispatcher's sends in flight per channel
        assert scalar(db, "SELECT attempts FROM outbox WHERE id = :i", i=held_row) == 2
        # sent again only after the dead replica's lease ran out
        posted_at = sorted(
            r.at
            for r in fake_slack.calls("chat.postMessage")
            if r.params.get("channel") == held.params["channel"] and r.status == 200
        )
        assert len(posted_at) == 2
        assert posted_at[1] >= lease_until.timestamp(), posted_at[1] - lease_until.timestamp()
        assert lease_until.timestamp() - held.at <= LEASE
        # the stranded rows (the dead replica's batch) went once each, after the lease
        assert sorted(ids) == sorted(i for (i,) in rows(db, "SELECT id FROM outbox"))

        # recovered by themselves: both ready, one leader
        alive = [survivor, restarted]
        fleet.wait_ready(alive, timeout=30)
        fleet.wait_leader(alive, timeout=15)
    finally:
        db.dispose()
