"""A real SFTP server for the demo, tests and benchmarks: asyncssh on 127.0.0.1 in a background thread.

It serves one local folder as its root ("/" on the wire), accepts one user by password
and/or public key, presents a host key generated once per process (so known_hosts text
stays valid for every server started in that process), records every connection and
authentication attempt it sees, and can drop a client's connection in the middle of a
download on demand:

    with LocalSftpServer(root, username="feed", password="s3cret") as server:
        known_hosts = server.known_hosts_line()   # "[127.0.0.1]:PORT ssh-ed25519 AAAA..."
        server.drop_connection_after(1_000_000)   # abort after 1 MB of file data was served
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

_T = TypeVar("_T")

# asyncssh's window and packet size (defaults 2 MiB, 32 KiB) limit what the server receives;
# on downloads the client's advertised window and packet size govern what it sends (bench/sftp.py
# measures both). The larger values speed up uploads, which the demo's feeds use to drop files.
SERVER_WINDOW = 64 * 1024 * 1024
SERVER_MAX_PACKET = 256 * 1024


@functools.cache
def default_host_key() -> asyncssh.SSHKey:
    """The host key every LocalSftpServer of this process presents unless told otherwise."""
    return asyncssh.generate_private_key("ssh-ed25519")


def persistent_host_key(path: Path) -> asyncssh.SSHKey:
    """The host key kept in `path` (created, mode 0600, on first use), so that a server that
    restarts keeps the key its clients' known_hosts entries name."""
    if path.is_file():
        return asyncssh.read_private_key(str(path))
    key = generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key("openssh"))
    return key


def known_hosts_line(key: asyncssh.SSHKey, port: int) -> str:
    """An OpenSSH known_hosts line naming `key` for 127.0.0.1:`port`."""
    algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
    return f"[127.0.0.1]:{port} {algorithm} {blob}"


def serve_forever(root: Path, *, port: int, username: str, password: str, host_key: asyncssh.SSHKey) -> None:
    """Serve `root` on 127.0.0.1:`port` until SIGTERM or SIGINT (the `kms up` drop server)."""
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    root.mkdir(parents=True, exist_ok=True)
    with LocalSftpServer(root, username=username, password=password, host_key=host_key, port=port):
        stopped.wait()


def generate_key(algorithm: str = "ssh-ed25519") -> asyncssh.SSHKey:
    """A fresh key pair, e.g. a client key or a 'changed' host key."""
    return asyncssh.generate_private_key(algorithm)


def private_key_text(key: asyncssh.SSHKey, passphrase: str | None = None, rounds: int = 16) -> str:
    """The private key in OpenSSH PEM format, as a user would paste it into a connection.

    A passphrase is stretched with ssh-keygen's default of 16 bcrypt rounds (asyncssh's own
    default of 128 costs seconds per load on a busy machine).
    """
    return key.export_private_key("openssh", passphrase, rounds=rounds, ignore_few_rounds=True).decode()


@dataclass(frozen=True)
class AuthAttempt:
    """One credential the server received: method is "password" or "publickey"."""

    username: str
    method: str
    accepted: bool


class LocalSftpServer:
    """An asyncssh SFTP server on 127.0.0.1 serving `root`; use as a context manager or start()/stop()."""

    def __init__(
        self,
        root: Path,
        *,
        username: str = "feed",
        password: str | None = None,
        client_key: asyncssh.SSHKey | None = None,
        host_key: asyncssh.SSHKey | None = None,
        port: int = 0,
        window: int = SERVER_WINDOW,
        max_pktsize: int = SERVER_MAX_PACKET,
    ) -> None:
        if password is None and client_key is None:
            raise ValueError("give a password, a client key or both")
        self.root = Path(root).resolve()
        self.username = username
        self.password = password
        self.client_public_key = client_key.export_public_key("openssh") if client_key else None
        self.host_key = host_key or default_host_key()
        self.port = port
        self.window = window
        self.max_pktsize = max_pktsize
        self.connections_made = 0
        self._auth_attempts: list[AuthAttempt] = []
        self._lock = threading.Lock()
        self._drop_after: int | None = None
        self._served_since_armed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()

    def __enter__(self) -> LocalSftpServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def auth_attempts(self) -> list[AuthAttempt]:
        """Every credential received so far, oldest first."""
        with self._lock:
            return list(self._auth_attempts)

    def start(self) -> None:
        """Start the event loop thread and listen; `port` then holds the bound port."""
        if self._thread is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sftp-test-server", daemon=True)
        self._thread.start()
        self._acceptor = self._call(self._listen)
        self.port = self._acceptor.get_port()

    def stop(self) -> None:
        """Close the listener and every open connection, then end the loop thread."""
        if self._thread is None or self._loop is None:
            return
        self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._thread = self._loop = self._acceptor = None

    def known_hosts_line(self, key: asyncssh.SSHKey | None = None) -> str:
        """An OpenSSH known_hosts line for this server (its host key, or `key` to fake another)."""
        return known_hosts_line(key or self.host_key, self.port)

    def drop_connection_after(self, nbytes: int) -> None:
        """Abort the connection that is being served once `nbytes` more file bytes were read (one shot)."""
        with self._lock:
            self._drop_after = nbytes
            self._served_since_armed = 0

    def _call(self, make_coro: Callable[[], Awaitable[_T]]) -> _T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(make_coro(), self._loop).result(timeout=10)

    async def _listen(self) -> asyncssh.SSHAcceptor:
        return await asyncssh.create_server(
            lambda: _AuthRecorder(self),
            "127.0.0.1",
            self.port,
            server_host_keys=[self.host_key],
            sftp_factory=lambda chan: _DroppingSftpServer(chan, self),
            allow_scp=False,
            window=self.window,
            max_pktsize=self.max_pktsize,
        )

    async def _shutdown(self) -> None:
        assert self._acceptor is not None
        self._acceptor.close()
        await self._acceptor.wait_closed()
        for conn in list(self._connections):
            conn.abort()
        # Let the aborted connections run their connection_lost callbacks before the loop stops.
        await asyncio.sleep(0)
        assert self._loop is not None
        await self._loop.shutdown_default_executor()

    def _record(self, attempt: AuthAttempt) -> None:
        with self._lock:
            self._auth_attempts.append(attempt)

    def _served(self, nbytes: int) -> bool:
        """Count bytes served; true when the armed drop is due now."""
        with self._lock:
            if self._drop_after is None:
                return False
            self._served_since_armed += nbytes
            if self._served_since_armed < self._drop_after:
                return False
            self._drop_after = None
            return True


class _AuthRecorder(asyncssh.SSHServer):
    def __init__(self, owner: LocalSftpServer) -> None:
        self._owner = owner
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._owner.connections_made += 1
        self._owner._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._owner._connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return self._owner.password is not None

    def validate_password(self, username: str, password: str) -> bool:
        accepted = username == self._owner.username and password == self._owner.password
        self._owner._record(AuthAttempt(username, "password", accepted))
        return accepted

    def public_key_auth_supported(self) -> bool:
        return self._owner.client_public_key is not None

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        accepted = (
            username == self._owner.username
            and key.export_public_key("openssh") == self._owner.client_public_key
        )
        self._owner._record(AuthAttempt(username, "publickey", accepted))
        return accepted


class _DroppingSftpServer(asyncssh.SFTPServer):
    def __init__(self, chan: asyncssh.SSHServerChannel, owner: LocalSftpServer) -> None:
        super().__init__(chan, chroot=bytes(owner.root))
        self._owner = owner

    def read(self, file_obj: Any, offset: int, size: int) -> bytes:
        data = super().read(file_obj, offset, size)
        assert isinstance(data, bytes)
        if self._owner._served(len(data)):
            self.connection.abort()
        return data
