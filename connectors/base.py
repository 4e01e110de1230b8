"""What every delivery connector (email, SMS, push, file export) implements, and what it gets.

The outbox (campaign_lib.delivery) hands a connector a batch of rendered messages, one
`Outbound` per recipient, and records each `Outcome` the moment the connector yields it:

    connector = SmtpConnector.from_connection(conn)          # an Airflow-connection-like dict
    try:
        for outcome in connector.send(batch):                # exactly one Outcome per message
            record(outcome)                                  # committed at once by the outbox
    finally:
        connector.close()

Rules for implementations:

- `send` yields exactly one `Outcome` per `Outbound` of the batch, as soon as it is known (not
  after the whole batch), in any order; the outbox raises if one is missing or doubled.
- Per-recipient problems are Outcomes: `failed_soft` (worth another attempt later; set
  `retry_after` in seconds if the provider said so), `failed_hard` (this address will not work),
  `skipped` (not sent on purpose, with a reason), `ambiguous` (the provider may have accepted the
  message but no answer came: the outbox never resends it blindly). `pause_run=True` asks the
  outbox to pause the whole run (e.g. an SMTP 5.7.x policy rejection: the sender is the problem,
  not the recipient).
- Whole-connection failures raise `campaign_lib.errors.TransientDeliveryError` (server down,
  connection refused before anything was handed over: the rest of the batch is retried later)
  or `PermanentDeliveryError` (credentials refused, configuration wrong). A connector that
  fails after handing a message over must yield `ambiguous` for it before raising.
- A connector is built from an Airflow-connection-like mapping by `from_connection(conn)` with
  the keys conn_type, host, port, login, password, schema and extra (a dict); the outbox reads
  the connections `kms_smtp`, `kms_sms`, `kms_push_fcm`, `kms_push_webpush`, `kms_export_sftp`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

OutcomeStatus = Literal["sent", "failed_soft", "failed_hard", "skipped", "ambiguous"]
OUTCOME_STATUSES: frozenset[str] = frozenset({"sent", "failed_soft", "failed_hard", "skipped", "ambiguous"})


@dataclass(frozen=True)
class Outbound:
    """One rendered message to one recipient.

    `message_key` is the outbox's deterministic key of the message (run, contact, channel): use
    it as the provider's idempotency key and in a deterministic Message-ID. `address` is an
    email address, an E.164 number, a push token or a web-push subscription (`webpush:` + JSON).
    `timezone` is the recipient's IANA time zone (quiet hours for SMS) when known.
    """

    message_id: int
    message_key: str
    contact_id: int
    channel: str
    address: str
    subject: str | None
    text: str
    html: str | None
    headers: Mapping[str, str] = field(default_factory=dict)
    timezone: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What happened to one `Outbound` (matched by `message_id`)."""

    message_id: int
    status: OutcomeStatus
    provider_message_id: str | None = None
    reason: str | None = None
    retry_after: float | None = None
    segments: int | None = None
    pause_run: bool = False


@runtime_checkable
class Connector(Protocol):
    """A delivery connector: sends batches of `Outbound` for one channel."""

    channel: str

    def send(self, batch: Sequence[Outbound]) -> Iterator[Outcome]:
        """Send the batch; yield exactly one Outcome per message, as soon as it is known."""
        ...

    def close(self) -> None:
        """Release connections; the connector is not used afterwards."""
        ...
