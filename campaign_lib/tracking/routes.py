"""The tracking endpoints as a FastAPI router, part of the kms API app (campaign_lib.api.app).

    GET|HEAD /t/o/{token}.gif     open pixel: always a 1x1 GIF, stores an 'open' for a valid token
    GET|HEAD /t/c/{token}         click: 302 to the URL signed in the token, else a 404 page
    GET      /t/u/{token}         unsubscribe page: asks, changes nothing
    POST     /t/u/{token}         unsubscribes at once, idempotently (RFC 8058 one-click too)
    POST     /t/webhooks/sms      Twilio-style status callbacks (X-Twilio-Signature)
    POST     /t/webhooks/push     push receipts (X-KMS-Signature)
    POST     /t/webhooks/email    email delivery, bounce and complaint events (X-KMS-Signature)

These paths are public (Airflow authenticates nothing of a plugin's app): a tracking link is
authenticated by its HMAC token, a webhook by its provider's signature. No cookie is read or
set, so the one-click POST of a mailbox provider works without a session or CSRF token: the
token in the URL is the proof. A tampered token never redirects and changes nothing; it is
logged, not stored, so nobody can fill the event table with made-up tokens.

No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time.
"""

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from campaign_lib.config import PROJECT_ROOT
from campaign_lib.tracking import events
from campaign_lib.tracking.bots import request_bot_reason
from campaign_lib.tracking.settings import TrackingSettings
from campaign_lib.tracking.tokens import Purpose, TokenClaims
from campaign_lib.tracking.webhooks import (
    Receipt,
    WebhookError,
    body_signature,
    email_receipts,
    push_receipts,
    signature_matches,
    sms_receipts,
)

log = logging.getLogger(__name__)

# The smallest transparent GIF: 1x1 pixel, 43 bytes.
PIXEL_GIF = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
MAX_WEBHOOK_BYTES = 1024 * 1024
MAX_FORM_BYTES = 16 * 1024
NO_STORE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "Referrer-Policy": "no-referrer",
}
PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
}
ONE_CLICK = b"One-Click"
_CHANNEL_WORDS = {
    "email": ("per E-Mail", "by email"),
    "sms": ("per SMS", "by text message"),
    "push": ("als Push-Nachricht", "as push notifications"),
    "phone": ("per Telefon", "by phone"),
    "post": ("per Post", "by post"),
}
_pages = Environment(
    loader=FileSystemLoader(PROJECT_ROOT / "templates" / "tracking"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    keep_trailing_newline=True,
)


class _BodyTooLarge(Exception):
    pass


def tracking_router(
    engine: Callable[[], Engine], settings_factory: Callable[[], TrackingSettings]
) -> APIRouter:
    """The tracking endpoints. `engine` and `settings_factory` are called at the first request
    that needs them (settings once), so building the router reads and connects to nothing."""
    router = APIRouter(prefix="/t", tags=["tracking"])
    made: list[TrackingSettings] = []
    lock = threading.Lock()

    def settings() -> TrackingSettings:
        if not made:
            with lock:
                if not made:
                    made.append(settings_factory())
        return made[0]

    def claims_of(purpose: Purpose, token: str, request: Request) -> TokenClaims | None:
        claims = settings().links.verify(purpose, token)
        if claims is None:
            client = request.client.host if request.client else "?"
            log.warning("refused a %s token from %s: not signed by us or altered", purpose, client)
        return claims

    def hit(claims: TokenClaims, request: Request) -> None:
        current = settings()
        agent = request.headers.get("user-agent")
        reason = request_bot_reason(
            request.method,
            agent,
            request.client.host if request.client else None,
            claims.purpose,
            current.bot_networks,
        )
        try:
            events.record_hit(
                engine(),
                claims,
                user_agent=agent,
                bot_reason=reason,
                after_send_s=current.bot_seconds_after_send,
                burst_s=current.click_burst_seconds,
            )
        except Exception:
            # The person still gets the pixel or their page; the lost event is in the log.
            log.exception("storing a %s of message %s failed", claims.purpose, claims.message_key)

    @router.head("/o/{token}.gif", include_in_schema=False)
    @router.get(
        "/o/{token}.gif",
        response_class=Response,
        responses={200: {"content": {"image/gif": {}}, "description": "a 1x1 transparent GIF, always"}},
    )
    def open_pixel(token: str, request: Request) -> Response:
        """The open pixel of an email: always the GIF (also for a token that is not valid, which
        stores nothing); a valid token stores an 'open' event (every open; reports count unique)."""
        claims = claims_of("open", token, request)
        if claims is not None:
            hit(claims, request)
        return Response(PIXEL_GIF, media_type="image/gif", headers=NO_STORE)

    @router.head("/c/{token}", include_in_schema=False)
    @router.get(
        "/c/{token}",
        response_class=RedirectResponse,
        status_code=302,
        responses={404: {"content": {"text/html": {}}, "description": "the token is not valid"}},
    )
    def click(token: str, request: Request) -> Response:
        """A tracked link: stores a 'click' with its URL and redirects (302) to the URL signed in
        the token for that message, and only there; a token that is not valid gets a 404 page."""
        claims = claims_of("click", token, request)
        if claims is None:
            return _invalid_page()
        hit(claims, request)
        return RedirectResponse(claims.url, status_code=302, headers=NO_STORE)

    @router.get(
        "/u/{token}",
        response_class=HTMLResponse,
        responses={404: {"content": {"text/html": {}}, "description": "the token is not valid"}},
    )
    def unsubscribe_page(token: str, request: Request) -> Response:
        """The unsubscribe page: asks for confirmation and changes nothing (mail servers' link
        scanners fetch it too)."""
        claims = claims_of("unsubscribe", token, request)
        page = None if claims is None else events.unsubscribe_page(engine(), claims.message_key)
        if page is None:
            return _invalid_page()
        return _page(
            "unsubscribe.html.j2", page.channel, page.preferred_language, unsubscribed=page.unsubscribed
        )

    @router.post(
        "/u/{token}",
        response_class=HTMLResponse,
        responses={404: {"content": {"text/html": {}}, "description": "the token is not valid"}},
    )
    async def unsubscribe(token: str, request: Request) -> Response:
        """Unsubscribes the person from the message's channel at once: the confirmation form and
        RFC 8058 one-click (body `List-Unsubscribe=One-Click`, no cookies) alike. A repeat
        changes nothing and shows the same page."""
        claims = claims_of("unsubscribe", token, request)
        if claims is None:
            return _invalid_page()
        try:
            body = await _read_body(request, MAX_FORM_BYTES)
        except _BodyTooLarge:
            body = b""
        done = await run_in_threadpool(
            events.unsubscribe,
            engine(),
            claims.message_key,
            user_agent=request.headers.get("user-agent"),
            # RFC 8058 allows the field as a URL-encoded or a multipart form.
            one_click=ONE_CLICK in body,
        )
        if not done.found:
            return _invalid_page()
        page = await run_in_threadpool(events.unsubscribe_page, engine(), claims.message_key)
        return _page("unsubscribed.html.j2", page.channel, page.preferred_language)

    async def store(receipts: list[Receipt]) -> JSONResponse:
        stored = await run_in_threadpool(events.record_receipts, engine(), receipts)
        return JSONResponse(dataclasses.asdict(stored))

    @router.post(
        "/webhooks/sms",
        responses={
            403: {"description": "X-Twilio-Signature missing or wrong"},
            422: {"description": "unreadable"},
        },
    )
    async def sms_webhook(request: Request) -> Response:
        """SMS status callbacks as Twilio posts them (form fields MessageSid, MessageStatus,
        ErrorCode, To, ...), signed with X-Twilio-Signature. Final statuses become events;
        a repeated callback is a no-op. Query `message_key` (in the callback URL) names our message."""
        token = settings().sms_auth_token
        if not token:
            return _error(503, "not_configured", "the SMS webhook has no auth token configured")
        if _media_type(request) != "application/x-www-form-urlencoded":
            return _error(415, "unsupported_media_type", "a status callback is a form post")
        try:
            body = await _read_body(request, MAX_WEBHOOK_BYTES)
        except _BodyTooLarge:
            return _error(413, "body_too_large", f"the body exceeds {MAX_WEBHOOK_BYTES:,} bytes")
        # connectors.sms imports aiohttp: only a process that gets SMS callbacks pays for it.
        from connectors.sms import twilio_signature

        fields = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        presented = request.headers.get("x-twilio-signature")
        if not any(
            signature_matches(twilio_signature(token, url, dict(fields)), presented) for url in _urls(request)
        ):
            return _error(403, "bad_signature", "X-Twilio-Signature is missing or does not match")
        try:
            receipts = sms_receipts(fields, request.query_params.get("message_key"))
        except WebhookError as exc:
            return _error(422, "invalid_webhook", str(exc))
        return await store(receipts)

    async def json_webhook(request: Request, secret: str | None, parse: Callable) -> Response:
        if not secret:
            return _error(503, "not_configured", "this webhook has no secret configured")
        try:
            body = await _read_body(request, MAX_WEBHOOK_BYTES)
        except _BodyTooLarge:
            return _error(413, "body_too_large", f"the body exceeds {MAX_WEBHOOK_BYTES:,} bytes")
        if not signature_matches(body_signature(secret, body), request.headers.get("x-kms-signature")):
            return _error(403, "bad_signature", "X-KMS-Signature is missing or does not match")
        try:
            receipts = parse(json.loads(body))
        except (ValueError, RecursionError):
            return _error(400, "invalid_json", "the body is not valid UTF-8 JSON")
        except WebhookError as exc:
            return _error(422, "invalid_webhook", str(exc))
        return await store(receipts)

    @router.post(
        "/webhooks/push",
        responses={
            403: {"description": "X-KMS-Signature missing or wrong"},
            422: {"description": "unreadable"},
        },
    )
    async def push_webhook(request: Request) -> Response:
        """Push receipts `{"events": [{"event_id", "status": delivered|failed|unregistered,
        "message_id", "message_key", "token", "error", "occurred_at"}]}`, signed with
        X-KMS-Signature: sha256=<hex HMAC-SHA256 of the body>. 'unregistered' suppresses the token."""
        return await json_webhook(request, settings().push_webhook_secret, push_receipts)

    @router.post(
        "/webhooks/email",
        responses={
            403: {"description": "X-KMS-Signature missing or wrong"},
            422: {"description": "unreadable"},
        },
    )
    async def email_webhook(request: Request) -> Response:
        """Email events in Postmark's shape (RecordType Delivery, Bounce with Type, SpamComplaint;
        MessageID, Recipient, Metadata.message_key), one or `{"events": [...]}`, signed like push.
        A hard bounce or complaint suppresses the address."""
        return await json_webhook(request, settings().email_webhook_secret, email_receipts)

    def _urls(request: Request) -> set[str]:
        # The provider signed the URL it called: our public base URL, or what reached us.
        path = request.url.path
        mounted = request.scope.get("root_path", "")
        relative = path[len(mounted) :] if mounted and path.startswith(mounted) else path
        query = f"?{request.url.query}" if request.url.query else ""
        return {settings().links.base_url + relative + query, str(request.url)}

    return router


def _page(template: str, channel: str, language: str | None, **context) -> HTMLResponse:
    lang = "de" if language in (None, "de") else "en"
    german, english = _CHANNEL_WORDS.get(channel, ("", ""))
    html = _pages.get_template(template).render(lang=lang, channel_de=german, channel_en=english, **context)
    return HTMLResponse(html, headers=PAGE_HEADERS)


def _invalid_page() -> HTMLResponse:
    return HTMLResponse(
        _pages.get_template("invalid.html.j2").render(lang="de"), status_code=404, headers=PAGE_HEADERS
    )


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _BodyTooLarge
    return bytes(body)
