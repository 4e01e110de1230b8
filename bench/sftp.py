"""Benchmark: download one large file over SFTP, paramiko's defaults against the connector's tuned path.

    .venv/bin/python bench/sftp.py [--size-mib 100] [--runs 3]

The asyncssh server of the tests (campaign_lib/local_servers/sftp.py) runs in a child process, as a real
server would, serving a file of random bytes from a temporary folder. Each round downloads it

  baseline   paramiko defaults: `SFTPClient.get` (2 MiB window, 32 KiB packets and reads,
             unlimited prefetch thread), measured in this run;
  tuned      `SftpSource.download`: 64 MiB window, pipelined 128 KiB reads, 64 in flight,
             AES-GCM, plus what the connector does on top: sha256 while writing, fsync, rename;

and, once the rounds are done, variants that answer where the limit is: the tuned path with
32 KiB packets, against a server with asyncssh's default window and packet size, and against a
server in this process (as the tests run it, sharing the GIL). OpenSSH's sshd is compared when installed.
Figures are MiB/s (median of the runs, best in brackets) with CPU seconds of client and server
per run; nothing is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paramiko

from campaign_lib.local_servers.sftp import LocalSftpServer, generate_key, private_key_text
from connectors.sftp import RemoteFile, SftpSettings, SftpSource

MiB = 1024 * 1024
USER, PASSWORD = "bench", "bench-password"
FILE_NAME = "bookings.bin"


@dataclass
class Figures:
    label: str
    rates: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)

    def line(self) -> str:
        cpu = f"client CPU {statistics.median(self.client_cpu):.2f} s"
        if self.server_cpu:
            cpu += f", server CPU {statistics.median(self.server_cpu):.2f} s"
        return (
            f"  {self.label:<44} {statistics.median(self.rates):7.1f} MiB/s "
            f"[best {max(self.rates):6.1f}]   per run: {cpu}"
        )


def _serve(root: str, window: int | None, max_pktsize: int | None, pipe: Connection) -> None:
    """Child process: run the test server until the parent says stop."""
    sizes = {"window": window, "max_pktsize": max_pktsize} if window else {}
    with LocalSftpServer(Path(root), username=USER, password=PASSWORD, **sizes) as server:
        pipe.send((server.port, server.known_hosts_line(), os.getpid()))
        pipe.recv()


class ChildServer:
    """The asyncssh test server in a child process."""

    def __init__(self, root: Path, window: int | None = None, max_pktsize: int | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(str(root), window, max_pktsize, child_end))
        self._process.start()
        self.port, self.known_hosts, self.pid = self._pipe.recv()

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self._pipe.send("stop")
        self._process.join(timeout=10)


def _measure(
    figures: Figures, run: Callable[[], None], size: int, server_cpu: Callable[[], float] | None
) -> None:
    cpu_before, server_before = time.process_time(), server_cpu() if server_cpu else 0.0
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    figures.rates.append(size / MiB / seconds)
    figures.client_cpu.append(time.process_time() - cpu_before)
    if server_cpu:
        figures.server_cpu.append(server_cpu() - server_before)


def _baseline_client(settings: SftpSettings) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
    client = paramiko.SSHClient()
    for name, keys in settings.host_keys().items():
        for key_type, key in keys.items():
            client.get_host_keys().add(name, key_type, key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        settings.host,
        port=settings.port,
        username=settings.username,
        password=settings.password,
        pkey=settings.load_private_key(),
        allow_agent=False,
        look_for_keys=False,
    )
    return client, client.open_sftp()


def _tuned(settings: SftpSettings, remote_file: RemoteFile, out_dir: Path) -> Callable[[], None]:
    source = SftpSource(settings)
    source.connect()

    def run() -> None:
        local = source.download(remote_file, out_dir)
        assert local.size == remote_file.size

    run.close = source.close  # type: ignore[attr-defined]
    return run


def _sshd_settings(work: Path) -> tuple[SftpSettings, subprocess.Popen] | str:
    """Start OpenSSH's sshd on a free port with a key of our own; a reason string when it cannot run."""
    sshd = shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if Path(p).exists()), None
    )
    if sshd is None:
        return "sshd (OpenSSH server) is not installed"
    folder = work / "sshd"
    folder.mkdir()
    host_key, client_key = generate_key(), generate_key()
    (folder / "host_key").write_text(private_key_text(host_key))
    (folder / "host_key").chmod(0o600)
    (folder / "authorized_keys").write_bytes(client_key.export_public_key("openssh"))
    with LocalSftpServer(work, password="probe") as probe:
        port = probe.port
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
    )
    process = subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(folder / "sshd_config")], stderr=subprocess.PIPE, text=True
    )
    public = host_key.export_public_key("openssh").decode().split()
    settings = SftpSettings(
        host="127.0.0.1",
        port=port,
        username=os.environ.get("USER") or "root",
        private_key=private_key_text(client_key),
        known_hosts=f"[127.0.0.1]:{port} {public[0]} {public[1]}",
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"sshd did not start: {process.stderr.read().strip()[-300:] if process.stderr else ''}"
        try:
            with SftpSource(settings):
                return settings, process
        except Exception:
            time.sleep(0.2)
    process.terminate()
    process.wait()
    return "sshd did not accept our key within 5 s"


def _child_server_variant(
    label: str,
    served: Path,
    remote_file: RemoteFile,
    out_dir: Path,
    runs: int,
    server_options: dict,
    overrides: dict,
) -> Figures:
    """SftpSource.download against a fresh child server, with server options and settings overrides."""
    figures = Figures(label)
    server = ChildServer(served, **server_options)
    settings = SftpSettings(
        host="127.0.0.1",
        port=server.port,
        username=USER,
        password=PASSWORD,
        known_hosts=server.known_hosts,
        **overrides,
    )
    run_tuned = _tuned(settings, remote_file, out_dir)
    try:
        for _ in range(runs):
            _measure(figures, run_tuned, remote_file.size, server.cpu_seconds)
    finally:
        run_tuned.close()  # type: ignore[attr-defined]
        server.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MiB

    with tempfile.TemporaryDirectory(prefix="kms-bench-sftp-") as tmp:
        work = Path(tmp)
        served, out_dir = work / "served", work / "out"
        served.mkdir()
        out_dir.mkdir()
        with (served / FILE_NAME).open("wb") as f:
            for _ in range(0, size, 8 * MiB):
                f.write(os.urandom(min(8 * MiB, size - f.tell())))
        remote_file = RemoteFile(FILE_NAME, f"/{FILE_NAME}", size, 0)

        print(
            f"SFTP download of {args.size_mib} MiB on loopback, {args.runs} runs each, {os.cpu_count()} CPUs"
        )
        print(f"  load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        results: list[Figures] = []

        server = ChildServer(served)
        settings = SftpSettings(
            host="127.0.0.1",
            port=server.port,
            username=USER,
            password=PASSWORD,
            known_hosts=server.known_hosts,
        )
        baseline, tuned = (
            Figures("baseline: paramiko defaults, SFTPClient.get"),
            Figures("tuned: SftpSource.download"),
        )
        client, sftp = _baseline_client(settings)
        run_tuned = _tuned(settings, remote_file, out_dir)
        try:
            for _ in range(args.runs):
                _measure(
                    baseline,
                    lambda: sftp.get(remote_file.path, str(out_dir / "baseline.bin")),
                    size,
                    server.cpu_seconds,
                )
                _measure(tuned, run_tuned, size, server.cpu_seconds)
        finally:
            run_tuned.close()  # type: ignore[attr-defined]
            client.close()
            server.stop()
        results += [baseline, tuned]

        variants = (
            ("tuned, but AES-CTR + HMAC (paramiko's choice)", {}, {"preferred_ciphers": ()}),
            ("tuned, but 32 KiB max packet (as OpenSSH asks)", {}, {"max_packet_size": 32 * 1024}),
            (
                "tuned, server with asyncssh's default window",
                {"window": 2 * MiB, "max_pktsize": 32 * 1024},
                {},
            ),
        )
        for label, server_options, overrides in variants:
            results.append(
                _child_server_variant(
                    label, served, remote_file, out_dir, args.runs, server_options, overrides
                )
            )

        in_process = Figures("tuned, server in this process (as in tests)")
        with LocalSftpServer(served, username=USER, password=PASSWORD) as local_server:
            run_tuned = _tuned(
                SftpSettings(
                    host="127.0.0.1",
                    port=local_server.port,
                    username=USER,
                    password=PASSWORD,
                    known_hosts=local_server.known_hosts_line(),
                ),
                remote_file,
                out_dir,
            )
            try:
                for _ in range(args.runs):
                    _measure(in_process, run_tuned, size, None)
            finally:
                run_tuned.close()  # type: ignore[attr-defined]
        results.append(in_process)

        sshd = _sshd_settings(work)
        if isinstance(sshd, str):
            sshd_line = f"  OpenSSH sshd comparison skipped: {sshd}"
        else:
            sshd_settings, process = sshd
            openssh = Figures("tuned, OpenSSH sshd + internal-sftp")
            # sshd serves real paths, not a chroot.
            sshd_file = RemoteFile(FILE_NAME, str(served / FILE_NAME), size, 0)
            run_tuned = _tuned(sshd_settings, sshd_file, out_dir)
            try:
                for _ in range(args.runs):
                    _measure(openssh, run_tuned, size, None)
            finally:
                run_tuned.close()  # type: ignore[attr-defined]
                process.terminate()
                process.wait()
            results.append(openssh)
            sshd_line = ""

        for figures in results:
            print(figures.line())
        if sshd_line:
            print(sshd_line)
        ratio = statistics.median(tuned.rates) / statistics.median(baseline.rates)
        print(f"  ratio tuned / baseline (medians): {ratio:.2f}x")
        print(f"  load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
