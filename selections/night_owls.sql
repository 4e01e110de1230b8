-- description: >
--   Night owls: guests with several bar or night club bills after 22:00 (resort time) in the
--   last year. An SQL selection, because the rules cannot ask for the hour of the day.
-- params:
--   min_bills: {type: integer, default: 2, description: late bar bills at least}
--   from_hour: {type: integer, default: 22, description: a bill counts from this hour on}
select contact_id
from core.activity
where activity_type = 'bar_bill'
    and occurred_at >= cast(:as_of as timestamptz) - interval '365 days'
    and occurred_at <= cast(:as_of as timestamptz)
    and extract(hour from occurred_at at time zone 'Europe/Berlin') >= :from_hour
group by contact_id
having count(*) >= :min_bills
