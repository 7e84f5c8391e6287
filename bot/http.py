"""The HTTP app (Starlette, ASGI): Slack's interactivity requests and a health check.

* ``POST /slack/events`` → the Bolt app (``bot.slack_app.build_slack_app``), through the
  Starlette adapter's request/response conversion (``slack_bolt.adapter.starlette``). Its
  ``SlackRequestHandler.handle`` calls the synchronous ``App.dispatch`` on the event loop,
  which would block the loop while Bolt waits (up to 3 s) for a listener's ``ack()``; we
  dispatch in Starlette's thread pool instead.
* ``GET /healthz`` → ``{"status": "ok"}``.

Bolt verifies each request (``v0=`` HMAC-SHA256 signature; timestamps more than 300 s away
refused) and answers 401 — but it reads the timestamp with ``int()``, so a non-numeric one
raises and Bolt answers 500. Requests without a numeric ``X-Slack-Request-Timestamp`` or
without ``X-Slack-Signature``, and bodies Bolt cannot parse (not UTF-8, a ``payload`` that is
not JSON: its parser raises before the signature check), are refused here with 401. Nothing here
logs headers or bodies (the signature is in a header; secrets never leave the settings).
"""

from __future__ import annotations

from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

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


def create_app(slack_app: App | None = None) -> Starlette:
    """The ASGI app; without ``slack_app`` only ``/healthz`` is served."""
    routes = [Route("/healthz", healthz, methods=["GET"])]
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
    return Starlette(routes=routes)


__all__ = ["create_app", "healthz", "well_formed_slack_headers"]
