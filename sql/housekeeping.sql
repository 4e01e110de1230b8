-- name: purge_expired_quarantine
-- Deletes quarantined rows older than the retention period and returns how many went.
-- Quarantined rows hold personal data that was never loaded, so they must not be
-- kept forever; the ledger row of the file keeps its counts and its error.
with purged as (
    delete from ingest.quarantine
    where quarantined_at < now() - make_interval(days => :retention_days)
    returning 1
)
select count(*) as purged from purged;

-- name: table_sizes
-- One row per table of the core and ingest schemas: estimated rows (from the
-- statistics just refreshed) and size on disk with indexes, largest first.
select
    n.nspname || '.' || c.relname as table_name,
    greatest(c.reltuples, 0)::bigint as estimated_rows,
    pg_total_relation_size(c.oid) as total_bytes
from pg_class as c
join pg_namespace as n on n.oid = c.relnamespace
where n.nspname in ('core', 'ingest') and c.relkind in ('r', 'p')
order by total_bytes desc, table_name;
