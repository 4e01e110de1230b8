-- name: register_campaign
-- Records a definition and its version; rewrites the row only when the definition changed,
-- so the scheduled runs of an unchanged campaign write nothing.
insert into campaign.campaign (campaign_name, origin, owner, description, definition_version, definition)
values (:campaign_name, :origin, :owner, :description, :definition_version, cast(:definition as jsonb))
on conflict (campaign_name) do update
    set origin = excluded.origin,
        owner = excluded.owner,
        description = excluded.description,
        definition_version = excluded.definition_version,
        definition = excluded.definition,
        updated_at = now()
    where (campaign.campaign.origin, campaign.campaign.owner, campaign.campaign.description,
           campaign.campaign.definition_version, campaign.campaign.definition)
          is distinct from
          (excluded.origin, excluded.owner, excluded.description, excluded.definition_version,
           excluded.definition);

-- name: find_run
-- The run of an Airflow run key, locked: a retry or clear of the task finds the run it made.
select campaign_run_id, campaign_name, status::text as status, dry_run, selection_name, selection_version,
       as_of, audience_count, control_count, frozen_at
from campaign.campaign_run
where dag_id = :dag_id and run_id = :run_id
for update;

-- name: create_run
-- A new run in status 'selecting'; its as_of anchors every relative window of the funnel.
insert into campaign.campaign_run (
    campaign_name, dag_id, run_id, dry_run, definition_version, selection_name, selection_version,
    params, as_of)
values (:campaign_name, :dag_id, :run_id, :dry_run, :definition_version, :selection_name,
        :selection_version, cast(:params as jsonb), :as_of)
returning campaign_run_id, as_of;

-- name: restart_run
-- A run left unfinished (a crash or a failed funnel) starts over with its own as_of.
update campaign.campaign_run
set status = 'selecting', dry_run = :dry_run, definition_version = :definition_version,
    selection_version = :selection_version, params = cast(:params as jsonb),
    audience_count = null, control_count = null
where campaign_run_id = :campaign_run_id;

-- name: clear_unfinished_run
-- What an unfinished attempt left behind; a frozen run never gets here.
delete from campaign.waterfall_step where campaign_run_id = :campaign_run_id;
delete from campaign.audience where campaign_run_id = :campaign_run_id;

-- name: insert_waterfall_step
insert into campaign.waterfall_step (
    campaign_run_id, position, step, count_in, removed, count_out, reason, detail)
values (:campaign_run_id, :position, :step, :count_in, :removed, :count_out, :reason,
        cast(:detail as jsonb));

-- name: insert_audience
-- The snapshot: every contact the funnel kept, control group included, in one statement
-- from the session's working table.
insert into campaign.audience (
    campaign_run_id, contact_id, account_id, channel, cell, offer_sku, selection_version, score)
select :campaign_run_id, contact_id, account_id, channel, cell, :offer_sku, :selection_version, score
from pg_temp.funnel_contact
where dropped_at is null;

-- name: finish_run
update campaign.campaign_run
set status = cast(:status as campaign.run_status),
    audience_count = :audience_count,
    control_count = :control_count,
    frozen_at = case when :status = 'frozen' then now() end
where campaign_run_id = :campaign_run_id;

-- name: fail_run
-- Marks an attempt that raised; the next attempt of the same run key restarts it.
update campaign.campaign_run
set status = 'failed'
where campaign_run_id = :campaign_run_id and status = 'selecting';

-- name: approve_run
-- A person approved the frozen audience (the DAG's approval gate); idempotent.
update campaign.campaign_run
set status = 'approved'
where campaign_run_id = :campaign_run_id and status in ('frozen', 'approved')
returning campaign_run_id;

-- name: run_waterfall
select position, step, count_in, removed, count_out, reason, detail
from campaign.waterfall_step
where campaign_run_id = :campaign_run_id
order by position;
