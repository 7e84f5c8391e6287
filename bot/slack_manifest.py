"""The Slack app manifest an admin pastes into api.slack.com/apps → "From a manifest"."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

EVENTS_PATH = "/slack/events"

BOT_SCOPES = (
    "chat:write",  # reminders, approval cards, updating them in place
    "im:write",  # open DMs with reps and managers
    "users:read",  # map Slack users to people
    "commands",  # /credit CUSTOMER, /credit request CUSTOMER AMOUNT ORDER
    "files:write",  # the digest chart
)


class ManifestError(ValueError):
    pass


def build_manifest(
    public_url: str | None, *, socket_mode: bool = False, app_name: str = "CreditBot"
) -> dict[str, Any]:
    """The manifest: scopes, the /credit command, interactivity and App Home.

    Over HTTP every request URL is ``<public_url>/slack/events`` and must be https (Slack
    refuses anything else); in Socket Mode there are no URLs.
    """
    request_url = None
    if not socket_mode:
        if not public_url:
            raise ManifestError("give the public https URL of CreditBot (or use Socket Mode)")
        parsed = urlparse(public_url)
        if parsed.scheme != "https" or not parsed.netloc:
            raise ManifestError(f"Slack needs an https URL, got {public_url!r}")
        request_url = public_url.rstrip("/") + EVENTS_PATH
    command: dict[str, Any] = {
        "command": "/credit",
        "description": "A customer's credit file, or raise a shipment request for approval",
        "usage_hint": "CUSTOMER | request CUSTOMER AMOUNT ORDER",
        "should_escape": False,
    }
    interactivity: dict[str, Any] = {"is_enabled": True}
    events: dict[str, Any] = {"bot_events": ["app_home_opened"]}
    if request_url:
        command["url"] = request_url
        interactivity["request_url"] = request_url
        events["request_url"] = request_url
    return {
        "display_information": {
            "name": app_name,
            "description": "Credit control: receivable reminders, credit holds and approvals",
        },
        "features": {
            "app_home": {
                "home_tab_enabled": True,
                "messages_tab_enabled": True,
                "messages_tab_read_only_enabled": True,
            },
            "bot_user": {"display_name": app_name, "always_online": True},
            "slash_commands": [command],
        },
        "oauth_config": {"scopes": {"bot": list(BOT_SCOPES)}},
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket_mode,
            "token_rotation_enabled": False,
        },
    }
