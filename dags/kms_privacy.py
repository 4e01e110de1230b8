"""Erasure on request (the right to be forgotten): a data protection officer names a person by
email, phone or contact id, and every contact of that person is erased in one transaction
(campaign_lib.privacy, docs/privacy.md). Later exports that still carry one of the person's
identifiers are quarantined by ingestion without their content.

Messages of frozen campaign runs that were not handed over yet are skipped; reports of past
campaigns keep their counts. The result (erasure id, contact ids, rows per kind) is the
task's return value and in `kms privacy log`; it holds no personal data. The trigger form's
values do stay in this run's configuration in Airflow's database: where that is not
acceptable, use `kms privacy erase` instead, or remove old runs with `airflow db clean`.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task


@dag(
    dag_id="kms_privacy",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["kms", "privacy"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    params={
        "email": Param(None, type=["null", "string"], description="The person's email address."),
        "phone": Param(
            None,
            type=["null", "string"],
            description="The person's phone number (E.164, or national in the region below).",
        ),
        "contact_id": Param(
            None, type=["null", "integer"], minimum=1, description="The person's contact id."
        ),
        "region": Param(
            "DE", type="string", pattern="^[A-Z]{2}$", description="Region of a national phone number."
        ),
        "requested_by": Param(
            type="string",
            minLength=1,
            maxLength=200,
            description="Who asked: a name, an address or a ticket.",
        ),
        "reason": Param(
            None, type=["null", "string"], maxLength=500, description="For the log; no personal data."
        ),
    },
    doc_md=__doc__,
)
def kms_privacy():
    @task
    def erase(params=None) -> dict:
        from dataclasses import asdict

        from airflow.sdk.exceptions import AirflowFailException

        from campaign_lib.airflow_adapter import campaign_engine
        from campaign_lib.privacy import PrivacyRequestError, erase

        engine = campaign_engine()
        try:
            result = erase(
                engine,
                email=params["email"] or None,
                phone=params["phone"] or None,
                contact_id=params["contact_id"],
                region=params["region"],
                requested_by=params["requested_by"],
                reason=params["reason"],
            )
        except PrivacyRequestError as exc:
            raise AirflowFailException(str(exc)) from exc
        finally:
            engine.dispose()
        print(result.as_text())
        return asdict(result)

    erase()


kms_privacy()
