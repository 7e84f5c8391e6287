"""Slack Socket Mode end to end: the real slack_sdk builtin Socket Mode client (through
slack-bolt's ``SocketModeHandler``, ``bot.slack_socket``) connects to a fake Socket Mode
endpoint on 127.0.0.1 (``tests/fakes/slack_socket.py``: ``apps.connections.open`` + a
WebSocket), receives an ``interactive`` envelope, acknowledges it, and the Bolt app
(``bot.slack_app``) acts on a real database (SQLite and PostgreSQL) and answers through the
fake Slack Web API (``tests/fakes/slack_api.py``).

The envelope is acknowledged first, the listener's work runs afterwards in Bolt's thread
pool: the tests wait for what they check by bounded polling (``wait_until``), never a sleep.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr
from slack_sdk import WebClient
from sqlalchemy import select
from typer.testing import CliRunner

from bot.cli import app as cli
from bot.slack_app import build_slack_app
from bot.slack_socket import SocketModeConfigError, socket_mode_handler
from credit.settings import Settings, SlackSettings
from credit.store.db import make_engine, read_session
from credit.store.migrate import upgrade
from credit.store.models import InvoiceAck
from jobs.clock import FakeClock
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_socket import FakeSlackSocket, wait_until
from tests.test_slack_interactivity import (
    NOBODY,
    NOW,
    NUMBER,
    REP,
    SECRET,
    Harness,
    build_ledger,
)

APP_TOKEN = "xapp-1-A0000FAKE-1234-0123456789abcdef"


@dataclass
class Socket:
    harness: Harness  # the ledger, the posted reminder, the click payloads, the DB checks
    fake: FakeSlackSocket


@pytest.fixture
def socket(engine) -> Iterator[Socket]:
    build_ledger(engine)
    with FakeSlackAPI() as slack, FakeSlackSocket(app_token=APP_TOKEN) as fake:
        settings = Settings(
            slack=SlackSettings(
                bot_token=SecretStr(slack.token),
                signing_secret=SecretStr(SECRET),
                app_token=SecretStr(APP_TOKEN),
                api_base_url=slack.url,  # the app's own client: the fake Web API
            )
        )
        bolt = build_slack_app(engine, settings, clock=FakeClock(NOW))
        # apps.connections.open goes to the fake Socket Mode endpoint
        handler = socket_mode_handler(bolt, settings, web_client=WebClient(base_url=fake.url))
        handler.client.auto_reconnect_enabled = False
        handler.client.default_auto_reconnect_enabled = False
        handler.connect()
        try:
            yield Socket(Harness(engine, slack, None, None, settings), fake)
        finally:
            handler.close()


def test_an_acknowledge_click_over_socket_mode_is_acked_and_acted_on(socket):
    h, fake = socket.harness, socket.fake
    [opened] = fake.opens
    assert opened == {
        "method": "apps.connections.open",
        "authorization": f"Bearer {APP_TOKEN}",
        "ok": True,
    }

    envelope_id = fake.deliver("interactive", h.click_payload("ack"))

    ack = fake.wait_for_ack(envelope_id)
    assert ack["envelope_id"] == envelope_id
    [update] = wait_until(h.updates, what="chat.update")
    assert (update["channel"], update["ts"]) == (h.message["channel"], h.message["ts"])
    texts = [e["text"] for b in update["blocks"] if b["type"] == "context" for e in b["elements"]]
    assert f"✓ {NUMBER} acknowledged by Rita Rep" in texts
    assert h.count(InvoiceAck) == 1
    with read_session(h.engine) as s:
        row = s.execute(select(InvoiceAck)).scalar_one()
        assert (row.tier, row.channel) == ("overdue_1m", "slack")
    assert h.audit() == [("rep1", "ack", NUMBER)]
    assert h.slack.ephemerals == []


def test_an_unmapped_users_click_over_socket_mode_is_refused_and_audited(socket):
    h, fake = socket.harness, socket.fake

    envelope_id = fake.deliver("interactive", h.click_payload("ack", user=NOBODY))

    assert fake.wait_for_ack(envelope_id)["envelope_id"] == envelope_id
    [note] = wait_until(lambda: list(h.slack.ephemerals), what="the ephemeral refusal")
    assert (note["channel"], note["user"]) == (h.dm, NOBODY)
    assert "not linked" in note["text"]
    assert h.audit() == [(f"slack:{NOBODY}", "slack.refused", NUMBER)]
    h.unchanged()


def test_the_same_click_delivered_twice_acts_once(socket, caplog):
    """Slack redelivers an envelope it saw no ack for: acked again, acted on once."""
    h, fake = socket.harness, socket.fake
    caplog.set_level(logging.INFO, logger="bot.slack_app")
    payload = h.click_payload("ack")
    fake.wait_for_ack(fake.deliver("interactive", payload))
    wait_until(h.updates, what="chat.update")

    fake.wait_for_ack(fake.deliver("interactive", payload))
    wait_until(lambda: "already processed" in caplog.text, what="the duplicate to be seen")

    assert h.count(InvoiceAck) == 1
    assert h.audit() == [("rep1", "ack", NUMBER)]
    assert len(h.updates()) == 1


# --- configuration ------------------------------------------------------------------------------


def test_socket_mode_handler_refuses_settings_without_an_app_token():
    settings = Settings(slack=SlackSettings(bot_token=SecretStr("xoxb-1-2-abc")))
    with pytest.raises(SocketModeConfigError, match=r"slack\.app_token"):
        socket_mode_handler(None, settings)  # type: ignore[arg-type]


def test_run_with_socket_mode_but_no_app_token_exits_2_naming_the_setting(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("CREDITBOT_"):
            monkeypatch.delenv(key)
    db = tmp_path / "never.db"
    path = tmp_path / "config.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///{db.as_posix()}"\n\n'
        '[slack]\nbot_token = "xoxb-1234-5678-abcdef"\n',
        encoding="utf-8",
    )

    result = CliRunner().invoke(cli, ["--config", str(path), "run", "--slack-socket-mode"])

    assert result.exit_code == 2, result.output
    assert "slack.app_token" in result.output
    assert not db.exists()  # refused before migrating or starting anything


# --- creditbot run --slack-socket-mode, as a process ------------------------------------------


def test_run_with_socket_mode_connects_and_serves_the_app_home(tmp_path):
    """The real command: migrates, starts the scheduler, connects over Socket Mode (one
    ``api_base_url`` for the whole app: the socket fake answers apps.connections.open and
    passes every other method on to the fake Web API), answers an ``app_home_opened`` event
    and stops cleanly on Ctrl+C."""
    url = f"sqlite:///{(tmp_path / 'run.db').as_posix()}"
    engine = make_engine(url)
    upgrade(engine)
    build_ledger(engine)
    engine.dispose()
    with FakeSlackAPI() as slack, FakeSlackSocket(app_token=APP_TOKEN, upstream=slack.url) as fake:
        config = tmp_path / "config.toml"
        config.write_text(
            f'[database]\nurl = "{url}"\n\n[slack]\nbot_token = "{slack.token}"\n'
            f'signing_secret = "{SECRET}"\napp_token = "{APP_TOKEN}"\n'
            f'api_base_url = "{fake.url}"\n',
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITBOT_")}
        command = [sys.executable, "-m", "bot.cli", "--config", str(config), "run"]
        proc = subprocess.Popen(
            [*command, "--slack-socket-mode"],
            cwd=Path(__file__).resolve().parent.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_until(lambda: fake.connected() or proc.poll() is not None, 60, "run to connect")
            assert proc.poll() is None, proc.communicate()[0]
            event = {
                "type": "app_home_opened",
                "user": REP,
                "channel": FakeSlackAPI.dm_for(REP),
                "tab": "home",
                "event_ts": "1764036000.000100",
            }
            payload = {
                "token": "legacy-verification-token",
                "team_id": "T0000FAKE",
                "api_app_id": "A0000FAKE",
                "event": event,
                "type": "event_callback",
                "event_id": "Ev0000FAKE1",
                "event_time": 1764036000,
            }
            envelope_id = fake.deliver("events_api", payload)

            assert fake.wait_for_ack(envelope_id)["envelope_id"] == envelope_id
            [publish] = wait_until(lambda: slack.calls("views.publish"), 20, "views.publish")
            assert publish.params["user_id"] == REP
            assert "Rita Rep" in json.dumps(publish.params["view"], ensure_ascii=False)
            assert [o["authorization"] for o in fake.opens] == [f"Bearer {APP_TOKEN}"]
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                output, _ = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
                raise AssertionError(f"run did not stop on SIGINT:\n{output}") from None
        assert proc.returncode == 0, output
        assert "stopped" in output
