-- Erasure on request (campaign_lib/privacy.py, docs/privacy.md). One transaction per
-- request, under identity resolution's lock, in the order of the statements below.

-- name: contact_by_identifier
-- The contact an identifier belongs to (identifiers are repointed to the survivor of a merge).
select contact_id from core.identifier where kind = cast(:kind as core.identifier_kind) and value = :value;

-- name: contact_exists
select exists (select 1 from core.contact where contact_id = :contact_id);

-- name: earlier_erasure
-- The erasure that already took the person (all of :contact_ids erased) or blocked one of
-- the request's identifiers; null when there is none.
select coalesce(
    (select max(erasure_id)
     from privacy.erasure
     where contact_ids && cast(:contact_ids as bigint[])
       and not exists (
           select 1 from core.contact
           where contact_id = any(cast(:contact_ids as bigint[])) and status <> 'erased'
       )),
    (select max(e.erasure_id)
     from unnest(cast(:kinds as text[]), cast(:vals as text[])) as r (kind, value)
     join privacy.erased_identifier as e
         on e.kind = cast(r.kind as core.identifier_kind) and e.value_sha256 = sha256(convert_to(r.value, 'UTF8'))
     where cardinality(cast(:contact_ids as bigint[])) = 0)
);

-- name: person_contacts
-- Every contact of the person :contact_id belongs to: the survivor its merges lead to, and
-- every contact merged into that survivor, at any depth.
with recursive up as (
    select contact_id, merged_into_contact_id
    from core.contact
    where contact_id = :contact_id
    union
    select c.contact_id, c.merged_into_contact_id
    from core.contact as c
    join up on c.contact_id = up.merged_into_contact_id
),

down as (
    select contact_id from up where merged_into_contact_id is null
    union
    select c.contact_id
    from core.contact as c
    join down as d on c.merged_into_contact_id = d.contact_id
)

select contact_id from down order by contact_id;

-- name: start_erasure
-- The request's log row (its counts follow at the end) and the run's temp tables: the
-- contacts, their source records, and every identifier value they were known by, in clear
-- for this transaction only. Returns the erasure id.
-- The lock waits for loaders that are merging a file (they hold SHARE from their erasure
-- check to their commit, quarantine_erased in sql/ingest.sql) and keeps new ones waiting
-- until this commits: a record merged before is queued and found below, one merged after
-- meets the new hashes.
lock table privacy.erased_identifier in share row exclusive mode;
create temp table erase_contact (contact_id bigint primary key) on commit drop;
insert into erase_contact select unnest(cast(:contact_ids as bigint[]));
create temp table erase_record (record_id bigint primary key) on commit drop;
insert into erase_record
select rc.record_id from ingest.record_contact as rc join erase_contact using (contact_id);
create temp table erase_value (kind core.identifier_kind, value text, primary key (kind, value)) on commit drop;
insert into erase_value
select i.kind, i.value from core.identifier as i join erase_contact using (contact_id)
union
select k.kind, k.value from ingest.record_identifier as k join erase_record using (record_id)
union
select cast(r.kind as core.identifier_kind), r.value
from unnest(cast(:kinds as text[]), cast(:vals as text[])) as r (kind, value);
-- Records of the person that were loaded but not resolved yet (still queued), by any of
-- those values, and whatever else they carry.
insert into erase_record
select distinct k.record_id
from ingest.record_pending as p
join ingest.record_identifier as k using (record_id)
join erase_value as v on v.kind = k.kind and v.value = k.value
on conflict do nothing;
insert into erase_value
select k.kind, k.value from ingest.record_identifier as k join erase_record using (record_id)
on conflict do nothing;
insert into privacy.erasure (requested_by, reason, contact_ids, erased_rows)
values (:requested_by, :reason, cast(:contact_ids as bigint[]), '{}')
returning erasure_id;

-- name: block_identifiers
-- The hashes that keep the person out of later loads (ingest.sql quarantine_erased).
with added as (
    insert into privacy.erased_identifier (kind, value_sha256, erasure_id)
    select kind, sha256(convert_to(value, 'UTF8')), :erasure_id from erase_value
    on conflict (kind, value_sha256) do nothing
    returning 1
)
select count(*) from added;

-- name: skip_open_messages
-- Messages not handed over yet are skipped now (the send-time check would skip them too);
-- every message of the person forgets its address.
with changed as (
    update campaign.message as m
    set status = case when m.status in ('pending', 'failed_soft') then 'skipped' else m.status end,
        reason = case when m.status in ('pending', 'failed_soft') then 'erased on request' else m.reason end,
        next_attempt_at = case when m.status in ('pending', 'failed_soft') then null else m.next_attempt_at end,
        address = null,
        updated_at = now()
    from erase_contact as e
    where m.contact_id = e.contact_id and m.status <> 'sending'
    returning 1
)
select count(*) from changed;

-- name: scrub_message_events
-- Responses keep their type and time for the reports, not the browser or provider detail.
with changed as (
    update campaign.message_event as v
    set user_agent = null, detail = '{}'::jsonb
    from erase_contact as e
    where v.contact_id = e.contact_id and (v.user_agent is not null or v.detail <> '{}'::jsonb)
    returning 1
)
select count(*) from changed;

-- name: scrub_proof_sends
with changed as (
    update campaign.proof_send as p
    set address = null
    from erase_contact as e
    where p.contact_id = e.contact_id and p.address is not null
    returning 1
)
select count(*) from changed;

-- name: replace_address_suppressions
-- Suppressions by one of the person's addresses (in clear) go; one suppression of the
-- contact on every channel replaces them, so nothing can be sent to the stub.
with removed as (
    delete from campaign.suppression as s
    using erase_value as v
    where s.address is not null
      and ((s.address_kind = 'email' and v.kind = 'email' and s.address = v.value)
           or (s.address_kind = 'phone' and v.kind = 'phone' and s.address = v.value)
           or (s.address_kind = 'push_token' and v.kind = 'push_token' and s.address = v.value))
    returning 1
),

added as (
    insert into campaign.suppression (contact_id, channel, reason, source)
    select e.contact_id, null, 'erasure', 'erasure ' || :erasure_id
    from erase_contact as e
    where not exists (
        select 1 from campaign.suppression as s where s.contact_id = e.contact_id and s.reason = 'erasure'
    )
    returning 1
)
select (select count(*) from removed) as removed, (select count(*) from added) as added;

-- name: delete_identifiers
with removed as (
    delete from core.identifier as i using erase_contact as e where i.contact_id = e.contact_id returning 1
)
select count(*) from removed;

-- name: delete_consents
with removed as (
    delete from core.consent as k using erase_contact as e where k.contact_id = e.contact_id returning 1
)
select count(*) from removed;

-- name: delete_inquiries
with removed as (
    delete from core.inquiry as q using erase_contact as e where q.contact_id = e.contact_id returning 1
)
select count(*) from removed;

-- name: scrub_activities
-- Activities stay, stripped to what the reports count (type, time, amount, product, outlet):
-- their attributes go, and the source's reference (a booking or order number) is replaced.
with changed as (
    update core.activity as a
    set attributes = '{}'::jsonb, source_ref = 'erased:' || a.activity_id
    from erase_contact as e
    where a.contact_id = e.contact_id
    returning 1
)
select count(*) from changed;

-- name: delete_source_records
-- The person's source records, with their resolution state and queue entries.
with queued as (
    delete from ingest.record_pending as p using erase_record as e where p.record_id = e.record_id
),

resolved as (
    delete from ingest.record_contact as c using erase_record as e where c.record_id = e.record_id
),

removed as (
    delete from ingest.record as r using erase_record as e where r.record_id = e.record_id returning 1
)
select count(*) from removed;

-- name: delete_quarantined_rows
-- Rejected rows that name one of the person's identifiers (six characters or more, so that a
-- short value never matches someone else's row); the housekeeping retention removes the rest.
with removed as (
    delete from ingest.quarantine as q
    where exists (
        select 1
        from erase_value as v
        where length(v.value) >= 6
          and (strpos(lower(q.raw_line), lower(v.value)) > 0 or strpos(lower(q.record::text), lower(v.value)) > 0)
    )
    returning 1
)
select count(*) from removed;

-- name: erase_contacts
-- The contacts become stubs: status 'erased', no name, birth date, address or language. The
-- ids stay, so frozen audiences, messages and reports keep their counts.
with changed as (
    update core.contact as c
    set status = 'erased', merged_into_contact_id = null, location_id = null, salutation = null,
        first_name = null, last_name = null, birth_date = null, email = null, phone_e164 = null,
        preferred_language = null, updated_at = now()
    from erase_contact as e
    where c.contact_id = e.contact_id
    returning 1
)
select count(*) from changed;

-- name: erase_lone_accounts
-- An account whose every contact is erased loses its name and its addresses; a household
-- with other members keeps them (they are theirs too).
with lone as (
    select a.account_id
    from core.account as a
    where a.account_id in (select c.account_id from core.contact as c join erase_contact using (contact_id))
      and not exists (
          select 1 from core.contact as c where c.account_id = a.account_id and c.status <> 'erased'
      )
),

addresses as (
    delete from core.location as l using lone where l.account_id = lone.account_id returning 1
),

named as (
    update core.account as a set name = null, updated_at = now() from lone where a.account_id = lone.account_id
)
select count(*) from addresses;

-- name: finish_erasure
update privacy.erasure set erased_rows = cast(:erased_rows as jsonb) where erasure_id = :erasure_id;

-- name: erasures
-- The log, newest first.
select erasure_id, requested_at, requested_by, reason, contact_ids, erased_rows
from privacy.erasure
order by erasure_id desc
limit :limit;

-- name: person_data
-- Everything held about the contacts :contact_ids (a request for access, GDPR Art. 15), as
-- one JSON document: rows as stored, newest history last. Suppressions by address are those
-- of the contacts' emails and phones.
with person as (
    select unnest(cast(:contact_ids as bigint[])) as contact_id
),

accounts as (
    select distinct c.account_id from core.contact as c join person using (contact_id)
)

select jsonb_build_object(
    'contacts', (select coalesce(jsonb_agg(to_jsonb(c) order by c.contact_id), '[]')
                 from core.contact as c join person using (contact_id)),
    'accounts', (select coalesce(jsonb_agg(to_jsonb(a) order by a.account_id), '[]')
                 from core.account as a join accounts using (account_id)),
    'locations', (select coalesce(jsonb_agg(to_jsonb(l) order by l.location_id), '[]')
                  from core.location as l join accounts using (account_id)),
    'identifiers', (select coalesce(jsonb_agg(to_jsonb(i) order by i.kind, i.value), '[]')
                    from core.identifier as i join person using (contact_id)),
    'consents', (select coalesce(jsonb_agg(to_jsonb(k) order by k.recorded_at, k.consent_id), '[]')
                 from core.consent as k join person using (contact_id)),
    'inquiries', (select coalesce(jsonb_agg(to_jsonb(q) order by q.opened_at, q.inquiry_id), '[]')
                  from core.inquiry as q join person using (contact_id)),
    'activities', (select coalesce(jsonb_agg(to_jsonb(a) order by a.occurred_at, a.activity_id), '[]')
                   from core.activity as a join person using (contact_id)),
    'source_records', (select coalesce(jsonb_agg(jsonb_strip_nulls(to_jsonb(r)) order by r.record_id), '[]')
                       from ingest.record as r
                       join ingest.record_contact as rc using (record_id)
                       join person on person.contact_id = rc.contact_id),
    'messages', (select coalesce(jsonb_agg(jsonb_build_object(
                     'campaign_name', run.campaign_name, 'campaign_run_id', m.campaign_run_id,
                     'channel', m.channel, 'status', m.status, 'address', m.address,
                     'sent_at', m.sent_at, 'reason', m.reason) order by m.created_at, m.message_id), '[]')
                 from campaign.message as m
                 join person using (contact_id)
                 join campaign.campaign_run as run using (campaign_run_id)),
    'responses', (select coalesce(jsonb_agg(jsonb_build_object(
                      'campaign_run_id', v.campaign_run_id, 'channel', v.channel, 'event_type', v.event_type,
                      'occurred_at', v.occurred_at, 'url', v.url, 'user_agent', v.user_agent)
                      order by v.occurred_at, v.message_event_id), '[]')
                  from campaign.message_event as v join person using (contact_id)),
    'contact_history', (select coalesce(jsonb_agg(to_jsonb(h) order by h.sent_at, h.contact_history_id), '[]')
                        from campaign.contact_history as h join person using (contact_id)),
    'suppressions', (select coalesce(jsonb_agg(to_jsonb(s) order by s.created_at, s.suppression_id), '[]')
                     from campaign.suppression as s
                     where s.contact_id in (select contact_id from person)
                        or (s.address_kind in ('email', 'phone') and s.address in (
                                select i.value from core.identifier as i join person using (contact_id)
                                where i.kind in ('email', 'phone'))))
);
