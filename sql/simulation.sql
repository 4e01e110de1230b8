-- Statements of the response simulation (campaign_lib.generator.responses): what it reads
-- of a delivered campaign run to make its audience respond.

-- name: run
-- The run with its campaign's response window, the day (resort time) of its first sent
-- message, or of its freeze when none was sent, and the seconds since its last message went
-- out (null when none did): tracking hits sooner after a send count as a scanner's.
select r.campaign_run_id,
       r.campaign_name,
       coalesce(cast(c.definition ->> 'response_window_days' as integer), 30) as response_window_days,
       cast(min(m.sent_at) at time zone 'Europe/Berlin' as date) as first_sent_on,
       cast(coalesce(r.frozen_at, r.created_at) at time zone 'Europe/Berlin' as date) as frozen_on,
       extract(epoch from now() - max(m.sent_at)) as seconds_since_last_send
from campaign.campaign_run r
join campaign.campaign c on c.campaign_name = r.campaign_name
left join campaign.message m on m.campaign_run_id = r.campaign_run_id and m.status = 'sent'
where r.campaign_run_id = :campaign_run_id
group by r.campaign_run_id, c.campaign_name

-- name: members
-- The frozen audience, control group included, with the key of each member's sent message
-- (null: control, or not sent) and what the ticketing system would know the person by.
select a.contact_id, a.cell, cast(a.channel as text) as channel, m.message_key,
       c.email, c.phone_e164, c.first_name, c.last_name
from campaign.audience a
join core.contact c on c.contact_id = a.contact_id
left join campaign.message m
    on m.campaign_run_id = a.campaign_run_id
   and m.contact_id = a.contact_id
   and m.channel = a.channel
   and m.status = 'sent'
where a.campaign_run_id = :campaign_run_id
order by a.contact_id

-- name: bystanders
-- :limit active contacts with an email outside the run's audience, in an order fixed by the
-- seed (:salt): the people whose bookings are noise. Cell and channel are null.
select c.contact_id, cast(null as text) as cell, cast(null as text) as channel,
       cast(null as text) as message_key, c.email, c.phone_e164, c.first_name, c.last_name
from core.contact c
where c.status = 'active'
  and c.email is not null
  and not exists (
      select 1 from campaign.audience a
      where a.campaign_run_id = :campaign_run_id and a.contact_id = c.contact_id)
order by campaign.unit_hash(:salt || c.contact_id), c.contact_id
limit :limit
