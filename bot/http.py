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
* ``GET /healthz`` → ``{"status": "ok"}`` (liveness: the process answers).
* ``GET /readyz`` → readiness: the database answers a ``SELECT 1`` within
  ``READY_TIMEOUT_SECONDS`` (run in a thread of its own, never on the event loop; one check in
  flight at a time), and the process's ``status()`` (e.g. ``{"scheduler": "running",
  "leader": true}``) says the scheduler runs. ``200 {"status": "ready", "checks": {…}}``, else
  ``503 {"status": "not ready", "failing": [names], "checks": {…}}`` — a failing database
  check names only the error's type or a timeout, never the URL or the server's message.
* ``GET /metrics`` → Prometheus text format (``bot.metrics``): the process's counters and
  histograms, plus, with ``engine``, the outbox queue depth and pending approvals counted in
  the database at scrape time. Every request is timed by route (``bot.metrics.HttpMetrics``).
* ``/api/v1/…`` → the ERP API (``bot.api.api_routes``), when given as ``api``.

Bolt verifies each request (``v0=`` HMAC-SHA256 signature; timestamps more than 300 s away
refused) and answers 401 — but it reads the timestamp with ``int()``, so a non-numeric one
raises and Bolt answers 500. Requests without a numeric ``X-Slack-Request-Timestamp`` or
without ``X-Slack-Signature``, and bodies Bolt cannot parse (not UTF-8, a ``payload`` that is
not JSON: its parser raises before the signature check), are refused here with 401. Nothing here
logs headers or bodies (the signature is in a header; secrets never leave the settings).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import unquote_plus

from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_bolt.request import BoltRequest
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot import metrics

if TYPE_CHECKING:
    from telegram import Bot
    from telegram.ext import Application

    from credit.settings import Settings

log = logging.getLogger(__name__)

TELEGRAM_SECRET_HEADER = "x-telegram-bot-api-secret-token"
MAX_TIMESTAMP_DIGITS = 12  # Unix seconds have 10 digits until the year 2286
MAX_BODY_BYTES = 1_000_000
READY_TIMEOUT_SECONDS = 2.0  # the database's answer to /readyz's SELECT 1
METRICS_DB_TIMEOUT_SECONDS = 5.0  # the database's answer to /metrics' counts

T = TypeVar("T")


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


class SingleFlight(Generic[T]):
    """Runs a blocking function in a daemon thread of its own, at most one call at a time:
    a caller arriving while a call is in flight waits for that call instead of starting
    another, and gives up after its timeout (the call goes on; a database that hangs does
    not pile up threads, nor keep the process from exiting)."""

    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self._fn = fn
        self._name = name
        self._lock = threading.Lock()
        self._current: concurrent.futures.Future[T] | None = None

    def _run(self, future: concurrent.futures.Future[T]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(self._fn())
        except BaseException as exc:  # handed to the waiting caller
            future.set_exception(exc)

    async def __call__(self, timeout: float) -> T:
        with self._lock:
            future = self._current
            if future is None or future.done():
                future = self._current = concurrent.futures.Future()
                threading.Thread(
                    target=self._run, args=(future,), name=self._name, daemon=True
                ).start()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()

        def deliver(done: concurrent.futures.Future[T]) -> None:
            def settle() -> None:
                if waiter.done():
                    return
                exc = done.exception()
                if exc is not None:
                    waiter.set_exception(exc)
                else:
                    waiter.set_result(done.result())

            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(settle)

        future.add_done_callback(deliver)
        return await asyncio.wait_for(waiter, timeout)


def _select_one(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def _readyz(
    engine: Engine | None, status: Callable[[], Mapping[str, object]] | None
) -> Callable[[Request], Any]:
    probe = None if engine is None else SingleFlight(lambda: _select_one(engine), "readyz-db")

    async def readyz(_request: Request) -> Response:
        checks: dict[str, object] = {}
        failing: list[str] = []
        if probe is not None:
            try:
                await probe(READY_TIMEOUT_SECONDS)
                checks["database"] = "ok"
            except TimeoutError:
                checks["database"] = f"no answer within {READY_TIMEOUT_SECONDS:g} s"
                failing.append("database")
            except Exception as exc:  # the type only: a driver's message may name the server
                checks["database"] = f"unreachable ({type(exc).__name__})"
                failing.append("database")
        if status is not None:
            try:
                reported = dict(status())
            except Exception as exc:
                log.warning("readyz: the status callable raised %s", type(exc).__name__)
                checks["status"] = f"error ({type(exc).__name__})"
                failing.append("status")
            else:
                checks.update({str(k): _jsonable(v) for k, v in reported.items()})
                if "scheduler" in reported and reported["scheduler"] != "running":
                    failing.append("scheduler")
        if failing:
            body = {"status": "not ready", "failing": failing, "checks": checks}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready", "checks": checks})

    return readyz


def _metrics_endpoint(
    engine: Engine | None, channels: Sequence[str] = ()
) -> Callable[[Request], Any]:
    scrape_db = None
    if engine is not None:
        registry = metrics.database_registry(engine, channels)
        scrape_db = SingleFlight(lambda: metrics.generate_latest(registry), "metrics-db")

    async def metrics_endpoint(_request: Request) -> Response:
        body = await run_in_threadpool(metrics.exposition)
        if scrape_db is not None:
            try:
                body += await scrape_db(METRICS_DB_TIMEOUT_SECONDS)
            except TimeoutError:
                log.warning("metrics: the database did not answer in time")
                body += (
                    b"# HELP creditbot_database_up 1 when the database answered the scrape's "
                    b"queries.\n# TYPE creditbot_database_up gauge\ncreditbot_database_up 0.0\n"
                )
        return Response(body, headers={"Content-Type": metrics.CONTENT_TYPE_LATEST})

    return metrics_endpoint


PRESS_WORKERS = 4
PRESS_QUIET_SECONDS = 0.02
PRESS_MAX_HOLD_SECONDS = 0.5


PRESS_PREFIX = re.compile(r'payload=\{\s*"type"\s*:\s*"block_actions"')


def _looks_like_press(body: bytes) -> bool:
    """A ``block_actions`` interaction, judged from the body's first bytes (Slack puts the
    payload's ``type`` first); anything else takes the full path through Bolt."""
    return PRESS_PREFIX.match(unquote_plus(body[:96].decode("latin-1"))) is not None


def _ack_first(
    bolt: App,
    signing_secret: str,
    workers: concurrent.futures.Executor | None = None,
    *,
    quiet_seconds: float | None = PRESS_QUIET_SECONDS,
    max_hold_seconds: float = PRESS_MAX_HOLD_SECONDS,
) -> Callable[[bytes, Request], Response]:
    """Button presses (``block_actions``) answered 200 as soon as their signature checks
    out, Bolt processing them after the answer, in a thread pool of their own.

    Slack wants every interaction acknowledged within 3 s, and a press needs nothing in the
    answer. Through Bolt the answer waits for a listener thread to call ``ack()`` — behind
    every decision in progress when many people press at once (200 presses: seconds, and
    404s once Bolt gives up waiting). Here the answer costs a signature check: Bolt's request
    is built, and the press processed exactly as before (Bolt checks the signature again),
    after it. A replica that dies in between loses the press, whose card still shows its
    buttons to be pressed again. Modal submissions and commands, whose answers carry
    content, still go through Bolt first."""
    verifier = SignatureVerifier(signing_secret)
    in_flight: set[asyncio.Future[Any]] = set()
    # a few threads of its own: presses waiting here do not take the threads (and the
    # interpreter's time) the event loop needs to answer the next presses
    if workers is None:
        workers = concurrent.futures.ThreadPoolExecutor(
            max_workers=PRESS_WORKERS, thread_name_prefix="slack-press"
        )

    def process(body: bytes, query: dict[str, list[str]], headers: dict[str, str]) -> None:
        try:
            bolt_request = BoltRequest(body=body.decode("utf-8"), query=query, headers=headers)
            response = bolt.dispatch(bolt_request)
        except Exception:  # a signed body Bolt cannot read: only Slack can have sent it
            log.exception("slack: a press acknowledged first could not be processed")
            return
        if response.status >= 400:
            log.warning("slack: a press acknowledged first got %s from Bolt", response.status)

    def ack(body: bytes, request: Request) -> Response:
        if not verifier.is_valid(
            body=body,
            timestamp=request.headers.get("x-slack-request-timestamp", ""),
            signature=request.headers.get("x-slack-signature", ""),
        ):
            return _unauthorized()
        query: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            query.setdefault(key, []).append(value)
        hold((body, query, dict(request.headers)))
        return Response(status_code=200)

    # Presses wait until none has come for ``quiet_seconds`` (at most ``max_hold_seconds``
    # after the first): while many arrive at once the interpreter answers them, instead of
    # sharing its time with the decisions of the first ones.
    held: list[tuple[bytes, dict[str, list[str]], dict[str, str]]] = []
    timer: asyncio.TimerHandle | None = None
    first_held_at = 0.0

    def hold(press: tuple[bytes, dict[str, list[str]], dict[str, str]]) -> None:
        nonlocal timer, first_held_at
        loop = asyncio.get_running_loop()
        if not held:
            first_held_at = loop.time()
        held.append(press)
        if quiet_seconds is None:
            hand_over()
            return
        if timer is not None:
            timer.cancel()
        wait = min(quiet_seconds, max(0.0, first_held_at + max_hold_seconds - loop.time()))
        timer = loop.call_later(wait, hand_over)

    def hand_over() -> None:
        nonlocal timer
        timer = None
        loop = asyncio.get_running_loop()
        presses = held[:]
        held.clear()
        for press in presses:
            task = loop.run_in_executor(workers, process, *press)
            in_flight.add(task)  # keep a reference until done
            task.add_done_callback(in_flight.discard)

    return ack


def _queue_channels(settings: Settings | None) -> list[str]:
    """The channels whose queue depth is always reported: the configured ones, and the ERP's
    decision callbacks."""
    if settings is None:
        return []
    return list(dict.fromkeys([*settings.outbox.channels, "erp"]))


def create_app(
    slack_app: App | None = None,
    telegram_app: Application | None = None,
    telegram_secret: str | None = None,
    *,
    register_telegram_webhook: bool = False,
    settings: Settings | None = None,
    api: Sequence[BaseRoute] | None = None,
    engine: Engine | None = None,
    status: Callable[[], Mapping[str, object]] | None = None,
    slack_ack_first: str | None = None,
    slack_press_executor: concurrent.futures.Executor | None = None,
    slack_press_quiet: float | None = PRESS_QUIET_SECONDS,
) -> Starlette:
    """The ASGI app; ``/healthz``, ``/readyz`` and ``/metrics`` are always served.

    ``telegram_app`` (``bot.telegram_app.build_telegram_application``) needs
    ``telegram_secret``, the webhook secret Telegram sends back in each request. With
    ``register_telegram_webhook`` (and ``settings``) the app calls ``setWebhook`` when it
    starts (``creditbot serve`` with ``[telegram] webhook_url``). ``api``: the ERP API's
    routes (``bot.api.api_routes``). ``engine``: the database ``/readyz`` checks and
    ``/metrics`` counts the outbox and pending approvals in. ``status``: the process's state
    for ``/readyz`` (``{"scheduler": "running", "leader": True}``; not ready unless
    ``"scheduler"``, when present, is ``"running"``). ``slack_ack_first``: the Slack signing
    secret, to acknowledge button presses at once (see ``_ack_first``), handing them to Bolt
    in ``slack_press_executor`` (default: a small thread pool of its own) once no press has
    come for ``slack_press_quiet`` seconds (``None``: at once)."""
    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", _readyz(engine, status), methods=["GET"]),
        Route(
            "/metrics",
            _metrics_endpoint(engine, _queue_channels(settings)),
            methods=["GET"],
        ),
    ]
    routes.extend(api or ())
    if slack_app is not None:
        bolt = slack_app
        ack_first = (
            None
            if slack_ack_first is None
            else _ack_first(
                bolt, slack_ack_first, slack_press_executor, quiet_seconds=slack_press_quiet
            )
        )

        async def slack_events(request: Request) -> Response:
            if not well_formed_slack_headers(request):
                return _unauthorized()
            body = await request.body()
            if len(body) > MAX_BODY_BYTES:
                return JSONResponse({"error": "request too large"}, status_code=413)
            if ack_first is not None and _looks_like_press(body):
                return ack_first(body, request)
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
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(metrics.HttpMetrics, routes=routes)],
    )


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
    "READY_TIMEOUT_SECONDS",
    "TELEGRAM_SECRET_HEADER",
    "SingleFlight",
    "create_app",
    "healthz",
    "register_webhook",
    "well_formed_slack_headers",
]
