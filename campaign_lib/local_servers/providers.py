"""Local emulators of the SMS and push providers: their real HTTP APIs on 127.0.0.1, for the demo and tests.

One aiohttp server answers three providers' endpoints, as the real ones answer them:

- **SMS, Twilio's Messages API**: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`
  (form To, From or MessagingServiceSid, Body, StatusCallback; HTTP Basic auth with the
  account SID and auth token) answers 201 with a message resource (`sid` SM..., `status`
  queued, `num_segments`) or Twilio's error JSON `{code, message, more_info, status}`. The
  header `I-Twilio-Idempotency-Token` is honoured: the same token again gets the first
  answer and sends nothing new. After accepting (status queued), it POSTs the status callbacks
  sent -> delivered (or undelivered/failed with an ErrorCode) to the StatusCallback URL,
  signed with `X-Twilio-Signature` the way Twilio signs them.
- **FCM HTTP v1**: `POST /token` is Google's OAuth2 token endpoint for the JWT bearer grant
  (RS256 assertion of a service account, verified against the public key the emulator was
  given; a bad signature gets `invalid_grant`), and
  `POST /v1/projects/{project_id}/messages:send` takes `{"message": {"token": ...}}` with
  that bearer token and answers `{"name": "projects/.../messages/..."}` or FCM's errors
  (tokens starting with `stale-` are UNREGISTERED, 404).
- **Web Push** (RFC 8030 with VAPID, RFC 8292, and aes128gcm, RFC 8291): `POST /wp/{id}`
  checks the VAPID JWT (ES256, against the key in `k=`), decrypts the payload with the
  subscription's private key and answers 201; unsubscribed ids answer 410 Gone. The keys
  of subscription `id` derive from the id (campaign_lib/local_servers/webpush_keys.py), so
  generated demo data can carry subscriptions the emulator can read without talking to it.
- **Push receipts** (optional, `push_receipts_url` and `push_receipts_secret`): each accepted
  push is reported delivered to the tracking app's push webhook, JSON signed with
  X-KMS-Signature, standing in for the delivery data FCM gives a sender later.

Every accepted message is kept: in memory, in `<store>/{sms,fcm,webpush}.jsonl` (one JSON
object per line), and listed by `GET /_emulator/messages?provider=sms`. Faults are set
per test through `POST /_emulator/faults` or `server.add_fault(...)` (HTTP status with the
provider's error body, Retry-After, a delay, or accept-then-hang for a timeout after
acceptance), each for all messages or one address, any number of times.

    with LocalProviderServer(store_dir, sms_accounts={"AC1": "token"},
                             fcm_accounts={"svc@p.iam.gserviceaccount.com": public_pem}) as server:
        server.base_url   # http://127.0.0.1:PORT
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import secrets
import signal
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import http_ece
import jwt
from aiohttp import ClientError, ClientSession, ClientTimeout, web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from campaign_lib.local_servers.webpush_keys import emulator_webpush_keys
from campaign_lib.tracking.webhooks import body_signature
from connectors.http_batch import basic_authorization, new_event_loop
from connectors.sms import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sms_length, twilio_signature

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
STALE_FCM_PREFIX = "stale-"

# Twilio's error codes the emulator answers with: code -> (HTTP status, message).
TWILIO_ERRORS: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20429: (429, "Too Many Requests"),
    20500: (500, "Internal Server Error"),
    21211: (400, "The 'To' number is not a valid phone number."),
    21408: (
        400,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' number",
    ),
    21602: (400, "Message body is required."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21614: (400, "'To' number is not a valid mobile number"),
}
# FCM's error answers: errorCode -> (HTTP status, google.rpc status).
FCM_ERRORS: dict[str, tuple[int, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND"),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
    "INTERNAL": (500, "INTERNAL"),
}


@dataclass
class Fault:
    """A misbehaviour for `provider` ('sms', 'fcm' or 'webpush'), for every message or one
    address (To number, FCM token or Web Push subscription id), `times` times (None: always).

    `error` is a Twilio code (int, SMS), an FCM errorCode (FCM) or an HTTP status (Web Push);
    `delay` seconds pass before the answer; `hang_after_accept` accepts and stores the message
    first, then waits that long before answering (a timeout after acceptance);
    `receipt` makes the SMS status callback end in 'undelivered' or 'failed' with
    `receipt_error` (e.g. 30003)."""

    provider: str
    address: str | None = None
    error: int | str | None = None
    retry_after: float | None = None
    delay: float = 0.0
    hang_after_accept: float = 0.0
    receipt: str | None = None
    receipt_error: int = 30003
    times: int | None = None

    def matches(self, provider: str, address: str) -> bool:
        return self.provider == provider and self.address in (None, address) and self.times != 0


def make_service_account(project_id: str, token_uri: str) -> tuple[dict, str]:
    """A new Google service-account key JSON (as the Cloud console downloads it) and the
    public key PEM to configure the emulator with."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    client_email = f"kms-sender@{project_id}.iam.gserviceaccount.com"
    account = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": private_pem,
        "client_email": client_email,
        "client_id": str(secrets.randbelow(10**20)),
        "token_uri": token_uri,
    }
    return account, public_pem


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ProviderEmulator:
    """The state and the aiohttp application of the emulated providers."""

    def __init__(
        self,
        store_dir: Path,
        *,
        sms_accounts: Mapping[str, str] | None = None,
        fcm_accounts: Mapping[str, str] | None = None,
        fcm_project_id: str = "kms-demo",
        callback_delay: float = 0.05,
        push_receipts_url: str | None = None,
        push_receipts_secret: str | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.sms_accounts = dict(sms_accounts or {})
        self.fcm_public_keys = dict(fcm_accounts or {})
        self.fcm_project_id = fcm_project_id
        self.callback_delay = callback_delay
        self.push_receipts_url = push_receipts_url
        self.push_receipts_secret = push_receipts_secret
        self.base_url = ""
        self.faults: list[Fault] = []
        self.messages: dict[str, list[dict[str, Any]]] = {"sms": [], "fcm": [], "webpush": []}
        self.callbacks: list[dict[str, Any]] = []
        self.requests: dict[str, int] = {"sms": 0, "fcm": 0, "webpush": 0, "token": 0}
        self.gone_subscriptions: set[str] = set()
        # Idempotency token -> the answer it got, also from the messages stored before a restart.
        self._idempotent: dict[str, dict[str, Any]] = self._stored_answers()
        self._access_tokens: dict[str, float] = {}
        self._files = {
            name: (self.store_dir / f"{name}.jsonl").open("a", encoding="utf-8") for name in self.messages
        }
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._callback_session: ClientSession | None = None
        self._background: set[asyncio.Task] = set()

    def _stored_answers(self) -> dict[str, dict[str, Any]]:
        """The answers of the SMS already stored in sms.jsonl, by account and idempotency token."""
        answers: dict[str, dict[str, Any]] = {}
        path = self.store_dir / "sms.jsonl"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                kept = json.loads(line)
                if kept.get("idempotency_token"):
                    answer = {
                        k: v for k, v in kept.items() if k not in ("idempotency_token", "status_callback")
                    }
                    answers[f"{kept['account_sid']}:{kept['idempotency_token']}"] = answer
        return answers

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account_sid}/Messages.json", self._sms_send)
        app.router.add_post("/token", self._oauth_token)
        app.router.add_post("/v1/projects/{project_id}/messages:send", self._fcm_send)
        app.router.add_post("/wp/{subscription_id}", self._webpush_receive)
        app.router.add_get("/_emulator/messages", self._list_messages)
        app.router.add_post("/_emulator/faults", self._set_faults)
        app.on_cleanup.append(self._cleanup)
        return app

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def clear(self) -> None:
        """Forget faults, messages, callbacks and counters (the files keep what they have)."""
        with self._lock:
            self.faults.clear()
            for kept in self.messages.values():
                kept.clear()
            self.callbacks.clear()
            self.requests = dict.fromkeys(self.requests, 0)
            self.gone_subscriptions.clear()
            self._idempotent.clear()

    def _take_fault(self, provider: str, address: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(provider, address):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _store(self, provider: str, record: dict[str, Any]) -> None:
        with self._lock:
            self.messages[provider].append(record)
            out = self._files[provider]
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()

    # SMS: Twilio's Messages API

    async def _sms_send(self, request: web.Request) -> web.Response:
        self.requests["sms"] += 1
        account_sid = request.match_info["account_sid"]
        token = self.sms_accounts.get(account_sid)
        if token is None or request.headers.get("Authorization") != basic_authorization(account_sid, token):
            return _twilio_error(20003)
        form = await request.post()
        to, body = str(form.get("To", "")), str(form.get("Body", ""))
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key and f"{account_sid}:{key}" in self._idempotent:
            return web.json_response(self._idempotent[f"{account_sid}:{key}"], status=201)
        fault = self._take_fault("sms", to)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.error is not None:
            return _twilio_error(int(fault.error), fault.retry_after)
        if not to.startswith("+") or not to[1:].isdigit() or not 8 <= len(to) <= 16:
            return _twilio_error(21211)
        if not body:
            return _twilio_error(21602)
        if key and f"{account_sid}:{key}" in self._idempotent:
            # The same token arrived again while this request waited (a fault's delay).
            return web.json_response(self._idempotent[f"{account_sid}:{key}"], status=201)
        sid = "SM" + uuid.uuid4().hex
        now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        answer = {
            "sid": sid,
            "account_sid": account_sid,
            "to": to,
            "from": form.get("From") or None,
            "messaging_service_sid": form.get("MessagingServiceSid") or None,
            "body": body,
            "status": "queued",
            "num_segments": str(sms_length(body).segments),
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "error_code": None,
            "error_message": None,
            "price": None,
            "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
        }
        if key:
            # No await since the lookup above, so no other request with this token slips in.
            self._idempotent[f"{account_sid}:{key}"] = answer
        self._store(
            "sms", {**answer, "idempotency_token": key, "status_callback": form.get("StatusCallback")}
        )
        callback = str(form.get("StatusCallback") or "")
        if callback:
            self._in_background(self._status_callbacks(callback, token, answer, fault))
        if fault is not None and fault.hang_after_accept:
            await asyncio.sleep(fault.hang_after_accept)
        return web.json_response(answer, status=201)

    async def _status_callbacks(self, url: str, token: str, message: dict, fault: Fault | None) -> None:
        final = fault.receipt if fault is not None and fault.receipt else "delivered"
        for status in ("sent", final):
            await asyncio.sleep(self.callback_delay)
            params = {
                "AccountSid": message["account_sid"],
                "ApiVersion": "2010-04-01",
                "From": message["from"] or "",
                "MessageSid": message["sid"],
                "MessageStatus": status,
                "SmsSid": message["sid"],
                "SmsStatus": status,
                "To": message["to"],
            }
            if status in ("undelivered", "failed"):
                params["ErrorCode"] = str(fault.receipt_error if fault else 30003)
            headers = {SIGNATURE_HEADER: twilio_signature(token, url, params)}
            await self._post_receipt(url, params, headers, {"params": params})

    def _push_receipt(self, message_id: str, message_key: str | None, token: str | None) -> None:
        """Report a push as delivered to the tracking app's push webhook, when one is configured.
        FCM and Web Push have no such callback; this stands in for the delivery data a sender
        gets from them later (FCM's BigQuery export, the app's own acknowledgement)."""
        if not self.push_receipts_url or not self.push_receipts_secret:
            return
        event = {
            "event_id": f"{message_id}:delivered",
            "status": "delivered",
            "message_id": message_id,
            "message_key": message_key,
            "token": token,
            "error": None,
            "occurred_at": datetime.now(UTC).isoformat(),
        }
        body = json.dumps({"events": [event]}).encode()
        headers = {
            "Content-Type": "application/json",
            "X-KMS-Signature": body_signature(self.push_receipts_secret, body),
        }
        self._in_background(self._delayed_receipt(self.push_receipts_url, body, headers))

    async def _delayed_receipt(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        await asyncio.sleep(self.callback_delay)
        await self._post_receipt(url, body, headers, {"body": body.decode()})

    async def _post_receipt(
        self, url: str, data: bytes | dict[str, str], headers: dict[str, str], shown: dict[str, Any]
    ) -> None:
        """POST a receipt and keep what happened in `callbacks` (a receipt is never retried)."""
        record: dict[str, Any] = {"url": url, **shown}
        try:
            assert self._callback_session is not None
            async with self._callback_session.post(url, data=data, headers=headers) as response:
                record["status"] = response.status
        except (ClientError, TimeoutError) as exc:
            record["error"] = type(exc).__name__
        with self._lock:
            self.callbacks.append(record)

    def _in_background(self, coro) -> None:
        if self._callback_session is None:
            self._callback_session = ClientSession(timeout=ClientTimeout(total=10))
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # FCM HTTP v1 and Google's OAuth2 token endpoint

    async def _oauth_token(self, request: web.Request) -> web.Response:
        self.requests["token"] += 1
        form = await request.post()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return _oauth_error("unsupported_grant_type", "Invalid grant_type.")
        assertion = str(form.get("assertion", ""))
        try:
            issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss", "")
        except jwt.PyJWTError:
            return _oauth_error("invalid_grant", "Invalid JWT: cannot be read.")
        public_key = self.fcm_public_keys.get(issuer)
        if public_key is None:
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        try:
            claims = jwt.decode(
                assertion,
                public_key,
                algorithms=["RS256"],
                audience=str(request.url),
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except jwt.InvalidSignatureError:
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        except jwt.PyJWTError as exc:
            return _oauth_error("invalid_grant", f"Invalid JWT: {exc}")
        if int(claims["exp"]) - int(claims["iat"]) > 3600:
            return _oauth_error(
                "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes)"
            )
        if FCM_SCOPE not in str(claims["scope"]).split():
            return _oauth_error("invalid_scope", "Scope does not include firebase.messaging.")
        access_token = "ya29." + secrets.token_urlsafe(32)
        self._access_tokens[access_token] = time.time() + 3600
        return web.json_response({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"})

    async def _fcm_send(self, request: web.Request) -> web.Response:
        self.requests["fcm"] += 1
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self._access_tokens.get(bearer, 0) < time.time():
            return _fcm_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            )
        project_id = request.match_info["project_id"]
        if project_id != self.fcm_project_id:
            return _fcm_error(403, "PERMISSION_DENIED", f"Permission denied on project {project_id}.")
        try:
            message = (await request.json())["message"]
            token = message["token"]
        except (ValueError, KeyError, TypeError):
            return _fcm_error(
                400, "INVALID_ARGUMENT", "Request contains an invalid argument.", "INVALID_ARGUMENT"
            )
        if not isinstance(token, str) or not token:
            return _fcm_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
            )
        fault = self._take_fault("fcm", token)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        error = fault.error if fault is not None and fault.error is not None else None
        if error is None and token.startswith(STALE_FCM_PREFIX):
            error = "UNREGISTERED"
        if error is not None:
            status, rpc_status = FCM_ERRORS[str(error)]
            message_text = "Requested entity was not found." if error == "UNREGISTERED" else str(error)
            retry_after = fault.retry_after if fault is not None else None
            return _fcm_error(status, rpc_status, message_text, str(error), retry_after)
        name = f"projects/{project_id}/messages/0:{int(time.time() * 1000)}%{next(self._counter):016x}"
        self._store("fcm", {"name": name, "message": message, "received_at": time.time()})
        data = message.get("data") if isinstance(message.get("data"), dict) else {}
        self._push_receipt(name, data.get("message_key"), token)
        if fault is not None and fault.hang_after_accept:
            await asyncio.sleep(fault.hang_after_accept)
        return web.json_response({"name": name})

    # Web Push (RFC 8030, VAPID RFC 8292, aes128gcm RFC 8291)

    async def _webpush_receive(self, request: web.Request) -> web.Response:
        self.requests["webpush"] += 1
        subscription_id = request.match_info["subscription_id"]
        authorization = request.headers.get("Authorization", "")
        vapid = _vapid_claims(authorization, f"{request.url.scheme}://{request.url.host}:{request.url.port}")
        if isinstance(vapid, str):
            return web.Response(status=401 if "missing" in vapid else 403, text=vapid)
        if request.headers.get("Content-Encoding") != "aes128gcm":
            return web.Response(status=415, text="Content-Encoding must be aes128gcm")
        if "TTL" not in request.headers:
            return web.Response(status=400, text="TTL header required")
        if subscription_id in self.gone_subscriptions:
            return web.Response(status=410, text="push subscription has unsubscribed or expired")
        fault = self._take_fault("webpush", subscription_id)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.error is not None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return web.Response(status=int(fault.error), text="emulated push service error", headers=headers)
        private_key, auth = emulator_webpush_keys(subscription_id)
        body = await request.read()
        try:
            payload = http_ece.decrypt(body, private_key=private_key, auth_secret=auth, version="aes128gcm")
        except Exception as exc:  # http_ece raises bare Exceptions and cryptography's errors alike
            return web.Response(status=400, text=f"cannot decrypt the payload: {type(exc).__name__}")
        message_id = uuid.uuid4().hex
        try:
            message_key = json.loads(payload).get("message_key")
        except (ValueError, AttributeError):
            message_key = None
        self._push_receipt(message_id, message_key, None)
        self._store(
            "webpush",
            {
                "id": message_id,
                "subscription_id": subscription_id,
                "payload": payload.decode("utf-8", errors="replace"),
                "ttl": request.headers["TTL"],
                "urgency": request.headers.get("Urgency"),
                "vapid_sub": vapid.get("sub"),
                "received_at": time.time(),
            },
        )
        if fault is not None and fault.hang_after_accept:
            await asyncio.sleep(fault.hang_after_accept)
        return web.Response(status=201, headers={"Location": f"{self.base_url}/wp-messages/{message_id}"})

    # Inspection and control

    async def _list_messages(self, request: web.Request) -> web.Response:
        provider = request.query.get("provider", "sms")
        if provider not in self.messages:
            return web.json_response(
                {"error": f"provider must be one of {sorted(self.messages)}"}, status=400
            )
        with self._lock:
            listed = list(self.messages[provider])
        return web.json_response({"provider": provider, "count": len(listed), "messages": listed})

    async def _set_faults(self, request: web.Request) -> web.Response:
        data = await request.json()
        with self._lock:
            if data.get("clear"):
                self.faults.clear()
            self.faults.extend(Fault(**item) for item in data.get("faults", []))
            self.gone_subscriptions.update(data.get("gone_subscriptions", []))
            faults = [asdict(f) for f in self.faults]
        return web.json_response({"faults": faults})

    async def _cleanup(self, _app: web.Application) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._callback_session is not None:
            await self._callback_session.close()
        for out in self._files.values():
            out.close()


def _twilio_error(code: int, retry_after: float | None = None) -> web.Response:
    status, message = TWILIO_ERRORS[code]
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
        headers=headers,
    )


def _oauth_error(error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=400)


def _fcm_error(
    status: int,
    rpc_status: str,
    message: str,
    error_code: str | None = None,
    retry_after: float | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
    if error_code:
        error["details"] = [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}
        ]
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    return web.json_response({"error": error}, status=status, headers=headers)


def _vapid_claims(authorization: str, origin: str) -> dict[str, Any] | str:
    """The VAPID JWT's claims when `vapid t=..., k=...` verifies for `origin`; else why not."""
    if not authorization.startswith("vapid "):
        return "missing VAPID authorization"
    parts = dict(
        item.strip().split("=", 1) for item in authorization.removeprefix("vapid ").split(",") if "=" in item
    )
    try:
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _b64url_decode(parts["k"]))
        claims = jwt.decode(
            parts["t"], public_key, algorithms=["ES256"], audience=origin, options={"require": ["exp"]}
        )
    except (KeyError, ValueError, jwt.PyJWTError) as exc:
        return f"VAPID token refused: {type(exc).__name__}: {exc}"
    if claims["exp"] > time.time() + 24 * 3600:
        return "VAPID token refused: exp more than 24 hours ahead"
    if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
        return "VAPID token refused: sub must be a mailto: or https: URL"
    return claims


class ThreadedAiohttpServer:
    """An aiohttp application served on 127.0.0.1 from a daemon thread; a context manager."""

    def __init__(self, app: web.Application, *, port: int = 0) -> None:
        self.app = app
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the loop thread and listen; `port` then holds the bound port."""
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="aiohttp-server", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        """Close the server and its connections, then end the loop thread (idempotent)."""
        if self._loop is None or self._thread is None:
            return
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = self._runner = None


class LocalProviderServer(ThreadedAiohttpServer):
    """The `ProviderEmulator` served on 127.0.0.1 from a daemon thread; a context manager."""

    def __init__(self, store_dir: Path, *, port: int = 0, **emulator_options: Any) -> None:
        self.emulator = ProviderEmulator(store_dir, **emulator_options)
        super().__init__(self.emulator.app(), port=port)

    def __enter__(self) -> LocalProviderServer:
        self.start()
        return self

    def start(self) -> None:
        super().start()
        self.emulator.base_url = self.base_url

    def add_fault(self, **fault: Any) -> None:
        """Add a `Fault(**fault)` (see Fault)."""
        self.emulator.add_fault(Fault(**fault))

    def messages(self, provider: str) -> list[dict[str, Any]]:
        """What the provider accepted so far, oldest first."""
        with self.emulator._lock:
            return list(self.emulator.messages[provider])


def serve_forever(store_dir: Path, *, port: int, **emulator_options: Any) -> None:
    """Serve the emulators on 127.0.0.1:`port` until SIGTERM or SIGINT (`kms providers serve`)."""
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    with LocalProviderServer(store_dir, port=port, **emulator_options):
        stopped.wait()
