-- name: households
-- The benchmark's households and companies, one row per account, with the kind that decides
-- who lives there: single (1 adult), couple (2), family (2 adults and 1 to 3 children),
-- company (1 to 3 employees). The shares are the generator's (campaign_lib/generator/people.py).
-- `first_contact_id` numbers the members densely, so contacts need no window over 1M rows later.
-- An unlogged scratch table: it only feeds the next statements and is dropped after the build.
create unlogged table bench_household as
with drawn as (
    select
        h as account_id,
        case
            when r < 0.34 then 'single'
            when r < 0.64 then 'couple'
            when r < 0.92 then 'family'
            else 'company'
        end as kind,
        random() as r_members,
        random() as r_country
    from (select h, random() as r from generate_series(1, :households) as h) as s
),
sized as (
    select
        account_id,
        kind,
        r_country,
        case kind when 'single' then 1 when 'couple' then 2 when 'company' then 1 else 2 end as adults,
        case kind
            when 'family' then 1 + floor(r_members * 3)::int
            when 'company' then floor(r_members * 3)::int
            else 0
        end as extra
    from drawn
)
select
    account_id,
    kind,
    adults + case when kind = 'company' then extra else 0 end as adults,
    case when kind = 'family' then extra else 0 end as children,
    case
        when r_country < 0.80 then 'DE'
        when r_country < 0.87 then 'AT'
        when r_country < 0.92 then 'CH'
        when r_country < 0.96 then 'NL'
        when r_country < 0.98 then 'GB'
        when r_country < 0.99 then 'DK'
        else 'PL'
    end as country_code,
    sum(adults + extra) over (order by account_id) - (adults + extra) + 1 as first_contact_id
from sized;

-- name: accounts
-- One account per household with its fixed id (identity columns are overridden so that
-- ids are dense and known to the following statements).
insert into core.account (account_id, account_type, name)
overriding system value
select
    account_id,
    case when kind = 'company' then 'company' else 'household' end::core.account_type,
    case when kind = 'company' then 'Firma ' || account_id end
from bench_household;

-- name: locations
-- One address per account (location_id = account_id), in the household's country.
insert into core.location (location_id, account_id, street, postal_code, city, country_code, valid_from, valid_to)
overriding system value
select
    account_id,
    account_id,
    'Hauptstraße ' || (1 + account_id % 120),
    lpad((1000 + (account_id::bigint * 7919) % 89000)::text, 5, '0'),
    (array['Berlin', 'Hamburg', 'München', 'Köln', 'Frankfurt am Main', 'Stuttgart', 'Wien',
           'Zürich', 'Amsterdam', 'London'])[1 + account_id % 10],
    country_code,
    date '2015-01-01' + (account_id % 3000),
    null
from bench_household;

-- name: contacts
-- Adults 19 to 84, children 0 to 17; 85 % of adults have an email, 75 % a phone; 1 % of
-- contacts are anonymous (not selectable). Birth dates are relative to the build's day.
insert into core.contact (
    contact_id, account_id, location_id, status, salutation, first_name, last_name, birth_date,
    email, phone_e164, preferred_language
)
overriding system value
select
    contact_id,
    account_id,
    case when r_loc < 0.95 then account_id end,
    case when r_status < 0.01 then 'anonymous' else 'active' end::core.contact_status,
    case when r_female < 0.5 then 'Frau' else 'Herr' end,
    case when r_female < 0.5 then 'Anna' else 'Jonas' end,
    'Gast' || account_id,
    case
        when is_adult then current_date - (19 * 365 + floor(r_age * 65 * 365)::int)
        else current_date - floor(r_age * 18 * 365)::int
    end,
    case when is_adult and r_email < 0.85 then 'guest' || contact_id || '@example.org' end,
    case when is_adult and r_phone < 0.75 then '+4915' || lpad(contact_id::text, 9, '0') end,
    case country_code
        when 'NL' then 'nl' when 'GB' then 'en' when 'DK' then 'da' when 'PL' then 'pl' else 'de'
    end
from (
    select
        h.first_contact_id + m - 1 as contact_id,
        h.account_id,
        h.country_code,
        m <= h.adults as is_adult,
        random() as r_loc,
        random() as r_status,
        random() as r_female,
        random() as r_age,
        random() as r_email,
        random() as r_phone
    from bench_household as h
    cross join lateral generate_series(1, h.adults + h.children) as m
) as member;

-- name: products
-- The resort's shop products (SKU, name, category, price), passed in as three arrays.
insert into core.product (sku, name, category, price_cents, currency)
select sku, name, category, price_cents, 'EUR'
from unnest(cast(:skus as text[]), cast(:names as text[]), cast(:categories as text[]),
            cast(:prices as bigint[])) as p (sku, name, category, price_cents);

-- name: activity_counts
-- How many activities each active contact gets: exponential with the requested mean for
-- adults (so a few heavy guests and many light ones), far fewer for children.
-- `family` marks members of families, who buy far more water park and dolphinarium tickets.
create unlogged table bench_member as
select
    c.contact_id,
    h.kind = 'family' as family,
    floor(-ln(1 - random()) * :per_contact * case when c.birth_date > current_date - 18 * 365 then 0.3 else 1.3 end)::int as n
from core.contact as c
join bench_household as h on h.account_id = c.account_id
where c.status = 'active';

-- name: activities
-- The activities, in contact order (as a long-running system's table roughly is after
-- clustering by time and person). Types are drawn with the weights of the generator's output;
-- amounts per type; shop purchases name one product; tickets and bills name the outlet. The
-- time is spread uniformly over the two years before the build.
insert into core.activity (
    contact_id, activity_type, source_system, source_ref, occurred_at, ended_at, amount_cents, currency,
    product_id, outlet
)
select
    contact_id,
    activity_type,
    case activity_type
        when 'hotel_stay' then 'hotel_pms'
        when 'restaurant_bill' then 'restaurant_pos'
        when 'bar_bill' then 'restaurant_pos'
        when 'shop_purchase' then 'shop_pos'
        when 'water_park_ticket' then 'ticketing'
        when 'dolphinarium_ticket' then 'ticketing'
        when 'call' then 'crm'
        else 'website'
    end,
    contact_id || '-' || g,
    occurred_at,
    case when activity_type = 'hotel_stay' then occurred_at + make_interval(days => 1 + floor(r_amount * 6)::int) end,
    amount_cents,
    case when amount_cents is not null then 'EUR' end,
    case when activity_type = 'shop_purchase' then 1 + floor(r_pick * :products)::int end,
    case activity_type
        when 'restaurant_bill' then (array['Restaurant Seeterrasse', 'Trattoria Lago', 'Brauhaus am Park',
            'Steakhouse Ranch', 'Sushi Kaito', 'Buffet Panorama', 'Pizzeria Vesuvio',
            'Gourmetrestaurant Sternblick', 'Alpenstube', 'Kinderrestaurant Flipper'])[1 + floor(r_pick * 10)::int]
        when 'bar_bill' then (array['Lobby Bar', 'Sky Bar', 'Pool Bar Lagune', 'Night Club Aurora'])[1 + floor(r_pick * 4)::int]
        when 'water_park_ticket' then 'water_park'
        when 'dolphinarium_ticket' then 'dolphinarium'
        when 'shop_purchase' then 'S' || lpad((1 + floor(r_pick * 20)::int)::text, 2, '0')
    end
from (
    select
        contact_id,
        g,
        r_amount,
        r_pick,
        now() - make_interval(secs => r_time * 730 * 86400) as occurred_at,
        case
            when r_type < 0.30 then 'web_page_view'
            when r_type < 0.55 then 'restaurant_bill'
            when r_type < 0.65 then 'shop_purchase'
            when r_type < 0.72 then 'bar_bill'
            when r_type < 0.80 then 'hotel_stay'
            when r_type < (case when family then 0.90 else 0.84 end) then 'water_park_ticket'
            when r_type < (case when family then 0.95 else 0.86 end) then 'dolphinarium_ticket'
            when r_type < 0.97 then 'web_login'
            when r_type < 0.98 then 'newsletter_signup'
            when r_type < 0.99 then 'rating'
            else 'call'
        end as activity_type,
        case
            when r_type < 0.30 then null
            when r_type < 0.55 then 1500 + floor(r_amount * r_amount * 20000)::bigint
            when r_type < 0.65 then 300 + floor(r_amount * 9000)::bigint
            when r_type < 0.72 then 900 + floor(r_amount * 6000)::bigint
            when r_type < 0.80 then 20000 + floor(r_amount * r_amount * 300000)::bigint
            when r_type < (case when family then 0.95 else 0.86 end) then 1600 + floor(r_amount * 10000)::bigint
        end as amount_cents
    from (
        select m.contact_id, m.family, g, random() as r_type, random() as r_time, random() as r_amount,
               random() as r_pick
        from bench_member as m
        cross join lateral generate_series(1, m.n) as g
    ) as drawn
) as activity;

-- name: consents
-- Email newsletter opt-ins for 35 % of the contacts with an email (a tenth of them opted out
-- again later, a later ledger entry that wins) and SMS offers opt-ins for 15 % with a phone.
insert into core.consent (contact_id, channel, purpose, status, recorded_at, source_system, source_ref, double_opt_in_at)
select contact_id, channel::core.channel, purpose, status::core.consent_status, recorded_at, 'website', ref, double_opt_in_at
from (
    select contact_id, 'email' as channel, 'newsletter' as purpose, 'opt_in' as status,
           now() - make_interval(days => (400 + contact_id % 300)::int) as recorded_at,
           'in-e-' || contact_id as ref,
           now() - make_interval(days => (400 + contact_id % 300)::int) + interval '1 hour' as double_opt_in_at
    from core.contact where email is not null and contact_id % 20 < 7
    union all
    select contact_id, 'email', 'newsletter', 'opt_out', now() - make_interval(days => (contact_id % 300)::int),
           'out-e-' || contact_id, null
    from core.contact where email is not null and contact_id % 20 < 7 and contact_id % 10 = 3
    union all
    select contact_id, 'sms', 'offers', 'opt_in', now() - make_interval(days => (contact_id % 600)::int),
           'in-s-' || contact_id, null
    from core.contact where phone_e164 is not null and contact_id % 20 in (7, 8, 9)
) as c;

-- name: drop_scratch
-- The scratch tables of the build are no longer needed.
drop table bench_household, bench_member;

-- name: secondary_indexes
-- Definitions of the indexes of the big tables other than primary keys and unique
-- constraints: the build drops them before loading and creates them again afterwards,
-- which is 3 to 4 times faster than maintaining them row by row.
select indexname, indexdef
from pg_indexes as i
where schemaname = 'core' and tablename in ('contact', 'activity', 'consent', 'location')
  and not exists (
      select from pg_constraint as k where k.conname = i.indexname and k.contype in ('p', 'u')
  );

-- name: reset_identities
-- The build gave accounts, locations and contacts their ids itself: move the identity
-- sequences past them, so that rows added later (a test of the funnel) get new ids.
select
    setval(pg_get_serial_sequence('core.account', 'account_id'), (select max(account_id) from core.account)),
    setval(pg_get_serial_sequence('core.location', 'location_id'), (select max(location_id) from core.location)),
    setval(pg_get_serial_sequence('core.contact', 'contact_id'), (select max(contact_id) from core.contact));

-- name: vacuum
-- Statistics for the planner, and the visibility map without which no index-only scan is
-- possible (a freshly loaded table has none).
vacuum (analyze) core.account, core.location, core.contact, core.activity, core.consent;

-- name: record_build
-- Marks the build finished: a later run finds the table and reuses the database.
create table public.bench_build as
select
    (select count(*) from core.contact) as contacts,
    (select count(*) from core.activity) as activities,
    cast(:seconds as numeric(10, 1)) as build_seconds,
    now() as built_at;

-- name: build_done
-- Whether a build finished in this database (see record_build).
select to_regclass('public.bench_build') is not null;

-- name: build_info
-- What the kept benchmark database holds and how long it took to build.
select contacts, activities, build_seconds, built_at from public.bench_build;

-- name: hand_hotel_guests_without_water_park
-- Hand-written twin of selections/hotel_guests_without_water_park.yaml, as a PostgreSQL
-- developer would write it, for the benchmark's ratio.
select c.contact_id
from core.contact as c
where c.status = 'active'
    and exists (
        select from core.activity as a
        where a.contact_id = c.contact_id and a.activity_type = 'hotel_stay'
            and a.occurred_at >= cast(:as_of as timestamptz) - make_interval(days => :stay_within_days)
            and a.occurred_at <= cast(:as_of as timestamptz)
    )
    and not exists (
        select from core.activity as a where a.contact_id = c.contact_id and a.activity_type = 'water_park_ticket'
    )
    and not exists (
        select from core.contact as m
        join core.activity as a on a.contact_id = m.contact_id
        where m.account_id = c.account_id and m.contact_id <> c.contact_id and m.status = 'active'
            and a.activity_type = 'water_park_ticket'
    );

-- name: hand_lapsed_restaurant_guests
-- Hand-written twin of selections/lapsed_restaurant_guests.yaml.
select c.contact_id
from core.contact as c
where c.status = 'active'
    and c.contact_id in (
        select contact_id from core.activity
        where activity_type = 'restaurant_bill'
        group by contact_id
        having count(*) >= :min_visits
    )
    and not exists (
        select from core.activity as a
        where a.contact_id = c.contact_id and a.activity_type = 'restaurant_bill'
            and a.occurred_at >= cast(:as_of as timestamptz) - make_interval(days => :lapsed_days)
            and a.occurred_at <= cast(:as_of as timestamptz)
    );

-- name: hand_newsletter_subscribers_without_booking
-- Hand-written twin of selections/newsletter_subscribers_without_booking.yaml. The consent in
-- force is the ledger entry no later one supersedes (core.current_consent's DISTINCT ON over the
-- whole ledger takes about twice as long here).
select c.contact_id
from core.contact as c
where c.status = 'active'
    and exists (
        select from core.consent as k
        where k.contact_id = c.contact_id and k.channel = 'email' and k.purpose = 'newsletter'
            and k.status = 'opt_in'
            and not exists (
                select from core.consent as l
                where l.contact_id = k.contact_id and l.channel = k.channel and l.purpose = k.purpose
                    and (l.recorded_at, l.consent_id) > (k.recorded_at, k.consent_id)
            )
    )
    and not exists (
        select from core.activity as a where a.contact_id = c.contact_id and a.activity_type = 'hotel_stay'
    );

-- name: hand_families_with_children_dolphinarium
-- Hand-written twin of selections/families_with_children_dolphinarium.yaml.
select c.contact_id
from core.contact as c
join core.account as h on h.account_id = c.account_id
where c.status = 'active' and h.account_type = 'household'
    and c.birth_date <= cast(:as_of as date) - interval '18 years'
    and exists (
        select from core.contact as k
        where k.account_id = c.account_id and k.contact_id <> c.contact_id and k.status = 'active'
            and k.birth_date > cast(:as_of as date) - make_interval(years => :child_age_below)
    )
    and exists (
        select from core.activity as a
        where a.contact_id = c.contact_id and a.activity_type = 'dolphinarium_ticket'
            and a.occurred_at >= cast(:as_of as timestamptz) - make_interval(days => :within_days)
            and a.occurred_at <= cast(:as_of as timestamptz)
    );

-- name: hand_big_spenders
-- Hand-written twin of selections/big_spenders.yaml.
select c.contact_id
from core.contact as c
where c.status = 'active'
    and c.contact_id in (
        select contact_id from core.activity
        where activity_type in ('hotel_stay', 'restaurant_bill', 'bar_bill', 'shop_purchase',
                                'water_park_ticket', 'dolphinarium_ticket')
            and occurred_at >= cast(:as_of as timestamptz) - make_interval(days => :within_days)
            and occurred_at <= cast(:as_of as timestamptz)
        group by contact_id
        having sum(amount_cents) >= :min_spend * 100
    );

-- name: hand_night_owls
-- Hand-written twin of selections/night_owls.sql: its query joined to active contacts directly.
select c.contact_id
from core.contact as c
where c.status = 'active'
    and c.contact_id in (
        select contact_id
        from core.activity
        where activity_type = 'bar_bill'
            and occurred_at >= cast(:as_of as timestamptz) - interval '365 days'
            and occurred_at <= cast(:as_of as timestamptz)
            and extract(hour from occurred_at at time zone 'Europe/Berlin') >= :from_hour
        group by contact_id
        having count(*) >= :min_bills
    );

-- name: hand_family_offer_candidates
-- Hand-written twin of selections/family_offer_candidates.yaml: dolphinarium parents of the
-- last 365 days together with hotel guests of the last 180 days without a water park visit.
select c.contact_id
from core.contact as c
join core.account as h on h.account_id = c.account_id
where c.status = 'active' and h.account_type = 'household'
    and c.birth_date <= cast(:as_of as date) - interval '18 years'
    and exists (
        select from core.contact as k
        where k.account_id = c.account_id and k.contact_id <> c.contact_id and k.status = 'active'
            and k.birth_date > cast(:as_of as date) - interval '16 years'
    )
    and exists (
        select from core.activity as a
        where a.contact_id = c.contact_id and a.activity_type = 'dolphinarium_ticket'
            and a.occurred_at >= cast(:as_of as timestamptz) - interval '365 days'
            and a.occurred_at <= cast(:as_of as timestamptz)
    )
union
select c.contact_id
from core.contact as c
where c.status = 'active'
    and exists (
        select from core.activity as a
        where a.contact_id = c.contact_id and a.activity_type = 'hotel_stay'
            and a.occurred_at >= cast(:as_of as timestamptz) - interval '180 days'
            and a.occurred_at <= cast(:as_of as timestamptz)
    )
    and not exists (
        select from core.activity as a where a.contact_id = c.contact_id and a.activity_type = 'water_park_ticket'
    )
    and not exists (
        select from core.contact as m
        join core.activity as a on a.contact_id = m.contact_id
        where m.account_id = c.account_id and m.contact_id <> c.contact_id and m.status = 'active'
            and a.activity_type = 'water_park_ticket'
    );

-- name: hand_family_offer_audience
-- Hand-written twin of selections/family_offer_audience.yaml: the candidates above except
-- those who spent 2,000 euros or more in the last 365 days.
select c.contact_id
from core.contact as c
join core.account as h on h.account_id = c.account_id
where c.status = 'active' and h.account_type = 'household'
    and c.birth_date <= cast(:as_of as date) - interval '18 years'
    and exists (
        select from core.contact as k
        where k.account_id = c.account_id and k.contact_id <> c.contact_id and k.status = 'active'
            and k.birth_date > cast(:as_of as date) - interval '16 years'
    )
    and exists (
        select from core.activity as a
        where a.contact_id = c.contact_id and a.activity_type = 'dolphinarium_ticket'
            and a.occurred_at >= cast(:as_of as timestamptz) - interval '365 days'
            and a.occurred_at <= cast(:as_of as timestamptz)
    )
union
select c.contact_id
from core.contact as c
where c.status = 'active'
    and exists (
        select from core.activity as a
        where a.contact_id = c.contact_id and a.activity_type = 'hotel_stay'
            and a.occurred_at >= cast(:as_of as timestamptz) - interval '180 days'
            and a.occurred_at <= cast(:as_of as timestamptz)
    )
    and not exists (
        select from core.activity as a where a.contact_id = c.contact_id and a.activity_type = 'water_park_ticket'
    )
    and not exists (
        select from core.contact as m
        join core.activity as a on a.contact_id = m.contact_id
        where m.account_id = c.account_id and m.contact_id <> c.contact_id and m.status = 'active'
            and a.activity_type = 'water_park_ticket'
    )
except
select contact_id
from core.activity
where activity_type in ('hotel_stay', 'restaurant_bill', 'bar_bill', 'shop_purchase',
                        'water_park_ticket', 'dolphinarium_ticket')
    and occurred_at >= cast(:as_of as timestamptz) - interval '365 days'
    and occurred_at <= cast(:as_of as timestamptz)
group by contact_id
having sum(amount_cents) >= 200000;
