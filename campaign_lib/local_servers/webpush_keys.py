"""Web Push subscriptions the local push emulator can decrypt, made without talking to it.

A browser's PushSubscription carries the public half of a P-256 key pair and an auth
secret; the push service never needs the private half, but the emulator wants to read
what it receives (tests and the demo check the decrypted payload). So the keys of the
emulator's subscription `id` are derived from the id: the generator writes subscriptions
for its fake browsers with `emulator_webpush_subscription(base_url, id)`, the emulator
derives the same private key when a push for `/wp/<id>` arrives. These keys protect
nothing; they exist only for the local emulator.

Kept free of HTTP libraries: the generator imports it in its worker processes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

_SEED = b"kms local web push emulator"
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def emulator_webpush_keys(subscription_id: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """The P-256 private key and the 16-byte auth secret of emulator subscription `subscription_id`."""
    digest = hmac.new(_SEED, b"key:" + subscription_id.encode(), hashlib.sha256).digest()
    scalar = int.from_bytes(digest, "big") % (_P256_ORDER - 1) + 1
    auth = hmac.new(_SEED, b"auth:" + subscription_id.encode(), hashlib.sha256).digest()[:16]
    return ec.derive_private_key(scalar, ec.SECP256R1()), auth


def emulator_webpush_subscription(base_url: str, subscription_id: str) -> dict[str, Any]:
    """A PushSubscription JSON ({endpoint, keys: {p256dh, auth}}) for the emulator at `base_url`;
    the same for the same id every time."""
    private_key, auth = emulator_webpush_keys(subscription_id)
    public = private_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return {
        "endpoint": f"{base_url.rstrip('/')}/wp/{subscription_id}",
        "keys": {"p256dh": _b64url(public), "auth": _b64url(auth)},
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
