"""Resolve new and changed source records into contacts, accounts and the rest of the view.

One run holds an advisory lock; its steps (sql/identity.sql, in order):

1. Scope: the unresolved records, the existing contacts they touch (previous contact, owners
   of their identifiers, fuzzy candidates with the same birth date and postcode), widened to
   those contacts' whole accounts and to records sharing a CRM account id, and every record
   of all these contacts; contacts a name rule could join (scope_name_candidates). Nothing
   else is read: a batch costs in proportion to the people it touches, not to the base.
2. Linking in memory (`campaign_lib.identity.linking`): one COPY out of compact columns,
   union-find over record indexes, persons and households as components.
3. Ids: each person claims one of the existing contacts among its records (an active one
   before an anonymous one, then the oldest); the other existing contacts among its records
   are merged into it; a person without any gets a new contact. Households claim accounts
   the same way (the account most of their records had). Fresh ids come from the tables'
   own sequences, so the result goes back with one COPY per table.
4. Set-based writes, transaction 1: accounts, contacts with survivorship values, merges
   (everything of a merged contact repointed to its survivor). Transaction 2, split by
   contact over two connections so it uses two cores without their row locks meeting:
   locations rebuilt per account in scope (first connection), then per half of the contacts
   identifiers, activities, consents and inquiries upserted with IS DISTINCT FROM guards and
   the records marked resolved in the same transaction. A crash leaves records unresolved
   together with their missing history, and the next run redoes them idempotently.

Records that no rule can tie to a person (no identifier but an order reference, or none at
all: counter tickets, cash bills) end resolved with contact_id null; their activities cannot
enter core.activity (contact_id is NOT NULL there) and are counted as `records_without_contact`.
Page views under a cookie that never logged in form an anonymous contact (status
'anonymous', an account of its own) so that their cookie is an identifier a later login finds;
the login merges that contact into the customer.
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from sqlalchemy.engine import Connection, Engine

from campaign_lib.identity.linking import Linkage, ScopeRecords, address_key, link, name_key
from campaign_lib.identity.settings import IdentitySettings
from campaign_lib.sqlfiles import queries

SQL = "identity.sql"


@dataclass(frozen=True, slots=True)
class ResolutionSummary:
    """What one `resolve` run did.

    batch_records: unresolved records the run started from; scope_records: records it read
    (the batch and every record of the contacts it touched); contacts_touched: existing
    contacts in scope (touched by the batch, or members of a touched account);
    records_without_contact: records in scope that no rule ties to a person."""

    batch_records: int = 0
    scope_records: int = 0
    contacts_touched: int = 0
    contacts_created: int = 0
    contacts_updated: int = 0
    contacts_merged: int = 0
    anonymous_contacts: int = 0
    accounts_created: int = 0
    accounts_merged: int = 0
    records_resolved: int = 0
    records_without_contact: int = 0
    guarded_links_refused: int = 0
    identifiers_written: int = 0
    activities_written: int = 0
    consents_written: int = 0
    inquiries_written: int = 0
    link_seconds: float = 0.0
    elapsed_seconds: float = 0.0

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)


def resolve(engine: Engine, *, settings: IdentitySettings | None = None) -> ResolutionSummary:
    """Resolve every unresolved record of ingest.record incrementally; return what changed.

    Idempotent: with nothing unresolved it reads one index and writes nothing. A run that
    fails leaves its records unresolved, and the next run redoes them."""
    settings = settings or IdentitySettings()
    started = time.perf_counter()
    q = queries(SQL)
    with engine.connect() as conn:
        conn.execute(q["lock_resolution"])
        conn.commit()
        try:
            return _resolve(engine, conn, settings, started)
        finally:
            conn.rollback()
            conn.execute(q["unlock_resolution"])
            conn.execute(q["drop_temp"])
            conn.commit()


def reset_resolution(engine: Engine) -> None:
    """Forget every resolution result (contacts, accounts, identifiers, activities, consents,
    inquiries, and each record's contact and resolved mark) so that the next `resolve`
    rebuilds the single customer view from all records. For development and benchmarks:
    it takes the resolution lock and runs in one transaction."""
    q = queries(SQL)
    with engine.connect() as conn:
        conn.execute(q["lock_resolution"])
        conn.commit()
        try:
            conn.execute(q["reset_resolution"])
            conn.commit()
        finally:
            conn.rollback()
            conn.execute(q["unlock_resolution"])
            conn.commit()


def _resolve(
    engine: Engine, conn: Connection, settings: IdentitySettings, started: float
) -> ResolutionSummary:
    q = queries(SQL)
    conn.execute(q["create_scope"])
    if conn.execute(q["scope_unresolved"]).rowcount == 0:
        return ResolutionSummary(elapsed_seconds=round(time.perf_counter() - started, 3))
    conn.execute(q["scope_touched_contacts"])
    conn.execute(q["scope_batch_names"])
    conn.execute(q["scope_name_candidates"])
    conn.execute(q["scope_households"])
    conn.execute(q["scope_contact_records"])
    conn.execute(q["scope_crm_accounts"])
    conn.execute(q["scope_households"])
    conn.execute(q["scope_contact_records"])
    batch, scope, touched = conn.execute(q["scope_counts"]).one()

    records, scope_rows = _read_scope(conn)
    previous = {row.contact_id: (row.account_id, row.status) for row in conn.execute(q["scope_contacts"])}
    link_started = time.perf_counter()
    linkage = link(records, settings)
    plan = _plan(conn, records, linkage, previous)
    link_seconds = time.perf_counter() - link_started

    # Transaction 1: who is who. Contacts and accounts must be committed before the
    # second connection can reference them.
    conn.execute(q["create_result"])
    _copy_in(conn, "copy_assignment", plan.assignment)
    _copy_in(conn, "copy_contacts", plan.contacts)
    _copy_in(conn, "copy_contact_merges", plan.contact_merges)
    _copy_in(conn, "copy_accounts", plan.accounts)
    _copy_in(conn, "copy_account_merges", plan.account_merges)
    conn.execute(q["analyze_result"])
    accounts_created = conn.execute(q["insert_accounts"]).one().inserted
    conn.execute(q["detach_locations"])
    conn.execute(q["delete_locations"])
    conn.execute(q["contact_values"])
    contacts_created = conn.execute(q["insert_contacts"]).scalar_one()
    contacts_updated = conn.execute(q["update_contacts"]).scalar_one()
    conn.execute(q["merge_contacts"])
    conn.execute(q["repoint_merged"])
    conn.execute(q["merge_accounts"])
    # Identifiers are decided over the whole scope (a shared value goes to one owner), then
    # written per half by owner, so the two connections never wait on each other's keys.
    conn.execute(q["identifier_values"])
    conn.execute(q["delete_stale_identifiers"])
    second_half_identifiers = io.StringIO()
    with _raw_cursor(conn) as cursor:
        cursor.copy_expert(q["read_second_half_identifiers"].text, second_half_identifiers)
    conn.execute(q["keep_first_half_identifiers"])
    conn.commit()

    # Transaction 2, on two connections (two cores), each for its half of the contacts so
    # their row locks and unique keys never meet (the first connection waits for the second
    # before committing, a wait PostgreSQL could not see as a deadlock): identifiers,
    # activities, consents, inquiries, and the records marked resolved. This one also
    # rebuilds the locations and takes the records without contact; it commits first. If
    # the other fails after that, its records stay unresolved and the next run redoes them;
    # nothing is ever resolved without its history.
    # plan.assignment is in the order of scope_rows.
    theirs_at = [i for i, row in enumerate(plan.assignment) if row[1] is not None and row[1] % 2 == 1]
    theirs = [plan.assignment[i] for i in theirs_at]
    their_scope = [scope_rows[i] for i in theirs_at]
    mine = [row for row in plan.assignment if row[1] is None or row[1] % 2 == 0]
    with engine.connect() as other, ThreadPoolExecutor(max_workers=1) as pool:
        try:
            other.execute(q["create_result"])
            other.execute(q["create_scope"])
            other.execute(q["create_identifiers"])
            second_half_identifiers.seek(0)
            with _raw_cursor(other) as cursor:
                cursor.copy_expert(q["copy_identifiers"].text, second_half_identifiers)
            written_there = pool.submit(
                _write_history, other, theirs, [row for row in plan.contacts if row[0] % 2 == 1], their_scope
            )
            conn.execute(q["insert_locations"])
            conn.execute(q["attach_locations"])
            conn.execute(q["name_accounts"])
            conn.execute(q["reset_result"])
            written_here = _write_history(conn, mine, [row for row in plan.contacts if row[0] % 2 == 0], None)
            there = written_there.result()
            conn.commit()
            other.commit()
        finally:
            pool.shutdown(wait=True)
            other.rollback()
            other.execute(q["drop_temp"])
            other.commit()
    identifiers, activities, consents, inquiries, resolved = (
        a + b for a, b in zip(written_here, there, strict=True)
    )

    return ResolutionSummary(
        batch_records=batch,
        scope_records=scope,
        contacts_touched=touched,
        contacts_created=contacts_created,
        contacts_updated=contacts_updated,
        contacts_merged=len(plan.contact_merges),
        anonymous_contacts=sum(1 for row in plan.contacts if row[2] == "anonymous"),
        accounts_created=accounts_created,
        accounts_merged=len(plan.account_merges),
        records_resolved=resolved,
        records_without_contact=sum(1 for person in linkage.record_person if person < 0),
        guarded_links_refused=linkage.guarded_links_refused,
        identifiers_written=identifiers,
        activities_written=activities,
        consents_written=consents,
        inquiries_written=inquiries,
        link_seconds=round(link_seconds, 3),
        elapsed_seconds=round(time.perf_counter() - started, 3),
    )


def _write_history(
    conn: Connection,
    assignment: list[tuple[int, int | None, int | None]],
    contacts: list[tuple],
    scope_rows: list[tuple[int, str, str]] | None,
) -> tuple[int, int, int, int, int]:
    """Identifiers, activities, consents and inquiries of the assigned records, and the
    records marked resolved, in an open transaction of `conn` that the caller commits;
    returns how many of each were written. `scope_rows`: (record_id, changed_at, is_new) as
    read, for a second connection that has no scope of its own."""
    q = queries(SQL)
    _copy_in(conn, "copy_assignment", assignment)
    _copy_in(conn, "copy_contacts", contacts)
    if scope_rows is not None:
        _copy_in(conn, "copy_scope", scope_rows)
    conn.execute(q["analyze_result"])
    identifiers = conn.execute(q["upsert_identifiers"]).scalar_one()
    activities = conn.execute(q["upsert_activities"]).scalar_one()
    consents = conn.execute(q["upsert_consents"]).scalar_one()
    inquiries = conn.execute(q["upsert_inquiries"]).scalar_one()
    resolved = conn.execute(q["mark_records"]).scalar_one()
    return identifiers, activities, consents, inquiries, resolved


def _raw_cursor(conn: Connection):
    return conn.connection.dbapi_connection.cursor()


def _read_scope(conn: Connection) -> tuple[ScopeRecords, list[tuple[int, str, str]]]:
    """The records in scope as columns, and their (record_id, changed_at, is_new) as read."""
    buffer = io.StringIO()
    with _raw_cursor(conn) as cursor:
        cursor.copy_expert(queries(SQL)["read_scope"].text, buffer)
    buffer.seek(0)
    rows = list(csv.reader(buffer))
    records = ScopeRecords()
    if not rows:
        return records, []
    (
        record_id,
        source_system,
        contact_id,
        first_name,
        last_name,
        birth_date,
        postal_code,
        street,
        email,
        phone,
        loyalty_card,
        booking_ref,
        crm_contact_id,
        crm_account_id,
        source_customer_id,
        order_ref,
        cookie_id,
        main_guest,
        company_account,
        occurred_on,
        ended_on,
        changed_at,
        is_new,
    ) = zip(*rows, strict=True)

    def optional(column: tuple[str, ...]) -> list[str | None]:
        return [value or None for value in column]

    records.record_id = [int(v) for v in record_id]
    records.source_system = list(source_system)
    records.prev_contact_id = [int(v) if v else None for v in contact_id]
    records.first_name = [name_key(v) for v in first_name]
    records.last_name = [name_key(v) for v in last_name]
    records.birth_date = optional(birth_date)
    records.postal_code = optional(postal_code)
    records.address = [address_key(p, s) for p, s in zip(postal_code, street, strict=True)]
    records.email = optional(email)
    records.phone = optional(phone)
    records.loyalty_card = optional(loyalty_card)
    records.booking_ref = optional(booking_ref)
    records.crm_contact_id = optional(crm_contact_id)
    records.crm_account_id = optional(crm_account_id)
    records.source_customer_id = optional(source_customer_id)
    records.order_ref = optional(order_ref)
    records.cookie_id = optional(cookie_id)
    records.main_guest = [v == "t" for v in main_guest]
    records.company_account = [v == "t" for v in company_account]
    records.occurred_on = optional(occurred_on)
    records.ended_on = optional(ended_on)
    scope_rows = list(zip(records.record_id, changed_at, is_new, strict=True))
    return records, scope_rows


@dataclass(slots=True)
class _Plan:
    assignment: list[tuple[int, int | None, int | None]]
    contacts: list[tuple[int, int, str, bool]]
    contact_merges: list[tuple[int, int]]
    accounts: list[tuple[int, str, bool]]
    account_merges: list[tuple[int, int]]


def _claim(
    candidates: list[Counter[int]], preference, allocate
) -> tuple[list[int], list[tuple[int, int]], list[bool]]:
    """Give every group an id: an existing candidate, first come (largest groups first) by
    `preference(candidate, members)`, or a fresh one from `allocate(n)`. Returns the ids,
    the (loser, survivor) merges of candidates no group kept (into the group holding most
    of their members), and whether each id is new."""
    chosen: list[int | None] = [None] * len(candidates)
    taken: set[int] = set()
    for group in sorted(range(len(candidates)), key=lambda g: -sum(candidates[g].values())):
        counter = candidates[group]
        for candidate in sorted(counter, key=lambda c, counter=counter: preference(c, counter[c])):
            if candidate not in taken:
                taken.add(candidate)
                chosen[group] = candidate
                break
    missing = [g for g, value in enumerate(chosen) if value is None]
    fresh = iter(allocate(len(missing)) if missing else [])
    is_new = [False] * len(candidates)
    for group in missing:
        chosen[group] = next(fresh)
        is_new[group] = True
    ids: list[int] = [value for value in chosen if value is not None]
    best_home: dict[int, tuple[int, int]] = {}
    for group, counter in enumerate(candidates):
        for candidate, count in counter.items():
            if candidate not in taken and (candidate not in best_home or count > best_home[candidate][0]):
                best_home[candidate] = (count, ids[group])
    merges = sorted((loser, home) for loser, (_, home) in best_home.items())
    return ids, merges, is_new


def _plan(
    conn: Connection, records: ScopeRecords, linkage: Linkage, previous: dict[int, tuple[int, str]]
) -> _Plan:
    q = queries(SQL)
    persons = len(linkage.person_status)
    households = len(linkage.household_company)

    contact_candidates: list[Counter[int]] = [Counter() for _ in range(persons)]
    for person, contact in zip(linkage.record_person, records.prev_contact_id, strict=True):
        if person >= 0 and contact is not None and contact in previous:
            contact_candidates[person][contact] += 1

    def contact_preference(contact: int, _records: int) -> tuple[bool, int]:
        return previous[contact][1] != "active", contact

    def allocate_contacts(n: int) -> list[int]:
        first = conn.execute(q["allocate_contact_ids"], {"n": n}).scalar_one()
        return list(range(first, first + n))

    contact_ids, contact_merges, contact_new = _claim(
        contact_candidates, contact_preference, allocate_contacts
    )

    account_candidates: list[Counter[int]] = [Counter() for _ in range(households)]
    for i, contact in enumerate(records.prev_contact_id):
        household = linkage.record_household[i]
        if household >= 0 and contact is not None and contact in previous:
            # Records of anonymous visitors count nothing: a household keeps a real account.
            account_candidates[household][previous[contact][0]] += previous[contact][1] == "active"

    def allocate_accounts(n: int) -> list[int]:
        first = conn.execute(q["allocate_account_ids"], {"n": n}).scalar_one()
        return list(range(first, first + n))

    account_ids, account_merges, account_new = _claim(
        account_candidates, lambda account, records: (-records, account), allocate_accounts
    )

    assignment = []
    for i, record_id in enumerate(records.record_id):
        person = linkage.record_person[i]
        household = linkage.record_household[i]
        assignment.append(
            (
                record_id,
                contact_ids[person] if person >= 0 else None,
                account_ids[household] if household >= 0 else None,
            )
        )
    contacts = [
        (
            contact_ids[p],
            account_ids[linkage.person_household[p]],
            linkage.person_status[p],
            contact_new[p],
        )
        for p in range(persons)
    ]
    accounts = [
        (account_ids[h], "company" if linkage.household_company[h] else "household", account_new[h])
        for h in range(households)
    ]
    return _Plan(assignment, contacts, contact_merges, accounts, account_merges)


def _copy_in(conn: Connection, statement: str, rows: list[tuple]) -> None:
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    buffer.seek(0)
    with _raw_cursor(conn) as cursor:
        cursor.copy_expert(queries(SQL)[statement].text, buffer)
