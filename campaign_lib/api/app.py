"""The ingest API as a FastAPI app: `create_app(engine_factory)`.

    GET  /api/v1/health          public; {"status": "ok"}
    POST /api/v1/events          scope events:write;   {"events": [website event, ...]}
    POST /api/v1/contacts        scope contacts:write; {"contacts": [contact profile, ...]}
    GET  /api/v1/openapi.json    public; the OpenAPI document (served docs: /api/v1/docs)
    /t/...                       public tracking links and provider webhooks, each checking its
                                 own token or signature (campaign_lib.tracking.routes)

Every error has one shape, `{"error": {"code": ..., "message": ...}}`, and never carries a
stack trace; server errors are logged. The same app runs standalone (`campaign_lib.api.server`)
and inside Airflow's API server (plugins/kms_api.py), where nothing authenticates for it:
every path but health and the documents checks an API key itself.

No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at
run time, and they name dependencies made inside `create_app`.
"""

import json
import logging
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic.json_schema import models_json_schema
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from campaign_lib.api.batches import CONTACTS, EVENTS, BatchKind, CorePublisher, load_batch
from campaign_lib.api.keys import CONTACTS_WRITE, EVENTS_WRITE, Caller, authenticate
from campaign_lib.api.limits import MAX_CONCURRENT_LOADS, ApiLimits, limits_from_env
from campaign_lib.api.models import BatchResult, ContactBatch, ErrorBody, EventBatch, Health
from campaign_lib.tracking.routes import tracking_router
from campaign_lib.tracking.settings import TrackingSettings, tracking_settings_from_env

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
OPENAPI_URL = "/api/v1/openapi.json"
DOCS_URL = "/api/v1/docs"
_JSON_TYPES = frozenset({"application/json"})


class ApiError(Exception):
    """An error response: HTTP status, stable code, message (and per-item errors of a batch)."""

    def __init__(self, status: int, code: str, message: str, items: list | None = None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.items, self.headers = status, code, message, items, headers


def _error_response(status: int, code: str, message: str, items: list | None = None, headers=None):
    detail: dict[str, Any] = {"code": code, "message": message}
    if items is not None:
        detail["items"] = [item.model_dump(exclude_none=True) for item in items]
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


def _unauthorized() -> ApiError:
    # One answer for every kind of bad key: no hint which part was wrong.
    return ApiError(
        401,
        "unauthorized",
        "a valid API key is required in the X-API-Key header (or Authorization: Bearer)",
        headers={"WWW-Authenticate": "Bearer"},
    )


_STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
_ERRORS = {
    401: {"model": ErrorBody, "description": "no key, or a malformed, unknown, wrong or revoked one"},
    403: {"model": ErrorBody, "description": "the key lacks the scope of this endpoint"},
    413: {"model": ErrorBody, "description": "body larger than KMS_API_MAX_BODY_BYTES"},
    415: {"model": ErrorBody, "description": "body not application/json"},
    422: {
        "model": ErrorBody,
        "description": "not a batch, too long (KMS_API_MAX_BATCH), or no acceptable item "
        "(then error.items lists every item's reasons)",
    },
}


def _request_body(model: type) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


def create_app(
    engine_factory: Callable[[], Engine],
    limits: ApiLimits | None = None,
    tracking: Callable[[], TrackingSettings] = tracking_settings_from_env,
) -> FastAPI:
    """The ingest API app. `engine_factory` is called once, at the first request that needs the
    database, so that building the app (e.g. when Airflow loads the plugin) connects to nothing.
    `limits` default to the environment's (KMS_API_MAX_BODY_BYTES, KMS_API_MAX_BATCH);
    `tracking` makes the tracking endpoints' settings, at their first request."""
    limits = limits or limits_from_env()
    engine_lock = threading.Lock()
    engines: list[Engine] = []

    def engine() -> Engine:
        if not engines:
            with engine_lock:
                if not engines:
                    engines.append(engine_factory())
        return engines[0]

    publisher = CorePublisher(engine)
    loads = threading.BoundedSemaphore(MAX_CONCURRENT_LOADS)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Great Expectations (the loader's quality gate) takes seconds to import: do it now,
        # beside serving, rather than in the first batch. (Airflow does not run the lifespan
        # of a plugin's app; there the first batch pays.)
        threading.Thread(target=_warm_up, name="kms-api-warm-up", daemon=True).start()
        yield
        publisher.wait_idle()
        for made in engines:
            made.dispose()

    app = FastAPI(
        title="kms ingest API",
        version=API_VERSION,
        description="Real-time website events and contact profiles into the campaign database. "
        "See docs/api.md.",
        openapi_url=OPENAPI_URL,
        docs_url=DOCS_URL,
        redoc_url=None,
        lifespan=lifespan,
    )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status, exc.code, exc.message, exc.items, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return _error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(422, "invalid_request", "the request does not match the API's schema")

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
        return _error_response(500, "internal_error", "internal error; it was logged")

    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="<key_id>.<secret>")
    bearer = HTTPBearer(auto_error=False, description="the same key as a bearer token")

    def caller_with(scope: str):
        def caller(
            key: Annotated[str | None, Security(api_key_header)],
            token: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        ) -> Caller:
            presented = key if key is not None else (token.credentials if token is not None else None)
            found = authenticate(engine(), presented)
            if found is None:
                raise _unauthorized()
            if scope not in found.scopes:
                raise ApiError(403, "forbidden", f"this API key lacks the scope {scope}")
            return found

        return caller

    async def json_body(request: Request) -> Any:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in _JSON_TYPES:
            raise ApiError(
                415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)"
            )
        too_large = ApiError(413, "body_too_large", f"the body exceeds {limits.max_body_bytes:,} bytes")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limits.max_body_bytes):
            raise too_large
        body = bytearray()
        # Chunked bodies have no Content-Length: count while reading, stop at the limit.
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_body_bytes:
                raise too_large
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise ApiError(400, "invalid_json", "the body is not valid UTF-8 JSON") from None

    def items_of(kind: BatchKind, payload: Any) -> list[Any]:
        if not isinstance(payload, dict) or set(payload) != {kind.items_key}:
            raise ApiError(422, "invalid_batch", f'the body must be an object {{"{kind.items_key}": [...]}}')
        items = payload[kind.items_key]
        if not isinstance(items, list) or not items:
            raise ApiError(422, "invalid_batch", f"{kind.items_key} must be a non-empty array")
        if len(items) > limits.max_batch:
            raise ApiError(
                422,
                "batch_too_long",
                f"the batch has {len(items):,} {kind.items_key}; at most {limits.max_batch:,} per request",
            )
        return items

    def ingest(kind: BatchKind, caller: Caller, payload: Any, background: BackgroundTasks) -> JSONResponse:
        items = items_of(kind, payload)
        with loads:
            try:
                outcome = load_batch(engine(), kind, items, payload, caller.key_id)
            except Exception as exc:
                log.exception("loading a batch of %s from key %s failed", kind.items_key, caller.key_id)
                raise ApiError(500, "internal_error", "internal error; it was logged") from exc
        result = outcome.result
        if outcome.refusal is not None:
            raise ApiError(
                422, "batch_rejected", f"no item was accepted: {outcome.refusal}", items=result.errors
            )
        if result.records_changed:
            publisher.expect()
            background.add_task(publisher.request)
        return JSONResponse(result.model_dump(mode="json", exclude_none=True))

    @app.get("/api/v1/health", response_model=Health, tags=["health"])
    def health() -> Health:
        """Liveness: the API process answers (no key needed, the database is not touched)."""
        return Health(status="ok")

    @app.post(
        "/api/v1/events",
        response_model=BatchResult,
        responses=_ERRORS,
        openapi_extra=_request_body(EventBatch),
        tags=["ingest"],
    )
    def post_events(
        background: BackgroundTasks,
        caller: Annotated[Caller, Depends(caller_with(EVENTS_WRITE))],
        payload: Annotated[Any, Depends(json_body)],
    ) -> JSONResponse:
        """Load a batch of website events (the website's JSON Lines format, one object each).

        Good events are stored even when others are refused; refused ones are listed by
        index with their reasons and quarantined. The same batch again is a no-op, an event
        posted again in another batch changes nothing (its event_id is its key)."""
        return ingest(EVENTS, caller, payload, background)

    @app.post(
        "/api/v1/contacts",
        response_model=BatchResult,
        responses=_ERRORS,
        openapi_extra=_request_body(ContactBatch),
        tags=["ingest"],
    )
    def post_contacts(
        background: BackgroundTasks,
        caller: Annotated[Caller, Depends(caller_with(CONTACTS_WRITE))],
        payload: Annotated[Any, Depends(json_body)],
    ) -> JSONResponse:
        """Load a batch of contact profiles of website customers, with their consents.

        A profile is keyed by customer_id (source_customer_id `website:<customer_id>`); each
        consent becomes an entry of the consent ledger."""
        return ingest(CONTACTS, caller, payload, background)

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            _, defs = models_json_schema(
                [(EventBatch, "validation"), (ContactBatch, "validation")],
                ref_template="#/components/schemas/{model}",
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
            app.openapi_schema = schema
        return app.openapi_schema

    app.include_router(tracking_router(engine, tracking))
    app.openapi = openapi
    app.state.publisher = publisher
    return app


def _warm_up() -> None:
    try:
        import great_expectations  # noqa: F401

        import campaign_lib.identity
        import campaign_lib.ingest.parse
        import campaign_lib.ingest.quality  # noqa: F401
    except Exception:
        log.exception("warming up the ingest API's imports failed")
