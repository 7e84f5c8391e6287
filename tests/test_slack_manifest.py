"""`creditbot slack manifest`: one paste creates the Slack app."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.slack_manifest import BOT_SCOPES, ManifestError, build_manifest


def test_http_manifest_points_every_request_url_at_slack_events():
    m = build_manifest("https://credit.example.com/")
    url = "https://credit.example.com/slack/events"
    assert m["settings"]["interactivity"] == {"is_enabled": True, "request_url": url}
    assert m["settings"]["event_subscriptions"]["request_url"] == url
    assert m["settings"]["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    [command] = m["features"]["slash_commands"]
    assert (command["command"], command["url"]) == ("/credit", url)
    assert set(m["oauth_config"]["scopes"]["bot"]) == set(BOT_SCOPES) >= {"chat:write", "commands"}
    assert m["features"]["app_home"]["home_tab_enabled"] is True
    assert m["settings"]["socket_mode_enabled"] is False


def test_socket_mode_manifest_has_no_urls():
    m = build_manifest(None, socket_mode=True)
    assert m["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in m["settings"]["interactivity"]
    assert "url" not in m["features"]["slash_commands"][0]


@pytest.mark.parametrize("url", [None, "http://credit.example.com", "credit.example.com"])
def test_http_manifest_needs_an_https_url(url):
    with pytest.raises(ManifestError):
        build_manifest(url)


def test_cli_prints_json_and_refuses_plain_http():
    runner = CliRunner()
    ok = runner.invoke(app, ["slack", "manifest", "--url", "https://c.example.com"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["settings"]["interactivity"]["request_url"].endswith(
        "/slack/events"
    )
    bad = runner.invoke(app, ["slack", "manifest", "--url", "http://c.example.com"])
    assert bad.exit_code == 2
    assert "https" in bad.stderr
