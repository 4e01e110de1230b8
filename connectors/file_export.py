"""File export: call lists (channel 'phone') and letter-shop lists (channel 'post') as CSV on SFTP.

    result = export_call_list(engine, campaign_run_id, conn)         # Airflow connection kms_export_sftp
    result = export_letter_shop_list(engine, campaign_run_id, conn)
    # ExportResult(remote_path='/outbound/call_list_<campaign>_run<id>.csv', rows=..., skipped=..., ...)

A call centre or letter shop takes a whole list, not one message at a time, so this is a
per-run export rather than a `Connector.send`: the run's messages of the channel become one
file, uploaded to the connection's outbound folder, and in one transaction afterwards are
marked `sent` (provider_message_id = the file's path) with their contact history.

Exactly once per run: the file name is fixed per run and kind, the bytes go to `<name>.part`
first and are renamed when complete (a reader never sees half a file; a `.part` left by a
crash is overwritten), and a rerun that finds the finished file does not upload it again
but only finishes the marking. A person who opted out, was suppressed or erased, or has no
number or postal address by the time of the export is left out and the message `skipped`.

The CSV: UTF-8 with a byte-order mark by default (the lists are opened in Excel, which reads
UTF-8 without one as the ANSI code page and garbles umlauts), `;` between fields by default
(what German Excel expects; extra `delimiter` may say `,`), CRLF line ends, quoting as
needed (RFC 4180). Cells are defused against formula injection as OWASP recommends: a cell
that starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, so a
spreadsheet shows it as text instead of evaluating it. A phone number that is exactly
E.164 (`+` and digits, checked by the schema) is left as it is: diallers need it, and `+`
followed by digits evaluates to nothing but the number itself.

Connection `kms_export_sftp`: host, port, login, password or extra private_key, extra
known_hosts (host key verified, as for the SFTP source), extra folder (default /outbound),
delimiter, bom.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import paramiko
from sqlalchemy.engine import Engine

from campaign_lib.errors import (
    ConfigError,
    HostKeyError,
    IngestError,
    PermanentDeliveryError,
    SourceUnavailableError,
    TransientDeliveryError,
)
from campaign_lib.sqlfiles import queries
from connectors.http_batch import connection_extra, flag
from connectors.sftp import PART_SUFFIX, SftpSettings, SftpSource
from connectors.sms import E164

log = logging.getLogger(__name__)

ExportKind = Literal["call_list", "letter_shop"]
CHANNEL_OF: dict[str, str] = {"call_list": "phone", "letter_shop": "post"}
COLUMNS: dict[str, tuple[str, ...]] = {
    "call_list": (
        "message_key",
        "contact_id",
        "salutation",
        "first_name",
        "last_name",
        "phone",
        "preferred_language",
        "campaign_name",
        "cell",
    ),
    "letter_shop": (
        "message_key",
        "contact_id",
        "salutation",
        "first_name",
        "last_name",
        "street",
        "postal_code",
        "city",
        "country_code",
        "preferred_language",
        "campaign_name",
        "cell",
    ),
}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
DEFAULT_CONN_ID = "kms_export_sftp"


def defuse_cell(value: object) -> str:
    """A cell's text, with a leading `'` if a spreadsheet would read it as a formula (OWASP)."""
    if value is None:
        return ""
    text = str(value)
    if text.startswith(FORMULA_STARTS) and not E164.match(text):
        return "'" + text
    return text


def csv_bytes(
    columns: Sequence[str], rows: Sequence[Mapping[str, Any]], *, delimiter: str = ";", bom: bool = True
) -> bytes:
    """The rows as CSV (header first, CRLF, defused cells), UTF-8 with an optional byte-order mark."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([defuse_cell(row.get(column)) for column in columns])
    return ("\ufeff" if bom else "").encode() + out.getvalue().encode("utf-8")


@dataclass(frozen=True)
class ExportSettings:
    """Where and how the lists go: the SFTP server, its outbound folder, the CSV dialect."""

    sftp: SftpSettings
    folder: str = "/outbound"
    delimiter: str = ";"
    bom: bool = True

    def __post_init__(self) -> None:
        if self.delimiter not in (";", ","):
            raise ConfigError(
                f"{DEFAULT_CONN_ID}: extra delimiter must be ';' or ',', not {self.delimiter!r}"
            )
        if not self.folder.startswith("/"):
            raise ConfigError(f"{DEFAULT_CONN_ID}: extra folder must be an absolute path on the server")

    @classmethod
    def from_connection(cls, conn: Mapping[str, Any], *, conn_id: str = DEFAULT_CONN_ID) -> ExportSettings:
        extra = connection_extra(conn)
        port = conn.get("port")
        return cls(
            sftp=SftpSettings.from_airflow_connection_fields(
                conn.get("host"),
                int(port) if port else None,
                conn.get("login"),
                conn.get("password"),
                extra,
                conn_id=conn_id,
            ),
            folder=str(extra.get("folder") or "/outbound").rstrip("/") or "/",
            delimiter=str(extra.get("delimiter") or ";"),
            bom=flag(extra.get("bom", True)),
        )


@dataclass(frozen=True)
class ExportResult:
    """What an export did: the file's path ("" when nobody was left to export), rows in it,
    messages skipped, whether this call uploaded it (False when an earlier attempt already
    had) and the sha256 of the file."""

    remote_path: str
    rows: int
    skipped: int
    uploaded: bool
    sha256: str | None


class SftpUploader(SftpSource):
    """The SFTP connection of connectors.sftp (host key verified), with an atomic upload."""

    def exists(self, path: str) -> bool:
        sftp = self._session()
        with self._translate_errors(f"checking {path}"):
            return self._exists(sftp, path)

    def read(self, path: str) -> bytes:
        """The whole (small) file at `path`."""
        sftp = self._session()
        with self._translate_errors(f"reading {path}"), sftp.open(path, "rb") as remote:
            remote.prefetch()
            return remote.read()

    def upload(self, data: bytes, folder: str, name: str) -> str:
        """Write `data` to `folder/name.part`, then rename it to `folder/name`; returns the path."""
        sftp = self._session()
        final = posixpath.join(folder, name)
        part = final + PART_SUFFIX
        with self._translate_errors(f"uploading {final}"):
            if not self._exists(sftp, folder):
                sftp.mkdir(folder)
            if self._exists(sftp, part):
                sftp.remove(part)
            with sftp.open(part, "wb") as remote:
                remote.set_pipelined(True)
                remote.write(data)
            if sftp.stat(part).st_size != len(data):
                raise SourceUnavailableError(f"the upload of {part} is incomplete; retry")
            try:
                sftp.posix_rename(part, final)
            except OSError:
                # A server without the posix-rename extension: plain rename, which refuses to overwrite.
                sftp.rename(part, final)
        return final


def export_call_list(engine: Engine, campaign_run_id: int, conn: Mapping[str, Any]) -> ExportResult:
    """Export the run's phone messages as a call list (see the module docstring)."""
    return export_list(engine, campaign_run_id, conn, kind="call_list")


def export_letter_shop_list(engine: Engine, campaign_run_id: int, conn: Mapping[str, Any]) -> ExportResult:
    """Export the run's post messages as a letter-shop list (see the module docstring)."""
    return export_list(engine, campaign_run_id, conn, kind="letter_shop")


def export_list(
    engine: Engine, campaign_run_id: int, conn: Mapping[str, Any], *, kind: ExportKind
) -> ExportResult:
    """Build the list of `kind` for the run, upload it once, mark its messages sent."""
    if kind not in CHANNEL_OF:
        raise ConfigError(f"export kind must be one of {', '.join(CHANNEL_OF)}, not {kind!r}")
    settings = ExportSettings.from_connection(conn)
    sql = queries("providers.sql")
    with engine.connect() as db:
        rows = [
            dict(row)
            for row in db.execute(
                sql["export_rows"], {"campaign_run_id": campaign_run_id, "channel": CHANNEL_OF[kind]}
            ).mappings()
        ]
    if not rows:
        return ExportResult("", 0, 0, uploaded=False, sha256=None)
    name = f"{kind}_{_safe(rows[0]['campaign_name'])}_run{campaign_run_id}.csv"
    remote_path = posixpath.join(settings.folder, name)
    exported = [row for row in rows if row["eligible"] or row["status"] == "sent"]
    uploaded, data = False, b""
    try:
        with SftpUploader(settings.sftp) as sftp:
            if sftp.exists(remote_path):
                # An earlier attempt finished the file: what it holds is what was sent, also to
                # a person who became ineligible after it went out.
                data = sftp.read(remote_path)
                listed = set(message_keys(data, delimiter=settings.delimiter))
                exported = [row for row in rows if row["message_key"] in listed]
            elif exported:
                data = csv_bytes(COLUMNS[kind], exported, delimiter=settings.delimiter, bom=settings.bom)
                sftp.upload(data, settings.folder, name)
                uploaded = True
    except HostKeyError as exc:
        raise PermanentDeliveryError(str(exc)) from exc
    except SourceUnavailableError as exc:
        raise TransientDeliveryError(str(exc)) from exc
    except (IngestError, paramiko.SSHException) as exc:
        raise PermanentDeliveryError(str(exc)) from exc

    message_ids = [row["message_id"] for row in exported]
    in_file = set(message_ids)
    ineligible = [row["message_id"] for row in rows if row["message_id"] not in in_file]
    with engine.begin() as db:
        db.execute(sql["skip_ineligible"], {"message_ids": ineligible, "reason": "not_eligible_at_export"})
        db.execute(sql["mark_exported"], {"message_ids": message_ids, "remote_path": remote_path})
    log.info(
        "%s of run %s: %d rows in %s (%s), %d skipped",
        kind,
        campaign_run_id,
        len(exported),
        remote_path,
        "uploaded" if uploaded else "already there",
        len(ineligible),
    )
    return ExportResult(
        remote_path if exported else "",
        len(exported),
        len(ineligible),
        uploaded=uploaded,
        sha256=hashlib.sha256(data).hexdigest() if exported else None,
    )


def message_keys(data: bytes, *, delimiter: str = ";") -> list[str]:
    """The message_key column of an export file's bytes."""
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=delimiter)
    return [row["message_key"] for row in reader]


def _safe(name: str) -> str:
    """A campaign name as a file-name part (campaign names are lower_snake already; be sure)."""
    return re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "campaign"
