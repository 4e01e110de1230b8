"""What the tracking endpoints need besides the database: links, webhook secrets, bot rules."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from campaign_lib.errors import ConfigError
from campaign_lib.tracking.tokens import TrackingLinks, tracking_links_from_env

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Apple's own network: Mail Privacy Protection fetches every image of every message from here
# (and from relays that present the bare user agent "Mozilla/5.0").
APPLE_NETWORKS = ("17.0.0.0/8",)


@dataclass(frozen=True)
class TrackingSettings:
    """Settings of the tracking endpoints, read from the environment.

    links                       signed URLs (KMS_TRACKING_BASE_URL, KMS_TRACKING_SECRET, ...)
    sms_auth_token              KMS_TRACKING_SMS_AUTH_TOKEN: the SMS provider's auth token that
                                signs its status callbacks (X-Twilio-Signature)
    push_webhook_secret         KMS_TRACKING_PUSH_WEBHOOK_SECRET: HMAC key of push receipts
    email_webhook_secret        KMS_TRACKING_EMAIL_WEBHOOK_SECRET: HMAC key of email receipts
        On the embedded default each of the three, when unset, is derived from the tracking
        secret (`derived_secret`), so a fresh clone works; in production an unset one refuses
        its webhook (fail closed).
    bot_seconds_after_send      KMS_TRACKING_BOT_SECONDS (10): opens and clicks this soon after
                                the send are a mail server's scanner, not a person
    click_burst_seconds         KMS_TRACKING_CLICK_BURST_SECONDS (1): clicks on two different
                                links of a message within this time are a scanner's
    bot_networks                KMS_TRACKING_BOT_NETWORKS (17.0.0.0/8, comma-separated CIDRs):
                                opens from there are prefetches (Apple Mail Privacy Protection)
    """

    links: TrackingLinks
    sms_auth_token: str | None = field(default=None, repr=False)
    push_webhook_secret: str | None = field(default=None, repr=False)
    email_webhook_secret: str | None = field(default=None, repr=False)
    bot_seconds_after_send: float = 10.0
    click_burst_seconds: float = 1.0
    bot_networks: tuple[IpNetwork, ...] = tuple(ipaddress.ip_network(net) for net in APPLE_NETWORKS)


def derived_secret(links: TrackingLinks, purpose: str) -> str:
    """A webhook secret derived from the tracking secret (embedded default only)."""
    return hmac.new(links.secret, b"kms-webhook/" + purpose.encode("ascii"), hashlib.sha256).hexdigest()


def tracking_settings_from_env(
    environ: Mapping[str, str] | None = None, *, links: TrackingLinks | None = None
) -> TrackingSettings:
    """The tracking settings from `environ` (default: the process environment); ConfigError when
    invalid. `links` (e.g. from the Airflow connection kms_tracking) replace the environment's."""
    env = os.environ if environ is None else environ
    links = links or tracking_links_from_env(env)
    embedded = not env.get("KMS_DATABASE_URL")

    def secret(name: str, purpose: str) -> str | None:
        return env.get(name) or (derived_secret(links, purpose) if embedded else None)

    defaults = TrackingSettings(links)
    return TrackingSettings(
        links=links,
        sms_auth_token=secret("KMS_TRACKING_SMS_AUTH_TOKEN", "sms"),
        push_webhook_secret=secret("KMS_TRACKING_PUSH_WEBHOOK_SECRET", "push"),
        email_webhook_secret=secret("KMS_TRACKING_EMAIL_WEBHOOK_SECRET", "email"),
        bot_seconds_after_send=_seconds(env, "KMS_TRACKING_BOT_SECONDS", defaults.bot_seconds_after_send),
        click_burst_seconds=_seconds(env, "KMS_TRACKING_CLICK_BURST_SECONDS", defaults.click_burst_seconds),
        bot_networks=_networks(env.get("KMS_TRACKING_BOT_NETWORKS"), defaults.bot_networks),
    )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise ConfigError(f"{name} must be a number of seconds between 0 and 3600, not {raw!r}")
    return value


def _networks(raw: str | None, default: tuple[IpNetwork, ...]) -> tuple[IpNetwork, ...]:
    if raw is None:
        return default
    try:
        return tuple(ipaddress.ip_network(part.strip()) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"KMS_TRACKING_BOT_NETWORKS must be comma-separated CIDR networks: {exc}") from exc
