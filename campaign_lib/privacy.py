"""Erasure on request (the right to be forgotten, GDPR Art. 17) and its log; the data held
about a person (the right of access, Art. 15, `person_data`).

    result = erase(engine, email="anna@example.org", requested_by="dpo@resort.example",
                   reason="ticket 4711")
    result.status          # 'erased' | 'already_erased' | 'not_found'
    result.erased_rows     # rows per kind; no personal data in the result or the log

A request names the person by email, phone (E.164, or national with `region`) or contact
id. Every contact of that person (the survivor of their merges and every contact merged
into it) is erased in one transaction, under identity resolution's lock, so that a
resolution run never sees half of it (sql/privacy.sql, in the statements' order):

- their identifiers' SHA-256 go to `privacy.erased_identifier`, so the loader quarantines
  later source rows that carry one, without their content (a source system still holding
  the person does not bring them back);
- messages not handed over yet are skipped and every message forgets its address;
  responses keep their type and time, not the browser; proof sends forget the address;
- address suppressions of the person are replaced by one suppression of the contact;
- identifiers, consents, inquiries, source records (with their resolution state) and
  quarantined rows naming one of their identifiers are deleted;
- activities stay for the reports, without attributes or the source's reference;
- the contacts become stubs (status 'erased', every personal column empty), and an account
  left with erased contacts only loses its name and addresses.

Frozen audiences, waterfalls and the contact history keep their ids and counts, so reports
of past campaigns do not change. `privacy.erasure` logs who asked, why and what went.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Connection, Engine

from campaign_lib.errors import KmsError
from campaign_lib.ingest.standardise import FieldIssue, clean_email, clean_phone
from campaign_lib.sqlfiles import queries

SQL = "privacy.sql"

# The statements that erase, in order; each returns how many rows it changed or removed.
_STEPS = (
    "block_identifiers",
    "skip_open_messages",
    "scrub_message_events",
    "scrub_proof_sends",
    "replace_address_suppressions",
    "delete_identifiers",
    "delete_consents",
    "delete_inquiries",
    "scrub_activities",
    "delete_source_records",
    "delete_quarantined_rows",
    "erase_contacts",
    "erase_lone_accounts",
)


class PrivacyRequestError(KmsError):
    """A privacy request (erasure or access) that cannot be carried out as given: it names
    nobody, an invalid identifier, an unknown contact or more than one person."""


@dataclass(frozen=True)
class ErasureResult:
    """What one request did. `erasure_id` is the log row (None when nothing was held and no
    identifier was given to block)."""

    status: str
    erasure_id: int | None = None
    contact_ids: tuple[int, ...] = ()
    erased_rows: dict[str, int] = field(default_factory=dict)

    def as_text(self) -> str:
        if self.status == "not_found":
            return (
                f"no person holds this identifier; it is blocked from later loads (erasure {self.erasure_id})"
            )
        if self.status == "already_erased":
            return f"already erased (erasure {self.erasure_id}); nothing left to erase"
        rows = ", ".join(f"{name} {count}" for name, count in self.erased_rows.items() if count)
        contacts = ", ".join(map(str, self.contact_ids))
        return f"erasure {self.erasure_id}: contacts {contacts} erased; rows: {rows or 'none'}"


def erase(
    engine: Engine,
    *,
    requested_by: str,
    email: str | None = None,
    phone: str | None = None,
    contact_id: int | None = None,
    region: str = "DE",
    reason: str | None = None,
) -> ErasureResult:
    """Erase the person named by `email`, `phone` or `contact_id` (any that are given must
    name the same person); see the module docstring. Idempotent: asking again for a person
    already erased changes nothing and returns status 'already_erased'."""
    if not requested_by or not requested_by.strip():
        raise PrivacyRequestError("an erasure needs requested_by: who asked for it (a name or a ticket)")
    given = _identifiers(email, phone, contact_id, region)
    q = queries(SQL)
    identity = queries("identity.sql")
    kinds, values = [k for k, _ in given], [v for _, v in given]
    with engine.connect() as conn:
        # Identity resolution holds this lock while it reads and writes the view.
        conn.execute(identity["lock_resolution"])
        conn.commit()
        try:
            contacts = _person_named(conn, given, contact_id)
            earlier = conn.execute(
                q["earlier_erasure"], {"contact_ids": contacts, "kinds": kinds, "vals": values}
            ).scalar()
            if earlier is not None:
                return ErasureResult("already_erased", earlier, tuple(contacts))
            erasure_id = conn.execute(
                q["start_erasure"],
                {
                    "contact_ids": contacts,
                    "kinds": kinds,
                    "vals": values,
                    "requested_by": requested_by.strip(),
                    "reason": reason,
                },
            ).scalar_one()
            erased: dict[str, int] = {}
            for step in _STEPS:
                row = conn.execute(q[step], {"erasure_id": erasure_id}).one()
                for name, count in row._mapping.items():
                    erased[step if len(row) == 1 else f"{step}.{name}"] = count
            conn.execute(q["finish_erasure"], {"erasure_id": erasure_id, "erased_rows": json.dumps(erased)})
            conn.commit()
        finally:
            conn.rollback()
            conn.execute(identity["unlock_resolution"])
            conn.commit()
    return ErasureResult("erased" if contacts else "not_found", erasure_id, tuple(contacts), erased)


def person_data(
    engine: Engine,
    *,
    email: str | None = None,
    phone: str | None = None,
    contact_id: int | None = None,
    region: str = "DE",
) -> dict:
    """Everything held about the person named by `email`, `phone` or `contact_id` (a request
    for access, GDPR Art. 15): their contacts, accounts, locations, identifiers, consents,
    inquiries, activities, source records, messages, responses, contact history and
    suppressions, as stored, read in one snapshot. Empty lists when nobody holds the
    identifier. Raises PrivacyRequestError as `erase` does for a request naming nobody or
    more than one person."""
    given = _identifiers(email, phone, contact_id, region)
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        contacts = _person_named(conn, given, contact_id)
        data = conn.execute(queries(SQL)["person_data"], {"contact_ids": contacts}).scalar_one()
        conn.rollback()
    return {"contact_ids": contacts, **data}


@dataclass(frozen=True)
class ErasureLogEntry:
    """One row of the erasure log (privacy.erasure); no personal data."""

    erasure_id: int
    requested_at: datetime
    requested_by: str
    reason: str | None
    contact_ids: list[int]
    erased_rows: dict[str, int]


def erasures(engine: Engine, limit: int = 50) -> list[ErasureLogEntry]:
    """The newest entries of the erasure log."""
    with engine.connect() as conn:
        return [ErasureLogEntry(*row) for row in conn.execute(queries(SQL)["erasures"], {"limit": limit})]


def _identifiers(
    email: str | None, phone: str | None, contact_id: int | None, region: str
) -> list[tuple[str, str]]:
    """The request's identifiers, normalised as core.identifier stores them; raises
    PrivacyRequestError when the request names nobody or an identifier is invalid."""
    given = []
    try:
        if email and (value := clean_email(email)):
            given.append(("email", value))
        if phone and (value := clean_phone(phone, region)):
            given.append(("phone", value))
    except FieldIssue as issue:
        what = issue.kind.removeprefix("invalid_")
        raise PrivacyRequestError(f"not a valid {what}: {issue.raw!r}") from None
    if not given and contact_id is None:
        raise PrivacyRequestError("name the person: an email, a phone number or a contact id")
    return given


def _person_named(conn: Connection, given: list[tuple[str, str]], contact_id: int | None) -> list[int]:
    """Every contact of the one person the request names (empty: no identifier is held).
    Raises PrivacyRequestError when the contact id does not exist or the request's
    identifiers belong to different persons."""
    q = queries(SQL)
    starts = {
        (kind, value): conn.execute(q["contact_by_identifier"], {"kind": kind, "value": value}).scalar()
        for kind, value in given
    }
    if contact_id is not None:
        if not conn.execute(q["contact_exists"], {"contact_id": contact_id}).scalar_one():
            raise PrivacyRequestError(f"there is no contact {contact_id}")
        starts[("contact", str(contact_id))] = contact_id
    persons = {
        name: tuple(conn.execute(q["person_contacts"], {"contact_id": start}).scalars())
        for name, start in starts.items()
        if start is not None
    }
    if len(set(persons.values())) > 1:
        named = "; ".join(f"{kind} belongs to contacts {list(ids)}" for (kind, _), ids in persons.items())
        raise PrivacyRequestError(f"the request names more than one person ({named}): erase them one by one")
    return list(next(iter(persons.values()), ()))
