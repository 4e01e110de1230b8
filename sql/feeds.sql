-- name: register_source_system
-- Makes a feed's source system known to the core tables the first time the feed loads,
-- so a new booking system needs a feed file, not a migration. An existing system keeps
-- its name and trust rank.
insert into core.source_system (source_system, name, trust_rank)
values (:source_system, :name, :trust_rank)
on conflict (source_system) do nothing;

-- name: register_activity_type
-- Makes an activity type a feed declares known to the core tables when the feed loads,
-- so a new kind of activity needs a feed entry, not a migration. An existing type keeps
-- its description.
insert into core.activity_type (activity_type, description)
values (:activity_type, :description)
on conflict (activity_type) do nothing;
