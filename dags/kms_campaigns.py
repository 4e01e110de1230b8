"""Campaign DAGs: one per campaign definition in campaigns/*.yaml.

Each DAG validates its definition (the selection exists and its parameters bind), runs the
eligibility funnel and freezes the audience of the run (sql/funnel.sql, the waterfall in the
task log), waits for a person's approval when the definition asks for it, and publishes the
frozen audience as the asset `kms://campaign/<name>/audience` with the run key in the event's
extra. Then it delivers (campaign_lib.airflow_delivery): `materialise_outbox` writes one
message per audience member outside the control group, `wait_for_send_window` waits until the
definition's send window opens (the `send_now` param skips the wait), `plan_<channel>` lists the
batches with work, `deliver_<channel>` is mapped over them (pools kms_email, kms_sms, kms_push), and
`finish_delivery` settles what is left and prints the summary. A rerun of a run returns the
same snapshot and sends nothing twice (ADR 0010).

This file stays cheap to parse: definitions are read with YAML's C loader and checked by a
light module; a worker builds only its own DAG. Invalid definitions are skipped here and
reported by kms_campaign_definitions.py as that file's import error (ADR 0009).
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, get_parsing_context, task

from campaign_lib.airflow_delivery import deliver_audience, send_now_param
from campaign_lib.campaign.definition import SINGLE_CUSTOMER_VIEW_UPDATE, Campaign, load_campaigns

SINGLE_CUSTOMER_VIEW = Asset("kms://core/single_customer_view")


def _schedule(campaign: Campaign):
    if campaign.schedule == SINGLE_CUSTOMER_VIEW_UPDATE:
        return [SINGLE_CUSTOMER_VIEW]
    return campaign.schedule


def _doc(campaign: Campaign, version: str) -> str:
    offer = f"{campaign.offer.name} ({campaign.offer.sku})" if campaign.offer else "none"
    return (
        f"{campaign.description}\n\n"
        f"| | |\n|---|---|\n| owner | {campaign.owner} |\n| selection | {campaign.selection.name} |\n"
        f"| offer | {offer} |\n| channels | {', '.join(campaign.channels)} |\n"
        f"| control share | {campaign.control_share:.0%} |\n| approval | "
        f"{'required' if campaign.approval_required else 'not required'} |\n"
        f"| definition | campaigns/{campaign.name}.yaml, version {version} |\n"
    )


def build_campaign_dag(campaign: Campaign, version: str):
    """The DAG of one campaign definition."""
    audience = Asset(f"kms://campaign/{campaign.name}/audience")

    @dag(
        dag_id=campaign.dag_id,
        description=campaign.description[:200],
        schedule=_schedule(campaign),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["kms", "campaign", *campaign.tags],
        default_args={"owner": campaign.owner, "retries": 2, "retry_delay": timedelta(minutes=2)},
        params={
            "dry_run": Param(
                False,
                type="boolean",
                description="Only compute and show the waterfall; freeze no audience, publish nothing.",
            ),
            "send_now": send_now_param(),
        },
        doc_md=_doc(campaign, version),
    )
    def campaign_dag():
        @task
        def validate() -> str:
            from campaign_lib.campaign.runs import validate_campaign

            return validate_campaign(campaign.name).version

        @task
        def freeze_audience(params=None, dag_run=None) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            from campaign_lib.airflow_adapter import campaign_engine, leave_run_note
            from campaign_lib.campaign.runs import run_campaign, run_note
            from campaign_lib.campaign.snapshot import RunKey

            engine = campaign_engine()
            try:
                result = run_campaign(
                    engine, campaign.name, RunKey(dag_run.dag_id, dag_run.run_id), dry_run=params["dry_run"]
                )
            finally:
                engine.dispose()
            print(result.waterfall.as_text())
            if params["dry_run"]:
                print(leave_run_note(dag_run.dag_id, dag_run.run_id, run_note(result, dry_run=True)))
                # Skipped, so approval and publishing are skipped too: a dry run hands nothing over.
                raise AirflowSkipException("dry run: the waterfall is above and in the run's note")
            return {**result.as_dict(), "markdown": result.waterfall.as_markdown()}

        @task(outlets=[audience])
        def publish_audience(frozen: dict, dag_run=None, outlet_events=None) -> dict:
            from campaign_lib.airflow_adapter import campaign_engine
            from campaign_lib.campaign.snapshot import approve_run

            if campaign.approval_required:
                engine = campaign_engine()
                try:
                    approve_run(engine, frozen["campaign_run_id"])
                finally:
                    engine.dispose()
            extra = {
                "dag_id": dag_run.dag_id,
                "run_id": dag_run.run_id,
                "campaign": campaign.name,
                "campaign_run_id": frozen["campaign_run_id"],
                "audience": frozen["audience"],
                "control": frozen["control"],
            }
            outlet_events[audience].extra = extra
            return extra

        frozen = freeze_audience()
        validate() >> frozen
        if campaign.approval_required:
            from airflow.providers.standard.operators.hitl import ApprovalOperator

            approve = ApprovalOperator(
                task_id="approve_audience",
                subject=f"Approve the audience of {campaign.name}",
                body="{{ ti.xcom_pull(task_ids='freeze_audience')['markdown'] }}",
                response_timeout=timedelta(days=3),
            )
            published = publish_audience(frozen)
            frozen >> approve >> published
        else:
            published = publish_audience(frozen)
        deliver_audience(published, campaign.channels)

    return campaign_dag()


_wanted = get_parsing_context().dag_id
for _loaded in load_campaigns()[0].values():
    if _wanted is None or _wanted == _loaded.campaign.dag_id:
        build_campaign_dag(_loaded.campaign, _loaded.version)
