-- name: register_file
-- Records a received file or API batch in the ledger and returns its row. The same
-- content of the same feed is one row: a redelivery returns the existing entry.
insert into ingest.file (feed, channel, name, remote_path, size_bytes, content_sha256)
values (:feed, :channel, :name, :remote_path, :size_bytes, :content_sha256)
on conflict (feed, content_sha256) do update set feed = excluded.feed
returning ingest_file_id, status, (xmax = 0) as is_new;

-- name: clear_staging
-- Removes what an earlier, interrupted attempt left for this file.
delete from ingest.stage_record where ingest_file_id = :file_id;
delete from ingest.stage_rejected where ingest_file_id = :file_id;
delete from ingest.quarantine where ingest_file_id = :file_id;

-- name: previous_load
-- Rows received by the newest merged file of the feed before this one: the reference
-- of the shrink check for snapshots and of the row-count expectation.
select rows_received
from ingest.file
where feed = :feed and status = 'merged' and ingest_file_id <> :file_id
order by finished_at desc, ingest_file_id desc
limit 1;

-- name: unknown_references
-- The source systems and activity types of a staged file that the core tables do not
-- know, as "source system 'x'" / "activity type 'y'", sorted. ingest.record has no
-- foreign keys for them (migration 0006): this one set-based check per file replaces a
-- key lookup per row, and a file naming an unknown one is quarantined whole.
with used as (
    select distinct source_system, activity_type
    from ingest.stage_record
    where ingest_file_id = :file_id
)

select 'source system ' || quote_literal(u.source_system) as reference
from (select distinct source_system from used) as u
where not exists (select from core.source_system as s where s.source_system = u.source_system)
union all
select 'activity type ' || quote_literal(u.activity_type)
from (select distinct activity_type from used where activity_type is not null) as u
where not exists (select from core.activity_type as a where a.activity_type = u.activity_type)
order by 1;

-- name: merge_records
-- Upserts the file's staged records into ingest.record by natural key and returns how
-- many rows were inserted or changed. Unchanged rows are skipped by the IS DISTINCT
-- FROM guard, so a redelivered or corrected file costs little and only what really
-- changed goes back to identity resolution: every inserted or changed record's id joins
-- its work queue ingest.record_pending, in this same statement (migration 0004).
-- The loader first runs this statement without the marked upsert clause, as a plain
-- INSERT (a new export's keys are all new, and a plain insert costs ~25 % less than
-- ON CONFLICT's speculative insertion); when a key exists it rolls that back and runs it
-- whole (ADR 0007).
with merged as (
    insert into ingest.record as r (
    source_system,
    record_kind,
    source_key,
    line_number,
    salutation,
    first_name,
    last_name,
    birth_date,
    email,
    phone_e164,
    language,
    company_name,
    account_type,
    street,
    postal_code,
    city,
    country_code,
    address_valid_from,
    crm_contact_id,
    crm_account_id,
    source_customer_id,
    booking_ref,
    order_ref,
    loyalty_card,
    cookie_id,
    push_token,
    activity_type,
    occurred_at,
    ended_at,
    amount_cents,
    currency,
    quantity,
    product_sku,
    product_name,
    outlet,
    attributes,
    consent_channel,
    consent_purpose,
    consent_status,
    double_opt_in_at,
    inquiry_topic,
    inquiry_body,
    feed,
    ingest_file_id
    )
    select
    source_system,
    record_kind,
    source_key,
    line_number,
    salutation,
    first_name,
    last_name,
    birth_date,
    email,
    phone_e164,
    language,
    company_name,
    account_type,
    street,
    postal_code,
    city,
    country_code,
    address_valid_from,
    crm_contact_id,
    crm_account_id,
    source_customer_id,
    booking_ref,
    order_ref,
    loyalty_card,
    cookie_id,
    push_token,
    activity_type,
    occurred_at,
    ended_at,
    amount_cents,
    currency,
    quantity,
    product_sku,
    product_name,
    outlet,
    attributes,
    consent_channel,
    consent_purpose,
    consent_status,
    double_opt_in_at,
    inquiry_topic,
    inquiry_body,
    feed,
    ingest_file_id
    from ingest.stage_record
    where ingest_file_id = :file_id
    order by source_system, source_key
    -- upsert clause: begin
    on conflict (source_system, source_key) do update set
    record_kind = excluded.record_kind,
    line_number = excluded.line_number,
    salutation = excluded.salutation,
    first_name = excluded.first_name,
    last_name = excluded.last_name,
    birth_date = excluded.birth_date,
    email = excluded.email,
    phone_e164 = excluded.phone_e164,
    language = excluded.language,
    company_name = excluded.company_name,
    account_type = excluded.account_type,
    street = excluded.street,
    postal_code = excluded.postal_code,
    city = excluded.city,
    country_code = excluded.country_code,
    address_valid_from = excluded.address_valid_from,
    crm_contact_id = excluded.crm_contact_id,
    crm_account_id = excluded.crm_account_id,
    source_customer_id = excluded.source_customer_id,
    booking_ref = excluded.booking_ref,
    order_ref = excluded.order_ref,
    loyalty_card = excluded.loyalty_card,
    cookie_id = excluded.cookie_id,
    push_token = excluded.push_token,
    activity_type = excluded.activity_type,
    occurred_at = excluded.occurred_at,
    ended_at = excluded.ended_at,
    amount_cents = excluded.amount_cents,
    currency = excluded.currency,
    quantity = excluded.quantity,
    product_sku = excluded.product_sku,
    product_name = excluded.product_name,
    outlet = excluded.outlet,
    attributes = excluded.attributes,
    consent_channel = excluded.consent_channel,
    consent_purpose = excluded.consent_purpose,
    consent_status = excluded.consent_status,
    double_opt_in_at = excluded.double_opt_in_at,
    inquiry_topic = excluded.inquiry_topic,
    inquiry_body = excluded.inquiry_body,
    feed = excluded.feed,
    ingest_file_id = excluded.ingest_file_id,
    changed_at = now()
    where (r.record_kind, r.salutation, r.first_name, r.last_name, r.birth_date, r.email, r.phone_e164, r.language, r.company_name, r.account_type, r.street, r.postal_code, r.city, r.country_code, r.address_valid_from, r.crm_contact_id, r.crm_account_id, r.source_customer_id, r.booking_ref, r.order_ref, r.loyalty_card, r.cookie_id, r.push_token, r.activity_type, r.occurred_at, r.ended_at, r.amount_cents, r.currency, r.quantity, r.product_sku, r.product_name, r.outlet, r.attributes, r.consent_channel, r.consent_purpose, r.consent_status, r.double_opt_in_at, r.inquiry_topic, r.inquiry_body)
        is distinct from (excluded.record_kind, excluded.salutation, excluded.first_name, excluded.last_name, excluded.birth_date, excluded.email, excluded.phone_e164, excluded.language, excluded.company_name, excluded.account_type, excluded.street, excluded.postal_code, excluded.city, excluded.country_code, excluded.address_valid_from, excluded.crm_contact_id, excluded.crm_account_id, excluded.source_customer_id, excluded.booking_ref, excluded.order_ref, excluded.loyalty_card, excluded.cookie_id, excluded.push_token, excluded.activity_type, excluded.occurred_at, excluded.ended_at, excluded.amount_cents, excluded.currency, excluded.quantity, excluded.product_sku, excluded.product_name, excluded.outlet, excluded.attributes, excluded.consent_channel, excluded.consent_purpose, excluded.consent_status, excluded.double_opt_in_at, excluded.inquiry_topic, excluded.inquiry_body)
    -- upsert clause: end
    returning r.record_id
),

queued as (
    insert into ingest.record_pending (record_id)
    select record_id from merged
    on conflict do nothing
)

select count(*) from merged;

-- name: merge_products
-- Upserts a product feed's staged rows into the catalogue by SKU (the name, the category
-- from attributes, the price in cents with its currency) and returns how many products
-- were inserted and how many changed. Unchanged products are skipped by the IS DISTINCT
-- FROM guard, so an unchanged catalogue costs a read. A SKU missing from a later snapshot
-- stays: activities point to it, and the shrink check guards against a cut file.
with merged as (
    insert into core.product as p (sku, name, category, price_cents, currency)
    select product_sku, product_name, attributes ->> 'category', amount_cents, currency
    from ingest.stage_record
    where ingest_file_id = :file_id
    order by product_sku
    on conflict (sku) do update set
    name = excluded.name,
    category = excluded.category,
    price_cents = excluded.price_cents,
    currency = excluded.currency
    where (p.name, p.category, p.price_cents, p.currency)
        is distinct from (excluded.name, excluded.category, excluded.price_cents, excluded.currency)
    returning (xmax = 0) as inserted
)

select
    count(*) filter (where inserted) as inserted,
    count(*) filter (where not inserted) as changed
from merged;

-- name: link_new_products
-- Activities that identity resolution wrote before their product was in the catalogue
-- keep the SKU in attributes (identity.sql, id_activity); once a product feed adds the
-- SKU, they point to it. Runs only when the feed inserted products; returns nothing.
update core.activity as a
set product_id = p.product_id,
    attributes = a.attributes - 'product_sku' - 'product_name'
from core.product as p
where a.product_id is null
  and a.attributes ? 'product_sku'
  and p.sku = a.attributes ->> 'product_sku'
  and p.sku in (select product_sku from ingest.stage_record where ingest_file_id = :file_id);

-- name: unknown_product_skus
-- Product SKUs of a staged file that the catalogue does not know: such rows load (the
-- booking happened; the catalogue may arrive later, see link_new_products) and are
-- counted in the gate's report. Returns the number of rows and up to ten SKUs.
select
    coalesce(sum(s.rows), 0)::bigint as rows,
    coalesce((array_agg(s.product_sku order by s.product_sku))[1:10], '{}') as skus
from (
    select product_sku, count(*) as rows
    from ingest.stage_record
    where ingest_file_id = :file_id and product_sku is not null
    group by product_sku
) as s
where not exists (select from core.product as p where p.sku = s.product_sku);

-- name: quarantine_erased
-- Staged records that carry an identifier of a person erased on request
-- (privacy.erased_identifier, sql/privacy.sql) leave staging for the quarantine without their
-- content: the reason names the erasure, line number only. Costs nothing while no erasure
-- exists (the uncorrelated EXISTS is checked once). The kinds are those of the view
-- ingest.record_identifier; tests/test_privacy.py checks every kind of core.identifier_kind.
-- Returns how many rows were moved. The SHARE lock, held until the merge commits, keeps an
-- erasure from starting in between (it takes SHARE ROW EXCLUSIVE, sql/privacy.sql); loaders
-- do not wait for each other.
lock table privacy.erased_identifier in share mode;
with erased as (
    select s.line_number, min(e.erasure_id) as erasure_id
    from ingest.stage_record as s
    cross join lateral (
        values
            ('email'::core.identifier_kind, s.email),
            ('phone', s.phone_e164),
            ('loyalty_card', s.loyalty_card),
            ('booking_ref', s.booking_ref),
            ('crm_id', s.crm_contact_id),
            ('source_customer_id', s.source_customer_id),
            ('order_ref', s.order_ref),
            ('cookie_id', s.cookie_id),
            ('push_token', s.push_token)
    ) as k (kind, value)
    join privacy.erased_identifier as e
        on e.kind = k.kind and e.value_sha256 = sha256(convert_to(k.value, 'UTF8'))
    where s.ingest_file_id = :file_id
      and k.value is not null
      and exists (select from privacy.erased_identifier)
    group by s.line_number
),

moved as (
    insert into ingest.quarantine (ingest_file_id, line_number, reasons)
    select :file_id, line_number, array['belongs to a person erased on request (privacy.erasure ' || erasure_id || ')']
    from erased
),

removed as (
    delete from ingest.stage_record as s
    using erased
    where s.ingest_file_id = :file_id and s.line_number = erased.line_number
    returning 1
)

select count(*) from removed;

-- name: quarantine_rejected
-- Moves the file's rejected rows into the quarantine, with every reason.
insert into ingest.quarantine (ingest_file_id, line_number, record, raw_line, reasons)
select ingest_file_id, line_number, record, raw_line, reasons
from ingest.stage_rejected
where ingest_file_id = :file_id;

-- name: quarantine_file
-- A file-level rejection: one quarantine row without a line number.
insert into ingest.quarantine (ingest_file_id, line_number, reasons)
values (:file_id, null, array[:reason]);

-- name: finish_file
-- Closes the ledger entry with its outcome and counts.
update ingest.file
set status = cast(:status as ingest.file_status),
    rows_received = :rows_received,
    rows_loaded = :rows_loaded,
    rows_quarantined = :rows_quarantined,
    quality = cast(:quality as jsonb),
    error = :error,
    finished_at = now()
where ingest_file_id = :file_id;

-- name: drop_staging
-- Frees the staging rows once the file is merged or quarantined.
delete from ingest.stage_record where ingest_file_id = :file_id;
delete from ingest.stage_rejected where ingest_file_id = :file_id;

-- name: lock_file
-- Waits until no other loader works on this file; held by the loader's session, so a
-- killed worker releases it with its connection.
select pg_advisory_lock(:file_id);

-- name: unlock_file
select pg_advisory_unlock(:file_id);

-- name: file_outcome
-- The ledger entry of a file, for reporting a file that was already done.
select status, rows_received, rows_loaded, rows_quarantined, error
from ingest.file
where ingest_file_id = :file_id;

-- name: forget_quarantine
-- Removes the quarantine rows of a file before a whole-file rejection replaces them.
delete from ingest.quarantine where ingest_file_id = :file_id;

-- name: listing_state
-- The stable_size listing state of a feed, or nothing before its first listing.
select state from ingest.sftp_listing where feed = :feed;

-- name: save_listing_state
insert into ingest.sftp_listing (feed, state, updated_at)
values (:feed, cast(:state as jsonb), now())
on conflict (feed) do update set state = excluded.state, updated_at = excluded.updated_at;


-- name: files_finished_since
-- The ledger entries closed since a moment (a DAG run's start), for the run's summary.
select feed, name, status, rows_loaded, rows_quarantined, error
from ingest.file
where finished_at >= :since
order by finished_at;

-- name: records_changed_since
-- How many source records were inserted or changed since a moment: whether identity
-- resolution has anything to do.
select count(*) from ingest.record where changed_at >= :since;
