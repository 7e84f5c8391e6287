"""The ERP API (``/api/v1``): shipment requests, and the ledger changes the ERP pushes.

* ``POST /api/v1/shipment-requests`` → ``credit.store.approvals.raise_request``: 201 with the
  request (approved at once, refused, or pending approval); the same customer, order
  reference and amount again → 200 with the request already raised; the same order with
  another amount → 409 (with the existing request); an unknown customer → 404.
* ``GET /api/v1/shipment-requests/{id}`` → the request, its status and approvals (404).
* ``POST /api/v1/invoices`` / ``POST /api/v1/payments`` → the ledger, with the CSV
  importer's rules, all or nothing: 200 with counts, or 422 naming each bad row and field.
* ``GET /api/v1/openapi.json`` → ``openapi_document()`` (also ``creditbot openapi``).

Authentication (``[api] auth``): ``api_key`` — ``X-API-Key`` must equal one of
``api.api_keys`` (compared in constant time; none configured: every request is refused);
``hmac`` — ``X-Timestamp`` (Unix seconds, within ``max_clock_skew_seconds`` of our clock) and
``X-Signature: sha256=<hex HMAC-SHA256(hmac_secret, "<timestamp>.<raw body>")>``. A request
without valid credentials gets 401 before its body is parsed.

Errors are JSON: ``{"detail": "…"}`` for 401, 404, 409 (plus ``"existing"``), 413; 422 has
``{"detail": [{"loc": ["body", "amount"], "msg": "…", "type": "…"}, …]}`` naming each field
at fault. Bodies are validated by the pydantic models below, whose JSON schemas make the
OpenAPI document. Database work runs in Starlette's thread pool.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    TypeAdapter,
    ValidationError,
)
from pydantic.json_schema import models_json_schema
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from credit.settings import ApiSettings, Settings
from credit.store import approvals
from credit.store.approval_notices import notify_approvers
from credit.store.db import read_session, write_session

PREFIX = "/api/v1"
API_VERSION = "1.0.0"
MAX_BODY_BYTES = 1_000_000
MAX_ROWS = 1000
MAX_TIMESTAMP_DIGITS = 12
API_KEY_HEADER = "X-API-Key"
TIMESTAMP_HEADER = "X-Timestamp"
SIGNATURE_HEADER = "X-Signature"
CHANNEL = "api"
MAX_ID = 2**31 - 1

M = TypeVar("M", bound=BaseModel)


class Clock(Protocol):
    def now(self) -> datetime: ...


class _SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


# --- request and response models ---------------------------------------------------------------

_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


def _http_url(value: str) -> str:
    """An http(s) URL, kept exactly as given (pydantic's HttpUrl would normalise it)."""
    _HTTP_URL.validate_python(value)
    return value


Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S(.*\S)?$")]
Currency = Annotated[
    str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code", examples=["CNY"])
]
Amount = Annotated[
    Decimal,
    Field(
        gt=0,
        max_digits=17,
        decimal_places=2,
        allow_inf_nan=False,
        description="More than 0, at most two decimals; a decimal string keeps it exact",
        examples=["125000.00"],
    ),
]
OpenAmount = Annotated[Decimal, Field(ge=0, max_digits=17, decimal_places=2, allow_inf_nan=False)]
CallbackUrl = Annotated[
    str,
    Field(max_length=2000, json_schema_extra={"format": "uri"}),
    AfterValidator(_http_url),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ShipmentRequestIn(_In):
    """A shipment the ERP wants to release: checked against the customer's credit."""

    customer_code: Code
    order_ref: Annotated[str, Field(min_length=1, max_length=100)]
    amount: Amount
    currency: Currency
    requested_by: Code | None = Field(
        None, description="Person code of whoever raised it (never its approver)"
    )
    callback_url: CallbackUrl | None = Field(
        None, description="Where the decision is POSTed (see the shipmentRequestDecided webhook)"
    )


class InvoiceIn(_In):
    """An invoice, created or updated by number. A field left out leaves it unchanged."""

    number: Code
    customer: Code
    issue_date: date
    due_date: date
    amount: Amount
    open_amount: OpenAmount | None = Field(None, description="Default: the amount (new) or unpaid")
    currency: Currency | None = None
    disputed: bool | None = None
    dispute_reason: Annotated[str, Field(max_length=1000)] | None = None
    order_ref: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        None, description="The order it bills: its approved shipment request is marked shipped"
    )


class InvoicesIn(_In):
    invoices: Annotated[list[InvoiceIn], Field(min_length=1, max_length=MAX_ROWS)]


class PaymentIn(_In):
    """A payment, recorded once by reference (it lowers the invoice's open amount)."""

    reference: Code
    customer: Code
    invoice: Code | None = None
    paid_on: date
    amount: Amount
    currency: Currency | None = None


class PaymentsIn(_In):
    payments: Annotated[list[PaymentIn], Field(min_length=1, max_length=MAX_ROWS)]


class PersonRef(BaseModel):
    code: str
    name: str


class ApprovalOut(BaseModel):
    level: int = Field(description="Authority level, 0 = lowest")
    role: str
    decision: Literal["approve", "reject"] | None
    approver: PersonRef | None
    reason: str | None
    channel: str | None
    decided_at: datetime | None


class ShipmentRequestOut(BaseModel):
    id: int
    customer_code: str
    customer_name: str
    order_ref: str
    amount: str = Field(description="Decimal string")
    currency: str
    status: Literal["pending", "approved", "rejected", "expired", "refused"]
    reasons: list[str] = Field(
        description="Credit-check reason codes: within_policy, blacklisted, rating_h, rating_x, "
        "rating_d, probation, credit_hold, over_limit, over_term"
    )
    credit_limit: str | None
    exposure: str | None = Field(description="Open receivables + approved unshipped + amount")
    excess: str | None = Field(description="Exposure over the limit")
    overdue: str | None
    requested_by: PersonRef | None
    callback_url: str | None
    created_at: datetime
    expires_at: datetime | None
    decided_at: datetime | None
    decided_by: PersonRef | None
    shipped_at: datetime | None
    version: int
    approvals: list[ApprovalOut]


class LedgerResultOut(BaseModel):
    kind: Literal["invoices", "payments"]
    rows: int
    created: int
    updated: int
    unchanged: int
    shipped: list[int] = Field(description="Shipment requests marked shipped by these invoices")


class Problem(BaseModel):
    detail: str


class Conflict(BaseModel):
    detail: str
    existing: ShipmentRequestOut


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(BaseModel):
    detail: list[FieldProblem]


class ErpCallback(BaseModel):
    """What CreditBot POSTs to a request's callback_url once it is decided."""

    event: Literal["shipment_request.decided"]
    idempotency_key: str = Field(description="erp_callback:<request id>:<status>; repeats happen")
    request_id: int
    customer_code: str
    order_ref: str
    amount: str
    currency: str
    status: Literal["approved", "rejected", "expired", "refused"]
    reasons: list[str]
    decided_at: datetime | None
    decided_by: str | None = Field(description="Person code (none: by policy or expiry)")
    decided_by_name: str | None
    reason: str | None = Field(description="The rejection's reason")


# --- errors --------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, body)
        self.status, self.body = status, body


def _problem(status: int, detail: str, **extra: Any) -> ApiError:
    return ApiError(status, {"detail": detail, **extra})


def _invalid(loc: Sequence[str | int], msg: str, kind: str = "value_error") -> ApiError:
    return ApiError(422, {"detail": [{"loc": ["body", *loc], "msg": msg, "type": kind}]})


def _validation(exc: ValidationError) -> ApiError:
    errors = [
        {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    return ApiError(422, {"detail": errors})


# --- authentication ----------------------------------------------------------------------------


class Authenticator:
    """Checks a request's credentials (``[api] auth``); ``problem`` says why not, else None."""

    def __init__(self, api: ApiSettings, clock: Clock) -> None:
        self.mode = api.auth
        self.keys = [k.get_secret_value().encode() for k in api.api_keys]
        self.secret = api.hmac_secret.get_secret_value().encode()
        self.skew = api.max_clock_skew_seconds
        self.clock = clock

    def problem(self, request: Request, body: bytes) -> str | None:
        if self.mode == "hmac":
            return self._hmac(request, body)
        given = request.headers.get(API_KEY_HEADER, "").encode("utf-8", "replace")
        if not given:
            return f"missing {API_KEY_HEADER} header"
        matched = False
        for key in self.keys:  # every key compared: the time does not say which one is close
            matched |= hmac.compare_digest(given, key)
        return None if matched else "invalid API key"

    def _hmac(self, request: Request, body: bytes) -> str | None:
        stamp = request.headers.get(TIMESTAMP_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not stamp or not signature:
            return f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= MAX_TIMESTAMP_DIGITS):
            return f"{TIMESTAMP_HEADER} must be Unix seconds"
        if abs(self.clock.now().timestamp() - int(stamp)) > self.skew:
            return f"{TIMESTAMP_HEADER} is more than {self.skew} seconds from our clock"
        if not self.secret:  # settings refuse this; never accept an empty key
            return "HMAC authentication is not configured"
        expected = (
            "sha256="
            + hmac.new(self.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            return "invalid signature"
        return None


# --- the routes ----------------------------------------------------------------------------------


Handler = Callable[[Request], Awaitable[Response]]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=headers)


def _out(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` checked against the documented response model, as JSON."""
    return model.model_validate(data).model_dump(mode="json")


class ErpApi:
    """The ``/api/v1`` routes over one engine, settings and clock."""

    def __init__(self, engine: Engine, settings: Settings, clock: Clock | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock or _SystemClock()
        self.auth = Authenticator(settings.api, self.clock)

    def routes(self) -> list[BaseRoute]:
        guarded = [
            Route("/shipment-requests", self._guard(self.create_request), methods=["POST"]),
            Route(
                "/shipment-requests/{request_id:int}",
                self._guard(self.read_request),
                methods=["GET"],
            ),
            Route("/invoices", self._guard(self.push_invoices), methods=["POST"]),
            Route("/payments", self._guard(self.push_payments), methods=["POST"]),
        ]
        return [
            Mount(
                PREFIX,
                routes=[Route("/openapi.json", self.openapi, methods=["GET"]), *guarded],
            )
        ]

    def _guard(self, handler: Callable[[Request, bytes], Awaitable[Response]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                body = await self._body(request)
                problem = self.auth.problem(request, body)
                if problem is not None:
                    return _json({"detail": problem}, 401)
                return await handler(request, body)
            except ApiError as exc:
                return _json(exc.body, exc.status)

        return endpoint

    @staticmethod
    async def _body(request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise _problem(413, f"request body over {MAX_BODY_BYTES} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise _problem(413, f"request body over {MAX_BODY_BYTES} bytes")
        return body

    @staticmethod
    def _parse(model: type[M], body: bytes) -> M:
        if not body.strip():
            raise _invalid([], "a JSON body is required", "missing")
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                raise _invalid([], "not valid JSON", "json_invalid") from None
            raise _validation(exc) from None

    # --- handlers ----------------------------------------------------------------------------

    async def openapi(self, _request: Request) -> Response:
        return _json(openapi_document())

    async def create_request(self, _request: Request, body: bytes) -> Response:
        data = self._parse(ShipmentRequestIn, body)
        created, shown = await run_in_threadpool(self._raise, data)
        location = f"{PREFIX}/shipment-requests/{shown['id']}"
        status = 201 if created else 200
        return _json(_out(ShipmentRequestOut, shown), status, {"Location": location})

    def _raise(self, data: ShipmentRequestIn) -> tuple[bool, dict[str, Any]]:
        now = self.clock.now()
        for attempt in range(2):
            try:
                with write_session(self.engine) as s:
                    result = approvals.raise_request(
                        s,
                        self.settings,
                        customer_code=data.customer_code,
                        order_ref=data.order_ref,
                        amount=data.amount,
                        currency=data.currency,
                        requested_by_code=data.requested_by,
                        callback_url=data.callback_url,
                        channel=CHANNEL,
                        now=now,
                    )
                    if result.created and result.status == "pending":
                        # the approvers' cards, in the same transaction as the request
                        notify_approvers(s, self.settings, result.request_id, now, channel=CHANNEL)
                    return result.created, approvals.get_request(s, result.request_id)
            except IntegrityError:  # the same order raised at the same moment: read it back
                if attempt:
                    raise
            except approvals.ApprovalError as exc:
                raise _invalid([exc.field] if exc.field else [], str(exc)) from None
            except approvals.UnknownCustomer as exc:
                raise _problem(404, str(exc)) from None
            except approvals.DuplicateOrder as exc:
                with read_session(self.engine) as s:
                    existing = approvals.get_request(s, exc.existing_id)
                raise _problem(409, str(exc), existing=_out(ShipmentRequestOut, existing)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def read_request(self, request: Request, _body: bytes) -> Response:
        request_id = request.path_params["request_id"]
        if request_id > MAX_ID:
            raise _problem(404, f"no shipment request {request_id}")

        def read() -> dict[str, Any]:
            with read_session(self.engine) as s:
                try:
                    return approvals.get_request(s, request_id)
                except approvals.UnknownRequest as exc:
                    raise _problem(404, str(exc)) from None

        return _json(_out(ShipmentRequestOut, await run_in_threadpool(read)))

    async def push_invoices(self, _request: Request, body: bytes) -> Response:
        data = self._parse(InvoicesIn, body)
        rows = [r.model_dump(exclude_unset=True) for r in data.invoices]
        return await self._push("invoices", rows, approvals.upsert_invoices)

    async def push_payments(self, _request: Request, body: bytes) -> Response:
        data = self._parse(PaymentsIn, body)
        rows = [r.model_dump(exclude_unset=True) for r in data.payments]
        return await self._push("payments", rows, approvals.record_payments)

    async def _push(
        self,
        kind: str,
        rows: list[dict[str, Any]],
        push: Callable[..., approvals.LedgerResult],
    ) -> Response:
        def write() -> approvals.LedgerResult:
            try:
                with write_session(self.engine) as s:
                    return push(s, rows, self.clock.now(), settings=self.settings, channel=CHANNEL)
            except approvals.LedgerRejected as exc:
                raise ApiError(
                    422,
                    {
                        "detail": [
                            {
                                "loc": ["body", kind, e.index, *([e.field] if e.field else [])],
                                "msg": e.reason,
                                "type": "value_error",
                            }
                            for e in exc.errors
                        ]
                    },
                ) from None

        result = await run_in_threadpool(write)
        return _json(
            _out(
                LedgerResultOut,
                {
                    "kind": result.kind,
                    "rows": result.rows,
                    "created": result.created,
                    "updated": result.updated,
                    "unchanged": result.unchanged,
                    "shipped": list(result.shipped),
                },
            )
        )


def api_routes(engine: Engine, settings: Settings, clock: Clock | None = None) -> list[BaseRoute]:
    """The ``/api/v1`` routes, for ``bot.http.create_app(api=...)``."""
    return ErpApi(engine, settings, clock).routes()


# --- the OpenAPI document ----------------------------------------------------------------------

_INPUTS: tuple[type[BaseModel], ...] = (ShipmentRequestIn, InvoicesIn, PaymentsIn)
_OUTPUTS: tuple[type[BaseModel], ...] = (
    ShipmentRequestOut,
    LedgerResultOut,
    Problem,
    Conflict,
    ValidationProblem,
    ErpCallback,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body_of(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _answer(description: str, name: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if name:
        out["content"] = {"application/json": {"schema": _ref(name)}}
    return out


_COMMON = {
    "401": _answer("Missing or invalid credentials", "Problem"),
    "413": _answer("Body over 1 MB", "Problem"),
    "422": _answer("Invalid body: each field at fault and why", "ValidationProblem"),
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``/api/v1``, from the pydantic models' JSON schemas."""
    _, top = models_json_schema(
        [(m, "validation") for m in _INPUTS] + [(m, "serialization") for m in _OUTPUTS],
        ref_template="#/components/schemas/{model}",
    )
    schemas = top.get("$defs", {})
    ledger = {
        "200": _answer("Written (all rows) with counts", "LedgerResultOut"),
        **_COMMON,
    }
    paths = {
        f"{PREFIX}/shipment-requests": {
            "post": {
                "operationId": "raiseShipmentRequest",
                "summary": "Check a shipment against credit policy",
                "description": "Within policy: approved at once. Blacklisted: refused outright. "
                "Otherwise pending until someone with the authority decides; the decision is "
                "POSTed to callback_url (webhook shipmentRequestDecided).",
                "requestBody": _body_of("ShipmentRequestIn"),
                "responses": {
                    "201": _answer("Raised", "ShipmentRequestOut"),
                    "200": _answer(
                        "The same order and amount was raised before: that request",
                        "ShipmentRequestOut",
                    ),
                    "404": _answer("Unknown customer", "Problem"),
                    "409": _answer("The order was raised before with another amount", "Conflict"),
                    **_COMMON,
                },
            }
        },
        f"{PREFIX}/shipment-requests/{{request_id}}": {
            "get": {
                "operationId": "getShipmentRequest",
                "summary": "A shipment request: status, reasons, approvals",
                "parameters": [
                    {
                        "name": "request_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer"},
                    }
                ],
                "responses": {
                    "200": _answer("The request", "ShipmentRequestOut"),
                    "404": _answer("Unknown request", "Problem"),
                    "401": _COMMON["401"],
                },
            }
        },
        f"{PREFIX}/invoices": {
            "post": {
                "operationId": "pushInvoices",
                "summary": "Create or update invoices by number (all or nothing)",
                "requestBody": _body_of("InvoicesIn"),
                "responses": ledger,
            }
        },
        f"{PREFIX}/payments": {
            "post": {
                "operationId": "pushPayments",
                "summary": "Record payments by reference (all or nothing)",
                "requestBody": _body_of("PaymentsIn"),
                "responses": ledger,
            }
        },
        f"{PREFIX}/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1 document"}},
            }
        },
    }
    callback_headers = [
        {
            "name": "X-CreditBot-Signature",
            "in": "header",
            "required": True,
            "description": "sha256=<hex HMAC-SHA256(api.callback_secret, raw body)>",
            "schema": {"type": "string"},
        },
        {
            "name": "X-CreditBot-Timestamp",
            "in": "header",
            "required": True,
            "description": "Unix seconds when sent",
            "schema": {"type": "string"},
        },
        {
            "name": "X-CreditBot-Idempotency-Key",
            "in": "header",
            "required": True,
            "schema": {"type": "string"},
        },
    ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "CreditBot ERP API",
            "version": API_VERSION,
            "description": "Shipment requests checked against credit policy, and the ledger "
            "changes the ERP pushes. Authenticate with X-API-Key, or (api.auth = hmac) with "
            "X-Timestamp and X-Signature.",
        },
        "paths": paths,
        "webhooks": {
            "shipmentRequestDecided": {
                "post": {
                    "summary": "A request was decided (POSTed to its callback_url)",
                    "description": "Sent until the ERP answers 2xx (at least once: repeats "
                    "carry the same idempotency key). 4xx other than 408/429 is not retried.",
                    "parameters": callback_headers,
                    "requestBody": _body_of("ErpCallback"),
                    "responses": {"200": {"description": "Received"}},
                }
            }
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
                "HmacSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": SIGNATURE_HEADER,
                    "description": "sha256=<hex HMAC-SHA256(api.hmac_secret, "
                    '"<X-Timestamp>.<raw body>")>, with X-Timestamp in Unix seconds within '
                    "api.max_clock_skew_seconds of the server's clock",
                },
            },
        },
        "security": [{"ApiKey": []}, {"HmacSignature": []}],
    }


def openapi_json() -> str:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False)


__all__ = [
    "ApiError",
    "Authenticator",
    "ErpApi",
    "ErpCallback",
    "InvoiceIn",
    "PaymentIn",
    "ShipmentRequestIn",
    "ShipmentRequestOut",
    "api_routes",
    "openapi_document",
    "openapi_json",
]
