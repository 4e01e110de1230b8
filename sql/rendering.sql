-- name: recipient
-- The personal data a message template may use, for one contact (kms template preview and
-- proof sends). A merged contact shows its survivor's data, as delivery would use it.
select c.contact_id, c.salutation, c.first_name, c.last_name, c.email, c.phone_e164 as phone,
       c.preferred_language, c.status::text as status
from core.contact as requested
join core.contact as c on c.contact_id = coalesce(requested.merged_into_contact_id, requested.contact_id)
where requested.contact_id = :contact_id;

-- name: record_proof_send
-- One proof send: kept in campaign.proof_send, never in campaign.message, so no report counts it.
insert into campaign.proof_send (
    campaign_name, definition_version, channel, contact_id, address, message_key, status,
    provider_message_id, reason)
values (:campaign_name, :definition_version, 'email', :contact_id, :address, :message_key, :status,
        :provider_message_id, :reason)
returning proof_send_id, sent_at;
