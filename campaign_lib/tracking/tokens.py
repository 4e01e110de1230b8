"""Signed tracking URLs: open pixel, click redirect and unsubscribe, one HMAC token each.

A token names the message (its message_key) and, for a click, the target URL, and carries an
HMAC-SHA256 over the purpose and everything else in it, so the tracking endpoints can trust it
without a database lookup and the click endpoint redirects only to a URL that was signed for
that very message (no open redirect):

    open         <key id>.<message_key>.<mac>                     GET  /t/o/<token>.gif
    click        <key id>.<message_key>.<base64url(url)>.<mac>    GET  /t/c/<token>
    unsubscribe  <key id>.<message_key>.<mac>                     GET, POST /t/u/<token>

The mac is the first 16 bytes of HMAC-SHA256(secret, "kms-tracking/1" NUL purpose NUL the
token's text before the mac), URL-safe base64 without padding; 128 bits are plenty against
forgery and keep links short (SMS pays per segment). Signing the token's text rather than the
decoded values makes every encoding canonical: a token that differs in any character from the
one issued is refused. The key id (6 characters derived from the secret) says which secret
signed a token, so the secret can rotate: tokens signed with KMS_TRACKING_SECRET_PREVIOUS keep
working until that variable is removed.

Nothing here touches Airflow or the database.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from campaign_lib.errors import ConfigError

Purpose = Literal["open", "click", "unsubscribe"]

OPEN_PATH = "/t/o/"
CLICK_PATH = "/t/c/"
UNSUBSCRIBE_PATH = "/t/u/"
SECRET_FILE_NAME = "tracking_secret"
MIN_SECRET_BYTES = 32
MAX_URL_LENGTH = 4096

_DOMAIN = b"kms-tracking/1"
_MAC_BYTES = 16
_MESSAGE_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
_TOKEN_PART = re.compile(r"[A-Za-z0-9_-]+")
_UNSAFE_IN_URL = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says: which message, why, and (clicks) where to."""

    purpose: Purpose
    message_key: str
    url: str | None
    key_id: str


def key_id(secret: bytes) -> str:
    """The public name of a secret inside tokens: 6 base32 characters of a hash of it."""
    digest = hashlib.sha256(b"kms-tracking-key-id\x00" + secret).digest()
    return base64.b32encode(digest).decode("ascii")[:6].lower()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_message_key(message_key: str) -> None:
    if not _MESSAGE_KEY.fullmatch(message_key):
        raise ValueError(f"a message key is 1-128 characters of [A-Za-z0-9_-], not {message_key!r}")


def _check_target(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > MAX_URL_LENGTH:
        raise ValueError(
            f"a tracked link must be an absolute http(s) URL of at most {MAX_URL_LENGTH} characters"
        )
    if _UNSAFE_IN_URL.search(url):
        raise ValueError("a tracked link must not contain spaces or control characters")


@dataclass(frozen=True)
class TrackingLinks:
    """Builds and checks the tracking URLs of one installation.

    base_url: public URL of the tracking app, e.g. http://127.0.0.1:8080/kms (no trailing slash).
    secret: the HMAC key that signs new tokens; previous_secrets: older keys still accepted."""

    base_url: str
    secret: bytes = field(repr=False)
    previous_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    _keys: dict[str, bytes] = field(init=False, repr=False, compare=False)
    _key_id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"the tracking secret must be at least {MIN_SECRET_BYTES} bytes long")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        keys = {key_id(old): old for old in self.previous_secrets}
        keys[key_id(self.secret)] = self.secret
        object.__setattr__(self, "_keys", keys)
        object.__setattr__(self, "_key_id", key_id(self.secret))

    @property
    def key_id(self) -> str:
        """The id of the secret that signs new tokens."""
        return self._key_id

    def open_url(self, message_key: str) -> str:
        """The open pixel of a message (a 1x1 GIF)."""
        return f"{self.base_url}{OPEN_PATH}{self.token('open', message_key)}.gif"

    def click_url(self, message_key: str, target_url: str) -> str:
        """A link that records a click of `message_key` and redirects to `target_url` only."""
        return f"{self.base_url}{CLICK_PATH}{self.token('click', message_key, target_url)}"

    def unsubscribe_url(self, message_key: str) -> str:
        """The unsubscribe page of a message (also the RFC 8058 one-click POST target)."""
        return f"{self.base_url}{UNSUBSCRIBE_PATH}{self.token('unsubscribe', message_key)}"

    def token(self, purpose: Purpose, message_key: str, url: str | None = None) -> str:
        """The signed token of a purpose; `url` for clicks only. ValueError for a bad key or URL."""
        _check_message_key(message_key)
        if (purpose == "click") != (url is not None):
            raise ValueError("a click token needs a URL, other tokens take none")
        body = f"{self._key_id}.{message_key}"
        if url is not None:
            _check_target(url)
            body += "." + _b64(url.encode("utf-8"))
        return f"{body}.{_mac(self.secret, purpose, body)}"

    def verify(self, purpose: Purpose, token: str) -> TokenClaims | None:
        """The claims of `token` when it was issued for `purpose` by one of our secrets, else None."""
        if len(token) > 2 * MAX_URL_LENGTH:
            return None
        parts = token.split(".")
        if len(parts) != (4 if purpose == "click" else 3) or not all(map(_TOKEN_PART.fullmatch, parts)):
            return None
        secret = self._keys.get(parts[0])
        body, mac = token.rpartition(".")[::2]
        if secret is None:
            # Spend the same work as for a known key id, so timing tells nothing about key ids.
            hmac.compare_digest(_mac(self.secret, purpose, body), mac)
            return None
        if not hmac.compare_digest(_mac(secret, purpose, body), mac):
            return None
        url = None
        if purpose == "click":
            try:
                url = _unb64(parts[2]).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
        return TokenClaims(purpose=purpose, message_key=parts[1], url=url, key_id=parts[0])


def _mac(secret: bytes, purpose: str, body: str) -> str:
    signed = _DOMAIN + b"\x00" + purpose.encode("ascii") + b"\x00" + body.encode("ascii")
    return _b64(hmac.new(secret, signed, hashlib.sha256).digest()[:_MAC_BYTES])


def tracking_links_from_env(environ: Mapping[str, str] | None = None) -> TrackingLinks:
    """The installation's tracking links from the environment.

    KMS_TRACKING_BASE_URL  public URL of the tracking app (default http://127.0.0.1:<KMS_AIRFLOW_PORT>/kms,
                           the app inside the local Airflow API server)
    KMS_TRACKING_SECRET    the signing secret (>= 32 bytes); unset on the embedded default, kms
                           generates one into <KMS_HOME>/tracking_secret (mode 0600) and every
                           process of the installation reads it from there; unset with
                           KMS_DATABASE_URL set (production), a ConfigError
    KMS_TRACKING_SECRET_PREVIOUS  an older secret still accepted while links signed with it circulate
    """
    from campaign_lib.config import load_settings

    env = os.environ if environ is None else environ
    settings = load_settings(dict(env))
    raw = env.get("KMS_TRACKING_SECRET")
    if raw:
        secret = raw.encode("utf-8")
    elif settings.uses_embedded_database:
        secret = installation_secret(settings.home)
    else:
        raise ConfigError(
            "KMS_TRACKING_SECRET is not set: tracking links need a secret shared by every kms process "
            "(or the Airflow connection kms_tracking with the secret as its password)"
        )
    previous = env.get("KMS_TRACKING_SECRET_PREVIOUS")
    return TrackingLinks(_base_url(env), secret, (previous.encode("utf-8"),) if previous else ())


def tracking_links_from_connection(
    conn: Mapping[str, object], environ: Mapping[str, str] | None = None
) -> TrackingLinks:
    """Tracking links from an Airflow-connection-like mapping (connection `kms_tracking`):
    password = the secret, host = the public base URL (else KMS_TRACKING_BASE_URL or the
    default), extra.previous_secret = an older secret still accepted."""
    env = os.environ if environ is None else environ
    secret = conn.get("password")
    if not secret:
        raise ConfigError("the Airflow connection kms_tracking needs the tracking secret as its password")
    extra = conn.get("extra") or {}
    base_url = str(conn.get("host") or "")
    if not base_url.startswith(("http://", "https://")):
        base_url = _base_url(env)
    previous = extra.get("previous_secret") if isinstance(extra, Mapping) else None
    return TrackingLinks(
        base_url, str(secret).encode("utf-8"), (str(previous).encode("utf-8"),) if previous else ()
    )


def _base_url(env: Mapping[str, str]) -> str:
    from campaign_lib.config import load_settings

    return env.get("KMS_TRACKING_BASE_URL") or f"http://127.0.0.1:{load_settings(dict(env)).airflow_port}/kms"


def installation_secret(home: Path) -> bytes:
    """The embedded default's tracking secret in <home>/tracking_secret, made once (mode 0600).

    Written to a private temporary file and linked into place, so processes starting at the
    same moment all end up with the one secret and nobody reads a half-written file."""
    path = home / SECRET_FILE_NAME
    if not path.is_file():
        home.mkdir(parents=True, exist_ok=True)
        partial = home / f".{SECRET_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48) + "\n")
        try:
            with contextlib.suppress(FileExistsError):
                os.link(partial, path)
        finally:
            partial.unlink()
    secret = path.read_text(encoding="utf-8").strip().encode("utf-8")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"{path} holds no usable tracking secret; delete it and kms makes a new one")
    return secret
