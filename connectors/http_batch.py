"""Many HTTP requests in flight from a synchronous `send`: the engine of the SMS and push connectors,
and the small readers of connection fields and answers they share.

The outbox calls `Connector.send(batch)` from a plain thread and wants each `Outcome` as
soon as it is known. One request at a time tops out near 730 req/s on this kind of
machine (PERFORMANCE_NOTES.md: httpx sync with keep-alive), 16 aiohttp requests in flight
near 1,900 req/s. So an `HttpBatchRunner` keeps one asyncio loop in a daemon thread with
one aiohttp session (keep-alive connections, reused across batches), runs up to
`concurrency` attempts at a time there, and hands their outcomes back through a queue
while the caller is still busy committing the earlier ones:

    runner = HttpBatchRunner(concurrency=16, timeout=10.0)
    for outcome in runner.run(messages, attempt, unexpected):   # attempt(session, message) -> Outcome
        record(outcome)
    runner.close()

An attempt that raises a `DeliveryError` (credentials refused, say) stops the run: no
further message is started, the attempts in flight finish and their outcomes are handed
back, then the error is raised, so the outbox never loses an outcome of a message that
was handed over (an attempt that fails with an unexpected error gets an `ambiguous`
outcome from the caller's `unexpected` first). `rate_per_second` spaces the starts of
attempts (a provider's rate limit).
"""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import aiohttp

from campaign_lib.errors import ConfigError, DeliveryError
from connectors.base import Outcome

_Message = TypeVar("_Message")
Attempt = Callable[[aiohttp.ClientSession, _Message], Awaitable[Outcome]]
_DONE = object()
# Seconds to open a connection: a provider that takes longer is treated as down.
CONNECT_TIMEOUT = 5.0


class HttpBatchRunner:
    """An asyncio loop in a daemon thread with one aiohttp session; see the module docstring."""

    def __init__(
        self,
        *,
        concurrency: int = 16,
        timeout: float = 10.0,
        rate_per_second: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.timeout = timeout
        self.rate_per_second = rate_per_second
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="http-batch", daemon=True)
        self._thread.start()
        self._session: aiohttp.ClientSession = self._call(self._open_session())
        self._next_start = 0.0
        self._tasks: set[asyncio.Task] = set()

    def _call(self, coro: Awaitable[object]):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    async def _open_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(
                total=self.timeout, sock_connect=min(self.timeout, CONNECT_TIMEOUT)
            ),
        )

    def run(
        self,
        messages: Sequence[_Message],
        attempt: Attempt,
        unexpected: Callable[[_Message, Exception], Outcome],
    ) -> Iterator[Outcome]:
        """Run `attempt` for every message, up to `concurrency` at once; yield outcomes as they come.

        An attempt that fails with anything but a DeliveryError (a bug) may have handed its
        message over: `unexpected(message, error)` gives its outcome (ambiguous), then the run
        stops like for a DeliveryError and the error is raised."""
        if not messages:
            return
        results: queue.SimpleQueue[object] = queue.SimpleQueue()
        stop = threading.Event()
        workers = min(self.concurrency, len(messages))
        position = iter(range(len(messages)))

        async def worker() -> None:
            try:
                for index in position:
                    if stop.is_set():
                        break
                    await self._pace()
                    try:
                        results.put(await attempt(self._session, messages[index]))
                    except DeliveryError as exc:
                        stop.set()
                        results.put(exc)
                    except Exception as exc:
                        stop.set()
                        results.put(unexpected(messages[index], exc))
                        results.put(exc)
            finally:
                results.put(_DONE)

        def start() -> None:
            for _ in range(workers):
                task = self._loop.create_task(worker())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        # Not waited for: the first outcome in the queue is the answer.
        self._loop.call_soon_threadsafe(start)
        finished = 0
        error: BaseException | None = None
        try:
            while finished < workers:
                item = results.get()
                if item is _DONE:
                    finished += 1
                elif isinstance(item, BaseException):
                    error = error or item
                else:
                    assert isinstance(item, Outcome)
                    yield item
        finally:
            stop.set()
        if error is not None:
            raise error

    async def _pace(self) -> None:
        if not self.rate_per_second:
            return
        now = time.monotonic()
        start_at = max(now, self._next_start)
        self._next_start = start_at + 1.0 / self.rate_per_second
        if start_at > now:
            await asyncio.sleep(start_at - now)

    def close(self) -> None:
        """Close the session and end the loop thread (idempotent)."""
        if not self._thread.is_alive():
            return
        self._call(self._session.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def connection_extra(conn: Mapping[str, Any]) -> dict[str, Any]:
    """A connection's extra as a dict (Airflow hands it as JSON text or as a dict)."""
    extra = conn.get("extra") or {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra or "{}")
        except ValueError as exc:
            raise ConfigError("the connection's extra is not JSON") from exc
    if not isinstance(extra, Mapping):
        raise ConfigError("the connection's extra must be a JSON object")
    return dict(extra)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An event loop for HTTP work: uvloop's where it is installed (it roughly halves the CPU
    per request of asyncio's own loop), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def base_url_from_connection(conn: Mapping[str, Any], default_scheme: str = "https") -> str:
    """The base URL of an HTTP API from an Airflow connection: extra `base_url`, or the host
    when it is a URL, or schema://host:port."""
    extra = connection_extra(conn)
    if extra.get("base_url"):
        return str(extra["base_url"]).rstrip("/")
    host = str(conn.get("host") or "")
    if not host:
        raise ConfigError("the connection has neither a host nor an extra 'base_url'")
    if "://" in host:
        return host.rstrip("/")
    scheme = conn.get("schema") or default_scheme
    port = conn.get("port")
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def flag(value: object) -> bool:
    """A connection extra read as a yes/no switch."""
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def json_object(body: bytes) -> dict[str, Any]:
    """A JSON answer body as a dict; {} when it is not a JSON object."""
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def basic_authorization(user: str, password: str) -> str:
    """The value of an HTTP Basic Authorization header (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
