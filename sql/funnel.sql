-- name: create_work_tables
-- The funnel's result per selected contact, private to the session. Created before the
-- read-only transaction the funnel runs in (CREATE is refused there; INSERT into a
-- temporary table is not) and kept until the snapshot is copied from it.
drop table if exists pg_temp.funnel_contact;
create temp table funnel_contact (
    contact_id bigint not null,
    account_id bigint not null,
    dropped_at smallint,
    channel    core.channel,
    cell       text,
    score      numeric
) on commit preserve rows;

-- name: drop_work_tables
-- The session's working tables (this file's and the selection's, campaign_lib.selection.materialize)
-- go once a run is frozen: a pooled connection would otherwise keep a million rows.
drop table if exists pg_temp.funnel_contact, pg_temp.selected_contact;

-- name: analyze_selected
-- Temporary tables have no statistics until analysed; without them the planner guesses a
-- few thousand rows and picks nested loops for a million.
analyze pg_temp.selected_contact;

-- name: universe
-- Step 1: every contact, and the active ones (merged, anonymous and erased contacts are
-- never addressed).
select count(*) as contacts, count(*) filter (where status = 'active') as active
from core.contact;

-- name: compute_funnel
-- Every selected contact with the step it dropped out at (null: in the audience), its
-- channel (first of the campaign's channels, in preference order, that has an address,
-- consent for the purpose, no suppression and room under the contact pressure), its cell
-- ('control' or an A/B cell) and score. Step numbers are funnel.STEPS' positions. Hashes
-- (campaign.unit_hash) make control, cells, hold-out and random caps the same on reruns.
insert into pg_temp.funnel_contact (contact_id, account_id, dropped_at, channel, cell, score)
-- A selection chooses active contacts only (campaign_lib.selection); no status filter here,
-- whose selectivity the planner would have to guess and could get wrong by orders of magnitude.
with selected as (
    select c.contact_id, c.account_id, c.email, c.phone_e164
    from pg_temp.selected_contact s
    join core.contact c on c.contact_id = s.contact_id
),
push_token as (
    select distinct i.contact_id, i.value
    from core.identifier i
    join selected s on s.contact_id = i.contact_id
    where i.kind = 'push_token'
),
-- The channels each selected contact consented to for the purpose; the latest entry wins
-- (core.current_consent's order). The ledger is narrowed to the selected contacts before
-- DISTINCT ON sorts it: the view would sort every contact's entries first.
latest_consent as (
    select distinct on (k.contact_id, k.channel) k.contact_id, k.channel, k.status
    from core.consent k
    join selected s on s.contact_id = k.contact_id
    where k.purpose = :purpose
      and k.channel = any (cast(:channels as core.channel[]))
    order by k.contact_id, k.channel, k.recorded_at desc, k.consent_id desc
),
consented as (
    select l.contact_id, array_agg(l.channel) as channels
    from latest_consent l
    where l.status = 'opt_in'
    group by l.contact_id
),
-- A suppression names a contact, or an address that leads to the contacts holding it.
suppressed as (
    select x.contact_id, x.channel
    from campaign.suppression x
    where x.contact_id is not null
    union all
    select s.contact_id, x.channel
    from selected s
    join campaign.suppression x on x.address_kind = 'email' and x.address = s.email
    union all
    select s.contact_id, x.channel
    from selected s
    join campaign.suppression x on x.address_kind = 'email_domain' and x.address = split_part(s.email, '@', 2)
    union all
    select s.contact_id, x.channel
    from selected s
    join campaign.suppression x on x.address_kind = 'phone' and x.address = s.phone_e164
    union all
    select p.contact_id, x.channel
    from push_token p
    join campaign.suppression x on x.address_kind = 'push_token' and x.address = p.value
),
suppression as (
    select contact_id,
           bool_or(channel is null) as all_channels,
           array_agg(channel) filter (where channel is not null) as channels
    from suppressed
    group by contact_id
),
sent as (
    select h.contact_id,
           count(*) filter (where h.channel = 'email') as email,
           count(*) filter (where h.channel = 'sms') as sms,
           count(*) filter (where h.channel = 'push') as push,
           count(*) as total
    from campaign.contact_history h
    join selected s on s.contact_id = h.contact_id
    where h.sent_at > cast(:as_of as timestamptz) - make_interval(days => :pressure_window_days)
      and h.sent_at <= :as_of
    group by h.contact_id
),
-- Per contact and channel: eligible (address and consent), suppressed, over the pressure.
channel_state as (
    select s.contact_id,
           s.email is not null and coalesce('email' = any (k.channels), false) as email_eligible,
           s.phone_e164 is not null and coalesce('sms' = any (k.channels), false) as sms_eligible,
           exists (select 1 from push_token p where p.contact_id = s.contact_id)
               and coalesce('push' = any (k.channels), false) as push_eligible,
           coalesce(x.all_channels or 'email' = any (x.channels), false) as email_suppressed,
           coalesce(x.all_channels or 'sms' = any (x.channels), false) as sms_suppressed,
           coalesce(x.all_channels or 'push' = any (x.channels), false) as push_suppressed,
           coalesce(n.email, 0) >= :max_per_channel as email_pressured,
           coalesce(n.sms, 0) >= :max_per_channel as sms_pressured,
           coalesce(n.push, 0) >= :max_per_channel as push_pressured,
           coalesce(n.total, 0) >= :max_total as total_pressured
    from selected s
    left join consented k on k.contact_id = s.contact_id
    left join suppression x on x.contact_id = s.contact_id
    left join sent n on n.contact_id = s.contact_id
),
-- The best (lowest) preference position a contact still has after steps 3, 4 and 5; consent
-- was read for the campaign's channels only, so an eligible channel is one of them.
per_contact as (
    select c.contact_id, c.total_pressured,
           least(case when email_eligible then p.email end,
                 case when sms_eligible then p.sms end,
                 case when push_eligible then p.push end) as eligible_at,
           least(case when email_eligible and not email_suppressed then p.email end,
                 case when sms_eligible and not sms_suppressed then p.sms end,
                 case when push_eligible and not push_suppressed then p.push end) as unsuppressed_at,
           least(case when email_eligible and not email_suppressed and not email_pressured then p.email end,
                 case when sms_eligible and not sms_suppressed and not sms_pressured then p.sms end,
                 case when push_eligible and not push_suppressed and not push_pressured then p.push end)
               as unpressured_at
    from channel_state c
    cross join (
        select array_position(cast(:channels as core.channel[]), 'email') as email,
               array_position(cast(:channels as core.channel[]), 'sms') as sms,
               array_position(cast(:channels as core.channel[]), 'push') as push
    ) p
),
score as (
    select a.contact_id, sum(a.amount_cents) / 100.0 as score
    from core.activity a
    join selected s on s.contact_id = a.contact_id
    where :with_score
      and a.occurred_at > cast(:as_of as timestamptz) - interval '365 days'
      and a.occurred_at <= :as_of
      and a.amount_cents is not null
    group by a.contact_id
),
bought as (
    select distinct a.contact_id
    from core.activity a
    join core.product p on p.product_id = a.product_id
    where p.sku = :offer_sku
      and (cast(:bought_within_days as integer) is null
           or a.occurred_at > cast(:as_of as timestamptz) - make_interval(days => :bought_within_days))
),
reachable as (
    select s.contact_id, s.account_id, coalesce(sc.score, 0) as score,
           (cast(:channels as core.channel[]))[p.unpressured_at] as channel,
           case
               when p.eligible_at is null then 3
               when p.unsuppressed_at is null then 4
               when p.unpressured_at is null or p.total_pressured then 5
           end as dropped_at
    from selected s
    join per_contact p on p.contact_id = s.contact_id
    left join score sc on sc.contact_id = s.contact_id
),
household as (
    select r.*,
           row_number() over (partition by r.account_id, r.dropped_at is null
                              order by r.score desc, r.contact_id) as household_rank
    from reachable r
),
grouped as (
    select h.contact_id, h.account_id, h.channel, h.score,
           case
               when h.dropped_at is not null then h.dropped_at
               when :one_per_household and h.household_rank > 1 then 6
               when b.contact_id is not null then 7
               when :holdout_share > 0
                    and campaign.unit_hash(h.contact_id || '\:kms-global-holdout') < :holdout_share then 8
           end as dropped_at
    from household h
    left join bought b on b.contact_id = h.contact_id
),
-- Hashes only for the people still in: the control group and cells split those.
assigned as (
    select g.*,
           case
               when g.dropped_at is not null then null
               when :control_share > 0
                    and campaign.unit_hash(g.contact_id || ':' || :campaign) < :control_share then 'control'
               when cardinality(cast(:cell_names as text[])) = 1 then (cast(:cell_names as text[]))[1]
               else (cast(:cell_names as text[]))[
                   width_bucket(campaign.unit_hash(g.contact_id || ':' || :campaign || '\:cell'),
                                cast(:cell_lower_bounds as double precision[]))]
           end as cell
    from grouped g
),
capped as (
    select a.*,
           row_number() over (partition by a.dropped_at is null, a.cell = 'control'
                              order by case when :cap_by_score then a.score end desc nulls last,
                                       case when cast(:cap_target as integer) is not null and a.dropped_at is null
                                            then campaign.unit_hash(:cap_seed || ':' || a.contact_id) end)
               as cap_rank
    from assigned a
)
select contact_id, account_id,
       case
           when dropped_at is not null then dropped_at
           when cast(:cap_target as integer) is not null
                and cap_rank > case when cell = 'control' then cast(:cap_control as integer)
                                     else cast(:cap_target as integer) end then 11
       end,
       channel,
       cell,
       case when :with_score then score end
from capped;

-- name: outcome
-- The funnel's result by step dropped at, cell and channel: the waterfall is built from it.
select dropped_at, cell, channel::text as channel, count(*) as contacts
from pg_temp.funnel_contact
group by dropped_at, cell, channel;
