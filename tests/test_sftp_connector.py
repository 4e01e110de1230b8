"""The SFTP source against a real asyncssh SFTP server on 127.0.0.1 (campaign_lib/local_servers/sftp.py)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import asyncssh
import pytest

from campaign_lib.errors import ConfigError, HostKeyError, IngestError, SourceUnavailableError
from campaign_lib.local_servers.sftp import LocalSftpServer, generate_key, private_key_text
from connectors.sftp import RemoteFile, SftpSettings, SftpSource, StableSizeState

PASSWORD = "Tr0ub4dor&3"
PASSPHRASE = "correct horse"
FEED = "/drop/hotel"
KNOWN = "sftp.example.com " + generate_key().export_public_key("openssh").decode()


@pytest.fixture(scope="module")
def client_key() -> asyncssh.SSHKey:
    return generate_key()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "server"
    (root / FEED.lstrip("/")).mkdir(parents=True)
    return root


@pytest.fixture
def feed(root: Path) -> Path:
    """The feed folder as the server's local disk sees it."""
    return root / FEED.lstrip("/")


@pytest.fixture
def server(root: Path, client_key: asyncssh.SSHKey) -> Iterator[LocalSftpServer]:
    with LocalSftpServer(root, username="feed", password=PASSWORD, client_key=client_key) as server:
        yield server


@pytest.fixture
def settings(server: LocalSftpServer) -> SftpSettings:
    return SftpSettings(
        host="127.0.0.1",
        port=server.port,
        username="feed",
        password=PASSWORD,
        known_hosts=server.known_hosts_line(),
        timeout=5,
    )


def _names(files: list[RemoteFile]) -> list[str]:
    return [f.name for f in files]


def test_settings_from_airflow_connection_fields_map_extra_and_mask_secrets() -> None:
    settings = SftpSettings.from_airflow_connection_fields(
        "sftp.example.com",
        2222,
        "feed",
        "pw-not-in-repr",
        {
            "private_key": "/nonexistent/id_ed25519",
            "private_key_passphrase": "phrase-not-in-repr",
            "known_hosts": [
                "[sftp.example.com]:2222 " + generate_key().export_public_key("openssh").decode()
            ],
            "timeout": "12.5",
        },
    )

    assert (settings.host, settings.port, settings.username, settings.timeout) == (
        "sftp.example.com",
        2222,
        "feed",
        12.5,
    )
    assert settings.address == "[sftp.example.com]:2222"
    assert settings.host_keys().lookup("[sftp.example.com]:2222") is not None
    text = repr(settings)
    assert "pw-not-in-repr" not in text
    assert "phrase-not-in-repr" not in text
    assert "/nonexistent/id_ed25519" not in text
    assert "password='***'" in text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"extra": {}}, "no known_hosts entry", id="no-known-hosts"),
        pytest.param(
            {"extra": {"known_hosts": "host ssh-ed25519 not-base64!"}}, "known_hosts line 1", id="bad-line"
        ),
        pytest.param({"password": None}, "needs a password or a private_key", id="no-credential"),
        pytest.param({"login": None}, "has no login", id="no-login"),
        pytest.param({"port": 70000}, "port must be between", id="bad-port"),
        pytest.param(
            {"extra": {"known_hosts": KNOWN, "no_host_key_check": True}}, "not supported", id="no-check"
        ),
        pytest.param({"extra": {"known_hosts": KNOWN, "timeout": "soon"}}, "timeout", id="bad-timeout"),
    ],
)
def test_settings_refuse_what_cannot_work(fields: dict, message: str) -> None:
    connection = {"host": "sftp.example.com", "port": 22, "login": "feed", "password": "pw"}
    connection |= {"extra": {"known_hosts": KNOWN}} | fields

    with pytest.raises(ConfigError, match=message):
        SftpSettings.from_airflow_connection_fields(**connection)


@pytest.mark.parametrize("method", ["password", "key-text", "key-file-with-passphrase"])
def test_login(
    method: str, server: LocalSftpServer, settings: SftpSettings, client_key: asyncssh.SSHKey, tmp_path: Path
) -> None:
    if method == "key-text":
        settings = replace(settings, password=None, private_key=private_key_text(client_key))
    elif method == "key-file-with-passphrase":
        key_file = tmp_path / "id_ed25519"
        key_file.write_text(private_key_text(client_key, PASSPHRASE))
        settings = replace(
            settings, password=None, private_key=str(key_file), private_key_passphrase=PASSPHRASE
        )

    with SftpSource(settings) as source:
        assert source.list_complete(FEED) == []

    expected = "password" if method == "password" else "publickey"
    assert [(a.method, a.accepted) for a in server.auth_attempts] == [(expected, True)]


def test_wrong_password_is_a_permanent_ingest_error(settings: SftpSettings) -> None:
    with pytest.raises(IngestError, match="refused the login of 'feed'") as caught:
        SftpSource(replace(settings, password="wrong")).connect()

    assert not isinstance(caught.value, SourceUnavailableError)
    assert "wrong" not in str(caught.value)


@pytest.mark.parametrize(
    ("known_hosts", "message"),
    [
        pytest.param(
            lambda server: server.known_hosts_line().replace("[127.0.0.1]", "[sftp.example.com]"),
            r"offered host key ssh-ed25519 SHA256:\S+.*has no key for \[127\.0\.0\.1\]:\d+.*ssh-keyscan",
            id="unknown-host",
        ),
        pytest.param(
            lambda server: server.known_hosts_line(generate_key()),
            r"offered host key ssh-ed25519 SHA256:\S+, but known_hosts expects ssh-ed25519 SHA256:\S+\. "
            "The key has changed",
            id="changed-key",
        ),
    ],
)
def test_host_key_refused_before_any_credential_is_sent(
    known_hosts: Callable[[LocalSftpServer], str],
    message: str,
    server: LocalSftpServer,
    settings: SftpSettings,
) -> None:
    with pytest.raises(HostKeyError, match=message) as caught:
        SftpSource(replace(settings, known_hosts=known_hosts(server))).connect()

    # The fingerprint as `ssh-keygen -l` prints it, computed by asyncssh rather than paramiko.
    assert server.host_key.get_fingerprint("sha256") in str(caught.value)
    assert server.connections_made == 1
    assert server.auth_attempts == []


@pytest.mark.parametrize(
    ("rule", "present", "then", "first", "second"),
    [
        pytest.param(
            "done_marker",
            ["a.csv", "a.csv.done", "b.csv", "notes.txt", "notes.txt.done"],
            lambda feed: (feed / "b.csv.done").touch(),
            ["a.csv"],
            ["a.csv", "b.csv"],
            id="done-marker-b-without-marker-yet",
        ),
        pytest.param(
            "part_rename",
            ["a.csv", "b.csv.part", "notes.txt"],
            lambda feed: (feed / "b.csv.part").rename(feed / "b.csv"),
            ["a.csv"],
            ["a.csv", "b.csv"],
            id="part-rename-b-still-in-progress",
        ),
    ],
)
def test_marker_rules_list_only_complete_files(
    rule: str,
    present: list[str],
    then: Callable[[Path], None],
    first: list[str],
    second: list[str],
    feed: Path,
    settings: SftpSettings,
) -> None:
    for age, name in enumerate(present):
        (feed / name).write_text(f"rows of {name}\n")
        os.utime(feed / name, (1_700_000_000 + age, 1_700_000_000 + age))
    (feed / "processed").mkdir()

    with SftpSource(settings) as source:
        before = source.list_complete(FEED, "*.csv", rule)
        then(feed)
        after = source.list_complete(FEED, "*.csv", rule)

    assert _names(before) == first
    assert _names(after) == second
    assert before[0] == RemoteFile("a.csv", f"{FEED}/a.csv", len("rows of a.csv\n"), 1_700_000_000)


def test_stable_size_rule_waits_for_a_growing_file_across_listings(
    feed: Path, settings: SftpSettings
) -> None:
    growing = feed / "pos.csv"
    growing.write_text("header\n")
    state = StableSizeState(interval_seconds=0)

    with SftpSource(settings) as source:
        first = source.list_complete(FEED, "*.csv", "stable_size", state=state)
        with growing.open("a") as f:
            f.write("row 1\n")
        # Between DAG runs the state travels as JSON (e.g. an XCom).
        state = StableSizeState.from_dict(json.loads(json.dumps(state.to_dict())))
        grown = source.list_complete(FEED, "*.csv", "stable_size", state=state)
        stable = source.list_complete(FEED, "*.csv", "stable_size", state=state)

    assert (first, grown) == ([], [])
    assert _names(stable) == ["pos.csv"]
    assert stable[0].size == len("header\nrow 1\n")


def test_stable_size_rule_needs_the_interval_to_pass(feed: Path, settings: SftpSettings) -> None:
    (feed / "pos.csv").write_text("header\n")
    state = StableSizeState(interval_seconds=3600)

    with SftpSource(settings) as source:
        listings = [source.list_complete(FEED, "*.csv", "stable_size", state=state) for _ in range(2)]

    assert listings == [[], []]
    assert list(state.seen) == [f"{FEED}/pos.csv"]


@pytest.mark.parametrize(
    ("name", "size"),
    [
        pytest.param("bookings.csv", 8 * 1024 * 1024 + 12_345, id="multi-MB"),
        pytest.param("Umsätze März 2025.csv", 200_000, id="spaces-and-umlauts"),
        pytest.param("empty.csv", 0, id="empty"),
    ],
)
def test_download_is_complete_and_verified(
    name: str, size: int, feed: Path, settings: SftpSettings, tmp_path: Path
) -> None:
    content = os.urandom(size)
    (feed / name).write_bytes(content)
    (feed / f"{name}.done").touch()
    local_dir = tmp_path / "staging"

    with SftpSource(settings) as source:
        [remote_file] = source.list_complete(FEED, "*.csv", "done_marker")
        local = source.download(remote_file, local_dir)
        # AES-GCM: encryption and integrity in one pass, the cheapest cipher for the client.
        assert source.cipher == "aes128-gcm@openssh.com"

    assert local.path == local_dir / name
    assert (local.size, local.sha256) == (size, hashlib.sha256(content).hexdigest())
    assert local.path.read_bytes() == content
    assert os.listdir(local_dir) == [name]


def test_connection_dropped_mid_download_leaves_nothing_and_a_retry_succeeds(
    server: LocalSftpServer, feed: Path, settings: SftpSettings, tmp_path: Path
) -> None:
    content = os.urandom(6 * 1024 * 1024)
    (feed / "bookings.csv").write_bytes(content)
    local_dir = tmp_path / "staging"
    remote_file = RemoteFile("bookings.csv", f"{FEED}/bookings.csv", len(content), 0)

    server.drop_connection_after(1024 * 1024)
    with SftpSource(settings) as source, pytest.raises(SourceUnavailableError, match="worth a retry"):
        source.download(remote_file, local_dir)
    assert os.listdir(local_dir) == []

    with SftpSource(settings) as source:
        local = source.download(remote_file, local_dir)
    assert local.sha256 == hashlib.sha256(content).hexdigest()
    assert os.listdir(local_dir) == ["bookings.csv"]


def test_file_changed_since_listing_is_not_downloaded(
    feed: Path, settings: SftpSettings, tmp_path: Path
) -> None:
    (feed / "pos.csv").write_text("header\nrow 1\n")
    stale = RemoteFile("pos.csv", f"{FEED}/pos.csv", len("header\n"), 0)

    with (
        SftpSource(settings) as source,
        pytest.raises(SourceUnavailableError, match="changed since it was listed"),
    ):
        source.download(stale, tmp_path / "staging")

    assert os.listdir(tmp_path / "staging") == []


def _refusing_port() -> tuple[int, Callable[[], None]]:
    """A port bound but not listening: the kernel refuses connections."""
    bound = socket.socket()
    bound.bind(("127.0.0.1", 0))
    return bound.getsockname()[1], bound.close


def _silent_port() -> tuple[int, Callable[[], None]]:
    """Accepts TCP connections (in the kernel's backlog) but never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    return listener.getsockname()[1], listener.close


def _hanging_up_port() -> tuple[int, Callable[[], None]]:
    """Accepts a connection and closes it at once, before the SSH banner."""
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()

    def stop() -> None:
        thread.join(timeout=5)
        listener.close()

    return listener.getsockname()[1], stop


@pytest.mark.parametrize(
    ("make_port", "timeout"),
    [
        pytest.param(_refusing_port, 5, id="connection-refused"),
        pytest.param(_silent_port, 0.5, id="no-banner-timeout"),
        pytest.param(_hanging_up_port, 5, id="eof-before-banner"),
    ],
)
def test_server_down_is_source_unavailable(
    make_port: Callable[[], tuple[int, Callable[[], None]]], timeout: float, settings: SftpSettings
) -> None:
    port, stop = make_port()
    try:
        with pytest.raises(SourceUnavailableError, match=rf"\[127\.0\.0\.1\]:{port}.*worth a retry"):
            SftpSource(replace(settings, port=port, timeout=timeout)).connect()
    finally:
        stop()


@pytest.mark.parametrize("outcome", ["processed", "failed"])
@pytest.mark.parametrize("clash", [False, True], ids=["free-name", "name-clash"])
def test_archive_moves_file_and_marker_and_never_overwrites(
    outcome: str, clash: bool, feed: Path, settings: SftpSettings
) -> None:
    name = "Gäste Liste.csv"
    (feed / name).write_text("new\n")
    (feed / f"{name}.done").touch()
    if clash:
        (feed / outcome).mkdir()
        (feed / outcome / name).write_text("older delivery\n")

    with SftpSource(settings) as source:
        [remote_file] = source.list_complete(FEED, "*.csv", "done_marker")
        new_path = source.archive(remote_file, outcome)

    archived = sorted(p.name for p in (feed / outcome).iterdir())
    new_name = new_path.rsplit("/", 1)[1]
    assert sorted(p.name for p in feed.iterdir()) == [outcome]
    assert new_path.startswith(f"{FEED}/{outcome}/")
    assert (feed / outcome / new_name).read_text() == "new\n"
    assert f"{new_name}.done" in archived
    if clash:
        assert new_name.startswith("Gäste Liste.") and new_name.endswith("Z.csv")
        assert (feed / outcome / name).read_text() == "older delivery\n"
        assert len(archived) == 3
    else:
        assert archived == [name, f"{name}.done"]
