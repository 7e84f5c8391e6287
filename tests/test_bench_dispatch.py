"""The dispatch benchmark's core (bench/dispatch.py) on a tiny workload: the real dispatcher
and transports on the real clock, over real HTTP to the fakes with fast limits. Nothing here
asserts a speed: only that every message arrives once and that the efficiency is computed
as documented."""

from __future__ import annotations

import pytest

from bench.dispatch import (
    Limits,
    Pacing,
    Workload,
    efficiency,
    run_workload,
    slack_min_seconds,
    telegram_min_seconds,
)


def test_minimal_makespan_and_efficiency_for_known_cases():
    # Slack: burst 2, 1 a second: 20 messages to one DM need 18 s, 2 messages none
    assert slack_min_seconds([20, 5, 2], burst=2, per_second=1) == 18
    assert slack_min_seconds([2, 1], burst=2, per_second=1) == 0
    assert slack_min_seconds([3] * 100, 2, 1, workspace_burst=100, workspace_per_second=50) == 4
    # Telegram: a private chat 1 a second (no burst), a group 20 a minute after a burst of 20,
    # 30 a second overall after a burst of 30
    assert telegram_min_seconds({5001: 15, 5002: 3}, 1, 20, 30) == 14
    assert telegram_min_seconds({-100: 26}, 1, 20, 30) == pytest.approx(18)  # 6 at 3 s each
    assert telegram_min_seconds({5000 + i: 1 for i in range(90)}, 1, 20, 30) == 2
    assert efficiency(14, 15.5) == pytest.approx(14 / 15.5)
    assert efficiency(0, 0) == 1.0


def test_every_message_arrives_exactly_once(db_url):
    workload = Workload(slack_users=2, slack_each=5, telegram_chats=2, telegram_each=5)
    fast = Limits(
        slack_burst=2, slack_per_second=20, telegram_per_chat_per_second=20,
        telegram_global_per_second=100,
    )  # fmt: skip
    pacing = Pacing(
        per_recipient_interval=0.05, global_per_second=100, telegram_per_chat_interval=0.05,
        telegram_global_per_second=30,
    )  # fmt: skip

    result = run_workload(db_url, workload, fast, pacing, timeout=30)

    for channel in ("slack", "telegram"):
        c = result.channels[channel]
        assert (c.messages, c.delivered, c.duplicates, c.lost) == (10, 10, 0, 0), channel
        assert c.rate_limited == 0, channel  # our pacing kept under the fake's limits
        # 5 a recipient at 20 a second: Slack's burst of 2 leaves 3 gaps, Telegram 4
        assert c.min_seconds == pytest.approx({"slack": 0.15, "telegram": 0.2}[channel])
        assert c.efficiency == pytest.approx(c.min_seconds / c.seconds)
    assert result.runs == 1  # one dispatch_once took the whole backlog
