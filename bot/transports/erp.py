"""The ERP transport: a decided shipment request POSTed, signed, to the ERP's callback URL.

Outbox rows of kind ``erp_callback`` on channel ``erp`` (``credit.store.approvals``) carry
``{"callback_url": …, "body": {…}}``. The body is sent as compact JSON (keys sorted, UTF-8),
with

* ``X-CreditBot-Signature: sha256=<hex HMAC-SHA256(api.callback_secret, raw body)>``,
* ``X-CreditBot-Timestamp``: Unix seconds when sent (the ERP may refuse stale ones),
* ``X-CreditBot-Idempotency-Key``: ``erp_callback:<request id>:<status>`` (also in the body):
  delivery is at least once, so the ERP should treat a repeated key as done.

Outcomes for the dispatcher: a 2xx is delivered; 5xx, 408, timeouts and connection errors
are ``TransientSendError`` (retried with backoff); 429 is ``RateLimited`` (``Retry-After`` in
seconds or as an HTTP date); any other answer — 4xx, a redirect (not followed) — and a URL
that cannot be called are ``PermanentSendError`` (failed at once, admins alerted).
Nothing here retries; nothing logs the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from bot.transports.base import Outgoing, PermanentSendError, RateLimited, TransientSendError

SIGNATURE_HEADER = "X-CreditBot-Signature"
TIMESTAMP_HEADER = "X-CreditBot-Timestamp"
IDEMPOTENCY_HEADER = "X-CreditBot-Idempotency-Key"
USER_AGENT = "CreditBot-ERP-Callback/1"
DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRY_AFTER = 30.0
MAX_DETAIL = 200


class Clock(Protocol):
    def now(self) -> datetime: ...


def encode_body(body: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def sign(secret: str | bytes, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, body)>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, body: bytes, signature: str) -> bool:
    """What the ERP does with a callback: compare the signature in constant time."""
    return hmac.compare_digest(sign(secret, body).encode(), signature.encode("utf-8", "replace"))


def retry_after_seconds(value: str | None, now: datetime) -> float:
    """``Retry-After`` as seconds (a number or an HTTP date); a default when absent or odd."""
    if not value:
        return DEFAULT_RETRY_AFTER
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - now).total_seconds()
        except (TypeError, ValueError, IndexError):
            return DEFAULT_RETRY_AFTER
    if seconds != seconds:  # NaN
        return DEFAULT_RETRY_AFTER
    return max(1.0, seconds)


def _detail(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ") if response.content else ""
    reason = response.reason_phrase or ""
    out = f"ERP answered {response.status_code} {reason}".strip()
    return f"{out}: {text[:MAX_DETAIL]}" if text else out


class ErpTransport:
    channel = "erp"

    def __init__(
        self,
        secret: str,
        *,
        clock: Clock,
        client: httpx.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._secret = secret
        self.clock = clock
        self.client = client  # None: a client per send (the dispatcher's loop may change)
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Any, *, clock: Clock) -> ErpTransport:
        return cls(
            settings.api.callback_secret.get_secret_value(),
            clock=clock,
            timeout=settings.api.callback_timeout_seconds,
        )

    async def send(self, message: Outgoing) -> dict[str, Any]:
        url = message.payload.get("callback_url")
        body = message.payload.get("body")
        if not isinstance(url, str) or not url or not isinstance(body, dict):
            raise PermanentSendError(f"outbox message {message.id} has no callback_url and body")
        if not self._secret:
            raise PermanentSendError(
                "api.callback_secret is not set: ERP callbacks cannot be signed "
                "(set it, then `creditbot outbox retry`)"
            )
        raw = encode_body(body)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(self._secret, raw),
            TIMESTAMP_HEADER: str(int(self.clock.now().timestamp())),
        }
        key = body.get("idempotency_key")
        if isinstance(key, str):
            headers[IDEMPOTENCY_HEADER] = key
        response = await self._post(url, raw, headers)
        status = response.status_code
        if 200 <= status < 300:
            return {"url": url, "status": status, "sent_at": self.clock.now().isoformat()}
        if status == 429:
            wait = retry_after_seconds(response.headers.get("retry-after"), self.clock.now())
            raise RateLimited(wait, "(ERP 429)")
        if status == 408 or status >= 500:
            raise TransientSendError(_detail(response))
        if 300 <= status < 400:
            where = response.headers.get("location", "?")
            raise PermanentSendError(
                f"ERP answered {status} (redirect to {where[:MAX_DETAIL]}, not followed): "
                "fix the callback URL"
            )
        raise PermanentSendError(_detail(response))

    async def _post(self, url: str, raw: bytes, headers: dict[str, str]) -> httpx.Response:
        try:
            if self.client is not None:
                return await self.client.post(url, content=raw, headers=headers)
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
                return await client.post(url, content=raw, headers=headers)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise PermanentSendError(f"cannot call the callback URL: {exc}"[:300]) from exc
        except httpx.TimeoutException as exc:
            raise TransientSendError(f"ERP callback timed out: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:  # connection refused, reset, protocol errors
            raise TransientSendError(
                f"ERP callback failed: {type(exc).__name__}: {exc}"[:300]
            ) from exc


__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "ErpTransport",
    "encode_body",
    "retry_after_seconds",
    "sign",
    "verify",
]
