"""`creditbot dispatch --once --now`: an operator sends what is pending, windows or not."""

from __future__ import annotations

import json

from sqlmodel import select
from typer.testing import CliRunner

from bot.cli import app
from credit.store.db import make_engine, read_session
from credit.store.models import AuditLog, OutboxMessage


def test_dispatch_now_sends_every_pending_message_and_audits_the_release(tmp_path):
    db = tmp_path / "now.db"
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{db}"\n', encoding="utf-8")
    runner = CliRunner()

    def run(*args: str):  # type: ignore[no-untyped-def]
        result = runner.invoke(app, ["--config", str(config), *args])
        assert result.exit_code == 0, result.output
        return result

    run("demo", "--as-of", "2026-11-25")
    queued = json.loads(run("scan", "--as-of", "2026-11-25", "--format", "json").stdout)["queued"]
    assert queued > 0
    out = run("dispatch", "--once", "--now")
    assert "pending message(s) released to send now" in out.stderr

    engine = make_engine(f"sqlite:///{db}")
    with read_session(engine) as s:
        statuses = [m.status for m in s.exec(select(OutboxMessage)).all()]
        releases = s.exec(select(AuditLog).where(AuditLog.action == "outbox.release")).all()
    assert statuses and set(statuses) == {"sent"}
    assert len(releases) == 1 and releases[0].actor == "cli"
    assert releases[0].after["messages"] <= queued
