-- name: insert_key
-- Stores a new API key's id, salt and secret hash (never the secret); returns its creation time.
insert into ingest.api_key (key_id, name, owner, scopes, salt, secret_sha256)
values (:key_id, :name, :owner, :scopes, :salt, :secret_sha256)
returning created_at;

-- name: find_key
-- The stored hash and state of one key id, for checking a presented key; no row when unknown.
select key_id, salt, secret_sha256, scopes, revoked_at
from ingest.api_key
where key_id = :key_id;

-- name: touch_key
-- Notes that a key was used. At most one write per key and minute: a client posting
-- many batches a second should not turn every request into an update of this row.
update ingest.api_key
set last_used_at = now()
where key_id = :key_id
  and (last_used_at is null or last_used_at < now() - interval '1 minute');

-- name: revoke_key
-- Revokes a key from now on; returns the revocation time, or no row when the id is unknown.
-- Revoking a revoked key keeps its first revocation time.
update ingest.api_key
set revoked_at = coalesce(revoked_at, now())
where key_id = :key_id
returning revoked_at;

-- name: list_keys
-- Every key with its state, newest first; the hash is not selected.
select key_id, name, owner, scopes, created_at, revoked_at, last_used_at
from ingest.api_key
order by created_at desc, key_id;

-- name: batch_id
-- The ledger entry of a batch (by feed and canonical sha256), for reporting a refused batch.
select ingest_file_id
from ingest.file
where feed = :feed and content_sha256 = :content_sha256;

-- name: quarantined_lines
-- The lines (item index + 1) of a batch that the loader quarantined, with their reasons: the
-- parser's refusals, and items of persons erased on request (privacy.md).
select line_number, reasons
from ingest.quarantine
where ingest_file_id = :batch_id and line_number is not null
order by line_number;
