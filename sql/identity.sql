-- Identity resolution: ingest.record rows become the single customer view.
-- campaign_lib.identity.resolve runs these in file order, on one connection that holds
-- the resolution lock, in two transactions: (1) scope, linking (union-find in Python
-- between `read_scope` and `copy_assignment`), accounts, contacts and merges; (2) locations,
-- then identifiers, activities, consents and inquiries, split by contact over two
-- connections (two cores, disjoint row locks), and the records' contacts and their removal
-- from the work queue (ingest.record_pending) on the first connection, which commits last.
-- A batch as large as the view itself runs (2) on one connection in bulk mode
-- (bulk_drop_secondary, docs/adr/0006-identity-bulk-build.md). Temp tables live as long as
-- the session and are dropped at the end (`drop_temp`).

-- name: lock_resolution
-- Serialises resolution runs (a retry racing a slow run) for as long as the session holds
-- it; returns nothing. Released by unlock_resolution, or when the connection closes.
select pg_advisory_lock(7103360218465370369);

-- name: unlock_resolution
select pg_advisory_unlock(7103360218465370369);

-- name: bulk_session_settings
-- Memory for one sort or hash (per plan node and connection) of a bulk run: sorting a
-- million scope rows for read_scope, or hashing the identifiers of a million records,
-- spills to disk at the server's default. Not for incremental runs, whose joins should stay
-- index lookups rather than hashes of whole tables. Undone by drop_temp.
set work_mem = '256MB';

-- name: drop_temp
-- The run's temp tables and settings, gone before the connection returns to the pool.
discard temp;
reset work_mem;

-- name: create_scope
-- The records and existing contacts this run re-resolves. changed_at is remembered so a
-- record changed by ingestion while we work stays queued (see mark_records).
create temp table id_scope_record (
    record_id  bigint primary key,
    changed_at timestamptz not null,
    is_new     boolean not null
);
create temp table id_scope_contact (contact_id bigint primary key);

-- name: analyze_queue
-- Fresh statistics of the work queue before it is read: after a large batch the planner
-- still believes in its old size (1.18M rows at 100k guests while 1,177 were queued) and
-- hashes all of ingest.record instead of looking the queued records up (0.56 s instead of
-- a few ms at 100k guests, ten times that at 1M). The queue is narrow, so this samples
-- little; it takes no lock that ingestion's inserts wait for.
analyze ingest.record_pending;

-- name: scope_unresolved
-- Every record that is new or changed since the last run (the work queue that ingestion
-- fills, ingest.record_pending); the row count is the batch.
insert into id_scope_record (record_id, changed_at, is_new)
select r.record_id, r.changed_at, true
from ingest.record_pending as p
join ingest.record as r using (record_id);

-- name: scope_touched_contacts
-- Existing contacts the batch touches: the contact a changed record had, every contact
-- owning an identifier a batch record carries, and contacts with the batch's birth date
-- and postcode (fuzzy candidates). Index lookups only: core.identifier (kind, value).
-- Contacts of the name rules follow in scope_name_candidates.
insert into id_scope_contact (contact_id)
select c.contact_id
from id_scope_record as s
join ingest.record_contact as c using (record_id)
where s.is_new
union
select i.contact_id
from id_scope_record as s
join ingest.record_identifier as k using (record_id)
join core.identifier as i on i.kind = k.kind and i.value = k.value
where s.is_new
union
select c.contact_id
from (
    select distinct r.birth_date, r.postal_code
    from id_scope_record as s
    join ingest.record as r using (record_id)
    where s.is_new and r.birth_date is not null and r.postal_code is not null
) as b
join core.contact as c on c.birth_date = b.birth_date
join core.location as l on l.location_id = c.location_id and l.postal_code = b.postal_code
where c.status <> 'merged'
on conflict do nothing;

-- name: scope_batch_names
-- The distinct names of the batch, analysed so that scope_name_candidates hash-joins
-- core.contact once instead of looping over it per batch record.
create temp table id_batch_name as
select distinct
    lower(r.first_name) as first_name,
    lower(r.last_name) as last_name,
    r.birth_date,
    upper(replace(r.postal_code, ' ', '')) as postal_code,
    coalesce(r.email, r.phone_e164, r.loyalty_card, r.booking_ref, r.crm_contact_id,
             r.source_customer_id, r.cookie_id) is null as name_only
from id_scope_record as s
join ingest.record as r using (record_id)
where s.is_new and r.first_name is not null and r.last_name is not null;
analyze id_batch_name;

-- name: scope_name_candidates
-- Contacts a name rule could join to the batch: the contact's surviving name is a batch
-- record's name (either order, compared lower-cased; a transliterated spelling is found by
-- a full rebuild only) and it has the same birth date (name and birth date), the same
-- postcode (name and postcode), or the batch record carries only a name (in house, unique
-- name), or the contact is known by nothing but a name and order references (a name-only
-- ticket that a later stay or customer record can claim).
insert into id_scope_contact (contact_id)
select distinct m.contact_id
from id_batch_name as n
join (
    select contact_id, lower(first_name) as first_name, lower(last_name) as last_name, birth_date, location_id
    from core.contact
    where status <> 'merged' and first_name is not null and last_name is not null
    union all
    select contact_id, lower(last_name), lower(first_name), birth_date, location_id
    from core.contact
    where status <> 'merged' and first_name is not null and last_name is not null
) as m on m.first_name = n.first_name and m.last_name = n.last_name
left join core.location as l on l.location_id = m.location_id
where n.name_only
   or m.birth_date = n.birth_date
   or upper(replace(l.postal_code, ' ', '')) = n.postal_code
   or not exists (
       select 1 from core.identifier as i where i.contact_id = m.contact_id and i.kind <> 'order_ref'
   )
on conflict do nothing;

-- name: scope_households
-- Widens the touched contacts to their whole accounts: household links (shared mailbox,
-- same address) can only be re-decided with every member in view.
insert into id_scope_contact (contact_id)
select c.contact_id
from core.contact as c
where c.status <> 'merged'
  and c.account_id in (
      select k.account_id from core.contact as k join id_scope_contact using (contact_id)
  )
on conflict do nothing;

-- name: scope_contact_records
-- Every record of a touched contact joins the scope, so each contact is rebuilt from all
-- of its evidence (uses record_contact_contact_idx).
insert into id_scope_record (record_id, changed_at, is_new)
select r.record_id, r.changed_at, false
from ingest.record_contact as c
join id_scope_contact using (contact_id)
join ingest.record as r using (record_id)
on conflict do nothing;

-- name: scope_crm_accounts
-- Records sharing a CRM account id with the scope: the CRM account and address rows (which
-- belong to no contact) and the other members' records, whose contacts join the scope.
-- Looked up in record_crm_account_idx (migration 0012); an initial build hashes instead.
with crm as (
    select distinct r.crm_account_id
    from id_scope_record as s
    join ingest.record as r using (record_id)
    where r.crm_account_id is not null
),

found as (
    select r.record_id, r.changed_at, c.contact_id
    from ingest.record as r
    join crm using (crm_account_id)
    left join ingest.record_contact as c using (record_id)
),

added as (
    insert into id_scope_record (record_id, changed_at, is_new)
    select record_id, changed_at, false from found
    on conflict do nothing
    returning record_id
)

insert into id_scope_contact (contact_id)
select distinct contact_id from found where contact_id is not null
on conflict do nothing;

-- name: scope_counts
-- The size of this run: batch records, records in scope, existing contacts in scope.
select
    count(*) filter (where is_new) as batch_records,
    count(*) as scope_records,
    (select count(*) from id_scope_contact) as scope_contacts
from id_scope_record;

-- name: scope_groups
-- Records that carry nothing but strong identifiers (a page view's cookie id, a receipt's
-- loyalty card, a ticket's order reference): no name, birth date, address, email, phone,
-- booking reference or CRM account, not a PMS row, not a company. Those of one source
-- system with the same strong identifiers and the same previous contact are linked by
-- rule 1 and read by no other rule (the name rules, the in-house days and the households
-- need what they lack), so linking reads one of each group, its lowest record id, with
-- the group's size as its weight (read_scope), and the others take its contact and
-- account (read_scope_members). In the resort's data 41 % of records are such, in about
-- 145k groups per 482k records. id_scope_member holds the members that are not their
-- group's representative.
create temp table id_scope_member as
select g.record_id, g.representative
from (
    -- A window, not a join of the records with their groups: no join order to get wrong
    -- (a nested loop over a misestimated join took minutes at 20k guests).
    select
        r.record_id,
        min(r.record_id) over (
            partition by
                r.source_system, r.loyalty_card, r.crm_contact_id, r.source_customer_id,
                r.order_ref, r.cookie_id, c.contact_id
        ) as representative
    from id_scope_record as s
    join ingest.record as r using (record_id)
    left join ingest.record_contact as c using (record_id)
    where r.first_name is null and r.last_name is null and r.birth_date is null
      and r.postal_code is null and r.street is null and r.email is null
      and r.phone_e164 is null and r.booking_ref is null and r.crm_account_id is null
      and r.account_type is null and r.source_system <> 'hotel_pms'
      and num_nonnulls(r.loyalty_card, r.crm_contact_id, r.source_customer_id, r.order_ref, r.cookie_id) > 0
) as g
where g.record_id <> g.representative;
analyze id_scope_member;

-- name: read_scope_members
-- The grouped records linking does not read, each with its group's representative
-- (scope_groups), as "record_id,representative" lines.
copy (select record_id, representative from id_scope_member) to stdout with (format csv);

-- name: read_scope
-- COPY out of the records in scope, the columns linking needs and nothing else, one row
-- per group of scope_groups (weight: the records it stands for; 1 when ungrouped). main_guest:
-- ingestion flags the PMS main guest in attributes.guest_role; without the flag, the PMS
-- row that carries the reservation's amount is the main guest's (companions show 0,00).
-- occurred_on, ended_on: the days (resort local time) the record happened and ended, for
-- the in-house rule (a name-only ticket and the hotel guest staying that day).
copy (
    select
        r.record_id,
        r.source_system,
        c.contact_id,
        r.first_name,
        r.last_name,
        r.birth_date,
        r.postal_code,
        r.street,
        r.email,
        r.phone_e164,
        r.loyalty_card,
        r.booking_ref,
        r.crm_contact_id,
        r.crm_account_id,
        r.source_customer_id,
        r.order_ref,
        r.cookie_id,
        r.source_system = 'hotel_pms'
        and (
            coalesce(r.attributes ->> 'guest_role', '') in ('H', 'main', 'main_guest')
            or coalesce(r.amount_cents, 0) > 0
        ) as main_guest,
        coalesce(r.account_type = 'company', false) as company_account,
        (r.occurred_at at time zone 'Europe/Berlin')::date as occurred_on,
        (r.ended_at at time zone 'Europe/Berlin')::date as ended_on,
        1 + coalesce(w.members, 0) as weight
    from id_scope_record as s
    join ingest.record as r using (record_id)
    left join ingest.record_contact as c using (record_id)
    left join (
        select representative, count(*) as members from id_scope_member group by representative
    ) as w on w.representative = s.record_id
    where not exists (select from id_scope_member as m where m.record_id = s.record_id)
    order by r.record_id
) to stdout with (format csv);

-- name: scope_contacts
-- The existing contacts in scope with their account and status: the candidates that new
-- components claim (survivors) or merge.
select c.contact_id, c.account_id, c.status::text as status
from core.contact as c
join id_scope_contact using (contact_id);

-- name: allocate_contact_ids
-- Reserves :n contact ids from the identity's own sequence and returns the first, so
-- Python can write final ids in one COPY instead of inserting row by row to learn them.
-- nextval and setval are not one atomic step: safe because only resolution (under its
-- lock) creates contacts; anyone else's insert would fail on the primary key, not corrupt.
select setval(
    pg_get_serial_sequence('core.contact', 'contact_id'),
    nextval(pg_get_serial_sequence('core.contact', 'contact_id')) + :n - 1
) - :n + 1 as first_id;

-- name: allocate_account_ids
-- The same for :n account ids.
select setval(
    pg_get_serial_sequence('core.account', 'account_id'),
    nextval(pg_get_serial_sequence('core.account', 'account_id')) + :n - 1
) - :n + 1 as first_id;

-- name: create_result
-- What linking decided: per record its contact and account (null: no person), per contact
-- its account and status, per account its type, and who merges into whom.
-- id_assign.part: which of the two connections of transaction 2 writes the record's history;
-- a column of its own (not an expression in the upserts) so that the planner knows its
-- share from the statistics.
create temp table id_assign (
    record_id  bigint primary key,
    contact_id bigint,
    account_id bigint,
    part       smallint generated always as ((contact_id % 2)::smallint) stored
);
create temp table id_contact (
    contact_id bigint primary key,
    account_id bigint not null,
    status     core.contact_status not null,
    is_new     boolean not null
);
create temp table id_contact_merge (
    loser    bigint primary key,
    survivor bigint not null
);
create temp table id_account (
    account_id   bigint primary key,
    account_type core.account_type not null,
    is_new       boolean not null
);
create temp table id_account_merge (
    loser    bigint primary key,
    survivor bigint not null
);
-- The activity of every assigned record that has one, as core.activity stores it (used by
-- upsert_activities and bulk_upsert_activities). A product is linked when its SKU is in
-- core.product, else SKU and name stay in attributes.
create temp view id_activity as
select
    a.part,
    a.contact_id,
    r.activity_type,
    r.source_system,
    r.source_key as source_ref,
    r.occurred_at,
    r.ended_at,
    r.amount_cents,
    r.currency,
    coalesce(r.quantity, 1) as quantity,
    p.product_id,
    r.outlet,
    case
        when p.product_id is null and r.product_sku is not null
            then r.attributes || jsonb_strip_nulls(
                jsonb_build_object('product_sku', r.product_sku, 'product_name', r.product_name)
            )
        else r.attributes
    end as attributes,
    r.ingest_file_id
from id_assign as a
join ingest.record as r using (record_id)
left join core.product as p on p.sku = r.product_sku
where a.contact_id is not null and r.activity_type is not null;

-- name: copy_assignment
copy id_assign (record_id, contact_id, account_id) from stdin with (format csv);

-- name: copy_contacts
copy id_contact (contact_id, account_id, status, is_new) from stdin with (format csv);

-- name: copy_contact_merges
copy id_contact_merge (loser, survivor) from stdin with (format csv);

-- name: copy_accounts
copy id_account (account_id, account_type, is_new) from stdin with (format csv);

-- name: copy_account_merges
copy id_account_merge (loser, survivor) from stdin with (format csv);

-- name: analyze_result
-- The temp tables have no statistics otherwise, and the planner would guess 1,000 rows.
analyze id_assign;
analyze id_contact;
analyze id_account;

-- name: insert_accounts
-- New accounts with their pre-allocated ids; existing ones get their (re-decided) type and
-- are un-merged if a household came back to them. Returns how many were inserted.
with inserted as (
    insert into core.account (account_id, account_type)
    overriding system value
    select account_id, account_type from id_account where is_new
    returning 1
),

updated as (
    update core.account as t
    set account_type = i.account_type, merged_into_account_id = null, updated_at = now()
    from id_account as i
    where i.account_id = t.account_id
      and not i.is_new
      and (t.account_type, t.merged_into_account_id) is distinct from (i.account_type, null::bigint)
    returning 1
)

select (select count(*) from inserted) as inserted, (select count(*) from updated) as updated;

-- name: detach_locations
-- Locations of the accounts in scope are rebuilt from their records; first the contacts
-- let go of them (contact.location_id references location).
with rebuilt as (
    select account_id from id_account
    union
    select loser from id_account_merge
)

update core.contact as c
set location_id = null
from core.location as l
where l.location_id = c.location_id and l.account_id in (select account_id from rebuilt);

-- name: delete_locations
with rebuilt as (
    select account_id from id_account
    union
    select loser from id_account_merge
)

delete from core.location
where account_id in (select account_id from rebuilt);

-- name: contact_values
-- Survivorship, one value per attribute and contact: the value of the most trusted source
-- (core.source_system.trust_rank), among those the most recent (occurred_at, else when the
-- record last changed), then the highest record id. First and last name come from the same
-- record, so a transposed pair is never mixed with a correct one.
create temp table id_contact_value as
select
    a.contact_id,
    (array_agg(r.salutation order by s.trust_rank desc, coalesce(r.occurred_at, r.changed_at) desc, r.record_id desc)
        filter (where r.salutation is not null))[1] as salutation,
    (array_agg(r.first_name order by s.trust_rank desc, coalesce(r.occurred_at, r.changed_at) desc, r.record_id desc)
        filter (where r.first_name is not null and r.last_name is not null))[1] as first_name,
    (array_agg(r.last_name order by s.trust_rank desc, coalesce(r.occurred_at, r.changed_at) desc, r.record_id desc)
        filter (where r.first_name is not null and r.last_name is not null))[1] as last_name,
    (array_agg(r.birth_date order by s.trust_rank desc, coalesce(r.occurred_at, r.changed_at) desc, r.record_id desc)
        filter (where r.birth_date is not null))[1] as birth_date,
    (array_agg(r.email order by s.trust_rank desc, coalesce(r.occurred_at, r.changed_at) desc, r.record_id desc)
        filter (where r.email is not null))[1] as email,
    (array_agg(r.phone_e164 order by s.trust_rank desc, coalesce(r.occurred_at, r.changed_at) desc, r.record_id desc)
        filter (where r.phone_e164 is not null))[1] as phone_e164,
    (array_agg(r.language order by s.trust_rank desc, coalesce(r.occurred_at, r.changed_at) desc, r.record_id desc)
        filter (where r.language is not null))[1] as preferred_language
from id_assign as a
join ingest.record as r using (record_id)
join core.source_system as s using (source_system)
where a.contact_id is not null
group by a.contact_id;

-- name: insert_contacts
-- New contacts with pre-allocated ids and their surviving values; returns the count.
with inserted as (
    insert into core.contact (
        contact_id, account_id, status, salutation, first_name, last_name, birth_date,
        email, phone_e164, preferred_language
    )
    overriding system value
    select
        c.contact_id, c.account_id, c.status, v.salutation, v.first_name, v.last_name,
        v.birth_date, v.email, v.phone_e164, v.preferred_language
    from id_contact as c
    left join id_contact_value as v using (contact_id)
    where c.is_new
    returning 1
)

select count(*) from inserted;

-- name: update_contacts
-- Existing contacts in scope take the re-decided account, status and surviving values;
-- a contact whose values did not change is not rewritten. Returns the count rewritten.
with target as (
    select
        c.contact_id, c.account_id, c.status, v.salutation, v.first_name, v.last_name, v.birth_date,
        v.email, v.phone_e164, v.preferred_language
    from id_contact as c
    left join id_contact_value as v using (contact_id)
    where not c.is_new
),

updated as (
    update core.contact as t
    set
        account_id = n.account_id,
        status = n.status,
        merged_into_contact_id = null,
        salutation = n.salutation,
        first_name = n.first_name,
        last_name = n.last_name,
        birth_date = n.birth_date,
        email = n.email,
        phone_e164 = n.phone_e164,
        preferred_language = n.preferred_language,
        updated_at = now()
    from target as n
    where n.contact_id = t.contact_id
      and (
          t.account_id, t.status, t.merged_into_contact_id, t.salutation, t.first_name, t.last_name,
          t.birth_date, t.email, t.phone_e164, t.preferred_language
      ) is distinct from (
          n.account_id, n.status, null::bigint, n.salutation, n.first_name, n.last_name,
          n.birth_date, n.email, n.phone_e164, n.preferred_language
      )
    returning 1
)

select count(*) from updated;

-- name: merge_contacts
-- A contact that new evidence joined to another: status merged, pointing to its survivor,
-- in the survivor's account; contacts merged into it earlier now point to the survivor too.
update core.contact as t
set
    status = 'merged',
    merged_into_contact_id = m.survivor,
    account_id = s.account_id,
    location_id = null,
    updated_at = now()
from id_contact_merge as m
join id_contact as s on s.contact_id = m.survivor
where t.contact_id = m.loser;

update core.contact as t
set merged_into_contact_id = m.survivor, updated_at = now()
from id_contact_merge as m
where t.merged_into_contact_id = m.loser;

-- name: repoint_merged
-- Everything a merged contact had moves to its survivor, so nothing is lost even where the
-- upserts below would not see a row (an activity whose record is gone).
update core.activity as t set contact_id = m.survivor
from id_contact_merge as m where t.contact_id = m.loser;
update core.identifier as t set contact_id = m.survivor
from id_contact_merge as m where t.contact_id = m.loser;
update core.consent as t set contact_id = m.survivor
from id_contact_merge as m where t.contact_id = m.loser;
update core.inquiry as t set contact_id = m.survivor
from id_contact_merge as m where t.contact_id = m.loser;
update ingest.record_contact as t set contact_id = m.survivor, resolved_at = now()
from id_contact_merge as m where t.contact_id = m.loser;
-- A person's suppressions and the contacts they already received follow them too, so an
-- unsubscribe or the contact pressure still holds after a merge. Frozen audiences and their
-- messages keep the contact they were made for; reports follow merged_into_contact_id.
update campaign.suppression as t set contact_id = m.survivor
from id_contact_merge as m where t.contact_id = m.loser;
-- History is unique per run, contact and channel: two merged people who got the same run's
-- message count as the one person they are.
with moved as (
    delete from campaign.contact_history as t
    using id_contact_merge as m
    where t.contact_id = m.loser
    returning m.survivor, t.channel, t.campaign_name, t.campaign_run_id, t.sent_at
)
insert into campaign.contact_history (contact_id, channel, campaign_name, campaign_run_id, sent_at)
select distinct on (campaign_run_id, survivor, channel) survivor, channel, campaign_name, campaign_run_id, sent_at
from moved
order by campaign_run_id, survivor, channel, sent_at
on conflict (campaign_run_id, contact_id, channel) do nothing;

-- name: merge_accounts
-- An account whose members all moved to another household points to that account.
update core.account as t
set merged_into_account_id = m.survivor, updated_at = now()
from id_account_merge as m
where t.account_id = m.loser and t.merged_into_account_id is distinct from m.survivor;

update core.account as t
set merged_into_account_id = m.survivor, updated_at = now()
from id_account_merge as m
where t.merged_into_account_id = m.loser;

-- name: insert_locations
-- The addresses of every account in scope, one location per distinct address (postcode and
-- street reduced so that "Hauptstr. 12" equals "Hauptstraße 12"). Each address is valid from
-- when it was first seen (CRM valid_from, else the record's date) until the next address
-- was; the latest has no valid_to and is the current one. Values by survivorship.
insert into core.location (account_id, street, postal_code, city, country_code, valid_from, valid_to)
with address as (
    select
        a.account_id,
        r.street,
        r.postal_code,
        r.city,
        r.country_code,
        s.trust_rank,
        r.record_id,
        coalesce(r.occurred_at, r.changed_at) as seen_at,
        coalesce(r.address_valid_from, r.occurred_at::date, r.changed_at::date) as seen_on,
        upper(replace(r.postal_code, ' ', ''))
        || '|'
        || regexp_replace(
            replace(replace(lower(r.street), 'ß', 'ss'), 'strasse', 'str'), '[\W_]+', '', 'g'
        ) as address_key
    from id_assign as a
    join ingest.record as r using (record_id)
    join core.source_system as s using (source_system)
    where a.account_id is not null
      and r.country_code is not null
      and r.postal_code is not null
      and r.street is not null
),

per_address as (
    select
        account_id,
        address_key,
        min(seen_on) as valid_from,
        (array_agg(street order by trust_rank desc, seen_at desc, record_id desc))[1] as street,
        (array_agg(postal_code order by trust_rank desc, seen_at desc, record_id desc))[1] as postal_code,
        (array_agg(city order by trust_rank desc, seen_at desc, record_id desc))[1] as city,
        (array_agg(country_code order by trust_rank desc, seen_at desc, record_id desc))[1] as country_code
    from address
    group by account_id, address_key
),

final as (
    select
        *,
        lead(valid_from) over (partition by account_id order by valid_from, address_key) as valid_to
    from per_address
)

select account_id, street, postal_code, city, country_code, valid_from, valid_to
from final;

-- name: attach_locations
-- Every live contact in scope gets its account's current address.
update core.contact as c
set location_id = l.location_id
from id_contact as i, core.location as l
where i.contact_id = c.contact_id
  and l.account_id = c.account_id
  and l.valid_to is null
  and c.location_id is distinct from l.location_id;

-- name: name_accounts
-- An account is named by the CRM (account rows carry account_type and the account name in
-- company_name), else by the surviving last name of its most trusted member's records.
update core.account as t
set name = n.name, updated_at = now()
from (
    select
        a.account_id,
        coalesce(
            (array_agg(r.company_name order by s.trust_rank desc, coalesce(r.occurred_at, r.changed_at) desc)
                filter (where r.company_name is not null and r.account_type is not null))[1],
            (array_agg(r.last_name order by s.trust_rank desc, coalesce(r.occurred_at, r.changed_at) desc)
                filter (where r.last_name is not null))[1]
        ) as name
    from id_assign as a
    join ingest.record as r using (record_id)
    join core.source_system as s using (source_system)
    where a.account_id is not null
    group by a.account_id
) as n
where t.account_id = n.account_id and t.name is distinct from n.name;

-- name: identifier_values
-- Every identifier of the contacts in scope, from their records, normalised as stored
-- (source_customer_id is already '<source_system>:<id>'). A value shared by several
-- contacts (a family mailbox) is unique in core.identifier, so it goes to the contact with
-- the most records carrying it (then the lower id): the mailbox's main user.
create temp table id_identifier as
with seen as (
    select
        a.contact_id,
        k.kind,
        btrim(k.value) as value,
        k.source_system,
        k.seen_at
    from id_assign as a
    join ingest.record_identifier as k using (record_id)
    where a.contact_id is not null and btrim(k.value) <> ''
),

per_contact as (
    select
        kind,
        value,
        contact_id,
        count(*) as records,
        min(seen_at) as first_seen_at,
        max(seen_at) as last_seen_at,
        (array_agg(source_system order by seen_at, source_system))[1] as source_system
    from seen
    group by kind, value, contact_id
)

select distinct on (kind, value) kind, value, contact_id, source_system, first_seen_at, last_seen_at
from per_contact
order by kind, value, records desc, contact_id;

-- name: read_second_half_identifiers
-- COPY out of the identifiers owned by odd contact ids: the second connection's half.
copy (
    select kind, value, contact_id, source_system, first_seen_at, last_seen_at
    from id_identifier
    where contact_id % 2 = 1
) to stdout with (format csv);

-- name: create_identifiers
-- The second connection's table of its half of identifier_values.
create temp table id_identifier (
    kind           core.identifier_kind not null,
    value          text not null,
    contact_id     bigint not null,
    source_system  text not null,
    first_seen_at  timestamptz not null,
    last_seen_at   timestamptz not null
);

-- name: copy_identifiers
copy id_identifier (kind, value, contact_id, source_system, first_seen_at, last_seen_at)
from stdin with (format csv);

-- name: upsert_identifiers
-- The identifiers of this connection's part of the contacts (contact_id % :parts = :part);
-- returns how many were inserted or changed; unchanged ones are not rewritten.
with written as (
    insert into core.identifier (contact_id, kind, value, source_system, first_seen_at, last_seen_at)
    select contact_id, kind, value, source_system, first_seen_at, last_seen_at
    from id_identifier
    where contact_id % :parts = :part
    on conflict (kind, value) do update
    set
        contact_id = excluded.contact_id,
        source_system = excluded.source_system,
        first_seen_at = excluded.first_seen_at,
        last_seen_at = excluded.last_seen_at
    where (core.identifier.contact_id, core.identifier.source_system, core.identifier.first_seen_at,
           core.identifier.last_seen_at)
        is distinct from (excluded.contact_id, excluded.source_system, excluded.first_seen_at,
                          excluded.last_seen_at)
    returning 1
)

select count(*) from written;

-- name: delete_stale_identifiers
-- Identifiers of contacts in scope that none of their records carries any more (a
-- corrected record); returns nothing. Runs in transaction 1 against the whole new set, so
-- the two connections of transaction 2 never touch the same identifier row.
delete from core.identifier as i
using id_contact as c
where i.contact_id = c.contact_id
  and not exists (select 1 from id_identifier as n where n.kind = i.kind and n.value = i.value);

-- name: upsert_activities
-- One activity per record with an activity type and a contact (id_activity), keyed by
-- (source_system, source_key); an unchanged activity is skipped (IS DISTINCT FROM), a moved
-- one repointed. This connection's part of the contacts (id_assign.part = :part of :parts).
-- Returns how many activities were inserted or changed.
with written as (
    insert into core.activity (
        contact_id, activity_type, source_system, source_ref, occurred_at, ended_at, amount_cents,
        currency, quantity, product_id, outlet, attributes, ingest_file_id
    )
    select
        contact_id, activity_type, source_system, source_ref, occurred_at, ended_at, amount_cents,
        currency, quantity, product_id, outlet, attributes, ingest_file_id
    from id_activity
    where :parts = 1 or part = :part
    on conflict (source_system, source_ref) do update
    set
        contact_id = excluded.contact_id,
        activity_type = excluded.activity_type,
        occurred_at = excluded.occurred_at,
        ended_at = excluded.ended_at,
        amount_cents = excluded.amount_cents,
        currency = excluded.currency,
        quantity = excluded.quantity,
        product_id = excluded.product_id,
        outlet = excluded.outlet,
        attributes = excluded.attributes,
        ingest_file_id = excluded.ingest_file_id,
        loaded_at = now()
    where (core.activity.contact_id, core.activity.activity_type, core.activity.occurred_at,
           core.activity.ended_at, core.activity.amount_cents, core.activity.currency,
           core.activity.quantity, core.activity.product_id, core.activity.outlet,
           core.activity.attributes, core.activity.ingest_file_id)
        is distinct from (excluded.contact_id, excluded.activity_type, excluded.occurred_at,
                          excluded.ended_at, excluded.amount_cents, excluded.currency,
                          excluded.quantity, excluded.product_id, excluded.outlet,
                          excluded.attributes, excluded.ingest_file_id)
    returning 1
)

select count(*) from written;

-- name: bulk_upsert_activities
-- upsert_activities for bulk mode, where core.activity has lost its natural key
-- (bulk_drop_secondary with unique_tables) and is locked by this transaction: changed
-- activities are updated and new ones inserted by two hash joins on (source_system,
-- source_ref) instead of one unique-index probe per row. Both see the table as it was
-- before the statement, so every record is either updated or inserted, never both.
-- Returns how many activities were inserted or changed.
with updated as (
    update core.activity as t
    set
        contact_id = n.contact_id,
        activity_type = n.activity_type,
        occurred_at = n.occurred_at,
        ended_at = n.ended_at,
        amount_cents = n.amount_cents,
        currency = n.currency,
        quantity = n.quantity,
        product_id = n.product_id,
        outlet = n.outlet,
        attributes = n.attributes,
        ingest_file_id = n.ingest_file_id,
        loaded_at = now()
    from id_activity as n
    where t.source_system = n.source_system
      and t.source_ref = n.source_ref
      and (t.contact_id, t.activity_type, t.occurred_at, t.ended_at, t.amount_cents, t.currency,
           t.quantity, t.product_id, t.outlet, t.attributes, t.ingest_file_id)
        is distinct from (n.contact_id, n.activity_type, n.occurred_at, n.ended_at, n.amount_cents,
                          n.currency, n.quantity, n.product_id, n.outlet, n.attributes, n.ingest_file_id)
    returning 1
),

inserted as (
    insert into core.activity (
        contact_id, activity_type, source_system, source_ref, occurred_at, ended_at, amount_cents,
        currency, quantity, product_id, outlet, attributes, ingest_file_id
    )
    select
        n.contact_id, n.activity_type, n.source_system, n.source_ref, n.occurred_at, n.ended_at,
        n.amount_cents, n.currency, n.quantity, n.product_id, n.outlet, n.attributes, n.ingest_file_id
    from id_activity as n
    where not exists (
        select from core.activity as t where t.source_system = n.source_system and t.source_ref = n.source_ref
    )
    returning 1
)

select (select count(*) from updated) + (select count(*) from inserted);

-- name: upsert_consents
-- A record with consent fields is one ledger entry (source_ref = source_key), recorded when
-- the record happened. Ledger entries are not edited, except to follow their contact into
-- a merge or a correction of the same source record. double_opt_in_at is kept only where
-- the ledger's rule allows it (an opt-in confirmed after it was given). This connection's
-- part of the contacts; returns the count.
with written as (
    insert into core.consent (
        contact_id, channel, purpose, status, recorded_at, source_system, source_ref,
        double_opt_in_at, evidence
    )
    select
        a.contact_id,
        r.consent_channel,
        coalesce(r.consent_purpose, 'general'),
        r.consent_status,
        coalesce(r.occurred_at, r.received_at),
        r.source_system,
        r.source_key,
        case
            when r.consent_status = 'opt_in' and r.double_opt_in_at >= coalesce(r.occurred_at, r.received_at)
                then r.double_opt_in_at
        end,
        jsonb_build_object('record_kind', r.record_kind, 'ingest_file_id', r.ingest_file_id)
    from id_assign as a
    join ingest.record as r using (record_id)
    where (:parts = 1 or a.part = :part) and a.contact_id is not null and r.consent_channel is not null
    on conflict (source_system, source_ref) do update
    set
        contact_id = excluded.contact_id,
        channel = excluded.channel,
        purpose = excluded.purpose,
        status = excluded.status,
        recorded_at = excluded.recorded_at,
        double_opt_in_at = excluded.double_opt_in_at
    where (core.consent.contact_id, core.consent.channel, core.consent.purpose, core.consent.status,
           core.consent.recorded_at, core.consent.double_opt_in_at)
        is distinct from (excluded.contact_id, excluded.channel, excluded.purpose, excluded.status,
                          excluded.recorded_at, excluded.double_opt_in_at)
    returning 1
)

select count(*) from written;

-- name: upsert_inquiries
-- A record with an inquiry topic or body is one inquiry; a later answer or closing (done
-- elsewhere) is kept, only contact, topic and body follow the record. This connection's
-- part of the contacts; returns the count.
with written as (
    insert into core.inquiry (contact_id, source_system, source_ref, opened_at, topic, body)
    select
        a.contact_id,
        r.source_system,
        r.source_key,
        coalesce(r.occurred_at, r.received_at),
        r.inquiry_topic,
        r.inquiry_body
    from id_assign as a
    join ingest.record as r using (record_id)
    where (:parts = 1 or a.part = :part)
      and a.contact_id is not null
      and (r.inquiry_topic is not null or r.inquiry_body is not null)
    on conflict (source_system, source_ref) do update
    set contact_id = excluded.contact_id, topic = excluded.topic, body = excluded.body
    where (core.inquiry.contact_id, core.inquiry.topic, core.inquiry.body)
        is distinct from (excluded.contact_id, excluded.topic, excluded.body)
    returning 1
)

select count(*) from written;

-- name: mark_records
-- Every record in scope takes its contact in ingest.record_contact (a record of nobody has
-- no row there), and the batch leaves the work queue. Runs on the connection that commits
-- last, after every part of the history is written, so a record never leaves the queue
-- without its history. A record that ingestion changed after this run read it (changed_at
-- moved) stays queued for the next run: FOR SHARE waits for an ingest merge that is
-- changing one of these records right now and then re-reads its changed_at, as the
-- merge's `on conflict do nothing` on a still-queued record relies on the queue entry
-- surviving. Returns how many records left the queue.
with assigned as (
    insert into ingest.record_contact (record_id, contact_id)
    select record_id, contact_id from id_assign where contact_id is not null
    on conflict (record_id) do update
    set contact_id = excluded.contact_id, resolved_at = now()
    where ingest.record_contact.contact_id <> excluded.contact_id
),

nobody as (
    delete from ingest.record_contact as c
    using id_assign as a
    where a.record_id = c.record_id and a.contact_id is null
),

unchanged as (
    select r.record_id
    from id_scope_record as s
    join ingest.record as r using (record_id)
    where s.is_new and r.changed_at = s.changed_at
    for share of r
),

taken as (
    delete from ingest.record_pending as p
    using unchanged as u
    where p.record_id = u.record_id
    returning 1
)

select count(*) from taken;

-- name: resolved_records
-- About how many records have a contact (the planner's estimate, free): whether a batch is
-- as large as the view it goes into (bulk mode, see bulk_drop_secondary).
select greatest(reltuples, 0)::bigint from pg_class where oid = 'ingest.record_contact'::regclass;

-- name: bulk_drop_secondary
-- Bulk mode, for a batch as large as the view itself (an initial build, a rebuild after
-- reset_resolution): for the rest of this transaction the tables :tables lose their
-- secondary indexes, and :unique_tables also their unique constraints (not the primary
-- key), and bulk_restore_secondary builds them again, one sort per index instead of a
-- B-tree insert per row (docs/adr/0006-identity-bulk-build.md). A table that keeps its
-- unique constraints keeps its upserts' arbiters; one that loses them is written by a
-- bulk_* statement. Foreign keys stay: dropping one would lock its referenced table
-- (core.contact, ingest.file) against every reader until the end of the transaction.
-- The definitions are read from the catalog, so an index added by a later migration is
-- dropped and rebuilt the same way. The tables stay locked (ACCESS EXCLUSIVE) until the
-- transaction ends.
create temp table id_bulk_index as
select
    i.indrelid::regclass::text as table_name,
    'index' as kind,
    i.indexrelid::regclass::text as name,
    pg_get_indexdef(i.indexrelid) as definition
from pg_index as i
where i.indrelid = any(cast(cast(:tables as text[]) as regclass[])) and not i.indisunique
union all
select c.conrelid::regclass::text, 'constraint', c.conname::text, pg_get_constraintdef(c.oid)
from pg_constraint as c
where c.conrelid = any(cast(cast(:unique_tables as text[]) as regclass[])) and c.contype = 'u';

do $$
declare
    d record;
begin
    for d in select * from id_bulk_index loop
        if d.kind = 'constraint' then
            execute format('alter table %s drop constraint %I', d.table_name, d.name);
        else
            execute format('drop index %s', d.name);
        end if;
    end loop;
end
$$;

-- name: bulk_skip_key_checks
-- Bulk mode, where the role may (a superuser, or SET granted on the parameter): for the rest
-- of this transaction the foreign keys of the tables it writes are not checked row by row
-- (session_replication_role = replica skips their triggers; primary keys, unique and check
-- constraints still hold), and bulk_check_keys checks them set-based before the commit. A
-- foreign key check per row costs 4 to 7 µs, several times the insert (ADR 0006). Returns
-- whether the checks are skipped.
select
    case
        when current_setting('is_superuser') = 'on' or has_parameter_privilege('session_replication_role', 'SET')
            then set_config('session_replication_role', 'replica', true) = 'replica'
        else false
    end as skipped;

-- name: bulk_check_keys
-- The foreign keys of :tables, checked set-based for a transaction that skipped the row by
-- row checks (bulk_skip_key_checks), with the same effect: every referenced row is locked
-- FOR KEY SHARE until the commit (nobody deletes it or changes its key meanwhile), and a
-- row whose reference is missing fails the run with foreign_key_violation, naming the key.
-- The definitions come from the catalog, like bulk_drop_secondary's.
create temp table id_bulk_key as
select
    c.conrelid::regclass::text as table_name,
    c.confrelid::regclass::text as referenced,
    c.conname::text as name,
    (
        select string_agg(format('t.%I', a.attname), ', ' order by k.n)
        from unnest(c.conkey) with ordinality as k (attnum, n)
        join pg_attribute as a on a.attrelid = c.conrelid and a.attnum = k.attnum
    ) as columns,
    (
        select string_agg(format('r.%I', a.attname), ', ' order by k.n)
        from unnest(c.confkey) with ordinality as k (attnum, n)
        join pg_attribute as a on a.attrelid = c.confrelid and a.attnum = k.attnum
    ) as referenced_columns
from pg_constraint as c
where c.conrelid = any(cast(cast(:tables as text[]) as regclass[])) and c.contype = 'f';

do $$
declare
    k record;
    missing bigint;
begin
    for k in select * from id_bulk_key loop
        execute format(
            'select 1 from %s as r where (%s) in (select %s from %s as t) for key share of r',
            k.referenced, k.referenced_columns, k.columns, k.table_name
        );
        execute format(
            'select count(*) from %s as t where (%s) is not null '
            'and not exists (select from %s as r where (%s) = (%s))',
            k.table_name, k.columns, k.referenced, k.referenced_columns, k.columns
        ) into missing;
        if missing > 0 then
            raise foreign_key_violation
                using message = format('%s rows of %s violate %s', missing, k.table_name, k.name);
        end if;
    end loop;
end
$$;
drop table id_bulk_key;

-- name: bulk_restore_secondary
-- The indexes and unique constraints bulk_drop_secondary took away, each built again in
-- one pass, and fresh statistics for the selections that run next.
do $$
declare
    d record;
begin
    for d in select * from id_bulk_index loop
        if d.kind = 'constraint' then
            execute format('alter table %s add constraint %I %s', d.table_name, d.name, d.definition);
        else
            execute d.definition;
        end if;
    end loop;
    for d in select distinct table_name from id_bulk_index loop
        execute format('analyze %s', d.table_name);
    end loop;
end
$$;
drop table id_bulk_index;

-- name: evaluation_records
-- COPY out of every record with its contact, whether it carries anything that identifies
-- a person (an identifier other than the order reference, or a name), and whether its only
-- such value is a cookie id that no record carrying anything else ever carries (page views
-- under a cookie that never logged in or signed up). Records of either kind are excluded
-- from evaluation: nobody can link them.
copy (
    with known_cookie as (
        select distinct cookie_id
        from ingest.record
        where cookie_id is not null
          and coalesce(email, phone_e164, loyalty_card, booking_ref, crm_contact_id, source_customer_id,
                       first_name, last_name) is not null
    )

    select
        r.source_system,
        r.source_key,
        c.contact_id,
        (
            coalesce(r.email, r.phone_e164, r.loyalty_card, r.booking_ref, r.crm_contact_id,
                     r.source_customer_id, r.cookie_id, r.first_name, r.last_name) is not null
        ) as identifiable,
        (
            r.cookie_id is not null
            and coalesce(r.email, r.phone_e164, r.loyalty_card, r.booking_ref, r.crm_contact_id,
                         r.source_customer_id, r.first_name, r.last_name) is null
            and not exists (select 1 from known_cookie as k where k.cookie_id = r.cookie_id)
        ) as anonymous_cookie
    from ingest.record as r
    left join ingest.record_contact as c using (record_id)
) to stdout with (format csv);

-- name: reset_resolution
-- Forgets every resolution result so the next run resolves all records from scratch: the
-- records lose their contact and all go back into the work queue, and the core people
-- tables are emptied (contacts and accounts deleted rather than truncated, as the campaign
-- tables may reference them). For development and benchmarks; campaigns, selections and
-- reports are not touched.
truncate ingest.record_contact;
insert into ingest.record_pending (record_id)
select record_id from ingest.record
on conflict do nothing;
truncate core.consent, core.inquiry, core.activity, core.identifier;
delete from core.contact;
delete from core.location;
delete from core.account;
analyze core.contact, core.location, core.account, core.identifier;
