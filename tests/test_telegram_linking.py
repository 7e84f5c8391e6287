"""Linking a Telegram chat to a person: one-time codes (``creditbot people link``), redeemed with
``/start CODE`` by a real PTB ``Application`` — processing updates, and long-polling the fake
Telegram Bot API (tests/fakes/telegram_api.py) — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select
from sqlmodel import Session
from typer.testing import CliRunner

from bot.cli import app as cli
from bot.telegram_app import build_telegram_application, start_polling, stop_polling
from credit.store.db import make_engine, read_session, write_session
from credit.store.models import AuditLog, Person, Region, TelegramLinkCode
from credit.store.telegram import (
    CODE_ALPHABET,
    LinkError,
    create_link_code,
    redeem_link_code,
)
from tests.fakes.telegram_api import DEFAULT_TOKEN
from tests.test_telegram_app import (
    NOW,
    OTHER_CHAT,
    REP_CHAT,
    Harness,
    telegram_harness,
)

NEW_CHAT = 7001
GROUP = -7001
TTL = timedelta(minutes=1440)


@pytest.fixture(autouse=True)
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
def tg(engine: Engine) -> Iterator[Harness]:
    with telegram_harness(engine, bot_username="creditbot_test_bot") as harness:
        yield harness


def new_code(tg: Harness, person: str = "rep3", **changes: object) -> str:
    with write_session(tg.engine) as s:
        row = s.execute(select(Person).where(Person.code == person)).scalar_one()
        for key, value in changes.items():
            setattr(row, key, value)
        s.add(row)
        s.flush()
        return create_link_code(s, row, tg.clock.now(), TTL)


def chat_of(tg: Harness, person: str) -> int | None:
    with read_session(tg.engine) as s:
        return s.execute(select(Person.telegram_chat_id).where(Person.code == person)).scalar_one()


# --- /start CODE ---------------------------------------------------------------------------------


def test_start_with_a_code_links_the_chat_and_welcomes_the_person(tg: Harness) -> None:
    code = new_code(tg, unreachable_reason="telegram: bot was blocked by the user")
    assert len(code) == 8 and set(code) <= set(CODE_ALPHABET)

    tg.run(lambda tg: tg.say(NEW_CHAT, f"/start {code}"))

    assert chat_of(tg, "rep3") == NEW_CHAT
    with read_session(tg.engine) as s:
        person = s.execute(select(Person).where(Person.code == "rep3")).scalar_one()
        assert person.unreachable_reason is None
        row = s.execute(select(TelegramLinkCode)).scalar_one()
        assert (row.used_at, row.chat_id) == (tg.clock.now(), NEW_CHAT)
        link = s.execute(select(AuditLog).where(AuditLog.action == "telegram.link")).scalar_one()
        assert (link.actor, link.entity_id, link.channel) == ("rep3", "rep3", "telegram")
        assert link.after == {"telegram_chat_id": NEW_CHAT, "taken_from": []}
    [welcome] = tg.texts(NEW_CHAT)
    assert welcome.startswith("Welcome, Lily Link! This chat is now linked to CreditBot")
    assert "/ar" in welcome  # what the bot can do


def test_a_code_works_once(tg: Harness) -> None:
    code = new_code(tg)

    async def body(tg: Harness) -> None:
        await tg.say(NEW_CHAT, f"/start {code}")
        await tg.say(NEW_CHAT + 1, f"/start {code}")

    tg.run(body)
    assert chat_of(tg, "rep3") == NEW_CHAT
    assert tg.texts(NEW_CHAT + 1) == [
        "This link code was already used. Ask your administrator for a new one."
    ]


def test_an_expired_code_is_refused(tg: Harness) -> None:
    code = new_code(tg)
    tg.clock.advance(minutes=tg.settings.telegram.link_code_ttl_minutes)
    tg.run(lambda tg: tg.say(NEW_CHAT, f"/start {code}"))
    assert chat_of(tg, "rep3") is None
    assert tg.texts(NEW_CHAT) == [
        "This link code has expired. Ask your administrator for a new one."
    ]


def test_unknown_missing_and_group_codes_are_refused(tg: Harness) -> None:
    code = new_code(tg)

    async def body(tg: Harness) -> None:
        await tg.say(NEW_CHAT, "/start ABCDEFGH")
        await tg.say(NEW_CHAT, "/start")
        await tg.say(GROUP, f"/start {code}", user=NEW_CHAT)

    tg.run(body)
    assert tg.texts(NEW_CHAT) == [
        "This link code is not known. Check it, or ask your administrator for a new one.",
        "To link this chat, send /start followed by your link code. "
        "Ask your administrator for a code.",
    ]
    assert tg.texts(GROUP) == ["Link codes work only in a private chat with the bot."]
    assert chat_of(tg, "rep3") is None
    with read_session(tg.engine) as s:  # the code is still good for a private chat
        assert s.execute(select(TelegramLinkCode.used_at)).scalar_one() is None


def test_codes_are_read_case_insensitively_and_welcome_in_the_persons_language(
    tg: Harness,
) -> None:
    code = new_code(tg, locale="zh_CN")
    tg.run(lambda tg: tg.say(NEW_CHAT, f"/start {code.lower()}"))
    assert chat_of(tg, "rep3") == NEW_CHAT
    assert tg.texts(NEW_CHAT)[0].startswith("欢迎，Lily Link！")


def test_a_linked_person_saying_start_again_is_greeted(tg: Harness) -> None:
    tg.run(lambda tg: tg.say(REP_CHAT, "/start"))
    assert tg.texts(REP_CHAT)[0].startswith("Hello, Rita Rep. This chat is linked to CreditBot.")


def test_linking_a_chat_takes_it_from_its_previous_person(tg: Harness) -> None:
    """Rita's phone now belongs to Lily: the chat moves, Rita is no longer reachable there."""
    code = new_code(tg)
    tg.run(lambda tg: tg.say(REP_CHAT, f"/start {code}"))
    assert chat_of(tg, "rep3") == REP_CHAT
    assert chat_of(tg, "rep1") is None
    with read_session(tg.engine) as s:
        link = s.execute(select(AuditLog).where(AuditLog.action == "telegram.link")).scalar_one()
        assert link.after == {"telegram_chat_id": REP_CHAT, "taken_from": ["rep1"]}


def test_an_inactive_person_gets_no_code_and_cannot_redeem_one(tg: Harness) -> None:
    code = new_code(tg)
    with write_session(tg.engine) as s:
        person = s.execute(select(Person).where(Person.code == "rep3")).scalar_one()
        person.active = False
        s.add(person)
        s.flush()
        with pytest.raises(LinkError) as refused:
            create_link_code(s, person, NOW, TTL)
        assert refused.value.reason == "inactive"
    tg.run(lambda tg: tg.say(NEW_CHAT, f"/start {code}"))
    assert chat_of(tg, "rep3") is None
    assert tg.texts(NEW_CHAT) == [
        "This link code belongs to a person who is no longer active. Ask your administrator."
    ]


def test_redeem_link_code_errors(engine: Engine) -> None:
    with write_session(engine) as s:
        region = Region(code="N", name="North")
        s.add(region)
        s.flush()
        person = Person(code="p1", name="P One", role="rep", region_id=region.id)
        s.add(person)
        s.flush()
        code = create_link_code(s, person, NOW, TTL)
    for when, reason in ((NOW + TTL, "expired"), (NOW, None), (NOW, "used")):
        with write_session(engine) as s:
            if reason is None:
                assert redeem_link_code(s, code, OTHER_CHAT, when).telegram_chat_id == OTHER_CHAT
                continue
            with pytest.raises(LinkError) as refused:
                redeem_link_code(s, code, OTHER_CHAT, when)
            assert refused.value.reason == reason
    with write_session(engine) as s, pytest.raises(LinkError, match="unknown link code"):
        redeem_link_code(s, "NOPE", OTHER_CHAT, NOW)


# --- polling -------------------------------------------------------------------------------------


def test_the_polling_application_links_a_chat(tg: Harness) -> None:
    code = new_code(tg)
    application = build_telegram_application(tg.settings, tg.engine, tg.clock, polling=True)

    async def main() -> None:
        await start_polling(application)
        try:
            tg.fake.push_update(tg.fake.make_message_update(NEW_CHAT, f"/start {code}"))
            for _ in range(500):  # the long poll returns at once with the pushed update
                if tg.fake.messages(NEW_CHAT):
                    break
                await asyncio.sleep(0.01)
        finally:
            await stop_polling(application)

    asyncio.run(main())
    assert chat_of(tg, "rep3") == NEW_CHAT
    assert tg.texts(NEW_CHAT)[0].startswith("Welcome, Lily Link!")
    assert tg.fake.calls("deleteWebhook")  # the Updater clears any webhook first
    updates = tg.fake.calls("getUpdates")[0].params
    assert set(updates["allowed_updates"]) == {"message", "callback_query"}


# --- the CLI -----------------------------------------------------------------------------------


def write_config(tmp_path: Path, db_url: str, **telegram: str) -> Path:
    config = tmp_path / "config.toml"
    lines = [f'[database]\nurl = "{db_url}"\n', "[telegram]"]
    lines += [f'{key} = "{value}"' for key, value in telegram.items()]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def test_people_link_prints_a_code_and_a_deep_link(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, db_url, bot_username="@creditbot_test_bot")
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(config), "db", "upgrade"]).exit_code == 0
    engine = make_engine(db_url)
    try:
        with write_session(engine) as s:
            s.add(Person(code="rep9", name="Nina [North]", role="rep"))

        result = runner.invoke(cli, ["--config", str(config), "people", "link", "rep9"])
        assert result.exit_code == 0, result.output
        code = re.search(r"for rep9 \(Nina \[North\]\): ([A-Z0-9]{8})\n", result.stdout)
        assert code is not None, result.stdout
        assert f"/start {code.group(1)}" in result.stdout
        assert f"https://t.me/creditbot_test_bot?start={code.group(1)}" in result.stdout
        assert "valid once, until" in result.stdout
        with read_session(engine) as s:
            row = s.execute(select(TelegramLinkCode)).scalar_one()
            assert row.code == code.group(1) and row.used_at is None
            audit = s.execute(select(AuditLog)).scalar_one()
            assert (audit.action, audit.entity_id, audit.actor) == (
                "telegram.link_code",
                "rep9",
                "cli",
            )
            assert code.group(1) not in str(audit.after)  # the audit log does not keep the code

        unknown = runner.invoke(cli, ["--config", str(config), "people", "link", "nobody"])
        assert unknown.exit_code == 2
        assert "no person with code 'nobody'" in unknown.stderr
    finally:
        engine.dispose()


def test_people_link_without_a_bot_username_prints_no_link(tmp_path: Path) -> None:
    db = tmp_path / "plain.db"
    config = write_config(tmp_path, f"sqlite:///{db}")
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(config), "db", "upgrade"]).exit_code == 0
    with Session(create_engine(f"sqlite:///{db}")) as s:
        s.add(Person(code="rep9", name="Nina", role="rep"))
        s.commit()
    result = runner.invoke(cli, ["--config", str(config), "people", "link", "rep9"])
    assert result.exit_code == 0, result.output
    assert "t.me" not in result.stdout


def test_run_with_telegram_polling_needs_a_bot_token(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'run.db'}")
    result = CliRunner().invoke(cli, ["--config", str(config), "run", "--telegram-polling"])
    assert result.exit_code == 2
    assert "telegram.bot_token is not set" in result.stderr
    assert not (tmp_path / "run.db").exists()  # refused before anything started


def test_run_with_telegram_polling_refuses_a_webhook_configuration(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'run.db'}",
        bot_token=DEFAULT_TOKEN,
        webhook_secret="s3cret_webhook",
        webhook_url="https://bot.example.com/telegram/webhook",
    )
    result = CliRunner().invoke(cli, ["--config", str(config), "run", "--telegram-polling"])
    assert result.exit_code == 2
    assert "polling would delete the webhook" in result.stderr
