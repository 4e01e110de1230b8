"""The one module of campaign_lib that talks to Airflow: it reads Airflow connections.

Everything else takes plain URLs and engines, so it runs without a scheduler.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import URL, Engine

from campaign_lib.db import make_engine

CAMPAIGN_DB_CONN_ID = "kms_db"
SFTP_CONN_ID = "kms_sftp"
AIRFLOW_API_CONN_ID = "kms_airflow_api"


def campaign_database_url(conn_id: str = CAMPAIGN_DB_CONN_ID) -> URL:
    """The campaign database's URL from an Airflow connection (a socket folder as host works)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    socket_host = bool(conn.host) and conn.host.startswith("/")
    return URL.create(
        "postgresql+psycopg2",
        username=conn.login or None,
        password=conn.password or None,
        host=None if socket_host else conn.host,
        port=conn.port or None,
        database=conn.schema or None,
        query={"host": conn.host} if socket_host else {},
    )


def campaign_engine(conn_id: str = CAMPAIGN_DB_CONN_ID) -> Engine:
    """An engine on the campaign database named by an Airflow connection."""
    return make_engine(campaign_database_url(conn_id))


def sftp_settings(conn_id: str = SFTP_CONN_ID):
    """The SFTP drop server's settings from an Airflow connection (extra: known_hosts, private_key)."""
    from airflow.sdk import BaseHook

    from connectors.sftp import SftpSettings

    conn = BaseHook.get_connection(conn_id)
    return SftpSettings.from_airflow_connection_fields(
        conn.host, conn.port, conn.login, conn.password, conn.extra_dejson, conn_id=conn_id
    )


def leave_run_note(dag_id: str, run_id: str, note: str, conn_id: str = AIRFLOW_API_CONN_ID) -> str:
    """Write `note` on a DAG run through the API server named by an Airflow connection;
    returns a line for the task log. Never raises: without the connection it says so."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    from campaign_lib.campaign.run_note_api import leave_note

    try:
        api = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        api = None
    return leave_note(api, dag_id, run_id, note)


TRACKING_CONN_ID = "kms_tracking"
# The Airflow connections of each delivery channel; push has one for FCM and one for Web Push,
# either of which may be missing.
DELIVERY_CONN_IDS = {
    "email": "kms_smtp",
    "sms": "kms_sms",
    "push_fcm": "kms_push_fcm",
    "push_webpush": "kms_push_webpush",
}


def connection_dict(conn_id: str, *, required: bool = True) -> dict[str, object] | None:
    """An Airflow connection as the mapping connectors take (conn_type, host, port, login,
    password, schema, extra as a dict); None for a missing optional one."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        if required:
            raise
        return None
    return {
        "conn_type": conn.conn_type,
        "host": conn.host,
        "port": conn.port,
        "login": conn.login,
        "password": conn.password,
        "schema": conn.schema,
        "extra": conn.extra_dejson,
    }


def tracking_links(conn_id: str = TRACKING_CONN_ID):
    """The signed tracking links from the connection `kms_tracking` (password = secret, host =
    public base URL), or from the environment when there is no such connection."""
    from campaign_lib.tracking.tokens import tracking_links_from_connection, tracking_links_from_env

    conn = connection_dict(conn_id, required=False)
    return tracking_links_from_env() if conn is None else tracking_links_from_connection(conn)


def delivery_connector(channel: str):
    """(connector factory, SendOptions) for a channel from its Airflow connection(s): kms_smtp,
    kms_sms, kms_push_fcm and/or kms_push_webpush. Each call of the factory builds a new
    connector (one per sender thread); the outbox's options come from the connection's extra
    `outbox` (e.g. {"outbox": {"workers": 4, "messages_per_second": 200}})."""
    from campaign_lib.delivery import send_options

    if channel == "email":
        from connectors.email import EmailConnector

        conn = connection_dict(DELIVERY_CONN_IDS["email"])
        return (lambda: EmailConnector.from_connection(conn)), send_options(
            conn["extra"].get("outbox"), channel
        )
    if channel == "sms":
        from connectors.sms import SmsConnector

        conn = connection_dict(DELIVERY_CONN_IDS["sms"])
        return (lambda: SmsConnector.from_connection(conn)), send_options(
            conn["extra"].get("outbox"), channel
        )
    if channel == "push":
        from campaign_lib.errors import ConfigError
        from connectors.push import PushConnector

        fcm = connection_dict(DELIVERY_CONN_IDS["push_fcm"], required=False)
        webpush = connection_dict(DELIVERY_CONN_IDS["push_webpush"], required=False)
        if fcm is None and webpush is None:
            raise ConfigError("push delivery needs the Airflow connection kms_push_fcm or kms_push_webpush")
        extra = (fcm or webpush)["extra"]
        return (lambda: PushConnector.from_connection(fcm, webpush)), send_options(
            extra.get("outbox"), channel
        )
    raise ValueError(f"no delivery connector for channel {channel!r}")


def materialise_outbox_task(campaign_run_id: int) -> int:
    """The `materialise_outbox` task of the campaign DAGs: the run's messages from its frozen
    audience (idempotent); returns the run id for the planning tasks."""
    from campaign_lib.delivery import materialise_outbox

    engine = campaign_engine()
    try:
        messages = materialise_outbox(engine, campaign_run_id)
    finally:
        engine.dispose()
    print(f"campaign run {campaign_run_id}: {messages:,} messages in the outbox")
    return campaign_run_id


def plan_channel_task(campaign_run_id: int, channel: str) -> list[int]:
    """The `plan_<channel>` task: the channel's batches that still have work, for the mapped
    `deliver_<channel>` task (none after everything was sent: a rerun maps no task)."""
    from campaign_lib.delivery import plan_batches

    engine = campaign_engine()
    try:
        batches = plan_batches(engine, campaign_run_id)[channel]
    finally:
        engine.dispose()
    print(f"campaign run {campaign_run_id}: {channel} batches to send: {batches}")
    return batches


def deliver_task(
    campaign_run_id: int, channel: str, batch_no: int, *, send_now: bool = False
) -> dict[str, object]:
    """One mapped `deliver_<channel>` task: send one batch inside the campaign's send window
    (`send_now`: at any time). A paused run, refused credentials or a wrong setting fail the task
    without retries (a retry would not help); a provider that is down raises
    TransientDeliveryError, which Airflow retries. Outside the window (at the start, or once it
    closes mid-batch) the task sends nothing more and raises AirflowRescheduleException: it
    waits, up_for_reschedule and without a worker slot, until the window opens."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowRescheduleException

    from campaign_lib.delivery import deliver_run_batch
    from campaign_lib.errors import ConfigError, DeliveryPaused, PermanentDeliveryError

    engine = campaign_engine()
    try:
        factory, options = delivery_connector(channel)
        result = deliver_run_batch(
            engine, campaign_run_id, channel, batch_no, factory, options, tracking_links(), send_now=send_now
        )
    except (DeliveryPaused, PermanentDeliveryError, ConfigError) as exc:
        raise AirflowFailException(str(exc)) from exc
    finally:
        engine.dispose()
    print(f"campaign run {campaign_run_id}, {channel} batch {batch_no}: {result.outcomes}")
    if result.window_opens_at is not None:
        print(
            f"campaign run {campaign_run_id}, {channel} batch {batch_no}: {result.window_closed}; "
            f"{result.waiting_for_window:,} messages wait for it. The task waits until then "
            f"(up_for_reschedule); to send them now: `kms delivery send {campaign_run_id} --send-now`."
        )
        raise AirflowRescheduleException(result.window_opens_at)
    return result.as_dict()


def finish_delivery_task(campaign_run_id: int) -> dict[str, object]:
    """The `finish_delivery` task: settle leftovers (expired leases, receipts, the channel
    policies), complete the run when every message is final, and print the summary."""
    from campaign_lib.delivery import finish_delivery

    engine = campaign_engine()
    try:
        state = finish_delivery(engine, campaign_run_id)
    finally:
        engine.dispose()
    print(state.as_text())
    if state.status != "completed":
        print(
            "Not every message is final yet (ambiguous, soft-failed or pending ones above): "
            f"see `kms delivery status {campaign_run_id}` and docs/delivery.md"
        )
    return {"campaign_run_id": campaign_run_id, "status": state.status, "counts": state.counts}


def render_report_task(campaign_run_id: int, *, with_index: bool = True) -> str:
    """The `render_report` tasks: the run's ROI report and (`with_index`) the index of all
    reports; returns the report's path (the PDF and the summary are beside it)."""
    from campaign_lib.reporting import render_campaign_report, render_index

    engine = campaign_engine()
    try:
        report = render_campaign_report(engine, campaign_run_id)
        if with_index:
            render_index(engine)
    finally:
        engine.dispose()
    print(f"report: {report}\npdf:    {report.with_suffix('.pdf')}")
    return str(report)


def send_window_task(campaign_run_id: int, at: datetime | None = None) -> bool:
    """The `wait_for_send_window` sensor's check: is the run's send window open at `at` (now)?
    Prints when it opens when it is not."""
    from campaign_lib.delivery.runs import campaign_of_run

    engine = campaign_engine()
    try:
        window = campaign_of_run(engine, campaign_run_id).send_window
    finally:
        engine.dispose()
    at = at or datetime.now(UTC)
    opens = window.opens_at(at)
    if opens is None:
        print(f"campaign run {campaign_run_id}: inside its send window ({window.describe()}), sending")
        return True
    print(
        f"campaign run {campaign_run_id}: outside its send window ({window.describe()}); it opens "
        f"{window.local_time(opens)}, in {opens - at}. Trigger with send_now to send at once."
    )
    return False
