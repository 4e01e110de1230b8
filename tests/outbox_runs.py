"""Fixtures for delivery tests: frozen campaign runs built straight in the database.

`frozen_run(email=3, sms=2, push=1, control=1)` makes that many opted-in contacts with an
address per channel, an audience snapshot of a frozen run of a shipped campaign (the control
members get no message), and returns the run's id and its contacts by channel. Building the
run by hand keeps these tests about delivery, not about the funnel (tests/test_funnel.py).
The campaign's send window is open day and night (00:00-24:00) unless a test passes its own
`send_window`: delivery tests pass at any hour (tests/test_delivery_window.py tests the window).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.campaign.definition import SendWindow, find_campaign

_run_numbers = itertools.count(1)
ALWAYS_OPEN = SendWindow(start="00:00", end="24:00", timezone="UTC")


@dataclass(frozen=True)
class FrozenRun:
    campaign_run_id: int
    campaign: str
    contacts: dict[str, list[int]]  # channel (or 'control') -> contact ids, in id order


def _contacts(conn, n: int, channel: str) -> list[int]:
    if n == 0:
        return []
    ids = conn.execute(
        text(
            """
            with account as (
                insert into core.account (account_type)
                select 'household' from generate_series(1, :n)
                returning account_id
            )
            insert into core.contact (account_id, salutation, first_name, last_name, email, phone_e164,
                                      preferred_language)
            select account_id, 'Frau', 'Gast', 'Nr ' || account_id,
                   'guest' || account_id || '@example.org',
                   '+49151' || lpad(account_id::text, 8, '0'), 'de'
            from account
            order by account_id
            returning contact_id
            """
        ),
        {"n": n},
    ).scalars()
    contacts = sorted(ids)
    conn.execute(
        text(
            "insert into core.identifier (contact_id, kind, value, source_system) "
            "select c, 'push_token', 'fcm-token-' || c, 'website' from unnest(cast(:ids as bigint[])) c"
        ),
        {"ids": contacts},
    )
    conn.execute(
        text(
            "insert into core.consent (contact_id, channel, purpose, status, recorded_at, source_system) "
            "select c, cast(:channel as core.channel), 'newsletter', 'opt_in', now() - interval '30 days', "
            "'website' from unnest(cast(:ids as bigint[])) c"
        ),
        {"ids": contacts, "channel": channel},
    )
    return contacts


def build_frozen_run(
    engine: Engine,
    *,
    email: int = 0,
    sms: int = 0,
    push: int = 0,
    control: int = 0,
    campaign: str = "water_park_for_hotel_guests",
    status: str = "frozen",
    send_window: SendWindow = ALWAYS_OPEN,
) -> FrozenRun:
    """A frozen run of `campaign` (stored with `send_window`) whose audience has the given
    members per channel."""
    definition = find_campaign(campaign).campaign.model_copy(update={"send_window": send_window})
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into campaign.campaign (campaign_name, origin, owner, description, definition_version, "
                "definition) values (:n, 'file', :o, :d, '0123456789abcdef', cast(:j as jsonb)) "
                "on conflict (campaign_name) do nothing"
            ),
            {
                "n": definition.name,
                "o": definition.owner,
                "d": definition.description,
                "j": definition.model_dump_json(),
            },
        )
        run_id = conn.execute(
            text(
                "insert into campaign.campaign_run (campaign_name, dag_id, run_id, status, definition_version, "
                "selection_name, selection_version, as_of, frozen_at) "
                "values (:n, :dag, :run, cast(:status as campaign.run_status), '0123456789abcdef', :sel, 'test', "
                "now(), now()) returning campaign_run_id"
            ),
            {
                "n": definition.name,
                "dag": f"kms_campaign_{definition.name}",
                "run": f"test_{next(_run_numbers)}",
                "status": status,
                "sel": definition.selection.name,
            },
        ).scalar_one()
        members = {
            "email": _contacts(conn, email, "email"),
            "sms": _contacts(conn, sms, "sms"),
            "push": _contacts(conn, push, "push"),
            "control": _contacts(conn, control, "email"),
        }
        for channel, contacts in members.items():
            conn.execute(
                text(
                    "insert into campaign.audience (campaign_run_id, contact_id, account_id, channel, cell, "
                    "offer_sku, selection_version) "
                    "select :run, c.contact_id, c.account_id, cast(:channel as core.channel), :cell, :sku, 'test' "
                    "from core.contact c where c.contact_id = any (cast(:ids as bigint[]))"
                ),
                {
                    "run": run_id,
                    "channel": "email" if channel == "control" else channel,
                    "cell": "control" if channel == "control" else "main",
                    "sku": definition.offer.sku if definition.offer else None,
                    "ids": contacts,
                },
            )
    return FrozenRun(run_id, definition.name, members)


@pytest.fixture
def frozen_run(clean_db: Engine) -> Callable[..., FrozenRun]:
    """A factory of frozen runs in the clean test database (see build_frozen_run)."""

    def make(**counts) -> FrozenRun:
        return build_frozen_run(clean_db, **counts)

    return make
