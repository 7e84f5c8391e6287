"""Settings: config.toml plus environment overrides; bad values name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from credit.settings import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("CREDITBOT_"):
            monkeypatch.delenv(key)


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_is_valid_and_equals_the_built_in_defaults():
    from_file = load_settings(ROOT / "config.example.toml")
    assert from_file == Settings()
    assert from_file.tier_table.names == (
        "due_soon",
        "overdue",
        "overdue_1m",
        "overdue_2_6m",
        "overdue_6m_plus",
    )


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    path = _write(tmp_path, '[database]\nurl = "sqlite:///from-file.db"\n')
    assert load_settings(path).database.url == "sqlite:///from-file.db"
    monkeypatch.setenv("CREDITBOT_DATABASE__URL", "postgresql://db/creditbot")
    monkeypatch.setenv("CREDITBOT_CALENDAR__HOLIDAY_COUNTRY", "de")
    settings = load_settings(path)
    assert settings.database.url == "postgresql://db/creditbot"
    assert settings.calendar.holiday_country == "DE"


def test_config_path_comes_from_the_environment(tmp_path, monkeypatch):
    path = _write(tmp_path, '[policy]\ndefault_currency = "USD"\n')
    monkeypatch.setenv("CREDITBOT_CONFIG", str(path))
    assert load_settings().policy.default_currency == "USD"


@pytest.mark.parametrize(
    ("toml", "key", "reason"),
    [
        ('[database]\nurl = "mysql://x"\n', "database.url", "sqlite"),
        ('[database]\nurll = "x"\n', "database.urll", "unknown key"),
        ('[calendar]\ntimezone = "Mars/Base"\n', "calendar.timezone", "unknown time zone"),
        ('[calendar]\nholiday_country = "XX"\n', "calendar.holiday_country", "does not know"),
        ('[calendar]\nsend_window_start = "20:00"\n', "calendar", "send_window_end"),
        (
            "[schedule]\ndispatch_every_seconds = 0\n",
            "schedule.dispatch_every_seconds",
            "greater than or equal to 1",
        ),
        ("[aging]\nbucket_edges = [30, 0]\n", "aging.bucket_edges", "strictly increase"),
        (
            '[[tiers]]\nname = "a"\nmin_days = 0\nmax_days = 5\nnotify = ["rep"]\n'
            'repeat_every_days = 1\n[[tiers]]\nname = "b"\nmin_days = 9\nnotify = ["rep"]\n'
            "repeat_every_days = 1\n",
            "tiers",
            "gap between tiers 'a' and 'b'",
        ),
        (
            '[[tiers]]\nname = "a"\nmin_days = 0\nnotify = ["boss"]\nrepeat_every_days = 1\n',
            "tiers",
            "unknown role",
        ),
        (
            '[[tiers]]\nname = "a"\nmin_days = 0\nnotify = ["rep"]\n',
            "tiers.0.repeat_every_days",
            "Field required",
        ),
    ],
)
def test_a_bad_value_names_the_key_and_the_reason(tmp_path, toml, key, reason):
    path = _write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert str(path) in message
    assert f"  {key}: " in message
    assert reason in message


def test_a_bad_environment_value_is_refused_too(monkeypatch):
    monkeypatch.setenv("CREDITBOT_SCHEDULE__DISPATCH_EVERY_SECONDS", "often")
    with pytest.raises(ConfigError, match=r"schedule\.dispatch_every_seconds"):
        load_settings()


def test_broken_toml_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(_write(tmp_path, "[database\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


# --- [slack] ---------------------------------------------------------------------------------

_SLACK_ON = '[outbox]\nchannels = ["slack"]\n'


def test_slack_secrets_may_be_empty_while_slack_is_not_a_channel(tmp_path):
    settings = load_settings(_write(tmp_path, "[slack]\n"))
    assert settings.slack.bot_token.get_secret_value() == ""
    assert settings.slack.api_base_url == "https://slack.com/api/"


def test_slack_as_a_channel_needs_its_secrets(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, _SLACK_ON))
    message = str(info.value)
    assert "  slack.bot_token: required because 'slack' is in outbox.channels" in message
    assert "  slack.signing_secret: required" in message
    assert "app_token" not in message  # Socket Mode only


def test_slack_secrets_from_the_environment_are_accepted_and_hidden(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDITBOT_SLACK__BOT_TOKEN", "xoxb-1234-5678-abcdef")
    monkeypatch.setenv("CREDITBOT_SLACK__SIGNING_SECRET", "8f14e45fceea167a5a36dedd4bea2543")
    settings = load_settings(
        _write(tmp_path, _SLACK_ON + '[slack]\napi_base_url = "http://x/api"\n')
    )
    assert settings.slack.bot_token.get_secret_value() == "xoxb-1234-5678-abcdef"
    assert "xoxb-1234" not in repr(settings)
    assert settings.slack.api_base_url == "http://x/api/"  # slack_sdk joins method names to it


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bot_token", "xoxb-your-token"),
        ("bot_token", "changeme"),
        ("signing_secret", "..."),
        ("signing_secret", "CHANGE-ME"),
        ("app_token", "xapp-your-token"),
        ("bot_token", "xoxb-..."),
    ],
)
def test_placeholder_slack_secrets_are_refused_naming_the_key(tmp_path, key, value):
    # refused even while Slack is not a channel: a placeholder is never what was meant
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, f'[slack]\n{key} = "{value}"\n'))
    message = str(info.value)
    assert f"  slack.{key}: looks like a placeholder" in message
    assert value not in message  # secrets are not echoed back


def test_slack_tokens_must_have_the_right_prefix(tmp_path):
    with pytest.raises(ConfigError, match=r"slack\.bot_token: must start with xoxb-"):
        load_settings(_write(tmp_path, '[slack]\nbot_token = "xoxp-1234-user-token"\n'))


def test_cli_builds_a_slack_transport_without_client_retries(tmp_path, monkeypatch):
    from bot.cli import _transports
    from bot.transports.slack import SlackTransport

    monkeypatch.setenv("CREDITBOT_SLACK__BOT_TOKEN", "xoxb-1234-5678-abcdef")
    monkeypatch.setenv("CREDITBOT_SLACK__SIGNING_SECRET", "8f14e45fceea167a5a36dedd4bea2543")
    text = (
        _SLACK_ON + '[slack]\napi_base_url = "http://127.0.0.1:9/api/"\nfallback_channel = "C1"\n'
    )
    transports = _transports(load_settings(_write(tmp_path, text)))
    slack = transports["slack"]
    assert isinstance(slack, SlackTransport)
    assert slack.client.token == "xoxb-1234-5678-abcdef"
    assert slack.client.base_url == "http://127.0.0.1:9/api/"
    assert slack.client.retry_handlers == []
    assert slack.fallback_channel == "C1"


TG_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


def test_telegram_as_a_channel_needs_a_bot_token(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, '[outbox]\nchannels = ["telegram"]\n'))
    assert "telegram.bot_token: required because 'telegram' is in outbox.channels" in str(
        info.value
    )


@pytest.mark.parametrize("token", ["changeme", "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "12:short"])
def test_a_telegram_token_that_is_not_a_bot_token_is_refused_without_echoing_it(tmp_path, token):
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, f'[telegram]\nbot_token = "{token}"\n'))
    message = str(info.value)
    assert "telegram.bot_token: not a bot token" in message
    assert token not in message


def test_telegram_webhook_needs_https_and_a_secret_of_telegrams_alphabet(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDITBOT_TELEGRAM__BOT_TOKEN", TG_TOKEN)
    hook = '[telegram]\nwebhook_url = "https://bot.example.com/telegram/webhook"\n'
    with pytest.raises(ConfigError, match="webhook_secret: required when"):
        load_settings(_write(tmp_path, hook))
    with pytest.raises(ConfigError, match="A-Z a-z 0-9 _ -"):
        load_settings(_write(tmp_path, hook + 'webhook_secret = "has spaces!"\n'))
    with pytest.raises(ConfigError, match="https://"):
        load_settings(_write(tmp_path, '[telegram]\nwebhook_url = "http://insecure/hook"\n'))
    monkeypatch.setenv("CREDITBOT_TELEGRAM__WEBHOOK_SECRET", "s3cr3t_Value-42")
    settings = load_settings(
        _write(tmp_path, hook + 'api_base_url = "http://127.0.0.1:8081/bot/"\n')
    )
    assert settings.telegram.webhook_secret.get_secret_value() == "s3cr3t_Value-42"
    assert settings.telegram.api_base_url == "http://127.0.0.1:8081/bot"
    assert TG_TOKEN not in repr(settings)
