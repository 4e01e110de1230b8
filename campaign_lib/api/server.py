"""Running the ingest API standalone with uvicorn, in the foreground (`kms api serve`) or
in a background thread (tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

from sqlalchemy.engine import URL, Engine, make_url

from campaign_lib.api.limits import ApiLimits
from campaign_lib.errors import KmsError

# Connections one server process may hold: MAX_CONCURRENT_LOADS loads of up to three each,
# key checks and identity resolution beside them.
POOL_SIZE = 8
MAX_OVERFLOW = 8


def _engine_factory(engine_url: URL | str | None):
    def make() -> Engine:
        from campaign_lib.db import make_engine

        url = engine_url
        if url is None:
            from campaign_lib.config import load_settings
            from campaign_lib.db import open_databases

            url = open_databases(load_settings()).kms
        return make_engine(make_url(url), pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)

    return make


def _config(
    host: str,
    port: int,
    engine_url: URL | str | None,
    limits: ApiLimits | None,
    log_level: str,
    access_log: bool,
):
    import uvicorn

    from campaign_lib.api.app import create_app

    app = create_app(_engine_factory(engine_url), limits)
    # proxy_headers: behind the company's reverse proxy, logs show the client's address.
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, proxy_headers=True, access_log=access_log
    )


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    engine_url: URL | str | None = None,
    *,
    limits: ApiLimits | None = None,
    log_level: str = "info",
) -> None:
    """Serve the ingest API until interrupted (SIGINT/SIGTERM). Without `engine_url`, the
    campaign database of the settings (KMS_DATABASE_URL or the embedded server)."""
    import uvicorn

    uvicorn.Server(_config(host, port, engine_url, limits, log_level, access_log=True)).run()


@dataclass
class RunningServer:
    """A server started by `start_in_thread`; `stop()` shuts it down and waits."""

    base_url: str
    server: object
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def start_in_thread(
    engine_url: URL | str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    limits: ApiLimits | None = None,
    log_level: str = "warning",
) -> RunningServer:
    """Start the API on `engine_url`'s database in a daemon thread; returns once it accepts connections."""
    port = port or free_port(host)
    return run_in_thread(_config(host, port, engine_url, limits, log_level, access_log=False))


def run_in_thread(config, timeout: float = 20.0) -> RunningServer:
    """Run a `uvicorn.Config` (any ASGI app) in a daemon thread; returns once it accepts connections."""
    import uvicorn

    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"kms-api-{config.port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise KmsError(f"the ingest API did not start on {config.host}:{config.port}")
        time.sleep(0.02)
    return RunningServer(f"http://{config.host}:{config.port}", server, thread)
