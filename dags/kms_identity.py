"""Identity resolution: source records become the single customer view.

Runs whenever ingestion publishes changed source records (the asset
`kms://ingest/records`, from the SFTP DAG or the ingest API). Resolves only the records
that changed (the queue `ingest.record_pending`) and the people they touch:
deterministic identifier rules, a fuzzy name rule, households, survivorship, merges (a
merged contact points to its survivor), and writes contacts, accounts, locations,
identifiers, activities, consents and inquiries.
Emits `kms://core/single_customer_view` for the campaign DAGs.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

SOURCE_RECORDS = Asset("kms://ingest/records")
SINGLE_CUSTOMER_VIEW = Asset("kms://core/single_customer_view")


@dag(
    dag_id="kms_identity",
    schedule=[SOURCE_RECORDS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["kms", "data", "identity"],
    default_args={"retries": 3, "retry_delay": timedelta(minutes=1)},
    doc_md=__doc__,
)
def kms_identity():
    @task(outlets=[SINGLE_CUSTOMER_VIEW])
    def resolve(outlet_events=None) -> dict:
        from campaign_lib.airflow_adapter import campaign_engine
        from campaign_lib.identity import resolve

        engine = campaign_engine()
        try:
            summary = resolve(engine).as_dict()
        finally:
            engine.dispose()
        outlet_events[SINGLE_CUSTOMER_VIEW].extra = summary
        return summary

    resolve()


kms_identity()
