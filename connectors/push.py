"""The push connector: Firebase Cloud Messaging HTTP v1 for app tokens, Web Push with VAPID for browsers.

    connector = PushConnector.from_connection(fcm_conn, webpush_conn)   # kms_push_fcm, kms_push_webpush
    for outcome in connector.send(batch):
        ...
    connector.close()

An `Outbound.address` of the form `webpush:{"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}}`
(a browser's PushSubscription, as core.identifier keeps it) goes by Web Push; any other
address is an FCM registration token. Either connection may be left out; a message for the
missing one is `skipped` 'no_<kind>_connection'.

**FCM**: `POST {base}/v1/projects/{project_id}/messages:send` with
`{"message": {"token", "notification": {title, body}, "data": {"message_key"}}}` and a
Bearer access token. The token comes from the service-account key (connection extra
`service_account`: the key JSON, as text or object, or `service_account_path`): an RS256
JWT assertion (iss = client_email, scope firebase.messaging, aud = the key's token_uri)
exchanged at token_uri for an access token by the JWT bearer grant (RFC 7523), cached until
a minute before it expires and fetched again once when FCM answers 401.

**Web Push**: the payload (JSON {title, body, message_key}) is encrypted for the
subscription with aes128gcm (RFC 8291, pywebpush) and POSTed to its endpoint with a VAPID
JWT (RFC 8292; connection password = the VAPID private key, extra `subject` = mailto: or
https: contact), signed once per push service origin and reused for 12 hours. Encryption
costs an ECDH key pair per message: measure it (bench/delivery.py) before promising rates.

Answers and outcomes, both protocols:

- accepted (FCM 200, Web Push 201): `sent` with the FCM message name or the Location URL;
- the token or subscription is gone (FCM UNREGISTERED 404 or SENDER_ID_MISMATCH, Web Push
  404/410, or an address that is no subscription at all): `failed_hard` with reason
  'token_invalid'; the outbox then calls `retire_push_tokens` so no later run uses it again;
- INVALID_ARGUMENT (400) and other 4xx about this message: `failed_hard` with the error;
- QUOTA_EXCEEDED / 429: waits Retry-After and tries again while the wait is <= `max_retry_wait`
  and attempts remain, else `failed_soft` with retry_after; UNAVAILABLE 503, INTERNAL 500:
  `failed_soft`;
- credentials refused (the token endpoint, or 401 twice, 403 PERMISSION_DENIED on the
  project, Web Push 401): `PermanentDeliveryError`;
- connection refused: `failed_soft` 'provider_unreachable'; no answer after the request
  went out: `ambiguous` (neither FCM nor Web Push has an idempotency key, so it is never
  resent blindly).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from pywebpush import WebPusher, WebPushException
from sqlalchemy import Connection

from campaign_lib.errors import ConfigError, PermanentDeliveryError
from campaign_lib.sqlfiles import queries
from connectors.base import Outbound, Outcome
from connectors.http_batch import (
    HttpBatchRunner,
    base_url_from_connection,
    connection_extra,
    json_object,
    retry_after_seconds,
)

WEBPUSH_PREFIX = "webpush:"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_DEFAULT_BASE_URL = "https://fcm.googleapis.com"
TOKEN_INVALID = "token_invalid"
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_VAPID_LIFETIME = 12 * 3600


@dataclass(frozen=True, repr=False)
class FcmSettings:
    """FCM HTTP v1 settings; the service account's private key never shows in repr."""

    service_account: Mapping[str, Any]
    project_id: str
    base_url: str = FCM_DEFAULT_BASE_URL

    def __post_init__(self) -> None:
        missing = {"private_key", "client_email", "token_uri"} - set(self.service_account)
        if missing:
            raise ConfigError(f"FCM service account key lacks {', '.join(sorted(missing))}")
        if not self.project_id:
            raise ConfigError("FCM connection: no project_id (extra, or in the service account key)")

    def __repr__(self) -> str:
        return (
            f"FcmSettings(project_id={self.project_id!r}, base_url={self.base_url!r}, "
            f"client_email={self.service_account['client_email']!r}, private_key=***)"
        )

    @classmethod
    def from_connection(cls, conn: Mapping[str, Any]) -> FcmSettings:
        """extra: service_account (key JSON as text or object) or service_account_path, project_id;
        host or extra base_url (default https://fcm.googleapis.com)."""
        extra = connection_extra(conn)
        account = extra.get("service_account")
        if account is None and extra.get("service_account_path"):
            account = Path(extra["service_account_path"]).expanduser().read_text(encoding="utf-8")
        if isinstance(account, str):
            try:
                account = json.loads(account)
            except ValueError as exc:
                raise ConfigError("FCM connection: extra service_account is not JSON") from exc
        if not isinstance(account, Mapping):
            raise ConfigError("FCM connection: extra service_account or service_account_path is required")
        base_url = (
            base_url_from_connection(conn)
            if conn.get("host") or extra.get("base_url")
            else FCM_DEFAULT_BASE_URL
        )
        return cls(
            service_account=dict(account),
            project_id=str(extra.get("project_id") or account.get("project_id") or ""),
            base_url=base_url,
        )

    @property
    def send_url(self) -> str:
        return f"{self.base_url}/v1/projects/{self.project_id}/messages:send"

    def assertion(self, now: float) -> str:
        """The RS256-signed JWT a service account presents to its token_uri (valid one hour)."""
        account = self.service_account
        claims = {
            "iss": account["client_email"],
            "scope": FCM_SCOPE,
            "aud": account["token_uri"],
            "iat": int(now),
            "exp": int(now) + 3600,
        }
        headers = {"kid": account["private_key_id"]} if account.get("private_key_id") else None
        return jwt.encode(claims, account["private_key"], algorithm="RS256", headers=headers)


@dataclass(frozen=True, repr=False)
class WebPushSettings:
    """VAPID key and contact for Web Push; the key never shows in repr."""

    vapid_private_key: str
    subject: str
    ttl: int = 24 * 3600
    urgency: str = "normal"

    def __post_init__(self) -> None:
        if not self.subject.startswith(("mailto:", "https:")):
            raise ConfigError("Web Push connection: extra subject must be a mailto: or https: URL")
        load_vapid(self.vapid_private_key)

    def __repr__(self) -> str:
        return f"WebPushSettings(subject={self.subject!r}, ttl={self.ttl}, vapid_private_key=***)"

    @classmethod
    def from_connection(cls, conn: Mapping[str, Any]) -> WebPushSettings:
        """password: the VAPID private key (PEM or base64url raw); extra: subject, ttl, urgency."""
        extra = connection_extra(conn)
        return cls(
            vapid_private_key=str(conn.get("password") or extra.get("vapid_private_key") or ""),
            subject=str(extra.get("subject") or ""),
            ttl=int(extra.get("ttl", 24 * 3600)),
            urgency=str(extra.get("urgency", "normal")),
        )


@dataclass(frozen=True)
class PushLimits:
    """How hard the connector pushes: requests in flight, timeouts, retries on 429."""

    concurrency: int = 16
    timeout: float = 10.0
    max_attempts: int = 3
    max_retry_wait: float = 5.0
    retry_after_default: float = 60.0

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> PushLimits:
        return cls(
            concurrency=int(extra.get("concurrency", 16)),
            timeout=float(extra.get("timeout", 10.0)),
            max_attempts=int(extra.get("max_attempts", 3)),
            max_retry_wait=float(extra.get("max_retry_wait", 5.0)),
            retry_after_default=float(extra.get("retry_after_default", 60.0)),
        )


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    retry_after: float | None
    location: str | None


class _Unanswered(Exception):
    """The request may have been handed over but no answer came."""


class _BadSubscription(Exception):
    """The subscription's keys cannot be used to encrypt (not a P-256 point, say)."""


class _Unreachable(Exception):
    """Nothing was handed over: the connection could not be made."""


class PushConnector:
    """Sends push messages by FCM or Web Push; see the module docstring."""

    channel = "push"

    def __init__(
        self,
        fcm: FcmSettings | None = None,
        webpush: WebPushSettings | None = None,
        limits: PushLimits | None = None,
    ) -> None:
        if fcm is None and webpush is None:
            raise ConfigError("the push connector needs an FCM or a Web Push connection")
        self.fcm = fcm
        self.webpush = webpush
        self.limits = limits or PushLimits()
        self._runner = HttpBatchRunner(concurrency=self.limits.concurrency, timeout=self.limits.timeout)
        self._access_token: tuple[str, float] | None = None
        self._token_lock: asyncio.Lock | None = None
        self._vapid = load_vapid(webpush.vapid_private_key) if webpush else None
        self._vapid_headers: dict[str, tuple[dict[str, str], float]] = {}

    @classmethod
    def from_connection(
        cls, conn: Mapping[str, Any] | None, webpush_conn: Mapping[str, Any] | None = None
    ) -> PushConnector:
        """From the connections kms_push_fcm (`conn`) and kms_push_webpush; either may be None.
        Limits (concurrency, timeout, max_attempts, max_retry_wait) from the first one's extra."""
        limits_from = conn if conn is not None else webpush_conn
        return cls(
            fcm=FcmSettings.from_connection(conn) if conn is not None else None,
            webpush=WebPushSettings.from_connection(webpush_conn) if webpush_conn is not None else None,
            limits=PushLimits.from_extra(connection_extra(limits_from or {})),
        )

    def send(self, batch: Sequence[Outbound]) -> Iterator[Outcome]:
        """One Outcome per message: refusals without the network first, then answers as they come."""
        ready: list[Outbound] = []
        for outbound in batch:
            is_webpush = outbound.address.startswith(WEBPUSH_PREFIX)
            if is_webpush and self.webpush is None:
                yield Outcome(outbound.message_id, "skipped", reason="no_webpush_connection")
            elif not is_webpush and self.fcm is None:
                yield Outcome(outbound.message_id, "skipped", reason="no_fcm_connection")
            elif not outbound.address.strip() or (is_webpush and _subscription(outbound.address) is None):
                yield Outcome(outbound.message_id, "failed_hard", reason=TOKEN_INVALID)
            else:
                ready.append(outbound)
        yield from self._runner.run(ready, self._attempt, _unexpected)

    def close(self) -> None:
        self._runner.close()

    async def _attempt(self, session: aiohttp.ClientSession, outbound: Outbound) -> Outcome:
        webpush = outbound.address.startswith(WEBPUSH_PREFIX)
        attempts, reauthorised = 0, False
        while True:
            attempts += 1
            try:
                if webpush:
                    answer = await self._post_webpush(session, outbound)
                else:
                    answer = await self._post_fcm(session, outbound)
            except _Unreachable:
                return Outcome(
                    outbound.message_id,
                    "failed_soft",
                    reason="provider_unreachable",
                    retry_after=self.limits.retry_after_default,
                )
            except _BadSubscription:
                return Outcome(outbound.message_id, "failed_hard", reason=TOKEN_INVALID)
            except _Unanswered as exc:
                return Outcome(outbound.message_id, "ambiguous", reason=f"no answer after sending: {exc}")
            if answer.status == 401 and not webpush and not reauthorised:
                # An access token can expire or be revoked early: fetch a new one, once.
                reauthorised = True
                self._access_token = None
                continue
            outcome = self._outcome(outbound, answer, webpush)
            if outcome is not None:
                return outcome
            wait = answer.retry_after if answer.retry_after is not None else self.limits.retry_after_default
            if attempts < self.limits.max_attempts and wait <= self.limits.max_retry_wait:
                await asyncio.sleep(wait)
                continue
            return Outcome(
                outbound.message_id, "failed_soft", reason=_reason(answer, webpush), retry_after=wait
            )

    def _outcome(self, outbound: Outbound, answer: _Answer, webpush: bool) -> Outcome | None:
        """The outcome of an answer; None for a 429 (the caller waits and retries)."""
        message_id, status = outbound.message_id, answer.status
        if 200 <= status < 300:
            if webpush:
                return Outcome(message_id, "sent", provider_message_id=answer.location)
            return Outcome(message_id, "sent", provider_message_id=json_object(answer.body).get("name"))
        if status == 429:
            return None
        error_code = "" if webpush else _fcm_error_code(answer.body)
        if status in (404, 410) or error_code in ("UNREGISTERED", "SENDER_ID_MISMATCH"):
            return Outcome(message_id, "failed_hard", reason=TOKEN_INVALID)
        if status >= 500:
            return Outcome(
                message_id,
                "failed_soft",
                reason=_reason(answer, webpush),
                retry_after=answer.retry_after or self.limits.retry_after_default,
            )
        if status == 401 or (status == 403 and not webpush):
            where = (
                "Web Push (VAPID key)"
                if webpush
                else f"FCM project {self.fcm.project_id if self.fcm else ''}"
            )
            raise PermanentDeliveryError(
                f"{where} refused our credentials: {_reason(answer, webpush)}; check kms_push_fcm / "
                "kms_push_webpush"
            )
        return Outcome(message_id, "failed_hard", reason=_reason(answer, webpush))

    async def _post(self, session: aiohttp.ClientSession, url: str, **request: Any) -> _Answer:
        try:
            async with session.post(url, **request) as response:
                body = await response.read()
                return _Answer(
                    response.status,
                    body,
                    retry_after_seconds(response.headers.get("Retry-After")),
                    response.headers.get("Location"),
                )
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
            raise _Unreachable(type(exc).__name__) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _Unanswered(type(exc).__name__) from exc

    async def _post_fcm(self, session: aiohttp.ClientSession, outbound: Outbound) -> _Answer:
        assert self.fcm is not None
        access_token = await self._fcm_access_token(session)
        message = {
            "token": outbound.address,
            "notification": {"title": outbound.subject or "", "body": outbound.text},
            "data": {"message_key": outbound.message_key},
        }
        return await self._post(
            session,
            self.fcm.send_url,
            data=json.dumps({"message": message}).encode(),
            headers={"Authorization": f"Bearer {access_token}", "Content-Type": "application/json"},
        )

    async def _fcm_access_token(self, session: aiohttp.ClientSession) -> str:
        assert self.fcm is not None
        if self._token_lock is None:
            self._token_lock = asyncio.Lock()
        async with self._token_lock:
            now = time.time()
            if self._access_token is not None and self._access_token[1] > now:
                return self._access_token[0]
            token_uri = self.fcm.service_account["token_uri"]
            form = {"grant_type": _JWT_BEARER, "assertion": self.fcm.assertion(now)}
            try:
                answer = await self._post(session, token_uri, data=form)
            except (_Unreachable, _Unanswered) as exc:
                raise _Unreachable(f"token endpoint {token_uri}: {exc}") from exc
            granted = json_object(answer.body)
            if answer.status != 200 or "access_token" not in granted:
                raise PermanentDeliveryError(
                    f"the token endpoint {token_uri} refused the service account "
                    f"{self.fcm.service_account['client_email']}: {granted.get('error')} "
                    f"{granted.get('error_description', '')}".rstrip()
                )
            lifetime = float(granted.get("expires_in", 3600))
            self._access_token = (granted["access_token"], now + max(lifetime - 60, 0))
            return granted["access_token"]

    async def _post_webpush(self, session: aiohttp.ClientSession, outbound: Outbound) -> _Answer:
        assert self.webpush is not None
        subscription = _subscription(outbound.address)
        assert subscription is not None
        payload = json.dumps(
            {"title": outbound.subject or "", "body": outbound.text, "message_key": outbound.message_key}
        ).encode()
        try:
            encrypted = WebPusher(subscription).encode(payload, "aes128gcm")
        except (WebPushException, ValueError) as exc:
            raise _BadSubscription(str(exc)) from exc
        headers = {
            **self._vapid_authorization(subscription["endpoint"]),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self.webpush.ttl),
            "Urgency": self.webpush.urgency,
        }
        return await self._post(session, subscription["endpoint"], data=encrypted["body"], headers=headers)

    def _vapid_authorization(self, endpoint: str) -> dict[str, str]:
        """The VAPID Authorization header for the endpoint's origin, signed once per 12 hours."""
        assert self._vapid is not None and self.webpush is not None
        parts = urlsplit(endpoint)
        origin = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self._vapid_headers.get(origin)
        if cached is None or cached[1] - 3600 < now:
            expires = now + _VAPID_LIFETIME
            signed = self._vapid.sign({"aud": origin, "exp": int(expires), "sub": self.webpush.subject})
            cached = ({"Authorization": signed["Authorization"]}, expires)
            self._vapid_headers[origin] = cached
        return cached[0]


def load_vapid(private_key: str) -> Vapid02:
    """A VAPID signer from a private key as PEM text or py_vapid's base64url raw/DER form."""
    try:
        if "-----BEGIN" in private_key:
            key = serialization.load_pem_private_key(private_key.encode(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError("not an EC key")
            return Vapid02(key)
        return Vapid02.from_string(private_key)
    except Exception as exc:  # py_vapid raises bare errors of several kinds for bad keys
        raise ConfigError(f"Web Push connection: the VAPID private key is unreadable ({exc})") from exc


def _unexpected(outbound: Outbound, error: Exception) -> Outcome:
    return Outcome(
        outbound.message_id, "ambiguous", reason=f"connector error after handing over: {type(error).__name__}"
    )


def _subscription(address: str) -> dict[str, Any] | None:
    """The PushSubscription of a `webpush:` address, None when it is not a usable one."""
    try:
        subscription = json.loads(address.removeprefix(WEBPUSH_PREFIX))
    except ValueError:
        return None
    if not isinstance(subscription, dict):
        return None
    keys = subscription.get("keys")
    endpoint = subscription.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        return None
    if not isinstance(keys, dict) or not keys.get("p256dh") or not keys.get("auth"):
        return None
    return subscription


def _fcm_error_code(body: bytes) -> str:
    error = json_object(body).get("error") or {}
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(error.get("status") or "")


def _reason(answer: _Answer, webpush: bool) -> str:
    if webpush:
        return f"web push http {answer.status}"
    error = json_object(answer.body).get("error") or {}
    code = _fcm_error_code(answer.body) or f"http {answer.status}"
    return f"fcm {code}: {error.get('message', '')}".rstrip(": ")


def retire_push_tokens(conn: Connection, addresses: Iterable[str]) -> int:
    """Suppress push tokens (or `webpush:` subscriptions) a provider reported invalid, so no
    later run uses them: one campaign.suppression row (address_kind 'push_token', channel
    'push', reason 'hard_bounce') per address not suppressed yet. Runs in the caller's
    transaction; returns the number of new rows."""
    statement = queries("providers.sql")["retire_push_token"]
    return sum(conn.execute(statement, {"address": address.strip()}).rowcount for address in set(addresses))
