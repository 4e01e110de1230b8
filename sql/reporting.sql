-- The reads of the campaign report (campaign_lib.reporting.responses). One report runs them
-- in one transaction: `collect_conversions` builds a temporary table of the run's
-- conversions once, the later statements read it. Everything is set-based over the run's
-- audience (a million rows must stay well under the report's 10 s budget).

-- name: run_facts
-- The run and its campaign's definition (costs, response window, offer).
select r.campaign_run_id, r.campaign_name, r.status::text as status, r.dry_run, r.as_of,
       r.frozen_at, r.created_at, r.audience_count, r.control_count, r.selection_name,
       c.definition, c.description, c.owner
from campaign.campaign_run r
join campaign.campaign c on c.campaign_name = r.campaign_name
where r.campaign_run_id = :campaign_run_id;

-- name: report_settings
-- The report's sorts and hashes (a million audience members) fit in memory instead of
-- spilling to disk; for this transaction only.
set local work_mem = '64MB';

-- name: collect_survivors
-- Audience members merged into another contact after the freeze (identity resolution moves
-- their activities and contact history to the survivor): each with the final survivor of
-- its merge chain, which may be several steps long. Few rows: the walk starts from the
-- merged contacts (a partial index) and probes the audience by its key.
create temporary table report_survivor on commit drop as
with recursive chain as (
    select c.contact_id as member_id, c.merged_into_contact_id as survivor_id, 1 as depth
    from core.contact c
    join campaign.audience a on a.campaign_run_id = :campaign_run_id and a.contact_id = c.contact_id
    where c.merged_into_contact_id is not null
    union all
    select ch.member_id, c.merged_into_contact_id, ch.depth + 1
    from chain ch
    join core.contact c on c.contact_id = ch.survivor_id
    where c.merged_into_contact_id is not null and ch.depth < 100
),
final as (
    select distinct on (member_id) member_id as contact_id, survivor_id as person_id
    from chain
    order by member_id, depth desc
)
select * from final;

-- name: collect_conversions
-- One row per conversion: an activity of an audience member (treated or control) inside
-- their response window. A treated member's window opens when their message was sent;
-- control members (who get none) and treated members whose message was never sent open
-- at the run's first send (:window_opens_at). A conversion is a purchase of the offered
-- product (:offer_product_id, found by its sku) when the campaign names one, else any
-- activity of a purchase type (:purchase_types, empty when there is an offer). Revenue is
-- the activity's amount, else the product's list price times the quantity.
-- The candidate activities are found first (index scans on product, or on type and time,
-- combined by a bitmap OR), then their people are looked up in the audience: the work
-- follows the purchases, not the million members. An activity of a survivor counts for
-- the audience members merged into it (report_survivor) as for the survivor itself.
create temporary table report_conversion on commit drop as
with candidate as (
    select act.activity_id, act.contact_id as person_id, act.occurred_at,
           coalesce(act.amount_cents, p.price_cents * act.quantity, 0) as revenue_cents
    from core.activity act
    left join core.product p on p.product_id = act.product_id
    where act.occurred_at >= cast(:window_opens_at as timestamptz)
      and act.occurred_at < cast(:window_closes_at as timestamptz)
      and (act.activity_type = any (cast(:purchase_types as text[]))
           or act.product_id = cast(:offer_product_id as bigint))
),
by_member as (
    select c.*, c.person_id as member_id from candidate c
    union all
    select c.*, s.contact_id from candidate c join pg_temp.report_survivor s on s.person_id = c.person_id
),
final as (
    select a.contact_id, c.person_id, a.cell = 'control' as is_control, a.channel::text as channel,
           c.activity_id, c.occurred_at, c.revenue_cents, w.window_start
    from by_member c
    join campaign.audience a on a.campaign_run_id = :campaign_run_id and a.contact_id = c.member_id
    left join campaign.message m
        on m.campaign_run_id = a.campaign_run_id and m.contact_id = a.contact_id
       and m.channel = a.channel and m.sent_at is not null
    cross join lateral (
        select coalesce(m.sent_at, cast(:window_opens_at as timestamptz)) as window_start
    ) w
    where c.occurred_at >= w.window_start
      and c.occurred_at < w.window_start + make_interval(days => :window_days)
)
select * from final;

-- name: analyze_conversions
-- The planner has no statistics on a fresh temporary table.
analyze pg_temp.report_conversion;

-- name: audience_groups
-- People per group (treated or control) and channel.
select cell = 'control' as is_control, channel::text as channel, count(*) as people
from campaign.audience
where campaign_run_id = :campaign_run_id
group by 1, 2;

-- name: conversion_groups
-- People who converted and their revenue, per group and channel.
select is_control, channel, count(distinct contact_id) as converters, sum(revenue_cents) as revenue_cents
from pg_temp.report_conversion
group by 1, 2;

-- name: buyer_revenue
-- Revenue per converting person, the non-zero values the bootstrap resamples.
select is_control, sum(revenue_cents) as revenue_cents
from pg_temp.report_conversion
group by contact_id, is_control;

-- name: revenue_by_day
-- Revenue per day after the first send, per group, for the cumulative chart.
select is_control,
       floor(extract(epoch from occurred_at - cast(:window_opens_at as timestamptz)) / 86400)::int as day,
       sum(revenue_cents) as revenue_cents
from pg_temp.report_conversion
group by 1, 2
order by 1, 2;

-- name: message_outcomes
-- Per channel: messages by delivery outcome, the billed units (SMS: segments; others:
-- messages; a message the provider may have taken, 'ambiguous', is billed too), and when
-- the first and last were sent (the response window follows them). One pass over the
-- run's messages.
select channel::text as channel, min(sent_at) as first_sent_at, max(sent_at) as last_sent_at,
       count(*) as messages,
       count(*) filter (where status = 'sent') as sent,
       count(*) filter (where status in ('failed_soft', 'failed_hard')) as failed,
       count(*) filter (where status = 'skipped') as skipped,
       count(*) filter (where status in ('pending', 'sending')) as pending,
       count(*) filter (where status = 'ambiguous') as ambiguous,
       coalesce(sum(case when status in ('sent', 'ambiguous') then
                    case when channel = 'sms' then coalesce(segments, 1) else 1 end end), 0)
           as billed_units
from campaign.message
where campaign_run_id = :campaign_run_id
group by channel
order by channel;

-- name: message_responses
-- Per channel: messages with each kind of response, once per message however often it
-- came, bot hits excluded (the event carries the message's run and channel, so messages
-- need not be read). A click counts as an open too (images blocked); `undelivered` are
-- sent messages that bounced or failed afterwards (delivered = sent - undelivered, so the
-- many delivery receipts are skipped).
with response as (
    select e.channel,
           bool_or(e.event_type in ('open', 'click')) as opened,
           bool_or(e.event_type = 'click') as clicked,
           bool_or(e.event_type = 'unsubscribe') as unsubscribed,
           bool_or(e.event_type in ('bounce_hard', 'bounce_soft', 'failed')) as undelivered,
           bool_or(e.event_type = 'bounce_hard') as bounced_hard,
           bool_or(e.event_type = 'bounce_soft') as bounced_soft,
           bool_or(e.event_type = 'complaint') as complained
    from campaign.message_event e
    where e.campaign_run_id = :campaign_run_id and not e.is_bot and e.message_id is not null
      and e.event_type <> 'delivered'
    group by e.message_id, e.channel
)
select channel::text as channel,
       count(*) filter (where opened) as opened,
       count(*) filter (where clicked) as clicked,
       count(*) filter (where unsubscribed) as unsubscribed,
       count(*) filter (where undelivered) as undelivered,
       count(*) filter (where bounced_hard) as bounced_hard,
       count(*) filter (where bounced_soft) as bounced_soft,
       count(*) filter (where complained) as complained
from response
group by channel;

-- name: conversion_journeys
-- Each treated conversion with the touches before it (messages of any campaign sent to
-- the person within :lookback_days before it, from campaign.contact_history), oldest
-- first. This run's touches are labelled with their channel, others `<campaign>/<channel>`.
select c.activity_id, c.revenue_cents,
       array_agg(case when h.campaign_run_id = :campaign_run_id then h.channel::text
                      else h.campaign_name || '/' || h.channel::text end
                 order by h.sent_at, h.contact_history_id) as labels,
       array_agg(extract(epoch from c.occurred_at - h.sent_at) / 86400.0
                 order by h.sent_at, h.contact_history_id) as days_before
from pg_temp.report_conversion c
join campaign.contact_history h
    on h.contact_id = c.person_id
   and h.sent_at <= c.occurred_at
   and h.sent_at > c.occurred_at - make_interval(days => :lookback_days)
where not c.is_control
group by c.activity_id, c.revenue_cents;

-- name: journey_paths
-- The paths of the people this run touched (from campaign.contact_history, where identity
-- keeps touches with the surviving contact): their touches from :lookback_days before the
-- first send to their first conversion, or to the window's end, counted per distinct path
-- and outcome: what the Markov model learns from. Most people got only this run's message;
-- they are counted without building arrays, only people with touches of other campaigns
-- get one (the CTE `other` is the expensive part only in proportion to them).
with converted as (
    select person_id, min(occurred_at) as first_at
    from pg_temp.report_conversion
    where not is_control
    group by person_id
),
own as (
    select h.contact_id, h.channel::text as label, h.sent_at, h.contact_history_id
    from campaign.contact_history h
    where h.campaign_run_id = :campaign_run_id
),
other as (
    select h.contact_id, h.campaign_name || '/' || h.channel::text as label, h.sent_at,
           h.contact_history_id
    from campaign.contact_history h
    where h.campaign_run_id is distinct from :campaign_run_id
      and h.sent_at > cast(:window_opens_at as timestamptz) - make_interval(days => :lookback_days)
      and h.sent_at < cast(:window_closes_at as timestamptz)
      and h.contact_id in (select contact_id from own)
),
single as (
    select array[o.label] as labels, cv.person_id is not null as is_converted
    from own o
    left join converted cv on cv.person_id = o.contact_id
    where not exists (select from other x where x.contact_id = o.contact_id)
),
multiple as (
    select array_agg(t.label order by t.sent_at, t.contact_history_id) as labels,
           bool_or(cv.person_id is not null) as is_converted
    from (
        select * from own o where exists (select from other x where x.contact_id = o.contact_id)
        union all
        select * from other
    ) t
    left join converted cv on cv.person_id = t.contact_id
    where t.sent_at < coalesce(cv.first_at, cast(:window_closes_at as timestamptz))
    group by t.contact_id
),
final as (
    select * from single
    union all
    select * from multiple
)
select labels, count(*) filter (where is_converted) as conversions,
       count(*) filter (where not is_converted) as non_conversions
from final
group by labels;

-- name: reported_runs
-- The campaign runs a report exists for: every run that froze an audience, newest first,
-- with what the index page shows when its report has not been rendered yet.
select r.campaign_run_id, r.campaign_name, r.status::text as status, r.created_at,
       r.audience_count, r.control_count,
       (c.definition ->> 'response_window_days')::int as response_window_days,
       -- When delivery started (campaign.delivery); without a delivery row (a run delivered
       -- by other means), the first sent message: coalesce reads it only then.
       coalesce((select d.started_at from campaign.delivery d where d.campaign_run_id = r.campaign_run_id),
                (select min(m.sent_at) from campaign.message m where m.campaign_run_id = r.campaign_run_id))
           as first_sent_at
from campaign.campaign_run r
join campaign.campaign c on c.campaign_name = r.campaign_name
where not r.dry_run and r.status in ('frozen', 'approved')
order by r.created_at desc, r.campaign_run_id desc;

-- name: offered_product
select product_id from core.product where sku = :sku;

-- name: last_audience
-- The size of the campaign's latest run (audience and control): what `kms campaign
-- validate` takes as the expected audience.
select audience_count, control_count
from campaign.campaign_run
where campaign_name = :campaign_name and audience_count is not null
order by created_at desc, campaign_run_id desc
limit 1;

-- name: latest_run
-- The newest run of a campaign that froze an audience (`kms report render --campaign`).
select campaign_run_id
from campaign.campaign_run
where campaign_name = :campaign_name and not dry_run and status in ('frozen', 'approved')
order by created_at desc, campaign_run_id desc
limit 1;
