-- name: read_only
-- Makes the current transaction read-only: a selection (above all an SQL file written by
-- hand) can then read but never write, whatever its text says.
set transaction read only;

-- name: statement_timeout
-- Caps every statement of the current transaction at :ms milliseconds (set_config with
-- is_local = true, so it ends with the transaction and takes a bound value, unlike SET).
select set_config('statement_timeout', cast(:ms as text), true);

-- name: create_selected_contact
-- The session's list of chosen contacts, filled by materialize(). A temporary table: other
-- sessions never see it, and a read-only transaction may still write to it.
create temporary table if not exists selected_contact (
    contact_id bigint primary key
) on commit preserve rows;

-- name: empty_selected_contact
-- Forgets the previous selection's contacts of this session.
truncate selected_contact;

-- name: count_selected_contact
-- How many contacts the last materialize() chose.
select count(*) from selected_contact;
