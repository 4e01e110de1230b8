-- name: retire_push_token
-- A push token or Web Push subscription (`webpush:` + JSON, as core.identifier keeps it) that
-- the provider reported invalid (FCM UNREGISTERED or SENDER_ID_MISMATCH, Web Push 404/410):
-- suppressed for push by address, once. 'hard_bounce' is the suppression reason for an
-- address that can no longer receive; the source says which signal it was.
insert into campaign.suppression (address_kind, address, channel, reason, source)
select 'push_token', :address, 'push', 'hard_bounce', 'push:token_invalid'
where not exists (
    select 1
    from campaign.suppression
    where address_kind = 'push_token'
      and address = :address
      and (channel = 'push' or channel is null)
);

-- name: export_rows
-- The messages of one run and channel ('phone': call list, 'post': letter-shop list) that
-- belong in its export file, in message order, with what the call centre or letter shop
-- needs. Messages already marked sent by an earlier export of the run stay in, so a rerun
-- computes the same file. `eligible` re-checks the person just before export: still active,
-- not suppressed for the channel (by contact, or by phone number for calls), and with a
-- number or a postal address to use.
select m.message_id,
       m.message_key,
       m.contact_id,
       m.status::text as status,
       m.cell,
       r.campaign_name,
       c.salutation,
       c.first_name,
       c.last_name,
       c.phone_e164 as phone,
       c.preferred_language,
       l.street,
       l.postal_code,
       l.city,
       l.country_code,
       (c.status = 'active'
        and case when m.channel = 'phone' then c.phone_e164 is not null
                 else l.street is not null and l.postal_code is not null and l.city is not null end
        and not exists (
            select 1
            from campaign.suppression s
            where (s.channel is null or s.channel = m.channel)
              and (s.contact_id = m.contact_id
                   or (m.channel = 'phone' and s.address_kind = 'phone' and s.address = c.phone_e164))
        )) as eligible
from campaign.message m
join campaign.campaign_run r on r.campaign_run_id = m.campaign_run_id
join core.contact c on c.contact_id = m.contact_id
left join core.location l on l.location_id = c.location_id
where m.campaign_run_id = :campaign_run_id
  and m.channel = cast(:channel as core.channel)
  and m.status in ('pending', 'failed_soft', 'sent')
order by m.message_id;

-- name: skip_ineligible
-- Export messages whose person may no longer be contacted (see export_rows): skipped with the reason.
update campaign.message
set status = 'skipped', reason = :reason, next_attempt_at = null, updated_at = now()
where message_id = any (cast(:message_ids as bigint[]))
  and status in ('pending', 'failed_soft');

-- name: mark_exported
-- The exported messages are sent: the file with them is in the outbound folder (its path is
-- the provider message id). The address is the number called or the postal address written.
-- Messages an earlier export already marked keep their first sent_at.
update campaign.message m
set status = 'sent',
    sent_at = now(),
    provider_message_id = :remote_path,
    address = coalesce(
        m.address,
        case when m.channel = 'phone' then c.phone_e164
             else concat_ws(', ', l.street, l.postal_code || ' ' || l.city, l.country_code) end),
    attempts = m.attempts + 1,
    reason = null,
    next_attempt_at = null,
    lease_owner = null,
    lease_expires_at = null,
    updated_at = now()
from core.contact c
left join core.location l on l.location_id = c.location_id
where c.contact_id = m.contact_id
  and m.message_id = any (cast(:message_ids as bigint[]))
  and m.status in ('pending', 'failed_soft');
