"""Resolve new and changed source records into contacts, accounts and the rest of the view.

One run holds an advisory lock; its steps (sql/identity.sql, in order):

1. Scope: the queued records (ingest.record_pending, filled by the ingest merge), the
   existing contacts they touch (previous contact, owners of their identifiers, fuzzy
   candidates with the same birth date and postcode), widened to those contacts' whole
   accounts and to records sharing a CRM account id, and every record of all these
   contacts; contacts a name rule could join (scope_name_candidates). Nothing else is read:
   a batch costs in proportion to the people it touches, not to the base.
2. Linking in memory (`campaign_lib.identity.linking`): one COPY out of compact columns,
   parsed a chunk at a time as it streams in; union-find over record indexes, persons and
   households as components. Records with nothing but the same strong identifiers are
   read once per group, weighted by its size (scope_groups, ADR 0006 decision 5).
3. Ids: each person claims one of the existing contacts among its records (an active one
   before an anonymous one, then the oldest); the other existing contacts among its records
   are merged into it; a person without any gets a new contact. Households claim accounts
   the same way (the account most of their records had). Fresh ids come from the tables'
   own sequences, so the result goes back with one COPY per table.
4. Set-based writes, transaction 1: accounts, contacts with survivorship values, merges
   (everything of a merged contact repointed to its survivor). Transaction 2, split by
   contact over two connections so it uses two cores without their row locks meeting:
   locations rebuilt per account in scope (first connection), then per half of the contacts
   identifiers, activities, consents and inquiries upserted with IS DISTINCT FROM guards;
   after both halves are written, the first connection writes each record's contact
   (ingest.record_contact), takes the batch off the queue and commits last. A crash leaves
   records queued, and the next run redoes them idempotently. A batch at least as large as
   the view (`IdentitySettings.bulk_min_records`; an initial build) runs transaction 2 in
   bulk mode instead: one connection, secondary indexes and foreign keys of the written
   tables dropped and rebuilt around the writes (docs/adr/0006-identity-bulk-build.md).

Records that no rule can tie to a person (no identifier but an order reference, or none at
all: counter tickets, cash bills) leave the queue without a row in ingest.record_contact;
their activities cannot enter core.activity (contact_id is NOT NULL there) and are counted
as `records_without_contact`. Page views under a cookie that never logged in form an
anonymous contact (status 'anonymous', an account of its own) so that their cookie is an
identifier a later login finds; the login merges that contact into the customer.
"""

from __future__ import annotations

import csv
import gc
import io
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from sqlalchemy.engine import Connection, Engine

from campaign_lib.identity.linking import Linkage, ScopeRecords, address_key, link, name_key
from campaign_lib.identity.settings import IdentitySettings
from campaign_lib.sqlfiles import queries

SQL = "identity.sql"


@dataclass(frozen=True, slots=True)
class ResolutionSummary:
    """What one `resolve` run did.

    batch_records: queued records the run started from; scope_records: records it read
    (the batch and every record of the contacts it touched); contacts_touched: existing
    contacts in scope (touched by the batch, or members of a touched account);
    records_without_contact: records in scope that no rule ties to a person; bulk: whether
    the batch was written in bulk mode (as large as the view: ADR 0006); stage_seconds:
    seconds per stage (scope, read, link, plan, contacts: transaction 1, history:
    transaction 2)."""

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
    bulk: bool = False
    stage_seconds: dict[str, float] = field(default_factory=dict)
    elapsed_seconds: float = 0.0

    def as_dict(self) -> dict[str, int | float | bool | dict[str, float]]:
        return asdict(self)


def resolve(engine: Engine, *, settings: IdentitySettings | None = None) -> ResolutionSummary:
    """Resolve every queued record (ingest.record_pending) incrementally; return what changed.

    Idempotent: with an empty queue it reads one index and writes nothing. A run that
    fails leaves its records queued, and the next run redoes them."""
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
    inquiries, and each record's contact) and queue every record again, so that the next `resolve`
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
    stages = _Stages()
    conn.execute(q["create_scope"])
    conn.execute(q["analyze_queue"])
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
    conn.execute(q["scope_groups"])
    batch, scope, touched = conn.execute(q["scope_counts"]).one()
    bulk = scope >= settings.bulk_min_records and scope >= conn.execute(q["resolved_records"]).scalar_one()
    if bulk:
        conn.execute(q["bulk_session_settings"])
    stages.lap("scope")

    with _collector_paused():
        records, weight, members = _read_scope(conn)
        previous = {row.contact_id: (row.account_id, row.status) for row in conn.execute(q["scope_contacts"])}
        stages.lap("read")
        linkage = link(records, settings)
        stages.lap("link")
        plan = _plan(conn, records, weight, members, linkage, previous)
        persons = zip(linkage.record_person, weight, strict=True)
        without_contact = sum(w for person, w in persons if person < 0)
        del records, linkage, persons
    stages.lap("plan")

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
    # written per part by owner, so two connections never wait on each other's keys.
    conn.execute(q["identifier_values"])
    conn.execute(q["delete_stale_identifiers"])
    if bulk:
        # In bulk mode transaction 2 writes only the history tables on either connection.
        _write_locations(conn)
    conn.commit()
    stages.lap("contacts")

    written, resolved = _write_history(engine, conn, plan, bulk)
    stages.lap("history")
    identifiers, activities, consents, inquiries = written

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
        records_without_contact=without_contact,
        guarded_links_refused=plan.guarded_links_refused,
        identifiers_written=identifiers,
        activities_written=activities,
        consents_written=consents,
        inquiries_written=inquiries,
        link_seconds=stages.seconds["link"],
        bulk=bulk,
        stage_seconds=stages.seconds,
        elapsed_seconds=round(time.perf_counter() - started, 3),
    )


def _write_history(
    engine: Engine, conn: Connection, plan: _Plan, bulk: bool
) -> tuple[tuple[int, int, int, int], int]:
    """Transaction 2, on `conn` and a second connection (two cores) whose work never meets.
    Row by row, each writes the identifiers, activities, consents and inquiries of its half
    of the contacts (by contact id parity), and `conn` also rebuilds the locations. In bulk
    mode the second connection writes core.activity while `conn` writes the records'
    contacts, and `conn` writes identifiers, consents and inquiries once the second has
    committed: both take a key-share lock on every contact they reference, and two open
    transactions locking the same row make PostgreSQL build a multixact per row.
    `conn` writes every record's contact and takes the batch off the queue (mark_records)
    and commits after the second connection: a record never leaves the queue without its
    history; if `conn` fails after the other committed, the next run redoes the batch.
    Returns how many identifiers, activities, consents and inquiries were written, and how
    many records left the queue."""
    q = queries(SQL)
    with engine.connect() as other, ThreadPoolExecutor(max_workers=1) as pool:
        try:
            other.execute(q["create_result"])
            if bulk:
                other.execute(q["bulk_session_settings"])
                _copy_in(other, "copy_assignment", [row for row in plan.assignment if row[1] is not None])
                other.execute(q["analyze_result"])
                # Takes its table lock before `conn` takes records off the queue, so it
                # never waits for a session that waits for `conn`.
                other.execute(
                    q["bulk_drop_secondary"],
                    {"tables": ["core.activity"], "unique_tables": ["core.activity"]},
                )
                there = pool.submit(_write_activities_in_bulk, other)
                conn.execute(
                    q["bulk_drop_secondary"],
                    {"tables": ["core.identifier", "ingest.record_contact"], "unique_tables": []},
                )
                resolved = conn.execute(q["mark_records"]).scalar_one()
                written_there = there.result()
                other.commit()
                skipped = conn.execute(q["bulk_skip_key_checks"]).scalar_one()
                written_here = _upsert_history(conn, parts=1, part=0, activities=False)
                if skipped:
                    conn.execute(
                        q["bulk_check_keys"], {"tables": ["core.identifier", "core.consent", "core.inquiry"]}
                    )
                conn.execute(q["bulk_restore_secondary"])
            else:
                other.execute(q["create_identifiers"])
                identifiers = io.StringIO()
                with _raw_cursor(conn) as cursor:
                    cursor.copy_expert(q["read_second_half_identifiers"].text, identifiers)
                identifiers.seek(0)
                with _raw_cursor(other) as cursor:
                    cursor.copy_expert(q["copy_identifiers"].text, identifiers)
                _copy_in(
                    other,
                    "copy_assignment",
                    [row for row in plan.assignment if row[1] is not None and row[1] % 2 == 1],
                )
                other.execute(q["analyze_result"])
                there = pool.submit(_upsert_history, other, parts=2, part=1)
                _write_locations(conn)
                written_here = _upsert_history(conn, parts=2, part=0)
                resolved = conn.execute(q["mark_records"]).scalar_one()
                written_there = there.result()
                other.commit()
            conn.commit()
            written = tuple(a + b for a, b in zip(written_here, written_there, strict=True))
        finally:
            pool.shutdown(wait=True)
            other.rollback()
            other.execute(q["drop_temp"])
            other.commit()
    return written, resolved


def _write_locations(conn: Connection) -> None:
    q = queries(SQL)
    conn.execute(q["insert_locations"])
    conn.execute(q["attach_locations"])
    conn.execute(q["name_accounts"])


def _write_activities_in_bulk(conn: Connection) -> tuple[int, int, int, int]:
    """Every activity of the assigned records into core.activity, whose secondary indexes
    and natural key bulk_drop_secondary took away, then rebuilt; its foreign keys checked
    set-based where the role may skip the per-row checks (bulk_skip_key_checks). Returns
    the counts as `_upsert_history` does."""
    q = queries(SQL)
    skipped = conn.execute(q["bulk_skip_key_checks"]).scalar_one()
    activities = conn.execute(q["bulk_upsert_activities"]).scalar_one()
    if skipped:
        conn.execute(q["bulk_check_keys"], {"tables": ["core.activity"]})
    conn.execute(q["bulk_restore_secondary"])
    return 0, activities, 0, 0


def _upsert_history(
    conn: Connection, *, parts: int, part: int, activities: bool = True
) -> tuple[int, int, int, int]:
    """Identifiers, activities (unless not `activities`), consents and inquiries of the
    contacts of part `part` of `parts` among the assigned records (id_assign), in an open
    transaction of `conn` that the caller commits; returns how many of each were inserted
    or changed."""
    q = queries(SQL)
    which = {"parts": parts, "part": part}
    return (
        conn.execute(q["upsert_identifiers"], which).scalar_one(),
        conn.execute(q["upsert_activities"], which).scalar_one() if activities else 0,
        conn.execute(q["upsert_consents"], which).scalar_one(),
        conn.execute(q["upsert_inquiries"], which).scalar_one(),
    )


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while linking builds its columns and
    components: they are millions of lists, tuples and strings without a single reference
    cycle, and every full collection would walk all of them again (ADR 0006, decision 6:
    read, link and plan took 19 s instead of 11.5 s for 1.18M records with it on)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Stages:
    """Seconds per stage of a run, each measured from the end of the previous one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._last, 3)
        self._last = now


def _raw_cursor(conn: Connection):
    return conn.connection.dbapi_connection.cursor()


def _read_scope(conn: Connection) -> tuple[ScopeRecords, list[int], list[tuple[int, int]]]:
    """The records linking reads as columns (see read_scope), streamed: COPY hands over one
    row at a time, and every `_ScopeReader.CHUNK` rows are parsed into the columns, so no
    more than one chunk of raw rows is ever held. Also each record's weight (how many
    records of the scope it stands for) and the grouped records it stands for, as
    (record id, representative record id) (scope_groups)."""
    reader = _ScopeReader()
    members = io.StringIO()
    with _raw_cursor(conn) as cursor:
        cursor.copy_expert(queries(SQL)["read_scope"].text, reader)
        reader.flush()
        cursor.copy_expert(queries(SQL)["read_scope_members"].text, members)
    pairs = [
        (int(member), int(head))
        for member, head in (line.split(",") for line in members.getvalue().splitlines())
    ]
    return reader.records, reader.weight, pairs


def _optional(column: tuple[str, ...]) -> list[str | None]:
    return [value or None for value in column]


def _interned(column: tuple[str, ...]) -> list[str | None]:
    """`column` with every value shared between equal rows: source systems, days and
    postcodes repeat across records and would otherwise be one string object per row."""
    return [sys.intern(value) if value else None for value in column]


class _ScopeReader(io.TextIOBase):
    """A file-like target of COPY TO STDOUT (CSV): takes rows as they arrive and parses
    them a chunk at a time into `records`. A text stream, so psycopg2 hands over str."""

    CHUNK = 50_000

    def __init__(self) -> None:
        super().__init__()
        self.records = ScopeRecords()
        self.weight: list[int] = []
        self._rows: list[str] = []

    def write(self, row: str) -> int:
        self._rows.append(row)
        if len(self._rows) >= self.CHUNK:
            self.flush()
        return len(row)

    def flush(self) -> None:
        if not self._rows:
            return
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
            weight,
        ) = zip(*csv.reader(self._rows), strict=True)
        self._rows = []
        records = self.records
        records.record_id.extend(map(int, record_id))
        records.source_system.extend(_interned(source_system))
        records.prev_contact_id.extend(int(v) if v else None for v in contact_id)
        records.first_name.extend(map(name_key, first_name))
        records.last_name.extend(map(name_key, last_name))
        records.birth_date.extend(_interned(birth_date))
        records.postal_code.extend(_interned(postal_code))
        records.address.extend(map(address_key, postal_code, street))
        records.email.extend(_optional(email))
        records.phone.extend(_optional(phone))
        records.loyalty_card.extend(_optional(loyalty_card))
        records.booking_ref.extend(_optional(booking_ref))
        records.crm_contact_id.extend(_optional(crm_contact_id))
        records.crm_account_id.extend(_optional(crm_account_id))
        records.source_customer_id.extend(_optional(source_customer_id))
        records.order_ref.extend(_optional(order_ref))
        records.cookie_id.extend(_optional(cookie_id))
        records.main_guest.extend(v == "t" for v in main_guest)
        records.company_account.extend(v == "t" for v in company_account)
        records.occurred_on.extend(_interned(occurred_on))
        records.ended_on.extend(_interned(ended_on))
        self.weight.extend(map(int, weight))


@dataclass(slots=True)
class _Plan:
    guarded_links_refused: int
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
    conn: Connection,
    records: ScopeRecords,
    weight: list[int],
    members: list[tuple[int, int]],
    linkage: Linkage,
    previous: dict[int, tuple[int, str]],
) -> _Plan:
    """Ids for the persons and households of `linkage`: each claims existing contacts and
    accounts by how many records (`weight`) point to them; the assignment covers the
    records linking read and the `members` each of them stands for."""
    q = queries(SQL)
    persons = len(linkage.person_status)
    households = len(linkage.household_company)

    contact_candidates: list[Counter[int]] = [Counter() for _ in range(persons)]
    for person, contact, w in zip(linkage.record_person, records.prev_contact_id, weight, strict=True):
        if person >= 0 and contact is not None and contact in previous:
            contact_candidates[person][contact] += w

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
            account_candidates[household][previous[contact][0]] += weight[i] * (
                previous[contact][1] == "active"
            )

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
    position = {record_id: i for i, record_id in enumerate(records.record_id)}
    for record_id, representative in members:
        _, contact, account = assignment[position[representative]]
        assignment.append((record_id, contact, account))
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
    return _Plan(
        linkage.guarded_links_refused, assignment, contacts, contact_merges, accounts, account_merges
    )


def _copy_in(conn: Connection, statement: str, rows: list[tuple]) -> None:
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    buffer.seek(0)
    with _raw_cursor(conn) as cursor:
        cursor.copy_expert(queries(SQL)[statement].text, buffer)
