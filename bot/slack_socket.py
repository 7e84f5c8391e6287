"""Slack Socket Mode: the Bolt app (``bot.slack_app``) over a WebSocket that CreditBot opens
to Slack, so no public URL is needed (``creditbot run --slack-socket-mode``).

slack-bolt's ``SocketModeHandler`` with slack_sdk's builtin client (no aiohttp/websockets at
runtime): ``apps.connections.open`` with the app-level token (``[slack] app_token``,
``xapp-…``) gives the WebSocket URL; each envelope is handed to the Bolt app and acknowledged
(``{"envelope_id": …}``) when Bolt has acked; the listeners' work runs afterwards, as over HTTP
(``process_before_response=False``). The client reconnects by itself when Slack drops or
refreshes the connection.
"""

from __future__ import annotations

from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient

from credit.settings import Settings

APP_TOKEN_PREFIX = "xapp-"


class SocketModeConfigError(ValueError):
    """Socket Mode cannot start with these settings (the message names the setting)."""


def socket_mode_problems(settings: Settings) -> list[str]:
    """What keeps Socket Mode from starting (empty when nothing does)."""
    slack = settings.slack
    problems = []
    app_token = slack.app_token.get_secret_value()
    if not app_token:
        problems.append(
            "slack.app_token: required for --slack-socket-mode (an app-level token, "
            "xapp-…, with the connections:write scope; or CREDITBOT_SLACK__APP_TOKEN)"
        )
    elif not app_token.startswith(APP_TOKEN_PREFIX):
        problems.append(f"slack.app_token: must start with {APP_TOKEN_PREFIX!r}")
    if not slack.bot_token.get_secret_value():
        problems.append(
            "slack.bot_token: required for --slack-socket-mode (xoxb-…; or "
            "CREDITBOT_SLACK__BOT_TOKEN)"
        )
    return problems


def socket_mode_handler(
    app: App, settings: Settings, *, web_client: WebClient | None = None
) -> SocketModeHandler:
    """A Socket Mode handler for ``app`` (not connected yet: call ``connect()``, and
    ``close()`` when done).

    ``web_client`` is the client that calls ``apps.connections.open`` (with the app token);
    by default one on ``[slack] api_base_url``. The app keeps its own client (the bot token)
    for everything it says on Slack."""
    problems = socket_mode_problems(settings)
    if problems:
        raise SocketModeConfigError("; ".join(problems))
    app_token = settings.slack.app_token.get_secret_value()
    if web_client is None:
        # Retrying apps.connections.open is harmless (it only issues a URL): the default
        # retry handlers of the WebClient are kept.
        web_client = WebClient(base_url=settings.slack.api_base_url, timeout=15)
    return SocketModeHandler(app, app_token, web_client=web_client)


__all__ = [
    "SocketModeConfigError",
    "socket_mode_handler",
    "socket_mode_problems",
]
