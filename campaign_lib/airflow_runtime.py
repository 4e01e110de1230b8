"""Running Airflow for kms: its environment, and starting and stopping its components.

This module starts Airflow as separate processes and never imports it, so `kms`
answers quickly. Every Airflow process gets the same environment: the project's
airflow.cfg, AIRFLOW_HOME under the kms home folder, the metadata in the `airflow`
database, the Airflow connection `kms_db` pointing at the campaign database, and
secrets generated once per installation (never stored in git).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy.engine import URL

from campaign_lib.config import PROJECT_ROOT, Settings
from campaign_lib.db import Databases
from campaign_lib.errors import ConfigError, KmsError
from campaign_lib.files import last_log_line

COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
# Local stand-ins started beside Airflow, each unless the environment names the real system
# by its connection: component name -> (that connection's variable, the `kms` command).
LOCAL_SERVERS = {
    "sftp-server": ("AIRFLOW_CONN_KMS_SFTP", ("sftp", "serve")),
    "smtp-server": ("AIRFLOW_CONN_KMS_SMTP", ("smtp", "serve")),
    "provider-emulators": ("AIRFLOW_CONN_KMS_SMS", ("providers", "serve")),
}
LOCAL_SFTP_USER = "resort-drops"
ADMIN_USER = "admin"


class AirflowError(KmsError):
    """An Airflow component did not start or stop as expected."""


@dataclass(frozen=True)
class Endpoint:
    """Where the Airflow UI answers and how to log in."""

    url: str
    user: str
    password: str


def kms_db_connection(url: URL) -> str:
    """The Airflow connection `kms_db` for a campaign database URL, in JSON form
    (the URI form loses a Unix-socket host)."""
    fields = {
        "conn_type": "postgres",
        "host": url.query.get("host") or url.host,
        "port": url.port,
        "login": url.username,
        "password": url.password,
        "schema": url.database,
    }
    return json.dumps({key: value for key, value in fields.items() if value is not None})


def airflow_environment(settings: Settings, databases: Databases) -> dict[str, str]:
    """The process environment for every Airflow command kms runs."""
    keys = _installation_secrets(settings.home)
    base_url = f"http://127.0.0.1:{settings.airflow_port}"
    env = dict(os.environ)
    # Without bytecode files every Airflow process recompiles Airflow (2x slower start).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        {
            "AIRFLOW_HOME": str(settings.airflow_home),
            "AIRFLOW_CONFIG": str(PROJECT_ROOT / "airflow.cfg"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": databases.airflow.render_as_string(hide_password=False),
            "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
            "AIRFLOW__API__PORT": str(settings.airflow_port),
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW_CONN_KMS_DB": kms_db_connection(databases.kms),
            "AIRFLOW_CONN_KMS_SFTP": env.get("AIRFLOW_CONN_KMS_SFTP")
            or local_sftp_connection(settings, keys),
            "AIRFLOW_CONN_KMS_AIRFLOW_API": env.get("AIRFLOW_CONN_KMS_AIRFLOW_API")
            or json.dumps(
                {
                    "conn_type": "http",
                    "host": base_url,
                    "login": ADMIN_USER,
                    "password": admin_password(settings.airflow_home),
                }
            ),
            "KMS_HOME": str(settings.home),
            "GX_ANALYTICS_ENABLED": "false",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


def admin_password(airflow_home: Path) -> str:
    """The UI's admin password, which tasks also use for Airflow's REST API (connection
    `kms_airflow_api`: a dry run writes its waterfall into the run's note).

    Airflow's simple auth manager keeps its passwords in a file it creates on first start;
    kms writes that file first, so the connection can name the password before Airflow runs.
    """
    path = airflow_home / "simple_auth_manager_passwords.json.generated"
    if path.is_file():
        password = json.loads(path.read_text()).get(ADMIN_USER)
        if password:
            return password
    password = secrets.token_urlsafe(18)
    airflow_home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({ADMIN_USER: password}, out)
    return password


def local_servers() -> dict[str, list[str]]:
    """Name -> command line of the local stand-ins this environment needs (LOCAL_SERVERS)."""
    return {
        name: [sys.executable, "-m", "campaign_lib.cli", *command]
        for name, (variable, command) in LOCAL_SERVERS.items()
        if variable not in os.environ
    }


def local_server_ports(settings: Settings) -> dict[str, tuple[int, str]]:
    """Name -> (port, the setting that moves it) of each local stand-in."""
    from campaign_lib.local_servers.provider_setup import DEFAULT_PORT
    from connectors.email import LOCAL_SMTP_PORT

    return {
        "sftp-server": (settings.sftp_port, "KMS_SFTP_PORT"),
        "smtp-server": (int(os.environ.get("KMS_SMTP_PORT") or LOCAL_SMTP_PORT), "KMS_SMTP_PORT"),
        "provider-emulators": (
            int(os.environ.get("KMS_PROVIDERS_PORT") or DEFAULT_PORT),
            "KMS_PROVIDERS_PORT",
        ),
    }


def delivery_connections(settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    """AIRFLOW_CONN_* of the delivery connectors that the environment does not set: the local
    SMTP server and the SMS and push provider emulators that `kms up` starts."""
    from campaign_lib.local_servers.provider_setup import local_provider_connections
    from connectors.email import smtp_connection_from_env

    local = {"kms_smtp": smtp_connection_from_env(env)}
    if any(
        f"AIRFLOW_CONN_{name.upper()}" not in env for name in ("kms_sms", "kms_push_fcm", "kms_push_webpush")
    ):
        local |= local_provider_connections(settings.home, env)
    return {
        f"AIRFLOW_CONN_{name.upper()}": json.dumps(conn)
        for name, conn in local.items()
        if f"AIRFLOW_CONN_{name.upper()}" not in env
    }


def local_sftp_connection(settings: Settings, keys: dict[str, str]) -> str:
    """The Airflow connection `kms_sftp` to the local drop server, host key included."""
    from campaign_lib.local_servers.sftp import known_hosts_line, persistent_host_key

    host_key = persistent_host_key(settings.home / "sftp_host_key")
    return json.dumps(
        {
            "conn_type": "sftp",
            "host": "127.0.0.1",
            "port": settings.sftp_port,
            "login": LOCAL_SFTP_USER,
            "password": keys["sftp_password"],
            "extra": {"known_hosts": known_hosts_line(host_key, settings.sftp_port)},
        }
    )


def local_sftp_password(home: Path) -> str:
    """The password of the local drop server's one user (generated with the other secrets)."""
    return _installation_secrets(home)["sftp_password"]


def airflow_command(*args: str) -> list[str]:
    """The command line of `airflow ARGS` in this virtual environment."""
    return [sys.executable, "-m", "airflow", *args]


def migrate_metadata(env: dict[str, str], log_file: Path) -> None:
    """Run `airflow db migrate` (idempotent) and set the delivery pools, logging to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        result = subprocess.run(
            airflow_command("db", "migrate"), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    if result.returncode != 0:
        raise AirflowError(f"airflow db migrate failed; see {log_file}: {last_log_line(log_file)}")
    pools_file = log_file.parent / "delivery-pools.json"
    pools_file.write_text(json.dumps(delivery_pools(env)), encoding="utf-8")
    with log_file.open("ab") as log:
        result = subprocess.run(
            airflow_command("pools", "import", str(pools_file)), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    if result.returncode != 0:
        raise AirflowError(f"airflow pools import failed; see {log_file}: {last_log_line(log_file)}")


# How many delivery tasks of a channel run at once across all campaigns (each email task
# opens up to 4 SMTP sessions, see campaign_lib.delivery.runs.CHANNEL_DEFAULTS).
DELIVERY_POOL_SLOTS = {"email": 4, "sms": 2, "push": 2}


def delivery_pools(env: Mapping[str, str]) -> dict[str, dict[str, object]]:
    """The Airflow pools kms_email, kms_sms and kms_push the delivery tasks run in; slots from
    KMS_POOL_SLOTS_EMAIL, _SMS, _PUSH (defaults DELIVERY_POOL_SLOTS). Set at every `kms up`."""
    pools = {}
    for channel, default in DELIVERY_POOL_SLOTS.items():
        name = f"KMS_POOL_SLOTS_{channel.upper()}"
        raw = env.get(name) or str(default)
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"{name} must be a positive whole number, not {raw!r}")
        pools[f"kms_{channel}"] = {
            "slots": int(raw),
            "description": f"kms {channel} delivery tasks running at once (the provider's capacity)",
            "include_deferred": False,
        }
    return pools


class AirflowServices:
    """The scheduler, DAG processor, triggerer and API server of one kms home, and the local
    SFTP, SMTP and provider stand-ins beside them unless the real systems are configured."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.run_dir = settings.home / "run"
        self.log_dir = settings.home / "logs"

    def commands(self) -> dict[str, list[str]]:
        """Component name -> command line of every component `start` runs."""
        return {name: airflow_command(name) for name in COMPONENTS} | local_servers()

    def running(self) -> dict[str, int]:
        """Component name -> pid of every component that is alive."""
        alive = {}
        for name in (*COMPONENTS, *LOCAL_SERVERS):
            pid = self._read_pid(name)
            if pid is not None and _alive(pid):
                alive[name] = pid
        return alive

    def start(self, env: dict[str, str], timeout: float = 300.0) -> Endpoint:
        """Start every component that is not running and wait until the UI answers."""
        port = self.settings.airflow_port
        already = self.running()
        commands = self.commands()
        if "api-server" not in already:
            ensure_port_free(port)
        for name, (server_port, setting) in local_server_ports(self.settings).items():
            if name in commands and name not in already:
                ensure_port_free(server_port, setting)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, command in commands.items():
            if name in already:
                continue
            with (self.log_dir / f"{name}.log").open("ab") as log:
                process = subprocess.Popen(
                    command,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            (self.run_dir / f"{name}.pid").write_text(str(process.pid))
        self._wait_healthy(port, timeout, commands)
        return self.endpoint()

    def stop(self, timeout: float = 30.0) -> list[str]:
        """Stop every running component (SIGTERM, then SIGKILL after `timeout`)."""
        running = self.running()
        for pid in running.values():
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(pid) for pid in running.values()):
            time.sleep(0.2)
        for pid in running.values():
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)
        for name in (*COMPONENTS, *LOCAL_SERVERS):
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        return sorted(running)

    def endpoint(self) -> Endpoint:
        """The UI's URL and the admin login."""
        return Endpoint(
            url=f"http://127.0.0.1:{self.settings.airflow_port}",
            user=ADMIN_USER,
            password=admin_password(self.settings.airflow_home),
        )

    def _wait_healthy(self, port: int, timeout: float, commands: dict[str, list[str]]) -> None:
        deadline = time.monotonic() + timeout
        health = f"http://127.0.0.1:{port}/api/v2/monitor/health"
        while time.monotonic() < deadline:
            dead = [name for name in commands if name not in self.running()]
            if dead:
                log = self.log_dir / f"{dead[0]}.log"
                raise AirflowError(f"airflow {dead[0]} exited; see {log}: {last_log_line(log)}")
            try:
                with urllib.request.urlopen(health, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1.0)
        raise AirflowError(f"the Airflow UI did not answer on {health} within {timeout:.0f} s")

    def _read_pid(self, name: str) -> int | None:
        try:
            return int((self.run_dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None


def ensure_port_free(port: int, setting: str = "KMS_AIRFLOW_PORT") -> None:
    """Raise ConfigError when something already listens on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(
                f"port {port} on 127.0.0.1 is in use ({exc.strerror}); "
                f"stop what uses it or set {setting} to a free port"
            ) from exc


def _installation_secrets(home: Path) -> dict[str, str]:
    """Keys generated once per installation and kept in a file only its owner can read."""
    path = home / "secrets.json"
    keys = json.loads(path.read_text()) if path.is_file() else {}
    wanted = {
        "fernet_key": lambda: Fernet.generate_key().decode(),
        "jwt_secret": lambda: secrets.token_urlsafe(48),
        "api_secret_key": lambda: secrets.token_urlsafe(48),
        "sftp_password": lambda: secrets.token_urlsafe(24),
    }
    missing = {name: make() for name, make in wanted.items() if name not in keys}
    if missing:
        keys.update(missing)
        home.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(keys, out)
        partial.replace(path)
    return keys


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this very process still answers kill(0); reap it.
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return finished == 0


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
