"""Daily refresh of the campaign reports.

Every day, the report of each campaign run still inside its response window (or closed
within the last day, so its final figures are written) is rendered again, one mapped task
per run, and then the index page of all runs. A run's first report is rendered by its
campaign DAG after delivery; `kms report render RUN_ID` renders one by hand. Reports go to
KMS_REPORTS_DIR (default <KMS_HOME>/reports) and are served in the UI under
"Campaign reports". The index task emits the asset `kms://reports/campaigns`.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

CAMPAIGN_REPORTS = Asset("kms://reports/campaigns")


@dag(
    dag_id="kms_reports",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["kms", "reporting"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    doc_md=__doc__,
)
def kms_reports():
    @task
    def runs_in_response_window() -> list[int]:
        from campaign_lib.airflow_adapter import campaign_engine
        from campaign_lib.reporting.report import runs_to_refresh

        return runs_to_refresh(campaign_engine())

    @task(max_active_tis_per_dagrun=2)
    def render_report(campaign_run_id: int) -> str:
        from campaign_lib.airflow_adapter import render_report_task

        return render_report_task(campaign_run_id, with_index=False)

    # The index lists every run, also when some report failed or none was due today.
    @task(outlets=[CAMPAIGN_REPORTS], trigger_rule="all_done")
    def render_index() -> str:
        from campaign_lib.airflow_adapter import campaign_engine
        from campaign_lib.reporting import render_index

        return str(render_index(campaign_engine()))

    render_report.expand(campaign_run_id=runs_in_response_window()) >> render_index()


kms_reports()
