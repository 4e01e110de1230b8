-- A synthetic campaign run with a known truth, built set-based (generate_series), for the
-- reporting tests (a planted uplift, a zero effect) and bench/report.py (a million people).
-- campaign_lib.reporting.synthetic runs the blocks in order. Every random choice is
-- campaign.unit_hash of the contact and a purpose, salted with :seed, so the same seed
-- gives the same run on every server and plan (random() would depend on row order).

-- name: people
-- :people new contacts, one household each; returns the first new contact id.
with account as (
    insert into core.account (account_type)
    select 'household' from generate_series(1, :people)
    returning account_id
),
contact as (
    insert into core.contact (account_id, first_name, email)
    select account_id, 'Synthetic', 'synthetic' || account_id || '@example.test'
    from account
    returning contact_id
)
select min(contact_id) from contact;

-- name: campaign
insert into campaign.campaign (campaign_name, origin, owner, description, definition_version, definition)
values (:campaign_name, 'file', 'tests@example.test', 'A synthetic campaign with a planted uplift',
        '0000000000000000', cast(:definition as jsonb))
on conflict (campaign_name) do nothing;

-- name: product
insert into core.product (sku, name, category, price_cents, currency)
values (:sku, 'Synthetic offer', 'synthetic', :price_cents, 'EUR')
on conflict (sku) do nothing;

-- name: run
insert into campaign.campaign_run (
    campaign_name, dag_id, run_id, status, definition_version, selection_name, selection_version,
    as_of, audience_count, control_count, frozen_at)
values (:campaign_name, 'kms_campaign_' || :campaign_name, 'synthetic_' || :seed, 'frozen',
        '0000000000000000', 'synthetic', 'synthetic', :sent_at - interval '1 hour', 0, 0,
        :sent_at - interval '30 minutes')
returning campaign_run_id;

-- name: waterfall
insert into campaign.waterfall_step (campaign_run_id, position, step, count_in, removed, count_out, reason)
values (:run, 1, 'universe', :people * 3, 0, :people * 3, 'every contact'),
       (:run, 2, 'selection', :people * 3, :people * 2, :people, 'the synthetic selection'),
       (:run, 3, 'consent', :people, 0, :people, 'opted in for a channel');

-- name: audience
-- Everyone since :first_contact; control by share, channel 60 % email, 25 % SMS, 15 % push.
insert into campaign.audience (campaign_run_id, contact_id, account_id, channel, cell, selection_version)
select :run, c.contact_id, c.account_id,
       case when h.u < 0.60 then 'email' when h.u < 0.85 then 'sms' else 'push' end::core.channel,
       case when campaign.unit_hash(c.contact_id || ':control:' || :seed) < :control_share
            then 'control' else 'main' end,
       'synthetic'
from core.contact c
cross join lateral (select campaign.unit_hash(c.contact_id || ':channel:' || :seed) as u) h
where c.contact_id >= :first_contact;

-- name: counts
update campaign.campaign_run r
set audience_count = (select count(*) from campaign.audience a where a.campaign_run_id = r.campaign_run_id and a.cell <> 'control'),
    control_count = (select count(*) from campaign.audience a where a.campaign_run_id = r.campaign_run_id and a.cell = 'control')
where r.campaign_run_id = :run;

-- name: messages
-- One message per treated member: 97 % sent within the hour after :sent_at, 1 % hard
-- failures, 2 % skipped; SMS of one or two segments.
insert into campaign.message (
    message_key, campaign_run_id, contact_id, channel, cell, batch_no, status, attempts,
    segments, reason, sent_at)
select md5(:run || ':' || a.contact_id || ':' || a.channel), :run, a.contact_id, a.channel, a.cell,
       0, s.status::campaign.message_status, 1,
       case when a.channel = 'sms' then 1 + (h.u * 100)::int % 2 end,
       case when s.status <> 'sent' then 'synthetic' end,
       case when s.status = 'sent' then :sent_at + h.u * interval '1 hour' end
from campaign.audience a
cross join lateral (select campaign.unit_hash(a.contact_id || ':send:' || :seed) as u) h
cross join lateral (select case when h.u < 0.97 then 'sent' when h.u < 0.98 then 'failed_hard'
                                else 'skipped' end as status) s
where a.campaign_run_id = :run and a.cell <> 'control';

-- name: events
-- Responses to sent messages: email opens 30 % (a tenth of them bot hits too), clicks 8 %,
-- unsubscribes 0.5 %, hard bounces 1 %; SMS delivery receipts; push opens 10 %.
insert into campaign.message_event (
    message_id, campaign_run_id, contact_id, channel, event_type, occurred_at, url, is_bot,
    bot_reason, source)
select m.message_id, m.campaign_run_id, m.contact_id, m.channel, e.event_type::campaign.message_event_type,
       m.sent_at + e.after, case when e.event_type = 'click' then 'https://resort.example/offer' end,
       e.is_bot, case when e.is_bot then 'scanner' end,
       case when m.channel = 'sms' then 'sms' else 'tracking' end
from campaign.message m
cross join lateral (select campaign.unit_hash(m.contact_id || ':respond:' || :seed) as u) h
cross join lateral (
    values ('open', m.channel in ('email', 'push') and h.u < case when m.channel = 'email' then 0.30 else 0.10 end,
            false, interval '2 hours'),
           ('open', m.channel = 'email' and h.u < 0.03, true, interval '1 minute'),
           ('click', m.channel = 'email' and h.u < 0.08, false, interval '3 hours'),
           ('unsubscribe', m.channel = 'email' and h.u >= 0.995, false, interval '4 hours'),
           ('bounce_hard', m.channel = 'email' and h.u between 0.98 and 0.99, false, interval '1 minute'),
           ('delivered', m.channel = 'sms', false, interval '10 seconds')
) e(event_type, happens, is_bot, after)
where m.campaign_run_id = :run and m.status = 'sent' and e.happens;

-- name: conversions
-- The truth: a treated member buys the offer with probability :base_rate + :uplift, a
-- control member with :base_rate (intention to treat: sent or not), once, 1-3 tickets, on
-- a day inside the response window; plus purchases of other products that do not count.
insert into core.activity (
    contact_id, activity_type, source_system, source_ref, occurred_at, amount_cents, currency,
    quantity, product_id)
select a.contact_id, 'water_park_ticket', 'ticketing', 'synthetic:' || :run || ':' || a.contact_id || ':' || k.kind,
       :sent_at + interval '2 hours' + h.day * interval '1 day',
       :price_cents * h.quantity, 'EUR', h.quantity,
       case when k.kind = 'offer' then p.product_id end
from campaign.audience a
cross join (select product_id from core.product where sku = :sku) p
cross join lateral (
    select campaign.unit_hash(a.contact_id || ':buy:' || :seed) as u,
           campaign.unit_hash(a.contact_id || ':other:' || :seed) as other,
           floor(campaign.unit_hash(a.contact_id || ':day:' || :seed) * (:window_days - 1))::int as day,
           1 + floor(campaign.unit_hash(a.contact_id || ':qty:' || :seed) * 3)::int as quantity
) h
cross join lateral (
    values ('offer', h.u < :base_rate + case when a.cell = 'control' then 0 else :uplift end),
           ('other', h.other < 0.05)
) k(kind, happens)
where a.campaign_run_id = :run and k.happens;

-- name: analyze
analyze core.contact, core.activity, campaign.audience, campaign.message, campaign.message_event,
    campaign.contact_history;

-- name: earlier_campaign
-- A share (:earlier_share) of the audience got a message of another campaign a week
-- before, so attribution sees journeys of two campaigns.
insert into campaign.campaign (campaign_name, origin, definition_version, definition)
values (:campaign_name || '_earlier', 'file', '0000000000000000', '{}'::jsonb)
on conflict (campaign_name) do nothing;

-- name: earlier_history
insert into campaign.contact_history (contact_id, channel, campaign_name, campaign_run_id, sent_at)
select a.contact_id, 'email', :campaign_name || '_earlier', null, :sent_at - interval '7 days'
from campaign.audience a
where a.campaign_run_id = :run
  and campaign.unit_hash(a.contact_id || ':earlier:' || :seed) < :earlier_share;

-- name: background
-- :background_per_person other activities per person over the year before the run (page
-- views, bills, tickets of other products): what a conversion query must look past.
insert into core.activity (
    contact_id, activity_type, source_system, source_ref, occurred_at, amount_cents, currency)
select a.contact_id, t.activity_type, t.source_system,
       'background:' || :run || ':' || a.contact_id || ':' || n,
       :sent_at - campaign.unit_hash(a.contact_id || ':when:' || n || ':' || :seed) * interval '365 days',
       t.amount_cents, t.currency
from campaign.audience a
cross join generate_series(1, :background_per_person) n
cross join lateral (
    select case n % 3 when 0 then 'web_page_view' when 1 then 'restaurant_bill' else 'shop_purchase' end
               as activity_type,
           case n % 3 when 0 then 'website' when 1 then 'restaurant_pos' else 'shop_pos' end as source_system,
           case when n % 3 <> 0 then 1000 + n * 100 end as amount_cents,
           case when n % 3 <> 0 then 'EUR' end as currency
) t
where a.campaign_run_id = :run;
