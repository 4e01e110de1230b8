-- name: relaxed_commit
-- Opens and clicks are many and each is worth little: their transaction does not wait for the
-- WAL flush (a crash may lose the last fraction of a second of hits, never corrupt anything).
-- Unsubscribes and receipts keep the durable default.
set local synchronous_commit = off;

-- name: record_hit
-- An open or a click of the message with this key, as one event; nothing when no message has
-- the key (a proof send, or a message erased since). The request's own bot reason wins; else a
-- hit within :after_send_s seconds of the send is a mail server's scanner (no person reads that
-- fast). Returns the event's id and its message, or no row.
insert into campaign.message_event (
    message_id, campaign_run_id, contact_id, channel, event_type, occurred_at, url, is_bot,
    bot_reason, user_agent, source)
select m.message_id, m.campaign_run_id, m.contact_id, m.channel,
       cast(:event_type as campaign.message_event_type), now(), :url, hit.bot_reason is not null,
       hit.bot_reason, :user_agent, 'tracking'
from campaign.message m
cross join lateral (
    select coalesce(
        cast(:bot_reason as text),
        case when m.sent_at > now() - make_interval(secs => :after_send_s) then 'soon_after_send' end
    ) as bot_reason
) hit
where m.message_key = :message_key
returning message_event_id, message_id;

-- name: lock_message_clicks
-- Serialises the click bursts of one message (two clicks at the same moment in two requests
-- must see each other); other messages' clicks do not wait. 0x6B6D7408 names this lock space.
select pg_advisory_xact_lock(1802335240, cast(:message_id % 2147483647 as integer));

-- name: flag_click_burst
-- Clicks on two or more different links of one message within :burst_s seconds are a scanner
-- following every link: flags every click of that burst, the new one and those before it.
update campaign.message_event e
set is_bot = true, bot_reason = 'link_burst'
where e.message_id = :message_id
  and e.event_type = 'click'
  and not e.is_bot
  and e.occurred_at >= now() - make_interval(secs => :burst_s)
  and (select count(distinct x.url)
       from campaign.message_event x
       where x.message_id = :message_id
         and x.event_type = 'click'
         and x.occurred_at >= now() - make_interval(secs => :burst_s)) >= 2;

-- name: unsubscribe_page
-- What the unsubscribe page shows for a message: the person's language and whether this
-- message's link already unsubscribed them. No row: no message has the key.
select m.channel::text as channel, c.preferred_language,
       exists (select 1 from campaign.message_event e
               where e.message_id = m.message_id and e.event_type = 'unsubscribe') as unsubscribed
from campaign.message m
join core.contact c on c.contact_id = m.contact_id
where m.message_key = :message_key;

-- name: unsubscribe
-- Unsubscribes the person of a message from the message's channel, in one statement: the
-- 'unsubscribe' event (once per message: its provider_event_id is 'unsubscribe:<key>'), an
-- opt_out in the consent ledger for the channel and the run's purpose (source 'kms', source_ref
-- the same, so it is written once too), and a suppression of the contact on that channel unless
-- one exists. The event is the gate: a second POST inserts no event, hence nothing else.
-- Consent and suppression go to the person as they are now: the survivor when identity
-- resolution merged the message's contact since (merged_into_contact_id is always the final one).
-- Returns whether the message exists and whether this call recorded the unsubscribe.
with message as (
    select m.message_id, m.campaign_run_id, m.contact_id, m.channel,
           coalesce(c.merged_into_contact_id, m.contact_id) as person_id,
           coalesce(d.purpose, cmp.definition ->> 'purpose', :default_purpose) as purpose
    from campaign.message m
    join core.contact c on c.contact_id = m.contact_id
    join campaign.campaign_run r on r.campaign_run_id = m.campaign_run_id
    join campaign.campaign cmp on cmp.campaign_name = r.campaign_name
    left join campaign.delivery d on d.campaign_run_id = m.campaign_run_id
    where m.message_key = :message_key
),
event as (
    insert into campaign.message_event (
        message_id, campaign_run_id, contact_id, channel, event_type, occurred_at, user_agent,
        source, provider_event_id, detail)
    select message_id, campaign_run_id, contact_id, channel, 'unsubscribe', now(), :user_agent,
           'tracking', 'unsubscribe:' || :message_key, jsonb_build_object('one_click', :one_click)
    from message
    on conflict (source, provider_event_id) do nothing
    returning message_id
),
consent as (
    insert into core.consent (
        contact_id, channel, purpose, status, recorded_at, source_system, source_ref, evidence)
    select m.person_id, m.channel, m.purpose, 'opt_out', now(), 'kms', 'unsubscribe:' || :message_key,
           jsonb_build_object('message_id', m.message_id, 'one_click', :one_click,
                              'user_agent', :user_agent)
    from message m
    join event e on e.message_id = m.message_id
    on conflict (source_system, source_ref) do nothing
    returning consent_id
),
suppression as (
    insert into campaign.suppression (contact_id, channel, reason, source)
    select m.person_id, m.channel, 'unsubscribe', 'kms:unsubscribe'
    from message m
    join event e on e.message_id = m.message_id
    where not exists (
        select 1 from campaign.suppression s
        where s.contact_id = m.person_id and s.channel = m.channel and s.reason = 'unsubscribe')
    returning suppression_id
)
select (select count(*) from message) > 0 as found,
       (select count(*) from event) > 0 as recorded,
       (select count(*) from consent) as consents,
       (select count(*) from suppression) as suppressions;

-- name: record_receipts
-- Stores a webhook's receipts (JSON array of objects with source, provider_event_id,
-- event_type, occurred_at, provider_message_id, message_key, address, detail). Each finds its
-- message by message_key, else by the provider's message id on the receipt's channel; one we
-- cannot find is kept with message_id null. A receipt already stored (same source and
-- provider_event_id) is skipped, and only newly stored hard bounces and complaints suppress
-- their address (the message's address, else the receipt's), so a repeated webhook is a no-op.
with receipt as (
    select distinct on (r.source, r.provider_event_id) r.*
    from jsonb_to_recordset(cast(:receipts as jsonb)) as r(
        source text, provider_event_id text, event_type text, occurred_at timestamptz,
        provider_message_id text, message_key text, address text, detail jsonb)
    order by r.source, r.provider_event_id
),
matched as (
    select r.*, m.message_id, m.campaign_run_id, m.contact_id, m.channel, m.address as message_address
    from receipt r
    left join lateral (
        select m.message_id, m.campaign_run_id, m.contact_id, m.channel, m.address
        from campaign.message m
        where m.message_key = r.message_key
           or (m.provider_message_id = r.provider_message_id
               and m.channel = cast(r.source as core.channel))
        order by m.message_key = r.message_key desc
        limit 1
    ) m on true
),
inserted as (
    insert into campaign.message_event (
        message_id, campaign_run_id, contact_id, channel, event_type, occurred_at, source,
        provider_event_id, detail)
    select message_id, campaign_run_id, contact_id, cast(source as core.channel),
           cast(event_type as campaign.message_event_type), coalesce(occurred_at, now()), source,
           provider_event_id,
           detail || jsonb_strip_nulls(jsonb_build_object(
               'provider_message_id', provider_message_id, 'message_key', message_key))
    from matched
    on conflict (source, provider_event_id) do nothing
    returning source, provider_event_id
),
to_suppress as (
    select distinct
           cast(case x.source when 'email' then 'email' when 'sms' then 'phone' else 'push_token' end
                as campaign.address_kind) as address_kind,
           case when x.source = 'email' then lower(btrim(coalesce(x.message_address, x.address)))
                else btrim(coalesce(x.message_address, x.address)) end as address,
           cast(x.source as core.channel) as channel,
           cast(case x.event_type when 'complaint' then 'complaint' else 'hard_bounce' end
                as campaign.suppression_reason) as reason
    from matched x
    join inserted i on i.source = x.source and i.provider_event_id = x.provider_event_id
    where x.event_type in ('bounce_hard', 'complaint')
),
suppressed as (
    insert into campaign.suppression (address_kind, address, channel, reason, source)
    select t.address_kind, t.address, t.channel, t.reason, 'kms:webhook'
    from to_suppress t
    where t.address <> ''
      and not exists (
          select 1 from campaign.suppression s
          where s.address_kind = t.address_kind and s.address = t.address and s.reason = t.reason)
    returning suppression_id
)
select (select count(*) from receipt) as received,
       (select count(*) from inserted) as stored,
       (select count(*) from matched m join inserted i
            on i.source = m.source and i.provider_event_id = m.provider_event_id
        where m.message_id is not null) as matched,
       (select count(*) from suppressed) as suppressed;

-- name: receipts_for
-- Every kind of event stored for each of these messages (tracking hits included: a tracking
-- token exists only in a message the provider delivered somewhere). The outbox reconciles
-- 'ambiguous' messages with it.
select message_id, array_agg(distinct event_type::text order by event_type::text) as event_types
from campaign.message_event
where message_id = any(cast(:message_ids as bigint[]))
group by message_id;
