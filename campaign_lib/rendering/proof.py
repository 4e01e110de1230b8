"""Previews and proof sends: a campaign's messages rendered for a real contact or a sample
person, before (or without) a campaign run.

- `recipient_of_contact` reads a contact's template variables for `kms template preview`, which
  renders with message key PREVIEW_MESSAGE_KEY; nothing is written and nothing is sent.
- `send_proofs` renders the email for each seed address and sends it through the email
  connector (`kms template proof`). Each send is logged in campaign.proof_send, never in
  campaign.message, so reports, contact pressure and the outbox never see proofs. Their
  subject starts with "[Test] " and their message keys with "proof-": the tracking links work,
  but match no campaign message, so proof clicks count nowhere.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from campaign_lib.campaign.definition import CampaignFile
from campaign_lib.errors import ConfigError
from campaign_lib.rendering.messages import load_campaign_templates
from campaign_lib.rendering.mime import is_valid_address
from campaign_lib.sqlfiles import queries
from campaign_lib.tracking.tokens import TrackingLinks
from connectors.base import Connector, Outbound

PROOF_SUBJECT_PREFIX = "[Test] "
PREVIEW_MESSAGE_KEY = "preview"
# The person a proof or preview shows when no contact is named: every field filled.
SAMPLE_RECIPIENT: Mapping[str, object] = {
    "salutation": "Frau",
    "first_name": "Erika",
    "last_name": "Mustermann",
    "email": "erika.mustermann@example.org",
    "phone": "+4915112345678",
    "preferred_language": "de",
}


@dataclass(frozen=True)
class ProofSend:
    """What happened to one proof: the address, its logged row and the connector's outcome."""

    address: str
    proof_send_id: int
    message_key: str
    status: str
    reason: str | None


def recipient_of_contact(engine: Engine, contact_id: int) -> dict[str, object]:
    """The template variables of a contact (see sql/rendering.sql); ConfigError if there is none."""
    with engine.connect() as conn:
        row = (
            conn.execute(queries("rendering.sql")["recipient"], {"contact_id": contact_id}).mappings().first()
        )
    if row is None:
        raise ConfigError(f"no contact {contact_id}")
    return dict(row)


def send_proofs(
    engine: Engine,
    loaded: CampaignFile,
    addresses: Sequence[str],
    connector: Connector,
    links: TrackingLinks,
    contact_id: int | None = None,
) -> list[ProofSend]:
    """Render the campaign's email for the contact (default: SAMPLE_RECIPIENT) and send one proof
    to each address; every send is logged in campaign.proof_send. ConfigError for a bad address
    or a campaign without email (before anything is sent)."""
    bad = [address for address in addresses if not is_valid_address(address)]
    if bad or not addresses:
        raise ConfigError(
            f"proof addresses must be email addresses, not {', '.join(map(repr, bad)) or 'none'}"
        )
    campaign = loaded.campaign
    if campaign.templates.email is None:
        raise ConfigError(f"campaign {campaign.name} has no email templates to proof")
    templates = load_campaign_templates(campaign)
    recipient = recipient_of_contact(engine, contact_id) if contact_id is not None else SAMPLE_RECIPIENT
    batch = []
    for number, address in enumerate(addresses):
        message_key = f"proof-{secrets.token_hex(12)}"
        rendered = templates.render("email", recipient, links, message_key)
        batch.append(
            Outbound(
                message_id=number,
                message_key=message_key,
                contact_id=contact_id or 0,
                channel="email",
                address=address,
                subject=PROOF_SUBJECT_PREFIX + (rendered.subject or ""),
                text=rendered.text,
                html=rendered.html,
                headers=rendered.headers,
            )
        )
    sent = []
    for outcome in connector.send(batch):
        message = batch[outcome.message_id]
        with engine.begin() as conn:
            row = conn.execute(
                queries("rendering.sql")["record_proof_send"],
                {
                    "campaign_name": campaign.name,
                    "definition_version": loaded.version,
                    "contact_id": contact_id,
                    "address": message.address,
                    "message_key": message.message_key,
                    "status": outcome.status,
                    "provider_message_id": outcome.provider_message_id,
                    "reason": outcome.reason,
                },
            ).one()
        sent.append(
            ProofSend(message.address, row.proof_send_id, message.message_key, outcome.status, outcome.reason)
        )
    return sent
