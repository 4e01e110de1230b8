"""Set a DAG run's note through Airflow's public REST API.

Airflow 3.3's Task SDK can read a run's note but not write it (a runtime helper is proposed
upstream, apache/airflow#64890), so a task that wants to leave its result on the run, such as
a dry run's waterfall, asks the API server like the UI does: a token from `/auth/token`, then
`PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}` with the note. ADR 0009 says why it degrades.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx


def set_run_note(
    base_url: str,
    username: str,
    password: str,
    dag_id: str,
    run_id: str,
    note: str,
    *,
    client: httpx.Client | None = None,
) -> None:
    """Write `note` on the run; raises httpx.HTTPError when the API server refuses or is away."""
    owned = client is None
    http = client or httpx.Client(base_url=base_url.rstrip("/"), timeout=10)
    try:
        token = http.post("/auth/token", json={"username": username, "password": password})
        token.raise_for_status()
        response = http.patch(
            f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}",
            params={"update_mask": "note"},
            json={"note": note},
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )
        response.raise_for_status()
    finally:
        if owned:
            http.close()


def leave_note(connection, dag_id: str, run_id: str, note: str) -> str:
    """Set the run's note with the API server named by an Airflow connection (host with
    scheme, port, login, password) and return a line for the task log. Never raises: the
    note is a convenience, the waterfall is in the log and the database either way."""
    if connection is None:
        return "run note not set: no Airflow connection kms_airflow_api (see docs/campaigns.md)"
    host = connection.host if "://" in (connection.host or "") else f"http://{connection.host}"
    base_url = f"{host}:{connection.port}" if connection.port else host
    try:
        set_run_note(base_url, connection.login, connection.password, dag_id, run_id, note)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        return f"run note not set: {base_url} answered {exc}"
    return "run note set"
