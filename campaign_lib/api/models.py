"""Request and response bodies of the ingest API, as pydantic models (they are the OpenAPI schemas).

The request models check the shape of each item (fields, types, formats) so that a bad
item gets a precise error by index while the rest of the batch loads; they do not map or
standardise anything: the items go on as received to the feed's parser.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

Uuid = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ),
]
Short = Annotated[str, StringConstraints(max_length=320)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64)]
LongText = Annotated[str, StringConstraints(max_length=20_000)]
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}$")]


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Event(_Item):
    event_id: Uuid = Field(description="UUID of the event; its natural key: posting it again changes nothing")
    occurred_at: AwareDatetime = Field(description="ISO 8601 with UTC offset, e.g. 2026-07-01T19:30:00+02:00")


class Registration(_Event):
    event_type: Literal["registration"]
    customer_id: Identifier = Field(description="the website's customer number, e.g. W000012345")
    cookie_id: Identifier
    email: Short | None = Field(description="as typed; an invalid address is kept aside, not refused")
    first_name: Short | None
    last_name: Short | None
    birth_date: dt.date | None
    phone: Short | None
    language: Language | None


class Login(_Event):
    event_type: Literal["login"]
    customer_id: Identifier
    cookie_id: Identifier
    method: Short = Field(description="password or google")


class PageView(_Event):
    event_type: Literal["page_view"]
    cookie_id: Identifier
    url: Annotated[str, StringConstraints(max_length=4_096)]
    referrer: Annotated[str, StringConstraints(max_length=4_096)] = Field(description='"" when none')


class NewsletterConsent(_Item):
    channel: Literal["email", "sms"]
    purpose: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
    opt_in_at: AwareDatetime
    double_opt_in_at: AwareDatetime | None = Field(description="null until the subscriber confirmed")
    source: Short


class NewsletterSignup(_Event):
    event_type: Literal["newsletter_signup"]
    email: Short | None = Field(None, description="the address signed up (consent channel email)")
    phone: Short | None = Field(None, description="the number signed up, as typed (consent channel sms)")
    cookie_id: Identifier | None
    customer_id: Identifier | None
    consent: NewsletterConsent

    @model_validator(mode="after")
    def _address_of_the_channel(self) -> NewsletterSignup:
        address = self.email if self.consent.channel == "email" else self.phone
        if not address:
            field = "email" if self.consent.channel == "email" else "phone"
            raise ValueError(f"a newsletter sign-up by {self.consent.channel} needs its {field}")
        return self


PushToken = Annotated[str, StringConstraints(min_length=1, max_length=1_000)]


class WebPushKeys(_Item):
    p256dh: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{40,200}$")]
    auth: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{16,64}$")]


class WebPushSubscription(_Item):
    """A browser's PushSubscription as its toJSON() gives it."""

    endpoint: Annotated[str, StringConstraints(pattern=r"^https?://", max_length=800)]
    keys: WebPushKeys


class PushConsent(NewsletterConsent):
    channel: Literal["push"]


class PushSubscription(_Event):
    event_type: Literal["push_subscription"]
    customer_id: Identifier | None
    cookie_id: Identifier | None
    platform: Literal["android", "ios", "web"]
    push_token: PushToken | WebPushSubscription = Field(
        description="the app's FCM registration token, or the browser's subscription (platform web)"
    )
    consent: PushConsent

    @model_validator(mode="after")
    def _token_of_the_platform(self) -> PushSubscription:
        if (self.platform == "web") != isinstance(self.push_token, WebPushSubscription):
            raise ValueError(
                "push_token: a subscription object for platform web, a string for android and ios"
            )
        return self


Subject = Literal["hotel", "restaurant", "water_park", "dolphinarium", "shop", "night_club"]


class Comment(_Event):
    event_type: Literal["comment"]
    customer_id: Identifier
    cookie_id: Identifier
    subject: Subject
    text: LongText


class Rating(_Event):
    event_type: Literal["rating"]
    customer_id: Identifier
    cookie_id: Identifier
    subject: Subject
    stars: int = Field(ge=1, le=5)


class SupportInquiry(_Event):
    event_type: Literal["support_inquiry"]
    customer_id: Identifier | None
    email: Short
    name: Short
    topic: Short
    message: LongText


WebsiteEvent = Annotated[
    Registration | Login | PageView | NewsletterSignup | PushSubscription | Comment | Rating | SupportInquiry,
    Field(discriminator="event_type"),
]
WEBSITE_EVENT = TypeAdapter(WebsiteEvent)


class EventBatch(BaseModel):
    """A batch of website events, each exactly as in the website's JSON Lines export."""

    events: list[WebsiteEvent] = Field(min_length=1, description="1 to KMS_API_MAX_BATCH (1,000) events")


class ContactConsent(_Item):
    channel: Literal["email", "sms", "push", "phone", "post"]
    purpose: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
    status: Literal["opt_in", "opt_out"]
    changed_at: AwareDatetime = Field(description="when the customer gave or withdrew the consent")
    double_opt_in_at: AwareDatetime | None = None
    source: Short | None = None


class WebsiteContact(_Item):
    """A customer's profile as the website holds it now; a later post of the same customer replaces it."""

    customer_id: Identifier = Field(description="the website's customer number; the contact's natural key")
    email: Short | None = None
    first_name: Short | None = None
    last_name: Short | None = None
    phone: Short | None = None
    birth_date: dt.date | None = None
    language: Language | None = None
    consents: list[ContactConsent] = Field(default=[], max_length=20)


WEBSITE_CONTACT = TypeAdapter(WebsiteContact)


class ContactBatch(BaseModel):
    """A batch of contact profiles from the website."""

    contacts: list[WebsiteContact] = Field(
        min_length=1, description="1 to KMS_API_MAX_BATCH (1,000) contacts"
    )


class ItemError(BaseModel):
    """Why one item of a batch was refused (it is quarantined with these reasons)."""

    index: int = Field(description="0-based position of the item in the batch")
    event_id: str | None = Field(default=None, description="the event's id, when it had one (events)")
    customer_id: str | None = Field(default=None, description="the customer id, when it had one (contacts)")
    errors: list[str] = Field(description='one line per problem, "field: reason"')


class BatchResult(BaseModel):
    """What became of a batch: counts per item and record, and every refused item with its reasons."""

    batch_id: int = Field(description="the batch's entry in the ingest ledger (ingest.file)")
    duplicate_batch: bool = Field(description="this exact batch was received before; nothing was done again")
    received: int = Field(description="items in the batch")
    accepted: int = Field(description="items stored (new, changed or already stored)")
    rejected: int = Field(description="items refused; see errors")
    records_changed: int = Field(description="source records inserted or updated by this batch")
    records_unchanged: int = Field(description="source records already stored exactly so (resent items)")
    errors: list[ItemError]


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable, e.g. unauthorized, body_too_large")
    message: str = Field(description="for humans")
    items: list[ItemError] | None = Field(default=None, description="per-item errors of a refused batch")


class ErrorBody(BaseModel):
    """The shape of every error response."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"]
