"""The SMS connector: Twilio's Messages REST API (or anything that speaks it, like the local emulator).

    connector = SmsConnector.from_connection(conn)    # Airflow connection kms_sms
    for outcome in connector.send(batch):             # one Outcome per Outbound, as soon as known
        ...
    connector.close()

Each message is one `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form
fields To, From (or MessagingServiceSid), Body and StatusCallback, HTTP Basic auth with the
account SID and auth token, and the header `I-Twilio-Idempotency-Token: <message_key>`.
Up to `concurrency` requests are in flight at once (connectors.http_batch).

Before anything goes out, each message is checked here, without the network:

- the address must be E.164 (`+` and 7 to 15 digits), else `failed_hard` 'not_e164';
- the body is measured: GSM-7 (the GSM 03.38 basic set, the extension table's characters
  counting two septets; 160 septets in one message, 153 per part of a longer one) or else
  UCS-2 (70 UTF-16 units, 67 per part); a part never splits an escape pair or a surrogate
  pair. The count goes into `Outcome.segments` (cost per segment is the report's business);
  more than `max_segments` is `failed_hard` 'too_long';
- quiet hours (connection extra `quiet_hours`, e.g. "21:00-08:00") in the recipient's time
  zone (`Outbound.timezone`, else extra `default_timezone`): a message that falls inside
  them is not sent but `failed_soft` 'quiet_hours' with `retry_after` = seconds until the
  window opens.

With the extra `status_callback_url` (the tracking app's `/t/webhooks/sms`) every request asks
for status callbacks at that URL plus `?message_key=<key>`.

Answers and what they become:

- 201 with a message resource: `sent`, provider_message_id = its sid, segments from num_segments;
- 429 (Twilio 20429): wait Retry-After and try again with the same idempotency token while the
  wait is <= `max_retry_wait` and attempts remain (`max_attempts`); else `failed_soft` with
  retry_after;
- 5xx: `failed_soft` (retry_after from Retry-After, else `retry_after_default`);
- 401/403 (20003 and the like): `PermanentDeliveryError` for the whole batch (wrong credentials),
  after the outcomes of the requests already in flight;
- other 4xx with a Twilio error code (21211 invalid To, 21610 unsubscribed, 21614 not a mobile
  number ...): `failed_hard` 'twilio <code>: <message>';
- connection refused or connect timeout (nothing handed over): `failed_soft` 'provider_unreachable';
- a timeout or a broken connection after the request went out: see below.

A timeout after the request was sent leaves open whether the provider took the message.
When the provider honours the idempotency token (`idempotent_resend: true` in the extra; the
local emulator does), the connector asks once more with the same token: a provider that
already took the message answers with the first answer and sends nothing new, so the
outcome becomes `sent` without a duplicate. If that second request times out too, or the
provider is not known to honour the token (the default, and Twilio documents the header
for its webhooks, not as a deduplication promise of the Messages API), the outcome is
`ambiguous` and the outbox reconciles it from the status callbacks instead of resending.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp

from campaign_lib.errors import ConfigError, PermanentDeliveryError
from connectors.base import Outbound, Outcome
from connectors.http_batch import (
    HttpBatchRunner,
    base_url_from_connection,
    basic_authorization,
    connection_extra,
    flag,
    json_object,
    retry_after_seconds,
)

IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
SIGNATURE_HEADER = "X-Twilio-Signature"
API_VERSION = "2010-04-01"
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")

# GSM 03.38: the basic character set (one septet each) and the extension table reached
# through the escape character (two septets each).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True)
class SmsLength:
    """How a text travels: its encoding, its length in units (septets or UTF-16 units), its parts."""

    encoding: Encoding
    units: int
    segments: int


def sms_length(text: str) -> SmsLength:
    """Encoding and segment count of `text` as a handset network counts them (see the module docstring)."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        sizes = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        return SmsLength("GSM-7", sum(sizes), _parts(sizes, single=160, multi=153))
    sizes = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return SmsLength("UCS-2", sum(sizes), _parts(sizes, single=70, multi=67))


def _parts(sizes: list[int], *, single: int, multi: int) -> int:
    """Parts needed for characters of these sizes; a character never straddles two parts."""
    total = sum(sizes)
    if total <= single:
        return 1
    parts, used = 1, 0
    for size in sizes:
        if used + size > multi:
            parts, used = parts + 1, 0
        used += size
    return parts


@dataclass(frozen=True)
class QuietHours:
    """A daily window in local time in which no SMS goes out; `start` > `end` spans midnight."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        """From "HH:MM-HH:MM" (e.g. "21:00-08:00")."""
        match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text or "")
        if not match:
            raise ConfigError(f"quiet_hours must look like 21:00-08:00, not {text!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        try:
            return cls(time(h1, m1), time(h2, m2))
        except ValueError as exc:
            raise ConfigError(f"quiet_hours {text!r}: {exc}") from exc

    def seconds_until_open(self, now: datetime, zone: ZoneInfo) -> float | None:
        """Seconds from `now` until the window ends when `now` falls inside it, else None."""
        local = now.astimezone(zone)
        clock = local.time().replace(tzinfo=None)
        if self.start == self.end:
            return None
        if self.start < self.end:
            inside = self.start <= clock < self.end
        else:
            inside = clock >= self.start or clock < self.end
        if not inside:
            return None
        opens = datetime.combine(local.date(), self.end, tzinfo=zone)
        if opens <= local:
            opens = datetime.combine(local.date() + timedelta(days=1), self.end, tzinfo=zone)
        # Across a DST change the wall-clock difference is not the real one: compare in UTC.
        return (opens.astimezone(UTC) - now.astimezone(UTC)).total_seconds()


def status_callback_for(url: str, message_key: str) -> str:
    """The StatusCallback URL of one message: the webhook with `message_key` in its query, so the
    tracking app matches a receipt even before (or without) the provider's message sid."""
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), ("message_key", message_key)])
    return urlunsplit(parts._replace(query=query))


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature as Twilio computes it for a form POST: base64 of HMAC-SHA1 over the
    full URL followed by every parameter's name and value, sorted by name."""
    payload = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass(frozen=True, repr=False)
class SmsSettings:
    """Everything the connector needs; built by `from_connection`. The auth token never shows in repr."""

    base_url: str
    account_sid: str
    auth_token: str
    from_number: str | None = None
    messaging_service_sid: str | None = None
    status_callback_url: str | None = None
    quiet_hours: QuietHours | None = None
    default_timezone: str = "Europe/Berlin"
    concurrency: int = 16
    timeout: float = 10.0
    max_attempts: int = 3
    max_retry_wait: float = 5.0
    retry_after_default: float = 60.0
    max_segments: int = 10
    rate_per_second: float | None = None
    idempotent_resend: bool = False

    def __post_init__(self) -> None:
        if not self.account_sid or not self.auth_token:
            raise ConfigError("SMS connection: login (account SID) and password (auth token) are required")
        if not self.from_number and not self.messaging_service_sid:
            raise ConfigError("SMS connection: extra 'from' (sender) or 'messaging_service_sid' is required")
        try:
            ZoneInfo(self.default_timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"SMS connection: unknown default_timezone {self.default_timezone!r}") from exc

    def __repr__(self) -> str:
        return f"SmsSettings(base_url={self.base_url!r}, account_sid={self.account_sid!r}, auth_token=***)"

    @classmethod
    def from_connection(cls, conn: Mapping[str, Any]) -> SmsSettings:
        """From an Airflow-connection-like mapping: login = account SID, password = auth token,
        host/port/schema or extra base_url; the other fields from the extra (docs/providers.md)."""
        extra = connection_extra(conn)
        quiet = extra.get("quiet_hours")
        rate = extra.get("rate_per_second")
        return cls(
            base_url=base_url_from_connection(conn),
            account_sid=str(conn.get("login") or ""),
            auth_token=str(conn.get("password") or ""),
            from_number=extra.get("from") or None,
            messaging_service_sid=extra.get("messaging_service_sid") or None,
            status_callback_url=extra.get("status_callback_url") or None,
            quiet_hours=QuietHours.parse(quiet) if quiet else None,
            default_timezone=extra.get("default_timezone") or "Europe/Berlin",
            concurrency=int(extra.get("concurrency", 16)),
            timeout=float(extra.get("timeout", 10.0)),
            max_attempts=int(extra.get("max_attempts", 3)),
            max_retry_wait=float(extra.get("max_retry_wait", 5.0)),
            retry_after_default=float(extra.get("retry_after_default", 60.0)),
            max_segments=int(extra.get("max_segments", 10)),
            rate_per_second=float(rate) if rate else None,
            idempotent_resend=flag(extra.get("idempotent_resend", False)),
        )

    @property
    def messages_url(self) -> str:
        return f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"


@dataclass(frozen=True)
class _Ready:
    """A message that passed the local checks, with its form (URL-encoded once) and segment count."""

    outbound: Outbound
    form: bytes
    segments: int


class SmsConnector:
    """Sends SMS through a Twilio-compatible API; see the module docstring."""

    channel = "sms"

    def __init__(self, settings: SmsSettings, *, clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))
        self._authorization = basic_authorization(settings.account_sid, settings.auth_token)
        self._runner = HttpBatchRunner(
            concurrency=settings.concurrency,
            timeout=settings.timeout,
            rate_per_second=settings.rate_per_second,
        )

    @classmethod
    def from_connection(cls, conn: Mapping[str, Any]) -> SmsConnector:
        return cls(SmsSettings.from_connection(conn))

    def send(self, batch: Sequence[Outbound]) -> Iterator[Outcome]:
        """One Outcome per message: local refusals first, then the provider's answers as they come."""
        ready: list[_Ready] = []
        now = self._clock()
        for outbound in batch:
            checked = self._check(outbound, now)
            if isinstance(checked, Outcome):
                yield checked
            else:
                ready.append(checked)
        yield from self._runner.run(ready, self._attempt, _unexpected)

    def close(self) -> None:
        self._runner.close()

    def _check(self, outbound: Outbound, now: datetime) -> _Ready | Outcome:
        s = self.settings
        length = sms_length(outbound.text)
        if not E164.match(outbound.address or ""):
            return Outcome(outbound.message_id, "failed_hard", reason="not_e164", segments=length.segments)
        if not outbound.text.strip():
            return Outcome(outbound.message_id, "failed_hard", reason="empty_body")
        if length.segments > s.max_segments:
            return Outcome(
                outbound.message_id,
                "failed_hard",
                reason=f"too_long: {length.segments} segments > {s.max_segments}",
                segments=length.segments,
            )
        if s.quiet_hours is not None:
            zone = _zone(outbound.timezone, s.default_timezone)
            wait = s.quiet_hours.seconds_until_open(now, zone)
            if wait is not None:
                return Outcome(
                    outbound.message_id,
                    "failed_soft",
                    reason="quiet_hours",
                    retry_after=wait,
                    segments=length.segments,
                )
        form = {"To": outbound.address, "Body": outbound.text}
        if s.messaging_service_sid:
            form["MessagingServiceSid"] = s.messaging_service_sid
        if s.from_number:
            form["From"] = s.from_number
        if s.status_callback_url:
            form["StatusCallback"] = status_callback_for(s.status_callback_url, outbound.message_key)
        return _Ready(outbound, urlencode(form).encode(), length.segments)

    async def _attempt(self, session: aiohttp.ClientSession, ready: _Ready) -> Outcome:
        s = self.settings
        message_id = ready.outbound.message_id
        headers = {
            IDEMPOTENCY_HEADER: ready.outbound.message_key,
            "Accept": "application/json",
            "Authorization": self._authorization,
            "Content-Type": "application/x-www-form-urlencoded",
        }
        attempts = 0
        resent_after_timeout = False
        while True:
            attempts += 1
            try:
                async with session.post(s.messages_url, data=ready.form, headers=headers) as response:
                    status = response.status
                    retry_header = response.headers.get("Retry-After")
                    body = await response.read()
            except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError):
                return Outcome(
                    message_id,
                    "failed_soft",
                    reason="provider_unreachable",
                    retry_after=s.retry_after_default,
                    segments=ready.segments,
                )
            except (TimeoutError, aiohttp.ClientError) as exc:
                # The request may have reached the provider: only the idempotency token makes
                # asking again safe.
                if s.idempotent_resend and not resent_after_timeout:
                    resent_after_timeout = True
                    continue
                return Outcome(
                    message_id,
                    "ambiguous",
                    reason=f"no answer after sending: {type(exc).__name__}",
                    segments=ready.segments,
                )
            answer = json_object(body)
            if 200 <= status < 300:
                return Outcome(
                    message_id,
                    "sent",
                    provider_message_id=str(answer.get("sid") or "") or None,
                    segments=_int(answer.get("num_segments")) or ready.segments,
                )
            code = answer.get("code")
            text = f"twilio {code}: {answer.get('message', '')}".strip() if code else f"http {status}"
            if status in (401, 403):
                raise PermanentDeliveryError(
                    f"the SMS provider at {s.base_url} refused the credentials of account "
                    f"{s.account_sid} ({text}); check the connection kms_sms"
                )
            wait = retry_after_seconds(retry_header)
            if status == 429:
                wait = s.retry_after_default if wait is None else wait
                if attempts < s.max_attempts and wait <= s.max_retry_wait:
                    await asyncio.sleep(wait)
                    continue
                return Outcome(
                    message_id, "failed_soft", reason=text, retry_after=wait, segments=ready.segments
                )
            if status >= 500:
                return Outcome(
                    message_id,
                    "failed_soft",
                    reason=text,
                    retry_after=s.retry_after_default if wait is None else wait,
                    segments=ready.segments,
                )
            return Outcome(message_id, "failed_hard", reason=text, segments=ready.segments)


def _unexpected(ready: _Ready, error: Exception) -> Outcome:
    return Outcome(
        ready.outbound.message_id,
        "ambiguous",
        reason=f"connector error after handing over: {type(error).__name__}",
        segments=ready.segments,
    )


def _zone(name: str | None, default: str) -> ZoneInfo:
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(default)


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
