"""The standardised source record: what every feed's row becomes before identity resolution.

The fields are the columns of `ingest.record` that a feed fills; the loader copies
them in this order. Every value is already standardised (see campaign_lib.ingest's
standardisation): emails lower-cased and validated, phones in E.164, names NFC and
trimmed, times timezone-aware, amounts in integer cents with an ISO currency.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields


@dataclass(slots=True)
class SourceRecord:
    """One row of a source file or API batch, standardised."""

    source_system: str
    record_kind: str
    source_key: str
    line_number: int

    salutation: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    birth_date: dt.date | None = None
    email: str | None = None
    phone_e164: str | None = None
    language: str | None = None
    company_name: str | None = None
    account_type: str | None = None
    street: str | None = None
    postal_code: str | None = None
    city: str | None = None
    country_code: str | None = None
    address_valid_from: dt.date | None = None

    crm_contact_id: str | None = None
    crm_account_id: str | None = None
    source_customer_id: str | None = None
    booking_ref: str | None = None
    order_ref: str | None = None
    loyalty_card: str | None = None
    cookie_id: str | None = None
    push_token: str | None = None

    activity_type: str | None = None
    occurred_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    amount_cents: int | None = None
    currency: str | None = None
    quantity: int | None = None
    product_sku: str | None = None
    product_name: str | None = None
    outlet: str | None = None
    attributes: dict = field(default_factory=dict)

    consent_channel: str | None = None
    consent_purpose: str | None = None
    consent_status: str | None = None
    double_opt_in_at: dt.datetime | None = None

    inquiry_topic: str | None = None
    inquiry_body: str | None = None


RECORD_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(SourceRecord))


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row that could not become a record, with every reason (for the quarantine)."""

    line_number: int
    reasons: tuple[str, ...]
    raw_line: str | None = None
    record: dict | None = None
