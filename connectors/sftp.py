"""The SFTP source: list the complete files of a feed folder, download them verified, archive them.

One `SftpSource` holds one SSH connection for a whole listing and many downloads:

    settings = SftpSettings.from_airflow_connection_fields(conn.host, conn.port, conn.login,
                                                           conn.password, conn.extra_dejson)
    with SftpSource(settings) as source:
        for remote_file in source.list_complete("/drop/hotel", "*.csv", "done_marker"):
            local = source.download(remote_file, staging_dir)   # LocalFile(path, size, sha256)
            ...load it...
            source.archive(remote_file, "processed")

Host keys are checked against the configured known_hosts text before any credential is
sent (paramiko's RejectPolicy); there is no way to switch that off.

Errors (see campaign_lib.errors): `SourceUnavailableError` when the server is down, times
out or drops the connection (retry the task); `HostKeyError` when its host key is unknown
or changed; `IngestError` when credentials are refused or a file vanished (retrying will
not help); `ConfigError` for settings that cannot work.

Completeness rules, since a feed writes files while we list them:

- `done_marker`: `X` is complete once `X.done` exists next to it; markers are never listed.
- `part_rename`: the sender writes `X.part` and renames it to `X` when done; `*.part` is skipped.
- `stable_size`: `X` is complete once its size and mtime have not changed for at least
  `StableSizeState.interval_seconds` across two listings. The task does not sleep: the caller
  keeps a `StableSizeState` between runs (e.g. `state.to_dict()` in the previous run's XCom or
  an Airflow Variable) and passes it to every listing, which updates it in place. A file is
  therefore never complete at its first sighting, only from the next run on.

Downloads pipeline up to `max_requests_in_flight` read requests of `read_request_size` bytes
each over a channel with a large window: one request at a time costs a round trip per 32 KiB
(4.6 MiB/s in PERFORMANCE_NOTES.md). The pipeline runs in the calling thread on paramiko's
request primitives rather than `SFTPFile.prefetch()`, whose helper thread outlives a dropped
connection (spinning, or dying with an unhandled exception) and cannot be stopped.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import posixpath
import stat
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey
from paramiko.message import Message
from paramiko.sftp import CMD_DATA, CMD_READ, CMD_STATUS, int64

from campaign_lib.errors import ConfigError, HostKeyError, IngestError, KmsError, SourceUnavailableError

log = logging.getLogger(__name__)

CompletenessRule = Literal["done_marker", "part_rename", "stable_size"]
Outcome = Literal["processed", "failed"]
COMPLETENESS_RULES: tuple[CompletenessRule, ...] = ("done_marker", "part_rename", "stable_size")
DONE_SUFFIX = ".done"
PART_SUFFIX = ".part"
DEFAULT_CONN_ID = "kms_sftp"
MiB = 1024 * 1024
_MASK = "***"


@dataclass(frozen=True, repr=False)
class SftpSettings:
    """How to reach one SFTP server. `private_key` is PEM text or a path; secrets never appear in repr."""

    host: str
    username: str
    known_hosts: str
    port: int = 22
    password: str | None = None
    private_key: str | None = None
    private_key_passphrase: str | None = None
    timeout: float = 30.0
    # Tuning knobs, measured in bench/sftp.py; the defaults follow PERFORMANCE_NOTES.md.
    window_size: int = 64 * MiB
    max_packet_size: int = 256 * 1024
    read_request_size: int = 128 * 1024
    max_requests_in_flight: int = 64
    # Put first when the server offers them: AES-GCM encrypts and authenticates in one pass,
    # where paramiko's own first choice, AES-CTR with a separate HMAC, costs more CPU per byte
    # (bench/sftp.py: the server's CPU per 100 MiB 0.73 s -> 0.22 s, the client's 0.50 -> 0.37-0.44 s).
    # A server without them gets paramiko's usual order.
    preferred_ciphers: tuple[str, ...] = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    conn_id: str = DEFAULT_CONN_ID

    def __post_init__(self) -> None:
        where = f"SFTP connection {self.conn_id}"
        if not self.host:
            raise ConfigError(f"{where} has no host")
        if not 0 < self.port < 65536:
            raise ConfigError(f"{where}: port must be between 1 and 65535, not {self.port}")
        if not self.username:
            raise ConfigError(f"{where} has no login (user name)")
        if not self.password and not self.private_key:
            raise ConfigError(f"{where} needs a password or a private_key (extra) to log in")
        if self.timeout <= 0:
            raise ConfigError(f"{where}: timeout must be positive, not {self.timeout}")
        if self.read_request_size < 1024 or self.max_requests_in_flight < 1:
            raise ConfigError(
                f"{where}: read_request_size >= 1024 and max_requests_in_flight >= 1 are required"
            )
        self.host_keys()

    def __repr__(self) -> str:
        secret = {"password", "private_key", "private_key_passphrase"}
        shown = ", ".join(
            f"{name}={_MASK if name in secret and value else value!r}"
            for name, value in self.__dict__.items()
            if name != "known_hosts"
        )
        return f"SftpSettings({shown}, known_hosts=<{len(self.host_keys())} entries>)"

    @classmethod
    def from_airflow_connection_fields(
        cls,
        host: str | None,
        port: int | None,
        login: str | None,
        password: str | None,
        extra: dict[str, Any] | None,
        *,
        conn_id: str = DEFAULT_CONN_ID,
    ) -> SftpSettings:
        """Settings from the fields of an Airflow connection (extra: private_key,
        private_key_passphrase, known_hosts as text or list of lines, timeout in seconds)."""
        extra = dict(extra or {})
        if str(extra.get("no_host_key_check", "")).lower() in {"true", "1", "yes"}:
            raise ConfigError(
                f"SFTP connection {conn_id}: no_host_key_check is not supported; put the server's key "
                "into the extra 'known_hosts' instead"
            )
        known_hosts = extra.get("known_hosts") or ""
        if isinstance(known_hosts, list | tuple):
            known_hosts = "\n".join(str(line) for line in known_hosts)
        try:
            timeout = float(extra.get("timeout", 30))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"SFTP connection {conn_id}: extra 'timeout' must be seconds") from exc
        return cls(
            host=host or "",
            port=int(port or 22),
            username=login or "",
            password=password or None,
            private_key=extra.get("private_key") or None,
            private_key_passphrase=extra.get("private_key_passphrase") or None,
            known_hosts=str(known_hosts),
            timeout=timeout,
            conn_id=conn_id,
        )

    @property
    def address(self) -> str:
        """The server as known_hosts names it: `host`, or `[host]:port` off port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def host_keys(self) -> paramiko.HostKeys:
        """The known_hosts text parsed; ConfigError when it is empty or a line cannot be read."""
        keys = paramiko.HostKeys()
        for lineno, raw in enumerate(self.known_hosts.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("@"):
                raise ConfigError(
                    f"SFTP connection {self.conn_id}: known_hosts line {lineno}: "
                    "@cert-authority and @revoked lines are not supported"
                )
            try:
                entry = HostKeyEntry.from_line(line, lineno)
            except (InvalidHostKey, ValueError, paramiko.SSHException) as exc:
                raise ConfigError(
                    f"SFTP connection {self.conn_id}: known_hosts line {lineno} has an unreadable key: {exc}"
                ) from exc
            if entry is None or entry.key is None:
                raise ConfigError(
                    f"SFTP connection {self.conn_id}: known_hosts line {lineno} is not "
                    "'<host> <key type> <base64 key>' with a key type paramiko knows"
                )
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
        if not keys.keys():
            raise ConfigError(
                f"SFTP connection {self.conn_id} has no known_hosts entry, so the server cannot be "
                f"verified. Get the line with `ssh-keyscan -p {self.port} {self.host}`, confirm its "
                "fingerprint with the server's owner and put it into the extra 'known_hosts'."
            )
        return keys

    def load_private_key(self) -> paramiko.PKey | None:
        """The private key as a paramiko key, or None when only a password is configured."""
        if not self.private_key:
            return None
        passphrase = self.private_key_passphrase or None
        text = self.private_key
        try:
            if "PRIVATE KEY-----" not in text:
                path = Path(text).expanduser()
                if not path.is_file():
                    raise ConfigError(
                        f"SFTP connection {self.conn_id}: private_key is neither PEM text nor a file"
                    )
                text = path.read_text()
            return _private_key_from_text(text, passphrase)
        except ConfigError:
            raise
        except (ValueError, TypeError, paramiko.SSHException) as exc:
            # The message of these never contains the key or passphrase.
            raise ConfigError(
                f"SFTP connection {self.conn_id}: the private key cannot be read "
                f"(wrong passphrase or unsupported format): {type(exc).__name__}"
            ) from exc


def _private_key_from_text(text: str, passphrase: str | None) -> paramiko.PKey:
    loaded: Any
    data = text.encode()
    password = passphrase.encode() if passphrase else None
    try:
        loaded = serialization.load_ssh_private_key(data, password)
    except ValueError:
        loaded = serialization.load_pem_private_key(data, password)
    key_class: type[paramiko.PKey]
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    elif isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    else:
        raise ValueError(f"unsupported key type {type(loaded).__name__}")
    # Hand paramiko the decrypted key, in memory only: decrypting twice would run the
    # passphrase's bcrypt rounds twice (seconds on a busy machine).
    plain = loaded.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return key_class.from_private_key(io.StringIO(plain.decode()))


@dataclass(frozen=True)
class RemoteFile:
    """A file on the server: `path` is absolute on the server, `mtime` in seconds since the epoch."""

    name: str
    path: str
    size: int
    mtime: int


@dataclass(frozen=True)
class LocalFile:
    """A downloaded file, complete and renamed into place; `sha256` is the hex digest of its bytes."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class _Sighting:
    size: int
    mtime: int
    first_seen: float


@dataclass
class StableSizeState:
    """What earlier `stable_size` listings saw, kept by the caller between runs (JSON via to_dict)."""

    interval_seconds: float = 60.0
    seen: dict[str, _Sighting] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "interval_seconds": self.interval_seconds,
            "seen": {path: [s.size, s.mtime, s.first_seen] for path, s in self.seen.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> StableSizeState:
        data = data or {}
        return cls(
            interval_seconds=float(data.get("interval_seconds", 60.0)),
            seen={
                path: _Sighting(int(v[0]), int(v[1]), float(v[2])) for path, v in data.get("seen", {}).items()
            },
        )

    def observe(self, files: list[RemoteFile], now: float) -> list[RemoteFile]:
        """Record this listing; return the files unchanged since a sighting at least the interval ago."""
        stable: list[RemoteFile] = []
        seen: dict[str, _Sighting] = {}
        for remote_file in files:
            before = self.seen.get(remote_file.path)
            if before is not None and (before.size, before.mtime) == (remote_file.size, remote_file.mtime):
                seen[remote_file.path] = before
                if now - before.first_seen >= self.interval_seconds:
                    stable.append(remote_file)
            else:
                seen[remote_file.path] = _Sighting(remote_file.size, remote_file.mtime, now)
        self.seen = seen
        return stable


class _RememberingRejectPolicy(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, remembering the refused key so the error can show its fingerprint."""

    def __init__(self) -> None:
        self.refused: tuple[str, paramiko.PKey] | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.refused = (hostname, key)
        super().missing_host_key(client, hostname, key)


class _ReadAnswers:
    """Collects the answers paramiko dispatches for pipelined READ requests, by request number."""

    def __init__(self) -> None:
        self.answers: dict[int, tuple[int, Message]] = {}

    def _async_response(self, kind: int, msg: Message, num: int) -> None:
        self.answers[num] = (kind, msg)


class SftpSource:
    """One SSH connection to a feed server; use as a context manager."""

    def __init__(self, settings: SftpSettings) -> None:
        self.settings = settings
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def __enter__(self) -> SftpSource:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self._sftp is not None else "closed"
        return f"SftpSource({self.settings.username}@{self.settings.address}, {state})"

    def connect(self) -> None:
        """Open the connection: verify the host key, then log in and start SFTP."""
        if self._sftp is not None:
            return
        settings = self.settings
        pkey = settings.load_private_key()
        client = paramiko.SSHClient()
        for name, keys in settings.host_keys().items():
            for key_type, key in keys.items():
                client.get_host_keys().add(name, key_type, key)
        policy = _RememberingRejectPolicy()
        client.set_missing_host_key_policy(policy)
        try:
            with self._translate_errors("connecting"):
                try:
                    client.connect(
                        settings.host,
                        port=settings.port,
                        username=settings.username,
                        password=settings.password,
                        pkey=pkey,
                        timeout=settings.timeout,
                        banner_timeout=settings.timeout,
                        auth_timeout=settings.timeout,
                        channel_timeout=settings.timeout,
                        allow_agent=False,
                        look_for_keys=False,
                        transport_factory=_transport_factory(settings.preferred_ciphers),
                    )
                except paramiko.BadHostKeyException as exc:
                    raise HostKeyError(self._changed_key_message(exc.key, exc.expected_key)) from exc
                except paramiko.SSHException as exc:
                    if policy.refused is not None:
                        raise HostKeyError(self._unknown_key_message(policy.refused[1])) from exc
                    raise
                transport = client.get_transport()
                assert transport is not None
                sftp = paramiko.SFTPClient.from_transport(
                    transport, window_size=settings.window_size, max_packet_size=settings.max_packet_size
                )
                if sftp is None:
                    raise SourceUnavailableError(
                        f"SFTP server {settings.address} did not open an SFTP session"
                    )
                channel = sftp.get_channel()
                assert channel is not None
                channel.settimeout(settings.timeout)
        except BaseException:
            client.close()
            raise
        self._client, self._sftp = client, sftp
        log.info("connected to SFTP server %s as %s (%s)", settings.address, settings.username, self.cipher)

    @property
    def cipher(self) -> str | None:
        """The cipher the server and we agreed on (AES-GCM when the server offers it), None when closed."""
        transport = self._client.get_transport() if self._client is not None else None
        return transport.local_cipher if transport is not None else None

    def close(self) -> None:
        """Close the connection (idempotent; a connection that already broke closes quietly)."""
        sftp, client = self._sftp, self._client
        self._client = self._sftp = None
        try:
            if sftp is not None:
                sftp.close()
        except (OSError, EOFError, paramiko.SSHException):
            log.debug("closing the SFTP session of %s failed", self.settings.address, exc_info=True)
        finally:
            if client is not None:
                client.close()

    def list_complete(
        self,
        folder: str,
        pattern: str = "*",
        rule: CompletenessRule = "done_marker",
        *,
        state: StableSizeState | None = None,
    ) -> list[RemoteFile]:
        """The complete files in `folder` whose names match `pattern`, oldest first.

        `rule` says what complete means (see the module docstring); `stable_size` needs the
        caller's `state`, which this call updates in place.
        """
        if rule not in COMPLETENESS_RULES:
            raise ConfigError(
                f"unknown completeness rule {rule!r}; use one of {', '.join(COMPLETENESS_RULES)}"
            )
        if rule == "stable_size" and state is None:
            raise ConfigError("the stable_size rule needs the StableSizeState of the previous listing")
        sftp = self._session()
        with self._translate_errors(f"listing {folder}"):
            entries = sftp.listdir_attr(folder)
        files = {
            entry.filename: RemoteFile(
                name=entry.filename,
                path=posixpath.join(folder, entry.filename),
                size=entry.st_size or 0,
                mtime=int(entry.st_mtime or 0),
            )
            for entry in entries
            if entry.st_mode is not None and stat.S_ISREG(entry.st_mode)
        }
        candidates = [f for name, f in files.items() if fnmatchcase(name, pattern)]
        if rule == "done_marker":
            complete = [
                f for f in candidates if not f.name.endswith(DONE_SUFFIX) and f.name + DONE_SUFFIX in files
            ]
        elif rule == "part_rename":
            complete = [f for f in candidates if not f.name.endswith(PART_SUFFIX)]
        else:
            assert state is not None
            complete = state.observe(candidates, time.time())
        return sorted(complete, key=lambda f: (f.mtime, f.name))

    def download(self, remote_file: RemoteFile, local_dir: Path | str) -> LocalFile:
        """Copy `remote_file` into `local_dir` under its own name, verified by size, with its sha256.

        The bytes go to a hidden temporary file that is renamed into place only when complete,
        so `local_dir` never holds a partial file under the real name, and an error leaves
        nothing behind. An existing local file of that name is replaced.
        """
        if "/" in remote_file.name or remote_file.name in {"", ".", ".."}:
            raise IngestError(f"refusing to download a file named {remote_file.name!r}")
        sftp = self._session()
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        target = local_dir / remote_file.name
        fd, partial_name = tempfile.mkstemp(dir=local_dir, prefix=f".{remote_file.name}.", suffix=".partial")
        partial = Path(partial_name)
        started = time.perf_counter()
        try:
            with os.fdopen(fd, "wb") as out, self._translate_errors(f"downloading {remote_file.path}"):
                digest, written = self._copy(sftp, remote_file, out)
                out.flush()
                os.fsync(out.fileno())
            if written != remote_file.size:
                raise SourceUnavailableError(
                    f"download of {remote_file.path} from {self.settings.address} got {written} bytes, "
                    f"the server listed {remote_file.size}; the partial copy was deleted, retry later"
                )
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        seconds = time.perf_counter() - started
        log.info(
            "downloaded %s (%d bytes) in %.2f s, %.0f MiB/s",
            remote_file.path,
            written,
            seconds,
            written / MiB / max(seconds, 1e-9),
        )
        return LocalFile(path=target, size=written, sha256=digest)

    def archive(self, remote_file: RemoteFile, outcome: Outcome) -> str:
        """Move the file (and its `.done` marker) into `processed/` or `failed/` beside it.

        A name already taken there gets a UTC timestamp before its extension. Nothing remote is
        ever deleted. Returns the file's new path.
        """
        if outcome not in ("processed", "failed"):
            raise ConfigError(f"archive outcome must be 'processed' or 'failed', not {outcome!r}")
        sftp = self._session()
        feed_folder = posixpath.dirname(remote_file.path)
        archive_folder = posixpath.join(feed_folder, outcome)
        marker = remote_file.path + DONE_SUFFIX
        with self._translate_errors(f"archiving {remote_file.path} to {archive_folder}"):
            if not self._exists(sftp, archive_folder):
                try:
                    sftp.mkdir(archive_folder)
                except OSError:
                    if not self._exists(sftp, archive_folder):
                        raise
            has_marker = self._exists(sftp, marker)
            new_name = self._free_name(sftp, archive_folder, remote_file.name)
            new_path = posixpath.join(archive_folder, new_name)
            sftp.rename(remote_file.path, new_path)
            if has_marker:
                sftp.rename(marker, new_path + DONE_SUFFIX)
        log.info("archived %s to %s", remote_file.path, new_path)
        return new_path

    def _unknown_key_message(self, offered: paramiko.PKey) -> str:
        s = self.settings
        return (
            f"SFTP server {s.address} offered host key {offered.get_name()} {offered.fingerprint}, and the "
            f"known_hosts of connection {s.conn_id} has no key for {s.address}. Nothing was sent to it. "
            f"Ask the server's owner for its host key fingerprint; if it matches, add the line that "
            f"`ssh-keyscan -p {s.port} {s.host}` prints for that key to the connection's extra 'known_hosts'."
        )

    def _changed_key_message(self, offered: paramiko.PKey, expected: paramiko.PKey) -> str:
        s = self.settings
        return (
            f"SFTP server {s.address} offered host key {offered.get_name()} {offered.fingerprint}, but "
            f"known_hosts expects {expected.get_name()} {expected.fingerprint}. The key has changed: the "
            "server was reinstalled or moved, or someone is intercepting the connection. Nothing was sent "
            "to it. Confirm the new fingerprint with the server's owner before replacing the entry in the "
            f"extra 'known_hosts' of connection {s.conn_id}."
        )

    def _session(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            raise RuntimeError("SftpSource is not connected; use it as a context manager")
        return self._sftp

    def _copy(
        self, sftp: paramiko.SFTPClient, remote_file: RemoteFile, out: io.BufferedWriter
    ) -> tuple[str, int]:
        """Stream the file into `out` with pipelined reads; return (sha256 hex, bytes written)."""
        digest = hashlib.sha256()
        written = 0
        request_size = self.settings.read_request_size
        with sftp.open(remote_file.path, "rb") as remote:
            size = remote.stat().st_size or 0
            if size != remote_file.size:
                raise SourceUnavailableError(
                    f"{remote_file.path} on {self.settings.address} changed since it was listed "
                    f"({remote_file.size} -> {size} bytes); retry later"
                )
            answers = _ReadAnswers()
            pending: deque[tuple[int, int, int]] = deque()
            next_offset = 0

            while written < size:
                while next_offset < size and len(pending) < self.settings.max_requests_in_flight:
                    length = min(request_size, size - next_offset)
                    num = sftp._async_request(answers, CMD_READ, remote.handle, int64(next_offset), length)
                    pending.append((num, next_offset, length))
                    next_offset += length
                num, offset, length = pending.popleft()
                while num not in answers.answers:
                    sftp._read_response()
                kind, msg = answers.answers.pop(num)
                data = _read_answer(sftp, kind, msg)
                if not data:
                    break
                if offset != written:
                    raise paramiko.SFTPError(f"answer for offset {offset} arrived while at {written}")
                digest.update(data)
                out.write(data)
                written += len(data)
                if len(data) < length:
                    # Servers may answer with less than asked (their own maximum): fetch the gap
                    # now and ask for no more than they give from here on.
                    request_size = max(len(data), 1024)
                    gap_num = sftp._async_request(
                        answers, CMD_READ, remote.handle, int64(written), int(length - len(data))
                    )
                    pending.appendleft((gap_num, written, length - len(data)))
            # Drain answers still in flight so the handle closes cleanly.
            while pending:
                num, _, _ = pending.popleft()
                while num not in answers.answers:
                    sftp._read_response()
                answers.answers.pop(num)
        return digest.hexdigest(), written

    @staticmethod
    def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
        try:
            sftp.stat(path)
        except FileNotFoundError:
            return False
        return True

    def _free_name(self, sftp: paramiko.SFTPClient, folder: str, name: str) -> str:
        if not self._exists(sftp, posixpath.join(folder, name)):
            return name
        stem, dot, extension = name.rpartition(".")
        if not stem:
            stem, dot, extension = name, "", ""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        for attempt in range(100):
            suffix = stamp if attempt == 0 else f"{stamp}-{attempt}"
            candidate = f"{stem}.{suffix}{dot}{extension}"
            if not self._exists(sftp, posixpath.join(folder, candidate)):
                return candidate
        raise IngestError(f"no free archive name for {name} in {folder}")

    @contextmanager
    def _translate_errors(self, doing: str) -> Iterator[None]:
        """Turn paramiko and socket errors into the kms exception tree."""
        where = f"SFTP server {self.settings.address}"
        try:
            yield
        except KmsError:
            raise
        except paramiko.AuthenticationException as exc:
            raise IngestError(
                f"{where} refused the login of {self.settings.username!r} ({_describe(exc)}); "
                f"check the login, password or private_key of the Airflow connection {self.settings.conn_id}"
            ) from exc
        except paramiko.IncompatiblePeer as exc:
            raise IngestError(f"{where} and kms share no SSH algorithm: {_describe(exc)}") from exc
        except FileNotFoundError as exc:
            raise IngestError(f"{doing} on {where} failed: no such file or folder") from exc
        except PermissionError as exc:
            raise IngestError(f"{doing} on {where} failed: permission denied") from exc
        except (EOFError, paramiko.SSHException, OSError) as exc:
            raise SourceUnavailableError(
                f"{doing} on {where} failed: {_describe(exc)}; worth a retry"
            ) from exc


def _transport_factory(preferred: tuple[str, ...]):
    """Return sock -> paramiko Transport whose cipher preference starts with `preferred`
    (those paramiko knows), followed by paramiko's own order."""

    def transport(sock, **kwargs) -> paramiko.Transport:
        made = paramiko.Transport(sock, **kwargs)
        options = made.get_security_options()
        known = tuple(options.ciphers)
        first = tuple(cipher for cipher in preferred if cipher in known)
        options.ciphers = (*first, *(cipher for cipher in known if cipher not in first))
        return made

    return transport


def _read_answer(sftp: paramiko.SFTPClient, kind: int, msg: Message) -> bytes:
    """The bytes of a READ answer; b"" at the end of the file."""
    if kind == CMD_DATA:
        return msg.get_string()
    if kind == CMD_STATUS:
        try:
            sftp._convert_status(msg)
        except EOFError:
            return b""
    raise paramiko.SFTPError(f"unexpected answer of type {kind} to a read request")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
