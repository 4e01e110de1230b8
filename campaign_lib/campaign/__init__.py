"""Campaigns: definitions (campaigns/*.yaml), the eligibility funnel and frozen audiences.

Modules:
    definition     campaign files validated into `Campaign` (light: imported at DAG parse time)
    references     the checks that need the selections: the selection exists, its params bind
    settings       default contact-pressure limits, the global hold-out, the default purpose
    funnel         the funnel as set-based SQL (sql/funnel.sql), recorded as a waterfall
    snapshot       campaign runs and their frozen audience snapshots (sql/campaign.sql)
    runs           what the DAGs and `kms` call: run a campaign, an ad-hoc run, a preview
    run_note_api   a DAG run's note through Airflow's REST API (dry runs show their waterfall)

docs/campaigns.md describes them for campaign managers; ADR 0009 gives the reasons.
"""
