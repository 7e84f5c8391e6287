"""Structured logs (``bot.logs``): JSON lines or text, one root handler however often it is
configured, uvicorn's loggers through it, and every secret redacted — the settings' own and
the patterns of tokens, credentials in URLs and authorization headers."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from bot.logs import REDACTED, configure_logging, secret_values, uvicorn_log_config
from credit.settings import (
    ApiSettings,
    DatabaseSettings,
    LoggingSettings,
    Settings,
    SlackSettings,
    TelegramSettings,
)

SLACK_BOT = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_APP = "xapp-1-A0123456789-1234567890123-abcdef0123456789"
SIGNING = "8f14e45fceea167a5a36dedd4bea2543"
TG_TOKEN = "7012345678:AAFq3xZ-Rk9_secretTelegramTokenPart0123"
TG_WEBHOOK = "tg_Webhook-Secret_42"
API_KEY = "ak_live_5d41402abc4b2a76b9719d911017c592"
HMAC = "hmacSecretValue-7c4a8d09ca3762af"
CALLBACK = "callbackSecret-e10adc3949ba59ab"
DB_PASSWORD = "db-P@ss:w0rd"
DB_URL = "postgresql+psycopg://creditbot:db-P%40ss%3Aw0rd@db.internal:5432/credit"
SECRETS = (SLACK_BOT, SLACK_APP, SIGNING, TG_TOKEN, TG_WEBHOOK, API_KEY, HMAC, CALLBACK)


def make_settings(fmt: str = "json", level: str = "INFO") -> Settings:
    return Settings(
        slack=SlackSettings(
            bot_token=SecretStr(SLACK_BOT),
            signing_secret=SecretStr(SIGNING),
            app_token=SecretStr(SLACK_APP),
        ),
        telegram=TelegramSettings(
            bot_token=SecretStr(TG_TOKEN), webhook_secret=SecretStr(TG_WEBHOOK)
        ),
        api=ApiSettings(
            api_keys=[SecretStr(API_KEY)],
            hmac_secret=SecretStr(HMAC),
            callback_secret=SecretStr(CALLBACK),
        ),
        database=DatabaseSettings(url=DB_URL),
        logging=LoggingSettings(format=fmt, level=level),  # type: ignore[arg-type]
    )


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put the root and uvicorn loggers back as they were (pytest's handlers included)."""
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"]
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
    try:
        yield
    finally:
        for name, (handlers, level, propagate, disabled) in saved.items():
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            for handler in handlers:
                logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled


def json_lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def assert_no_secret(text: str) -> None:
    for secret in (*SECRETS, DB_PASSWORD, "db-P%40ss%3Aw0rd", "AAFq3xZ"):
        assert secret not in text, secret


def test_secret_values_finds_every_secret_in_the_settings():
    found = secret_values(make_settings())
    for secret in (*SECRETS, DB_PASSWORD):
        assert secret in found
    assert "db-P%40ss%3Aw0rd" in found  # as written in the URL
    assert "" not in found


def test_json_lines_parse_and_carry_the_fields():
    out = io.StringIO()
    configure_logging(make_settings("json"), stream=out)
    before = datetime.now().astimezone()
    logging.getLogger("creditbot.jobs").info(
        "scan %s: queued %d", "2026-11-25", 3, extra={"job": "scan", "queued": 3}
    )
    logging.getLogger("creditbot.jobs").debug("not at INFO")

    (entry,) = json_lines(out)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "creditbot.jobs"
    assert entry["message"] == "scan 2026-11-25: queued 3"
    assert (entry["job"], entry["queued"]) == ("scan", 3)
    ts = datetime.fromisoformat(entry["ts"])
    assert ts.utcoffset() == timedelta(0)  # UTC
    assert abs(ts - before) < timedelta(seconds=5)
    assert "exc_info" not in entry


def test_settings_secrets_are_redacted_from_messages_args_and_extras():
    out = io.StringIO()
    configure_logging(make_settings("json"), stream=out)
    log = logging.getLogger("creditbot.test")
    log.warning("slack token %s, app token %s", SLACK_BOT, SLACK_APP)
    log.warning(
        "signing %s webhook %s key %s hmac %s callback %s", SIGNING, TG_WEBHOOK, API_KEY, HMAC,
        CALLBACK,
    )  # fmt: skip
    log.error("database %s (password %s)", DB_URL, DB_PASSWORD)
    log.info("headers", extra={"headers": {"X-API-Key": API_KEY}, "token": SLACK_BOT})

    text = out.getvalue()
    assert_no_secret(text)
    entries = json_lines(out)
    assert len(entries) == 4
    assert entries[0]["message"] == "slack token ***, app token ***"
    assert entries[1]["message"] == "signing *** webhook *** key *** hmac *** callback ***"
    assert "creditbot:***@db.internal:5432/credit" in entries[2]["message"]
    assert entries[3]["headers"] == {"X-API-Key": REDACTED}
    assert entries[3]["token"] == REDACTED


def test_the_telegram_token_in_an_httpx_request_url_is_redacted():
    """httpx logs every request's URL at INFO, and Telegram's URLs hold the bot token."""
    out = io.StringIO()
    configure_logging(make_settings("json"), stream=out)
    other_token = "5550001111:AAE-anotherBotTokenNotInSettings_xyz"

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"ok": True, "result": True})

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        client.post(f"https://api.telegram.org/bot{TG_TOKEN}/sendMessage", json={"text": "hi"})
        client.get(f"https://api.telegram.org/bot{other_token}/getMe")

    messages = [e["message"] for e in json_lines(out) if e["logger"] == "httpx"]
    assert messages == [
        'HTTP Request: POST https://api.telegram.org/bot***/sendMessage "HTTP/1.1 200 OK"',
        'HTTP Request: GET https://api.telegram.org/bot***/getMe "HTTP/1.1 200 OK"',
    ]
    assert_no_secret(out.getvalue())
    assert "anotherBotToken" not in out.getvalue()


def test_patterns_catch_secrets_the_settings_do_not_know():
    out = io.StringIO()
    configure_logging(make_settings("json"), stream=out)
    log = logging.getLogger("creditbot.test")
    log.info("user token xoxp-111-222-333-abcdef and refresh xoxe-1-abcdef")
    log.info("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig")
    log.info("headers %s", {"authorization": "Basic dXNlcjpwYXNz", "x-api-key": "k-unknown-1"})
    log.info("calling https://erp:erp-pass-9@erp.example.com/hook?token=abc123&x=1")
    log.info("dsn host=db user=app password=hunter2 dbname=credit")
    log.info("bare telegram token 6660001111:AAHsomethingSecretAndLong_0123456789")

    messages = [e["message"] for e in json_lines(out)]
    assert messages == [
        "user token xoxp-*** and refresh xoxe-***",
        "Authorization: Bearer ***",
        "headers {'authorization': 'Basic ***', 'x-api-key': '***'}",
        "calling https://erp:***@erp.example.com/hook?token=***&x=1",
        "dsn host=db user=app password=*** dbname=credit",
        "bare telegram token ***",
    ]


def test_exceptions_are_included_and_redacted():
    out = io.StringIO()
    configure_logging(make_settings("json"), stream=out)
    try:
        raise ConnectionError(f"POST https://api.telegram.org/bot{TG_TOKEN}/sendMessage failed")
    except ConnectionError:
        logging.getLogger("creditbot.dispatch").exception("send failed for %s", SLACK_BOT)

    (entry,) = json_lines(out)
    assert entry["level"] == "ERROR"
    assert entry["message"] == "send failed for ***"
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert (
        "ConnectionError: POST https://api.telegram.org/bot***/sendMessage failed"
        in (entry["exc_info"])
    )
    assert_no_secret(out.getvalue())


def test_text_format_is_redacted_too():
    out = io.StringIO()
    configure_logging(make_settings("text"), stream=out)
    log = logging.getLogger("creditbot.test")
    log.warning("token %s url %s", SLACK_BOT, f"https://api.telegram.org/bot{TG_TOKEN}/getMe")
    try:
        raise ValueError(f"bad secret {SIGNING} for {DB_URL}")
    except ValueError:
        log.exception("boom")

    text = out.getvalue()
    assert_no_secret(text)
    first = text.splitlines()[0]
    assert first.endswith(
        "WARNING creditbot.test: token *** url https://api.telegram.org/bot***/getMe"
    )
    datetime.fromisoformat(first.split(" ")[0])  # a UTC ISO-8601 time first
    assert "+00:00" in first.split(" ")[0]
    assert "Traceback (most recent call last):" in text
    assert "ValueError: bad secret *** for postgresql+psycopg://creditbot:***@db.internal" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(first)


def test_configuring_twice_replaces_the_handler_and_honours_the_level():
    first, second = io.StringIO(), io.StringIO()
    configure_logging(make_settings("json"), stream=first)
    configure_logging(make_settings("json", level="WARNING"), stream=second)
    configure_logging(make_settings("json", level="WARNING"), stream=second)

    log = logging.getLogger("creditbot.test")
    log.info("dropped at WARNING")
    log.warning("once")

    assert len(logging.getLogger().handlers) == 1
    assert first.getvalue() == ""
    assert [e["message"] for e in json_lines(second)] == ["once"]


def test_uvicorn_logs_go_through_the_same_handler():
    stray = logging.StreamHandler(io.StringIO())
    logging.getLogger("uvicorn.access").addHandler(stray)  # as uvicorn's own config would
    logging.getLogger("uvicorn.access").propagate = False
    out = io.StringIO()
    configure_logging(make_settings("json"), stream=out)

    async def app(scope, receive, send):  # pragma: no cover - never served
        pass

    config = uvicorn.Config(app, log_config=uvicorn_log_config(), log_level="info")
    assert config.log_config == uvicorn_log_config()
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d',
        "10.0.0.1:5000",
        "POST",
        f"/telegram/webhook?token={TG_WEBHOOK}",
        "1.1",
        200,
    )

    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert logging.getLogger(name).handlers == []
        assert logging.getLogger(name).propagate is True
    assert len(logging.getLogger().handlers) == 1
    entries = json_lines(out)
    assert [(e["logger"], e["message"]) for e in entries] == [
        ("uvicorn.error", "Started server process [42]"),
        ("uvicorn.access", '10.0.0.1:5000 - "POST /telegram/webhook?token=*** HTTP/1.1" 200'),
    ]
    assert stray.stream.getvalue() == ""  # type: ignore[attr-defined]
