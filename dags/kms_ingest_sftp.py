"""Ingest the resort's SFTP drops: every feed's new files are validated, standardised and
loaded into the source records, exactly once.

Every 10 minutes, one run at a time. One mapped task per feed loads that feed's files
oldest first (a correction always lands after the file it corrects). Files end in
`processed/` or, quarantined whole with their reason, in `failed/`; rejected rows are in
`ingest.quarantine`, every file in the ledger `ingest.file`. A run with a quarantined
file, or with a feed that could not be read, turns red at `check_quarantine`; what did
load is still published to identity resolution through the asset `kms://ingest/records`.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

SOURCE_RECORDS = Asset("kms://ingest/records")


@dag(
    dag_id="kms_ingest_sftp",
    schedule=timedelta(minutes=10),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["kms", "data", "ingest"],
    default_args={"retries": 3, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True},
    doc_md=__doc__,
)
def kms_ingest_sftp():
    @task
    def feeds() -> list[str]:
        from campaign_lib.ingest.feeds import load_feeds

        return sorted(load_feeds())

    @task(max_active_tis_per_dagrun=4)
    def ingest_feed(feed: str) -> list[dict]:
        from airflow.sdk.exceptions import AirflowFailException

        from campaign_lib.airflow_adapter import campaign_database_url, sftp_settings
        from campaign_lib.errors import IngestError, SourceUnavailableError
        from campaign_lib.ingest.sftp_ingest import ingest_sftp_feed

        try:
            return ingest_sftp_feed(campaign_database_url(), sftp_settings(), feed)
        except SourceUnavailableError:
            raise
        except IngestError as exc:
            # A refused host key or login does not heal by retrying.
            raise AirflowFailException(str(exc)) from exc

    @task(outlets=[SOURCE_RECORDS], trigger_rule="all_done")
    def publish(dag_run=None, outlet_events=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from campaign_lib.airflow_adapter import campaign_database_url
        from campaign_lib.ingest.sftp_ingest import summarise_since

        summary = summarise_since(campaign_database_url(), dag_run.start_date)
        if summary.records_changed == 0:
            raise AirflowSkipException("no source record changed; nothing to publish")
        outlet_events[SOURCE_RECORDS].extra = summary.as_dict()
        return summary.as_dict()

    # Default trigger rule: when a feed's task failed, this stays upstream_failed and the
    # run is red for that reason; otherwise it turns the run red for quarantined files.
    @task
    def check_quarantine(dag_run=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from campaign_lib.airflow_adapter import campaign_database_url
        from campaign_lib.ingest.sftp_ingest import summarise_since

        summary = summarise_since(campaign_database_url(), dag_run.start_date)
        if summary.quarantined:
            raise AirflowFailException("quarantined: " + " | ".join(summary.quarantined))
        return summary.as_dict()

    loads = ingest_feed.expand(feed=feeds())
    loads >> [publish(), check_quarantine()]


kms_ingest_sftp()
