"""Airflow's API server for tests that need a real login: started once per module that asks.

`api_server` runs `airflow api-server` (core API, which also mounts the plugins of
plugins/) on the tests' metadata database and a free port, waits until it answers, and
yields its address with the admin's login and password (the simple auth manager's
generated file), so a test can get a token from /auth/token.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory):
    """Airflow's API server (core API with the project's plugins) on the tests' metadata
    database, on a free port."""
    import json
    import os
    import signal
    import socket
    import subprocess
    import time

    import httpx

    from campaign_lib.airflow_runtime import airflow_command
    from campaign_lib.config import PROJECT_ROOT

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=base,
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PROJECT_ROOT / "plugins"),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    log = (tmp_path_factory.mktemp("api") / "api-server.log").open("w")
    server = subprocess.Popen(
        airflow_command("api-server", "--port", str(port), "--apps", "core", "--workers", "1"),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the API server did not start"
            time.sleep(1)
        passwords = Path(os.environ["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
        yield {"host": base, "login": "admin", "password": json.loads(passwords.read_text())["admin"]}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
