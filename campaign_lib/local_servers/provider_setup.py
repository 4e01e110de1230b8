"""The demo's provider emulators: their port, credentials and the Airflow connections that reach them.

`kms providers serve` runs the emulators (campaign_lib.local_servers.providers) with these
settings, and the Airflow connections `kms_sms`, `kms_push_fcm` and `kms_push_webpush` from
`local_provider_connections(home)` point the connectors at them:

    <KMS_HOME>/providers/
        service_account.json    a Google service-account key made once (0600); the emulator's
                                token endpoint knows its public key
        vapid_private_key.pem   the VAPID key of our Web Push sender (0600)
        sms.jsonl, fcm.jsonl, webpush.jsonl   every message the emulators accepted

The SMS auth token and the push-receipt secret are the tracking app's (campaign_lib.tracking
.settings: KMS_TRACKING_SMS_AUTH_TOKEN, KMS_TRACKING_PUSH_WEBHOOK_SECRET, or derived from the
tracking secret on the embedded default), so the tracking app accepts the emulators' receipts.
With a campaign database of its own (KMS_DATABASE_URL) and those unset, the SMS emulator
gets a token of its own (<KMS_HOME>/providers/sms_auth_token) and no push receipts are sent.
The port is KMS_PROVIDERS_PORT (default 8791).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from campaign_lib.errors import ConfigError

DEFAULT_PORT = 8791
SMS_ACCOUNT_SID = "AC" + "6b6d73" + "0" * 26  # "kms" in hex, padded to Twilio's 34 characters
SMS_SENDER = "+4976229990"  # the resort's (fictional) sender number
FCM_PROJECT_ID = "kms-demo"


@dataclass(frozen=True, repr=False)
class LocalProviders:
    """Where the demo's emulators listen and the credentials both sides use."""

    folder: Path
    port: int
    sms_auth_token: str
    push_receipts_secret: str | None
    tracking_base_url: str

    def __repr__(self) -> str:
        return f"LocalProviders(folder={str(self.folder)!r}, port={self.port}, secrets=***)"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def service_account_path(self) -> Path:
        return self.folder / "service_account.json"

    @property
    def vapid_key_path(self) -> Path:
        return self.folder / "vapid_private_key.pem"

    def emulator_options(self) -> dict[str, Any]:
        """Keyword arguments of ProviderEmulator for these settings."""
        account = json.loads(self.service_account_path.read_text(encoding="utf-8"))
        return {
            "sms_accounts": {SMS_ACCOUNT_SID: self.sms_auth_token},
            "fcm_accounts": {account["client_email"]: _public_pem(account["private_key"])},
            "fcm_project_id": FCM_PROJECT_ID,
            "push_receipts_url": f"{self.tracking_base_url}/t/webhooks/push",
            "push_receipts_secret": self.push_receipts_secret,
        }

    def connections(self) -> dict[str, dict[str, Any]]:
        """The Airflow connections (as dicts: conn_type, host, login, password, extra) of the connectors."""
        return {
            "kms_sms": {
                "conn_type": "http",
                "host": self.base_url,
                "login": SMS_ACCOUNT_SID,
                "password": self.sms_auth_token,
                "extra": {
                    "from": SMS_SENDER,
                    "status_callback_url": f"{self.tracking_base_url}/t/webhooks/sms",
                    # No quiet_hours here: the demo runs at any hour. Production: "21:00-08:00".
                    "default_timezone": "Europe/Berlin",
                    # The emulator honours I-Twilio-Idempotency-Token (see docs/providers.md).
                    "idempotent_resend": True,
                },
            },
            "kms_push_fcm": {
                "conn_type": "http",
                "host": self.base_url,
                "extra": {"service_account_path": str(self.service_account_path)},
            },
            "kms_push_webpush": {
                "conn_type": "http",
                "password": self.vapid_key_path.read_text(encoding="utf-8"),
                "extra": {"subject": "mailto:marketing@resort.example"},
            },
        }


def local_providers(home: Path, environ: Mapping[str, str] | None = None) -> LocalProviders:
    """The demo's emulator settings under <home>/providers, made on first use."""
    from campaign_lib.tracking.settings import tracking_settings_from_env

    env = os.environ if environ is None else environ
    try:
        port = int(env.get("KMS_PROVIDERS_PORT", DEFAULT_PORT))
    except ValueError as exc:
        raise ConfigError("KMS_PROVIDERS_PORT must be a TCP port number") from exc
    tracking = tracking_settings_from_env({**env, "KMS_HOME": str(home)})
    folder = home / "providers"
    folder.mkdir(parents=True, exist_ok=True)
    sms_auth_token = tracking.sms_auth_token
    if not sms_auth_token:
        # A campaign database of its own (KMS_DATABASE_URL) without KMS_TRACKING_SMS_AUTH_TOKEN:
        # the emulator gets a token of its own; the tracking app refuses its receipts until
        # KMS_TRACKING_SMS_AUTH_TOKEN is set to it.
        _write_private(folder / "sms_auth_token", secrets.token_urlsafe(24))
        sms_auth_token = (folder / "sms_auth_token").read_text(encoding="utf-8")
    settings = LocalProviders(
        folder=folder,
        port=port,
        sms_auth_token=sms_auth_token,
        push_receipts_secret=tracking.push_webhook_secret,
        tracking_base_url=tracking.links.base_url.rstrip("/"),
    )
    if not settings.service_account_path.is_file():
        from campaign_lib.local_servers.providers import make_service_account

        account, _ = make_service_account(FCM_PROJECT_ID, f"{settings.base_url}/token")
        _write_private(settings.service_account_path, json.dumps(account, indent=2))
    if not settings.vapid_key_path.is_file():
        from py_vapid import Vapid02

        vapid = Vapid02()
        vapid.generate_keys()
        _write_private(settings.vapid_key_path, vapid.private_pem().decode())
    return settings


def local_provider_connections(home: Path, environ: Mapping[str, str] | None = None) -> dict[str, dict]:
    """The Airflow connections kms_sms, kms_push_fcm and kms_push_webpush of the demo's emulators."""
    return local_providers(home, environ).connections()


def _write_private(path: Path, text: str) -> None:
    """Write a secret file readable by its owner only, once: linked into place, so when two
    processes start at the same moment the first one's file stays and both use it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.link(partial, path)
    except FileExistsError:
        pass
    finally:
        partial.unlink(missing_ok=True)


def _public_pem(private_pem: str) -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
