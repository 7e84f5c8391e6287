"""The HTTP app (Starlette, ASGI): Slack's interactivity requests, Telegram's webhook and a
health check.

* ``POST /slack/events`` → the Bolt app (``bot.slack_app.build_slack_app``), through the
  Starlette adapter's request/response conversion (``slack_bolt.adapter.starlette``). Its
  ``SlackRequestHandler.handle`` calls the synchronous ``App.dispatch`` on the event loop,
  which would block the loop while Bolt waits (up to 3 s) for a listener's ``ack()``; we
  dispatch in Starlette's thread pool instead.
* ``POST /telegram/webhook`` → the PTB application (``bot.telegram_app``). The
  ``X-Telegram-Bot-Api-Secret-Token`` header must equal ``[telegram] webhook_secret``
  (compared in constant time, before the body is read: 403 otherwise). The body must be a
  JSON object with an integer ``update_id`` (400 otherwise); it becomes an ``Update`` and is
  processed before the answer, ``200 {"ok": true}`` — a repeated ``update_id`` is dropped by
  the application's first handler group. The application is initialized when the ASGI app
  starts (lifespan) and shut down when it stops. ``register_webhook`` tells Telegram the URL
  and the secret (``setWebhook``).
* ``GET /healthz`` → ``{"status": "ok"}``.
* ``/api/v1/…`` → the ERP API (``bot.api.api_routes``), when given as ``api``.

Bolt verifies each request (``v0=`` HMAC-SHA256 signature; timestamps more than 300 s away
refused) and answers 401 — but it reads the timestamp with ``int()``, so a non-numeric one
raises and Bolt answers 500. Requests without a numeric ``X-Slack-Request-Timestamp`` or
without ``X-Slack-Signature``, and bodies Bolt cannot parse (not UTF-8, a ``payload`` that is
not JSON: its parser raises before the signature check), are refused here with 401. Nothing here
logs headers or bodies (the signature is in a header; secrets never leave the settings).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from telegram import Bot
    from telegram.ext import Application

    from credit.settings import Settings

log = logging.getLogger(__name__)

TELEGRAM_SECRET_HEADER = "x-telegram-bot-api-secret-token"
MAX_TIMESTAMP_DIGITS = 12  # Unix seconds have 10 digits until the year 2286
MAX_BODY_BYTES = 1_000_000


def _unauthorized() -> Response:
    return JSONResponse({"error": "invalid request"}, status_code=401)


def well_formed_slack_headers(request: Request) -> bool:
    """A signature and an ASCII-digit timestamp are present (Bolt checks their values)."""
    timestamp = request.headers.get("x-slack-request-timestamp", "")
    signature = request.headers.get("x-slack-signature", "")
    return (
        bool(signature)
        and 0 < len(timestamp) <= MAX_TIMESTAMP_DIGITS
        and timestamp.isascii()
        and timestamp.isdigit()
    )


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(
    slack_app: App | None = None,
    telegram_app: Application | None = None,
    telegram_secret: str | None = None,
    *,
    register_telegram_webhook: bool = False,
    settings: Settings | None = None,
    api: Sequence[BaseRoute] | None = None,
) -> Starlette:
    """The ASGI app; without ``slack_app`` and ``telegram_app`` only ``/healthz`` is served.

    ``telegram_app`` (``bot.telegram_app.build_telegram_application``) needs
    ``telegram_secret``, the webhook secret Telegram sends back in each request. With
    ``register_telegram_webhook`` (and ``settings``) the app calls ``setWebhook`` when it
    starts (``creditbot serve`` with ``[telegram] webhook_url``). ``api``: the ERP API's
    routes (``bot.api.api_routes``)."""
    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET"])]
    routes.extend(api or ())
    if slack_app is not None:
        bolt = slack_app

        async def slack_events(request: Request) -> Response:
            if not well_formed_slack_headers(request):
                return _unauthorized()
            body = await request.body()
            if len(body) > MAX_BODY_BYTES:
                return JSONResponse({"error": "request too large"}, status_code=413)
            try:
                # parses the body at once: a body that is not UTF-8 or whose payload is not
                # JSON would raise (a 500) before the signature is checked
                bolt_request = to_bolt_request(request, body)
            except ValueError:  # UnicodeDecodeError and json.JSONDecodeError included
                return _unauthorized()
            bolt_response = await run_in_threadpool(bolt.dispatch, bolt_request)
            return to_starlette_response(bolt_response)

        routes.append(Route("/slack/events", slack_events, methods=["POST"]))
    lifespan = None
    if telegram_app is not None:
        if not telegram_secret:
            raise ValueError("the Telegram webhook needs a secret ([telegram] webhook_secret)")
        routes.append(
            Route(
                "/telegram/webhook",
                _telegram_webhook(telegram_app, telegram_secret),
                methods=["POST"],
            )
        )
        if register_telegram_webhook and settings is None:
            raise ValueError("registering the Telegram webhook needs the settings")
        lifespan = _telegram_lifespan(telegram_app, settings if register_telegram_webhook else None)
    return Starlette(routes=routes, lifespan=lifespan)


def _telegram_lifespan(application: Application, register: Settings | None):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await application.initialize()  # getMe: a wrong token fails the start-up
        if register is not None:
            await register_webhook(application.bot, register)
            log.info("telegram webhook registered at %s", register.telegram.webhook_url)
        try:
            yield
        finally:
            await application.shutdown()

    return lifespan


def _telegram_webhook(application: Application, secret: str):  # type: ignore[no-untyped-def]
    from telegram import Update

    expected = secret.encode()

    async def telegram_webhook(request: Request) -> Response:
        given = request.headers.get(TELEGRAM_SECRET_HEADER, "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, expected):
            return JSONResponse({"ok": False, "error": "forbidden"}, status_code=403)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"ok": False, "error": "request too large"}, status_code=413)
        try:
            data = json.loads(body)
        except ValueError:  # UnicodeDecodeError included
            return _bad_update()
        update_id = data.get("update_id") if isinstance(data, dict) else None
        if type(update_id) is not int:
            return _bad_update()
        try:
            update = Update.de_json(data, application.bot)
        except Exception as exc:  # a structure PTB cannot read
            log.warning("telegram webhook: unreadable update %s: %s", update_id, type(exc).__name__)
            return _bad_update()
        await application.process_update(update)  # handler errors go to its error handler
        return JSONResponse({"ok": True})

    return telegram_webhook


def _bad_update() -> Response:
    return JSONResponse({"ok": False, "error": "not a Telegram update"}, status_code=400)


async def register_webhook(bot: Bot, settings: Settings) -> bool:
    """Tell Telegram where to send updates (``setWebhook``: ``[telegram] webhook_url`` and
    ``webhook_secret``). For ``creditbot run`` when a webhook URL is configured."""
    from bot.telegram_app import ALLOWED_UPDATES

    url = settings.telegram.webhook_url
    secret = settings.telegram.webhook_secret.get_secret_value()
    if not url or not secret:
        raise ValueError("telegram.webhook_url and telegram.webhook_secret are both needed")
    return await bot.set_webhook(url=url, secret_token=secret, allowed_updates=ALLOWED_UPDATES)


__all__ = [
    "TELEGRAM_SECRET_HEADER",
    "create_app",
    "healthz",
    "register_webhook",
    "well_formed_slack_headers",
]
