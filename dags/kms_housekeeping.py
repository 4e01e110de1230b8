"""Daily housekeeping: drop expired quarantine rows, refresh planner statistics."""

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task


@dag(
    dag_id="kms_housekeeping",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["kms", "ops"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    params={
        "quarantine_retention_days": Param(
            90,
            type="integer",
            minimum=1,
            maximum=3650,
            description="Quarantined rows older than this many days are deleted.",
        ),
    },
    doc_md=__doc__,
)
def kms_housekeeping():
    @task
    def purge_quarantine(params=None) -> int:
        from campaign_lib.airflow_adapter import campaign_engine
        from campaign_lib.housekeeping import purge_expired_quarantine

        return purge_expired_quarantine(campaign_engine(), params["quarantine_retention_days"])

    @task
    def refresh_statistics() -> list[dict]:
        from dataclasses import asdict

        from campaign_lib.airflow_adapter import campaign_engine
        from campaign_lib.housekeeping import refresh_statistics

        return [asdict(size) for size in refresh_statistics(campaign_engine())]

    purge_quarantine() >> refresh_statistics()


kms_housekeeping()
