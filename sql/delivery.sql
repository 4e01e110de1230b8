-- name: lock_run
-- The run to deliver, locked so that two materialisations of one run queue up behind each
-- other; the definition carries the consent purpose and the costs.
select r.campaign_run_id, r.campaign_name, r.status::text as status, r.dry_run, c.definition
from campaign.campaign_run r
join campaign.campaign c on c.campaign_name = r.campaign_name
where r.campaign_run_id = :campaign_run_id
for update of r;

-- name: find_delivery
select campaign_run_id, status::text as status, paused_reason, purpose, batch_size, messages,
       max_failures, failures, started_at, paused_at, finished_at
from campaign.delivery
where campaign_run_id = :campaign_run_id;

-- name: materialise_messages
-- One message per audience member outside the control group, in one statement. The key is
-- md5 of "run:contact:channel" (deterministic: a rerun computes the same keys, and the provider
-- sees the same idempotency key); batches are fixed slices of each channel's members in
-- contact order, so the same message always falls into the same mapped task.
insert into campaign.message (message_key, campaign_run_id, contact_id, channel, cell, batch_no)
select md5(a.campaign_run_id || ':' || a.contact_id || ':' || a.channel),
       a.campaign_run_id, a.contact_id, a.channel, a.cell,
       (row_number() over (partition by a.channel order by a.contact_id) - 1) / :batch_size
from campaign.audience a
where a.campaign_run_id = :campaign_run_id
  and a.cell <> 'control'
on conflict (campaign_run_id, contact_id, channel) do nothing;

-- name: open_delivery
-- The run's delivery row; the error budget is a share of its messages with a floor.
insert into campaign.delivery (campaign_run_id, purpose, batch_size, messages, max_failures)
select :campaign_run_id, :purpose, :batch_size, count(*),
       greatest(:min_failures, ceil(count(*) * :failure_share)::integer)
from campaign.message
where campaign_run_id = :campaign_run_id
on conflict (campaign_run_id) do nothing;

-- name: plan_batches
-- The batches that still have work, per channel: a rerun after everything was sent plans none.
select channel::text as channel, array_agg(distinct batch_no order by batch_no) as batches
from campaign.message
where campaign_run_id = :campaign_run_id
  and status in ('pending', 'failed_soft', 'sending')
group by channel
order by channel;

-- name: reap_expired_leases
-- A 'sending' message whose lease ran out belonged to a worker that stopped mid-send: the
-- provider may have it, so it becomes 'ambiguous' and is never claimed again (ADR 0010).
update campaign.message
set status = 'ambiguous', lease_owner = null, lease_expires_at = null, updated_at = now(),
    reason = 'lease of ' || lease_owner || ' expired while sending: the provider may have it'
where campaign_run_id = :campaign_run_id
  and status = 'sending'
  and lease_expires_at < now()
returning message_id;

-- name: claim_next
-- Claims up to :limit due messages of one batch and marks them 'sending' under this worker's
-- lease, or 'skipped' with the reason when the recipient is no longer eligible: the re-check
-- runs in the same statement as the claim, right before the hand-over, so an opt-out, a
-- suppression (contact, address or email domain; hard bounces are address suppressions), an
-- erasure or a merge that arrived after the selection wins. SKIP LOCKED lets two copies of a
-- task share a batch without waiting or taking the same message. Nothing is claimed unless
-- the run's delivery is 'delivering' (a paused run stops here).
with delivery as (
    select d.campaign_run_id, d.purpose
    from campaign.delivery d
    where d.campaign_run_id = :campaign_run_id and d.status = 'delivering'
),
claimed as (
    select m.message_id
    from campaign.message m
    join delivery d on d.campaign_run_id = m.campaign_run_id
    where m.campaign_run_id = :campaign_run_id
      and m.channel = cast(:channel as core.channel)
      and m.batch_no = :batch_no
      and (m.status = 'pending' or (m.status = 'failed_soft' and m.next_attempt_at <= now()))
    order by m.message_id
    limit :limit
    for update of m skip locked
),
-- Materialised: each recipient is checked once (inlined, every reference would repeat the subqueries).
target as materialized (
    select m.message_id, m.contact_id, m.channel, c.status as contact_status,
           c.salutation, c.first_name, c.last_name, c.email, c.phone_e164, c.preferred_language,
           case m.channel
               when 'email' then c.email
               when 'sms' then c.phone_e164
               when 'push' then (select i.value
                                 from core.identifier i
                                 where i.contact_id = m.contact_id and i.kind = 'push_token'
                                 order by i.last_seen_at desc, i.identifier_id desc
                                 limit 1)
           end as address,
           (select k.status
            from core.consent k
            cross join delivery d
            where k.contact_id = m.contact_id and k.channel = m.channel and k.purpose = d.purpose
            order by k.recorded_at desc, k.consent_id desc
            limit 1) as consent
    from claimed x
    join campaign.message m on m.message_id = x.message_id
    join core.contact c on c.contact_id = m.contact_id
),
checked as materialized (
    select t.*,
           case
               when t.contact_status <> 'active' then 'contact is ' || t.contact_status
               when t.address is null then 'no ' || t.channel || ' address'
               when t.consent is distinct from 'opt_in' then
                   'no consent: ' || coalesce(t.consent::text, 'none recorded') || ' for the purpose'
               else (select 'suppressed: ' || x.reason
                     from campaign.suppression x
                     where (x.channel is null or x.channel = t.channel)
                       and (x.contact_id = t.contact_id
                            or (x.address_kind = 'email' and x.address = t.email)
                            or (x.address_kind = 'email_domain' and x.address = split_part(t.email, '@', 2))
                            or (x.address_kind = 'phone' and x.address = t.phone_e164)
                            or (x.address_kind = 'push_token' and t.channel = 'push' and x.address = t.address))
                     order by x.suppression_id
                     limit 1)
           end as skip_reason
    from target t
)
update campaign.message m
set status = case when k.skip_reason is null then 'sending' else 'skipped' end::campaign.message_status,
    attempts = m.attempts + case when k.skip_reason is null then 1 else 0 end,
    lease_owner = case when k.skip_reason is null then cast(:owner as text) end,
    lease_expires_at = case when k.skip_reason is null
                            then now() + make_interval(secs => cast(:lease_seconds as double precision)) end,
    next_attempt_at = null,
    address = k.address,
    reason = coalesce(k.skip_reason, m.reason),
    updated_at = now()
from checked k
where m.message_id = k.message_id
returning m.message_id, m.message_key, m.contact_id, m.channel::text as channel, m.cell, m.status::text as status,
          m.attempts, k.address, k.salutation, k.first_name, k.last_name, k.email, k.phone_e164,
          k.preferred_language;

-- name: record_outcomes
-- The outcomes of a group of messages in one statement (and one transaction with the next
-- claim: one commit per chunk, not per message); the sent ones get their contact-history
-- rows from the trigger on campaign.message (migration 0010). Only this worker's 'sending' rows are updated, or rows reaped to 'ambiguous'
-- meanwhile: the worker's own answer is better evidence than the guess.
with outcome as (
    select *
    from unnest(cast(:message_ids as bigint[]), cast(:statuses as text[]), cast(:provider_ids as text[]),
                cast(:reasons as text[]), cast(:segments as smallint[]), cast(:retry_after as double precision[]))
         as o (message_id, status, provider_message_id, reason, segments, retry_after)
),
updated as (
    update campaign.message m
    set status = cast(o.status as campaign.message_status),
        provider_message_id = o.provider_message_id,
        reason = case when o.status = 'sent' then null else coalesce(o.reason, m.reason) end,
        segments = o.segments,
        next_attempt_at = case when o.status = 'failed_soft' then now() + make_interval(secs => o.retry_after) end,
        sent_at = case when o.status = 'sent' then now() end,
        cost = case when o.status = 'sent' then cast(:unit_cost as numeric) * coalesce(o.segments, 1) end,
        lease_owner = null, lease_expires_at = null, updated_at = now()
    from outcome o
    where m.message_id = o.message_id
      and ((m.status = 'sending' and m.lease_owner = cast(:owner as text)) or m.status = 'ambiguous')
    returning m.message_id
)
select count(*) as recorded from updated;

-- name: spend_error_budget
-- Counts failures against the run's budget and pauses the run once it is spent, or at once
-- when a provider asked for it (e.g. an SMTP 5.7.x policy rejection). Returns the new state.
update campaign.delivery
set failures = failures + :failures,
    status = case when :pause or failures + :failures > max_failures then 'paused'
                  else status end::campaign.delivery_status,
    paused_reason = case
        when :pause then :pause_reason
        when failures + :failures > max_failures then
            'error budget spent: ' || (failures + :failures) || ' failures, at most ' || max_failures
                || ' allowed; last: ' || coalesce(:pause_reason, 'unknown')
    end,
    paused_at = case when :pause or failures + :failures > max_failures then now() end
where campaign_run_id = :campaign_run_id and status = 'delivering'
returning status::text as status, paused_reason;

-- name: due_later
-- What is left of a batch: its unsent messages (pending or soft-failed; e.g. held back by a
-- closed send window), the soft-failed ones and when the next of those is due (null: none waits).
select count(*) as unsent,
       count(*) filter (where status = 'failed_soft') as waiting,
       min(next_attempt_at) filter (where status = 'failed_soft') as next_attempt_at
from campaign.message
where campaign_run_id = :campaign_run_id and channel = cast(:channel as core.channel)
  and batch_no = :batch_no and status in ('pending', 'failed_soft');

-- name: renew_leases
-- Extends the leases of the messages a batch's live workers still hold ('sending' under one of
-- their names), so a slow provider does not let a lease run out under a worker that is still
-- sending (the message would become 'ambiguous'). One statement per batch every third of the
-- lease, however many messages. SKIP LOCKED: a row locked now is being recorded by its worker
-- (it is about to be final), and waiting for it could deadlock with that worker's statement.
with held as (
    select message_id
    from campaign.message
    where campaign_run_id = :campaign_run_id and channel = cast(:channel as core.channel)
      and batch_no = :batch_no and status = 'sending'
      and lease_owner = any (cast(:owners as text[]))
    for update skip locked
)
update campaign.message m
set lease_expires_at = now() + make_interval(secs => cast(:lease_seconds as double precision))
from held h
where m.message_id = h.message_id;

-- name: release_unsent
-- Messages claimed but not yet handed over when a connection failed as a whole go back to
-- pending for the task's retry (the connector said it handed none of them over).
update campaign.message
set status = 'pending', lease_owner = null, lease_expires_at = null,
    attempts = greatest(attempts - 1, 0), updated_at = now()
where message_id = any (cast(:message_ids as bigint[]))
  and status = 'sending' and lease_owner = :owner;

-- name: settle_ambiguous
-- Ambiguous messages that are settled as sent, with their contact history: those with any event
-- from their provider or recipient (a delivery receipt, an open, a click, a bounce: it was
-- handed over), and those of the channels whose policy is 'assume_sent'.
with evidence as (
    select m.message_id, min(e.occurred_at) as first_event_at,
           (array_agg(e.event_type::text order by e.occurred_at))[1] as first_event
    from campaign.message m
    join campaign.message_event e on e.message_id = m.message_id
    where m.campaign_run_id = :campaign_run_id and m.status = 'ambiguous'
    group by m.message_id
),
settled as (
    select m.message_id, v.message_id is not null as from_receipt,
           least(coalesce(v.first_event_at, m.updated_at), now()) as sent_at,
           case when v.message_id is not null then 'reconciled: the provider reported ' || v.first_event
                else 'assumed sent by policy after: ' || m.reason end as reason
    from campaign.message m
    left join evidence v on v.message_id = m.message_id
    where m.campaign_run_id = :campaign_run_id and m.status = 'ambiguous'
      and (v.message_id is not null or m.channel = any (cast(:assume_channels as core.channel[])))
),
updated as (
    update campaign.message m
    set status = 'sent', sent_at = s.sent_at, reason = s.reason, updated_at = now(),
        cost = cast(cast(:unit_costs as jsonb) ->> m.channel::text as numeric) * coalesce(m.segments, 1)
    from settled s
    where m.message_id = s.message_id
    returning s.from_receipt
)
select count(*) filter (where from_receipt) as from_receipts,
       count(*) filter (where not from_receipt) as assumed
from updated;

-- name: resend_ambiguous
-- Policy 'resend' for a channel: its ambiguous messages go back to pending and keep their key,
-- so the provider sees the same idempotency key (SMS) or the same Message-ID (email).
update campaign.message
set status = 'pending', reason = 'resent by policy after: ' || reason, updated_at = now()
where campaign_run_id = :campaign_run_id and status = 'ambiguous'
  and channel = any (cast(:channels as core.channel[]))
returning message_id;

-- name: resume_delivery
-- A paused run delivers again with a fresh error budget; the mapped tasks claim what is left.
update campaign.delivery
set status = 'delivering', paused_reason = null, paused_at = null, failures = 0
where campaign_run_id = :campaign_run_id and status = 'paused'
returning campaign_run_id;

-- name: complete_delivery
-- A run is completed once every message is final (sent, failed_hard or skipped); an ambiguous,
-- soft-failed or pending message keeps it open.
update campaign.delivery d
set status = 'completed', finished_at = now()
where d.campaign_run_id = :campaign_run_id
  and d.status = 'delivering'
  and not exists (select 1
                  from campaign.message m
                  where m.campaign_run_id = d.campaign_run_id
                    and m.status in ('pending', 'sending', 'failed_soft', 'ambiguous'))
returning campaign_run_id;

-- name: message_counts
-- The run's messages by channel and status, for the summary and `kms delivery status`.
select channel::text as channel, status::text as status, count(*) as messages,
       coalesce(sum(cost), 0) as cost
from campaign.message
where campaign_run_id = :campaign_run_id
group by channel, status
order by channel, status;
