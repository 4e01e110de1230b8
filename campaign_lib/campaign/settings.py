"""Funnel settings that hold for every campaign unless a definition overrides them."""

from __future__ import annotations

import os
from dataclasses import dataclass

from campaign_lib.errors import ConfigError


@dataclass(frozen=True, slots=True)
class CampaignSettings:
    """Installation-wide funnel defaults, read from the environment.

    pressure_window_days (KMS_PRESSURE_WINDOW_DAYS, 7)
        Contact pressure counts the messages of the last this many days (rolling, from the
        run's as-of time), across all campaigns, from campaign.contact_history.
    pressure_max_per_channel (KMS_PRESSURE_MAX_PER_CHANNEL, 2)
        A channel is ruled out for a person who got this many messages on it in the window.
    pressure_max_total (KMS_PRESSURE_MAX_TOTAL, 3)
        A person who got this many messages on any channel in the window gets none.
    global_holdout_share (KMS_GLOBAL_HOLDOUT_SHARE, 0)
        Share of all contacts that no campaign touches (chosen by a hash of the contact
        alone, so it is the same people for every campaign); 0 switches it off.
    default_purpose (KMS_DEFAULT_PURPOSE, newsletter)
        The consent purpose of a selection preview and of ad-hoc runs; the resort records
        marketing opt-ins under `newsletter`.
    """

    pressure_window_days: int = 7
    pressure_max_per_channel: int = 2
    pressure_max_total: int = 3
    global_holdout_share: float = 0.0
    default_purpose: str = "newsletter"


def load_campaign_settings(environ: dict[str, str] | None = None) -> CampaignSettings:
    """The settings from `environ` (default: the process environment); ConfigError when invalid."""
    env = os.environ if environ is None else environ
    defaults = CampaignSettings()
    return CampaignSettings(
        pressure_window_days=_integer(env, "KMS_PRESSURE_WINDOW_DAYS", defaults.pressure_window_days),
        pressure_max_per_channel=_integer(
            env, "KMS_PRESSURE_MAX_PER_CHANNEL", defaults.pressure_max_per_channel
        ),
        pressure_max_total=_integer(env, "KMS_PRESSURE_MAX_TOTAL", defaults.pressure_max_total),
        global_holdout_share=_share(env, "KMS_GLOBAL_HOLDOUT_SHARE", defaults.global_holdout_share),
        default_purpose=env.get("KMS_DEFAULT_PURPOSE") or defaults.default_purpose,
    )


def _integer(env, name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a positive whole number, not {raw!r}")
    return int(raw)


def _share(env, name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise ConfigError(f"{name} must be a share between 0 and 1 (e.g. 0.02), not {raw!r}")
    return value
