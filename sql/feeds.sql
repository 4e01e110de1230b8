-- name: register_source_system
-- Makes a feed's source system known to the core tables the first time the feed loads,
-- so a new booking system needs a feed file, not a migration. An existing system keeps
-- its name and trust rank.
insert into core.source_system (source_system, name, trust_rank)
values (:source_system, :name, :trust_rank)
on conflict (source_system) do nothing;
