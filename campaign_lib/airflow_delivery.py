"""The delivery and report part of the campaign DAGs, shared by dags/kms_campaigns.py and
dags/kms_campaign.py.

    deliver_audience(published, channels)
        materialise_outbox → wait_for_send_window → plan_<channel> → deliver_<channel> (mapped
        over its batches, pool kms_<channel>; each waits again, up_for_reschedule, when the send
        window is closed) → finish_delivery → render_report

Like a DAG file it imports only `airflow.sdk` at the top (it runs at parse time); each task
calls one function of campaign_lib.airflow_adapter, which does the work (docs/delivery.md,
ADR 0010).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from airflow.sdk import BaseSensorOperator, Param, PokeReturnValue, get_current_context, task


@task
def materialise_outbox(published: dict) -> int:
    from campaign_lib.airflow_adapter import materialise_outbox_task

    return materialise_outbox_task(published["campaign_run_id"])


class SendWindowSensor(BaseSensorOperator):
    """Waits until the campaign run's send window opens, freeing its worker slot between pokes;
    the run's `send_now` param skips the wait.

    A plain sensor rather than @task.sensor: the standard provider's PythonSensor behind that
    decorator imports a deprecated Airflow path, a warning at every parse.
    """

    template_fields = ("campaign_run_id",)

    def __init__(self, *, campaign_run_id, **kwargs) -> None:
        super().__init__(**kwargs)
        self.campaign_run_id = campaign_run_id

    def poke(self, context) -> PokeReturnValue:
        from campaign_lib.airflow_adapter import send_window_task

        send_now = context["params"]["send_now"]
        if send_now:
            print(f"campaign run {self.campaign_run_id}: send_now, not waiting for the send window")
        done = send_now or send_window_task(self.campaign_run_id)
        return PokeReturnValue(is_done=done)


@task
def plan(campaign_run_id: int, channel: str) -> list[int]:
    from campaign_lib.airflow_adapter import plan_channel_task

    return plan_channel_task(campaign_run_id, channel)


# Each try checks the send window before every chunk; the run's send_now param holds for every
# try, retries included.
@task(retries=3, retry_delay=timedelta(seconds=30))
def deliver(campaign_run_id: int, channel: str, batch_no: int) -> dict:
    from campaign_lib.airflow_adapter import deliver_task

    send_now = get_current_context()["params"]["send_now"]
    return deliver_task(campaign_run_id, channel, batch_no, send_now=send_now)


# Runs after the channels' tasks, also when one had no batch (skipped), never on a dry run
# (then everything upstream is skipped).
@task(trigger_rule="none_failed_min_one_success")
def finish_delivery(campaign_run_id: int) -> dict:
    from campaign_lib.airflow_adapter import finish_delivery_task

    return finish_delivery_task(campaign_run_id)


# The first report right after delivery; the daily kms_reports DAG renders it again while the
# response window is open. A run that is paused or still settling gets its report too.
@task(trigger_rule="none_failed_min_one_success")
def render_report(finished: dict) -> str:
    from campaign_lib.airflow_adapter import render_report_task

    return render_report_task(finished["campaign_run_id"])


def send_now_param() -> Param:
    """The campaign DAGs' `send_now` param: the campaign manager's override of the send window."""
    return Param(False, type="boolean", description="Send at once, outside the campaign's send window")


def deliver_audience(published, channels: Iterable[str]):
    """Wire the delivery tasks and the report after the task whose XCom is the published
    audience (a dict with campaign_run_id); returns the render_report task's XCom."""
    run_id = materialise_outbox(published)
    # Pokes every 5 minutes for at most a week (a window opens within a week); a sensor's
    # timeout fails the task without retries. Only an upstream of the planning tasks, so a
    # campaign manager may mark it success in the UI to send at once.
    window = SendWindowSensor(
        task_id="wait_for_send_window",
        campaign_run_id=run_id,
        mode="reschedule",
        poke_interval=300,
        timeout=timedelta(days=7, hours=1).total_seconds(),
    )
    delivered = []
    for channel in channels:
        batches = plan.override(task_id=f"plan_{channel}")(run_id, channel)
        window >> batches
        delivered.append(
            deliver.override(task_id=f"deliver_{channel}", pool=f"kms_{channel}")
            .partial(campaign_run_id=run_id, channel=channel)
            .expand(batch_no=batches)
        )
    finished = finish_delivery(run_id)
    delivered >> finished
    return render_report(finished)
