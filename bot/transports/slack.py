"""The Slack transport: compose, render to Block Kit, ``chat.postMessage`` / ``chat.update``.

Retries belong to the dispatcher (backoff, ``Retry-After`` pauses, attempts counted in the
outbox), so the ``WebClient`` must not retry on its own: slack_sdk's default is
``[ConnectionErrorRetryHandler()]``, which sleeps in place and re-sends once after a dropped
connection (and ``chat.postMessage`` has no idempotency key, so that can post twice);
``RateLimitErrorRetryHandler`` is opt-in and sleeps ``Retry-After`` in place. Build clients
with ``make_web_client`` (``retry_handlers=[]``); ``SlackTransport`` refuses a client with
retry handlers.

Errors: HTTP 429 / ``ratelimited`` → ``RateLimited(Retry-After)``; the errors in ``PERMANENT``
→ ``PermanentSendError`` (``unreachable`` for those about the person); connection errors, 5xx
and any other ``ok: false`` → ``TransientSendError``.

Files (the digest chart) go up with ``upload_file``: slack_sdk's ``files_upload_v2`` asks
``files.getUploadURLExternal`` for an upload URL, POSTs the bytes there and shares the file
with ``files.completeUploadExternal``. That last call takes only conversation ids (``C``/``G``/
``D``…), not user ids, so a user id is first turned into the bot's DM with
``conversations.open``. Errors map as for ``send``; a failed POST of the bytes is transient.

A digest (outbox kind ``digest``) is the message, then its aging chart (``bot.charts``) as
``aging-<date>.png`` in the same conversation. When the chart fails after the text went out,
``send`` does not raise: the ref says ``"chart": "failed: …"`` (the text is not sent twice; the
chart is not retried). Otherwise the ref has ``"chart": "sent"`` and ``chart_file_id``.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import urllib.error
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError

from bot.compose import compose
from bot.messages import Message
from bot.slack_render import render_blocks
from bot.transports.base import (
    Outgoing,
    PermanentSendError,
    RateLimited,
    SendError,
    TransientSendError,
)

log = logging.getLogger(__name__)

DIGEST = "digest"  # the outbox kind whose chart follows the message

# The person cannot be reached on Slack: mark them unreachable.
UNREACHABLE = frozenset(
    {"channel_not_found", "user_not_found", "account_inactive", "is_archived", "not_in_channel"}
)
# Trying again will not help (our token, our scopes, our payload): fail the message at once.
PERMANENT = UNREACHABLE | {
    "invalid_auth",
    "token_revoked",
    "not_authed",
    "missing_scope",
    "msg_too_long",
    "invalid_blocks",
}
DEFAULT_RETRY_AFTER = 1.0


def make_web_client(
    token: str, base_url: str = "https://slack.com/api/", timeout: int = 15
) -> WebClient:
    """A WebClient that never retries or sleeps by itself (the dispatcher does that)."""
    return WebClient(token=token, base_url=base_url, timeout=timeout, retry_handlers=[])


def _retry_after(headers: Any) -> float:
    for key, value in dict(headers or {}).items():
        if str(key).lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                break
    return DEFAULT_RETRY_AFTER


def map_slack_error(exc: SlackApiError) -> SendError:
    """The dispatcher's error kind for a Slack API error."""
    response = exc.response
    status = getattr(response, "status_code", 0)
    data = getattr(response, "data", None)
    error = str(data.get("error") or "") if isinstance(data, dict) else ""
    if status == 429 or error == "ratelimited":
        return RateLimited(_retry_after(getattr(response, "headers", None)), error or "HTTP 429")
    if error in PERMANENT:
        return PermanentSendError(error, unreachable=error in UNREACHABLE)
    if status >= 500:
        return TransientSendError(f"HTTP {status}: {error}"[:300])
    return TransientSendError(f"slack error: {error or 'unknown'} (HTTP {status})"[:300])


class SlackTransport:
    channel = "slack"

    def __init__(self, client: WebClient, *, fallback_channel: str | None = None) -> None:
        if client.retry_handlers:
            raise ValueError(
                "the Slack WebClient must not retry by itself (the dispatcher owns retries): "
                "create it with retry_handlers=[] (bot.transports.slack.make_web_client)"
            )
        self.client = client
        self.fallback_channel = fallback_channel

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self.client, method), **kwargs)
        except SlackApiError as exc:
            raise map_slack_error(exc) from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            # TimeoutError and ConnectionError are OSErrors. The post may have gone through
            # before the connection dropped: a retry can post twice (Slack has no idempotency
            # key), which the outbox accepts (at least once).
            raise TransientSendError(f"connection error: {exc}") from exc

    async def send(self, message: Outgoing) -> dict[str, Any]:
        composed = compose(message.payload, message.address.get("locale"))
        blocks, text = render_blocks(composed)
        channel = message.address.get("slack_user_id") or self.fallback_channel
        if not channel:
            raise PermanentSendError(
                "no Slack user id for the recipient and no [slack] fallback_channel",
                unreachable=True,
            )
        resp = await self._call(
            "chat_postMessage",
            channel=channel,  # a user id posts to the bot's DM with them
            text=text,
            blocks=blocks,
            unfurl_links=False,
            unfurl_media=False,
        )
        ref = {"channel": resp["channel"], "ts": resp["ts"]}
        if message.kind == DIGEST:
            ref.update(await self._send_chart(ref, message))
        return ref

    async def _send_chart(self, ref: dict[str, Any], message: Outgoing) -> dict[str, Any]:
        """The digest's aging chart, uploaded to the conversation the digest went to
        (``bot.charts.send_digest_chart``: a failure is recorded, not raised)."""
        from bot.charts import send_digest_chart

        async def upload(png: bytes, filename: str, title: str) -> dict[str, Any]:
            out = await self.upload_file(ref, filename=filename, content=png, title=title)
            return {"chart_file_id": out.get("file_id")}

        return await send_digest_chart(message, upload)

    async def update(self, ref: dict[str, Any], message: Message) -> dict[str, Any]:
        """Replace a message we posted (``ref`` as ``send`` returned it)."""
        blocks, text = render_blocks(message)
        resp = await self._call(
            "chat_update", channel=ref["channel"], ts=ref["ts"], text=text, blocks=blocks
        )
        return {"channel": resp["channel"], "ts": resp["ts"]}

    async def upload_file(
        self,
        ref_or_channel: dict[str, Any] | str,
        *,
        filename: str,
        content: bytes,
        title: str,
        initial_comment: str | None = None,
    ) -> dict[str, Any]:
        """Upload ``content`` and share it in a conversation.

        ``ref_or_channel``: a ref as ``send`` returned it (the file goes to that message's
        channel, e.g. the DM the digest went to), a conversation id (``C…``/``G…``/``D…``) or
        a user id (``U…``/``W…``: the bot's DM with them). Returns ``{"file_id", "channel"}``
        and, when Slack says, the file's ``permalink``.
        """
        if isinstance(ref_or_channel, dict):
            channel = str(ref_or_channel.get("channel") or "")
        else:
            channel = ref_or_channel or self.fallback_channel or ""
        if not channel:
            raise PermanentSendError("no Slack channel to upload the file to", unreachable=True)
        if channel[0] in "UW":  # completeUploadExternal refuses user ids: open the DM
            opened = await self._call("conversations_open", users=channel)
            channel = opened["channel"]["id"]
        try:
            resp = await self._call(
                "files_upload_v2",
                channel=channel,
                filename=filename,
                content=content,
                title=title,
                initial_comment=initial_comment,
            )
        except SlackRequestError as exc:
            # Raised by slack_sdk itself: the POST of the bytes was answered with a status
            # other than 200 (try again), or the file is over Slack's size limit (it will not
            # get smaller).
            if "Maximum upload file size" in str(exc):
                raise PermanentSendError(f"file too large: {exc}"[:300]) from exc
            raise TransientSendError(f"file upload failed: {exc}"[:300]) from exc
        file = resp.get("file") or {}
        out: dict[str, Any] = {"file_id": file.get("id"), "channel": channel}
        if file.get("permalink"):
            out["permalink"] = file["permalink"]
        return out
