"""Limits of the ingest API: request body size and batch length, read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from campaign_lib.errors import ConfigError

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_BATCH = 1_000
# Batches loaded at the same time by one server process. Each load holds up to three
# database connections and one CPU-bound parse; on 2 cores more only queue inside PostgreSQL.
MAX_CONCURRENT_LOADS = 4


@dataclass(frozen=True)
class ApiLimits:
    """What one request may carry: `max_body_bytes` of JSON (413 beyond), `max_batch` items (422 beyond)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH


def limits_from_env(environ: dict[str, str] | None = None) -> ApiLimits:
    """The limits from `KMS_API_MAX_BODY_BYTES` and `KMS_API_MAX_BATCH` (defaults 1 MiB and 1,000)."""
    env = os.environ if environ is None else environ
    return ApiLimits(
        max_body_bytes=_positive(env, "KMS_API_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
        max_batch=_positive(env, "KMS_API_MAX_BATCH", DEFAULT_MAX_BATCH),
    )


def _positive(env, name: str, default: int) -> int:
    raw = env.get(name, "").strip().replace("_", "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a positive whole number, not {env[name]!r}")
    return int(raw)
