"""What a delivery task runs: the campaign's templates and tracking links around deliver_batch.

The campaign is read back from the definition stored with the run (campaign.campaign), so an
ad-hoc run, which has no file, renders exactly what was frozen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from sqlalchemy.engine import Engine

from campaign_lib.campaign.definition import Campaign
from campaign_lib.delivery.sender import BatchResult, SendOptions, deliver_batch
from campaign_lib.errors import ConfigError, DeliveryError
from campaign_lib.sqlfiles import queries
from campaign_lib.tracking.tokens import TrackingLinks, tracking_links_from_env
from connectors.base import Connector

_OPTION_TYPES = {
    "workers": int,
    "chunk": int,
    "lease_seconds": float,
    "messages_per_second": float,
    "max_attempts": int,
    "retry_base_seconds": float,
    "wait_for_retries_seconds": float,
    "flush_seconds": float,
}


# Email connectors send one message at a time over one SMTP session: parallel sessions give
# the speed. The HTTP connectors (SMS, push) send a chunk concurrently themselves. A chunk is
# one commit, and the most a killed thread can leave ambiguous (ADR 0010): SMS ones are settled
# by the provider's status callbacks, push has no receipts, hence its smaller chunk.
CHANNEL_DEFAULTS: dict[str, dict[str, object]] = {
    "email": {"workers": 4, "chunk": 8},
    "sms": {"workers": 2, "chunk": 100},
    "push": {"workers": 2, "chunk": 64},
}


def send_options(extra: Mapping[str, object] | None, channel: str | None = None) -> SendOptions:
    """SendOptions from the `outbox` part of a delivery connection's extra (keys as SendOptions'
    fields) over the channel's defaults (CHANNEL_DEFAULTS); ConfigError for a value that is not
    a positive number."""
    values: dict[str, object] = dict(CHANNEL_DEFAULTS.get(channel or "", {}))
    for name, kind in _OPTION_TYPES.items():
        raw = (extra or {}).get(name)
        if raw is None:
            continue
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            value = -1
        if value < 0 or (name in ("workers", "chunk", "max_attempts") and value < 1):
            raise ConfigError(f"connection extra {name!r} must be a positive number, not {raw!r}")
        values[name] = value
    return SendOptions(**values)


def campaign_of_run(engine: Engine, campaign_run_id: int) -> Campaign:
    """The campaign definition a run was frozen with."""
    with engine.connect() as conn:
        row = conn.execute(queries("delivery.sql")["lock_run"], {"campaign_run_id": campaign_run_id}).first()
    if row is None:
        raise DeliveryError(f"no campaign run {campaign_run_id}")
    return Campaign.model_validate(row.definition)


def deliver_run_batch(
    engine: Engine,
    campaign_run_id: int,
    channel: str,
    batch_no: int,
    connector_factory: Callable[[], Connector],
    options: SendOptions | None = None,
    links: TrackingLinks | None = None,
    *,
    send_now: bool = False,
    clock: Callable[[], datetime] | None = None,
) -> BatchResult:
    """Render with the run's templates and tracking links and send one batch (deliver_batch)
    inside the campaign's send window, or at once with `send_now`."""
    from campaign_lib.rendering import load_campaign_templates

    campaign = campaign_of_run(engine, campaign_run_id)
    templates = load_campaign_templates(campaign)
    links = links or tracking_links_from_env()

    def render(channel: str, recipient, message_key: str):
        return templates.render(channel, recipient, links, message_key)

    window = None if send_now else campaign.send_window
    return deliver_batch(
        engine, campaign_run_id, channel, batch_no, connector_factory, render, options, window, clock
    )


def deliver_run(
    engine: Engine,
    campaign_run_id: int,
    connectors: Mapping[str, tuple[Callable[[], Connector], SendOptions]],
    links: TrackingLinks | None = None,
    *,
    send_now: bool = False,
    clock: Callable[[], datetime] | None = None,
) -> list[BatchResult]:
    """Deliver a whole run in this process, as the DAG's tasks do one after another: materialise
    the outbox, send every planned batch of each channel in `connectors` ({channel: (connector
    factory, options)}), finish. For `kms delivery send`, the demo and the benchmark; a channel
    with messages but no connector raises DeliveryError before anything is sent.

    Sends only inside the campaign's send window unless `send_now`: once it is closed, the
    batch in hand stops at its next chunk, the last result says when it opens
    (`window_closed`), and the later batches are left pending for then."""
    from campaign_lib.delivery.outbox import finish_delivery, materialise_outbox, plan_batches

    materialise_outbox(engine, campaign_run_id)
    planned = {
        channel: batches for channel, batches in plan_batches(engine, campaign_run_id).items() if batches
    }
    missing = sorted(set(planned) - set(connectors))
    if missing:
        raise DeliveryError(
            f"campaign run {campaign_run_id} has {', '.join(missing)} messages but no connector"
        )
    results: list[BatchResult] = []
    for channel, batch_no in [(c, b) for c, batches in planned.items() for b in batches]:
        factory, options = connectors[channel]
        results.append(
            deliver_run_batch(
                engine,
                campaign_run_id,
                channel,
                batch_no,
                factory,
                options,
                links,
                send_now=send_now,
                clock=clock,
            )
        )
        if results[-1].window_closed:
            break
    finish_delivery(engine, campaign_run_id)
    return results
