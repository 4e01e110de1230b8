"""The one module of campaign_lib that talks to Airflow: it reads Airflow connections.

Everything else takes plain URLs and engines, so it runs without a scheduler.
"""

from __future__ import annotations

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
