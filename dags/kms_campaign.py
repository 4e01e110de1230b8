"""Ad-hoc campaign run: pick a selection, a message template set, channels, a control share and a
limit in the trigger form, and freeze an audience, or only look at its waterfall (dry run, the
default).

The form's lists are read from the folders when the file is parsed (selections/, templates/messages/),
so a new selection or template set appears in the form without a code change. Values outside
them are refused before the run starts. A dry run stops after the waterfall: it is in the task
log and, when the connection `kms_airflow_api` is set, in the run's note. A real run freezes the
audience like a campaign DAG, publishes `kms://campaign/adhoc/audience` (the campaign name and
run key in the event's extra) and delivers it like a campaign DAG (campaign_lib.airflow_delivery:
materialise_outbox, wait_for_send_window, plan_<channel>, deliver_<channel> mapped over the batches,
finish_delivery). An ad-hoc run's send window is the default one (09:00-20:00 Europe/Berlin, every
day); `send_now` sends at once.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, task

from campaign_lib.airflow_delivery import deliver_audience, send_now_param
from campaign_lib.campaign.definition import message_template_sets, selection_choices
from campaign_lib.campaign.settings import load_campaign_settings

ADHOC_AUDIENCE = Asset("kms://campaign/adhoc/audience")
_SELECTIONS = selection_choices() or ["(no selection in selections/)"]
_TEMPLATES = message_template_sets() or ["(no template set in templates/messages/)"]
_PURPOSE = load_campaign_settings().default_purpose


@dag(
    dag_id="kms_campaign",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=2,
    tags=["kms", "campaign", "adhoc"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    params={
        "campaign_name": Param(
            "adhoc",
            type="string",
            pattern="^[a-z][a-z0-9_]{1,62}$",
            description="Name the run is recorded under (control group and reports group by it).",
        ),
        "selection": Param(_SELECTIONS[0], type="string", enum=_SELECTIONS, description="Who: a selection."),
        "selection_params": Param(
            {}, type="object", description='Parameters of the selection, e.g. {"within_days": 365}.'
        ),
        "template": Param(_TEMPLATES[0], type="string", enum=_TEMPLATES, description="Message template set."),
        "email_subject": Param(
            "An offer from the resort",
            type="string",
            minLength=1,
            maxLength=200,
            description="Email subject.",
        ),
        "channels": Param(
            ["email"],
            type="array",
            items={"type": "string", "enum": ["email", "sms", "push"]},
            minItems=1,
            uniqueItems=True,
            description="Channels in order of preference: each person gets the first they can receive.",
        ),
        "purpose": Param(
            _PURPOSE, type="string", pattern="^[a-z][a-z0-9_]*$", description="Consent purpose."
        ),
        "control_share": Param(
            0.1, type="number", minimum=0, maximum=0.5, description="Share held out as control."
        ),
        "limit": Param(
            None, type=["null", "integer"], minimum=1, description="At most this many people (random)."
        ),
        "one_per_household": Param(False, type="boolean", description="At most one person per household."),
        "offer_sku": Param(
            None,
            type=["null", "string"],
            pattern="^[A-Z0-9][A-Z0-9-]{1,31}$",
            description="Offered product: people who bought it are left out.",
        ),
        "dry_run": Param(True, type="boolean", description="Only show the waterfall; freeze nothing."),
        "send_now": send_now_param(),
    },
    doc_md=__doc__,
)
def kms_campaign():
    @task
    def freeze_audience(params=None, dag_run=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from campaign_lib.airflow_adapter import campaign_engine, leave_run_note
        from campaign_lib.campaign.definition import adhoc_campaign
        from campaign_lib.campaign.runs import run_adhoc, run_note
        from campaign_lib.campaign.snapshot import RunKey
        from campaign_lib.errors import ConfigError

        try:
            campaign = adhoc_campaign(dict(params))
        except ConfigError as exc:
            # A wrong template set or selection parameter does not heal by retrying.
            raise AirflowFailException(str(exc)) from exc
        engine = campaign_engine()
        try:
            result = run_adhoc(
                engine, campaign, RunKey(dag_run.dag_id, dag_run.run_id), dry_run=params["dry_run"]
            )
        except ConfigError as exc:
            raise AirflowFailException(str(exc)) from exc
        finally:
            engine.dispose()
        print(result.waterfall.as_text())
        if params["dry_run"]:
            print(leave_run_note(dag_run.dag_id, dag_run.run_id, run_note(result, dry_run=True)))
            raise AirflowSkipException("dry run: the waterfall is above and in the run's note")
        return result.as_dict()

    @task(outlets=[ADHOC_AUDIENCE])
    def publish_audience(frozen: dict, dag_run=None, outlet_events=None) -> dict:
        extra = {
            "dag_id": dag_run.dag_id,
            "run_id": dag_run.run_id,
            "campaign": frozen["campaign"],
            "campaign_run_id": frozen["campaign_run_id"],
            "audience": frozen["audience"],
            "control": frozen["control"],
        }
        outlet_events[ADHOC_AUDIENCE].extra = extra
        return extra

    # Every channel gets its delivery tasks; those the form did not choose have no batch and skip.
    deliver_audience(publish_audience(freeze_audience()), ("email", "sms", "push"))


kms_campaign()
