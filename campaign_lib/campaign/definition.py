"""Campaign definitions: campaigns/*.yaml, validated into `Campaign`.

A definition is read with YAML's C loader and checked with pydantic; every problem is
reported as `campaigns/<file>: <field>: <problem>` (ConfigError). This module is light on
purpose (yaml, pydantic, the standard library): the DAG factory imports it at parse time,
and Airflow has both already loaded. Checks that need the database-side packages (the
selection exists and its parameters bind) live in `campaign_lib.campaign.references`.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from campaign_lib.errors import ConfigError

# campaign_lib.config imports SQLAlchemy, which a DAG file must not pull in at parse time.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHANNELS = ("email", "sms", "push")
SINGLE_CUSTOMER_VIEW_UPDATE = "on_single_customer_view_update"
MESSAGES = "messages"
_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")
_CRON_FIELD = re.compile(r"^[0-9*/,\-A-Za-z?LW#]+$")

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")]
Channel = Literal["email", "sms", "push"]
Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=4)]
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # date.weekday() order


def campaigns_folder() -> Path:
    """The folder of campaign definitions: KMS_CAMPAIGNS_DIR, default <checkout>/campaigns."""
    return Path(os.environ.get("KMS_CAMPAIGNS_DIR") or PROJECT_ROOT / "campaigns")


def templates_folder() -> Path:
    """The folder of message templates: KMS_TEMPLATES_DIR, default <checkout>/templates."""
    return Path(os.environ.get("KMS_TEMPLATES_DIR") or PROJECT_ROOT / "templates")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SelectionRef(_Strict):
    name: Name
    # YAML reads 2026-06-01 as a date; the selection's bind() checks every value's type.
    params: dict[str, str | int | float | bool | date | list[str] | None] = Field(default_factory=dict)


class Offer(_Strict):
    sku: Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9-]{1,31}$")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    already_bought_within_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class EmailTemplates(_Strict):
    subject: Annotated[str, Field(min_length=1, max_length=200)]
    html: str
    text: str


class TextTemplate(_Strict):
    text: str


class Templates(_Strict):
    email: EmailTemplates | None = None
    sms: TextTemplate | None = None
    push: TextTemplate | None = None

    def files(self) -> dict[str, str]:
        """Every template file named, keyed by its field path (e.g. `email.html`)."""
        named = {}
        if self.email:
            named |= {"email.html": self.email.html, "email.text": self.email.text}
        for channel in ("sms", "push"):
            template = getattr(self, channel)
            if template:
                named[f"{channel}.text"] = template.text
        return named


class SendWindow(_Strict):
    start: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = "09:00"
    # "24:00" is midnight at the end of the day: 00:00-24:00 on every day is always open.
    end: Annotated[str, Field(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")] = "20:00"
    timezone: str = "Europe/Berlin"
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], min_length=1
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _start_before_end(self) -> SendWindow:
        if self.start >= self.end:
            raise ValueError(f"start {self.start} must be before end {self.end}")
        return self

    def opens_in(self, at: datetime) -> timedelta:
        """Zero when the aware moment `at` is inside the window, else the time until it opens.

        The window is wall-clock time in `timezone` on `days`, from `start` up to but not
        including `end`. On a DST change night a start or end the clock skips is read with the
        offset before the change (an hour later), one it passes twice at its first pass.
        """
        if at.tzinfo is None:
            raise ValueError("a send window needs an aware datetime, not a naive one")
        from zoneinfo import ZoneInfo

        zone = ZoneInfo(self.timezone)
        # In UTC: aware datetimes with one and the same tzinfo compare and subtract wall times.
        now = at.astimezone(UTC)
        today = at.astimezone(zone).date()

        def instant(day: date, hhmm: str) -> datetime:
            if hhmm == "24:00":
                return instant(day + timedelta(days=1), "00:00")
            return datetime.combine(day, time.fromisoformat(hhmm), zone).astimezone(UTC)

        days = (today + timedelta(days=offset) for offset in range(8))
        windows = (
            (instant(day, self.start), instant(day, self.end))
            for day in days
            if _WEEKDAYS[day.weekday()] in self.days
        )
        # `days` is never empty, so a window opens within a week.
        return next(max(opens - now, timedelta(0)) for opens, closes in windows if now < closes)

    def opens_at(self, at: datetime) -> datetime | None:
        """None when the aware moment `at` is inside the window, else when it opens (in UTC)."""
        wait = self.opens_in(at)
        return at.astimezone(UTC) + wait if wait else None

    def describe(self) -> str:
        """The window for logs and messages, e.g. '09:00-20:00 Europe/Berlin, mon,tue'."""
        return f"{self.start}-{self.end} {self.timezone}, {','.join(self.days)}"

    def local_time(self, moment: datetime) -> str:
        """An aware moment as the window's wall-clock time, e.g. 'Mon 2026-11-23 09:00 CET'."""
        from zoneinfo import ZoneInfo

        return f"{moment.astimezone(ZoneInfo(self.timezone)):%a %Y-%m-%d %H:%M %Z}"


class Costs(_Strict):
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"
    per_message: dict[Channel, Money] = Field(default_factory=dict)
    fixed: Money = Decimal(0)


class Cell(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,30}$")]
    weight: Annotated[float, Field(gt=0)]

    @field_validator("name")
    @classmethod
    def _not_control(cls, value: str) -> str:
        if value == "control":
            raise ValueError("'control' is the control group's name; set control_share instead")
        return value


class Pressure(_Strict):
    window_days: Annotated[int, Field(ge=1, le=365)] | None = None
    max_per_channel: Annotated[int, Field(ge=1)] | None = None
    max_total: Annotated[int, Field(ge=1)] | None = None


class SizeCap(_Strict):
    limit: Annotated[int, Field(ge=1)]
    by: Literal["random", "score"] = "random"
    seed: str | None = None


class Campaign(_Strict):
    """A validated campaign definition."""

    name: Name
    description: Annotated[str, Field(min_length=1)]
    owner: Annotated[str, Field(min_length=1)]
    selection: SelectionRef
    offer: Offer | None = None
    purpose: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    channels: Annotated[list[Channel], Field(min_length=1)]
    templates: Templates
    schedule: str | None = None
    send_window: SendWindow = Field(default_factory=SendWindow)
    costs: Costs = Field(default_factory=Costs)
    control_share: Annotated[float, Field(ge=0, le=0.5)] = 0.1
    cells: Annotated[list[Cell], Field(min_length=1)] = Field(
        default_factory=lambda: [Cell(name="main", weight=1)]
    )
    response_window_days: Annotated[int, Field(ge=1, le=365)] = 14
    budget: Money | None = None
    approval_required: bool = False
    one_per_household: bool = False
    pressure: Pressure = Field(default_factory=Pressure)
    size_cap: SizeCap | None = None
    tags: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$")]] = Field(default_factory=list)

    @field_validator("channels")
    @classmethod
    def _channels_once(cls, value: list[str]) -> list[str]:
        twice = sorted({c for c in value if value.count(c) > 1})
        if twice:
            raise ValueError(f"each channel once, {', '.join(twice)} named twice")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is None or value == SINGLE_CUSTOMER_VIEW_UPDATE or value in _PRESETS:
            return value
        fields = value.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(
                f"must be a cron expression of 5 fields, a preset ({', '.join(_PRESETS)}), "
                f"{SINGLE_CUSTOMER_VIEW_UPDATE!r} or null, not {value!r}"
            )
        return value

    @field_validator("cells")
    @classmethod
    def _cells_once(cls, value: list[Cell]) -> list[Cell]:
        names = [cell.name for cell in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"each cell name once, {', '.join(twice)} named twice")
        return value

    @model_validator(mode="after")
    def _template_and_cost_per_channel(self) -> Campaign:
        missing = [c for c in self.channels if getattr(self.templates, c) is None]
        if missing:
            raise ValueError(f"templates: no template for channel {', '.join(missing)}")
        unused = [c for c in CHANNELS if getattr(self.templates, c) is not None and c not in self.channels]
        if unused:
            raise ValueError(f"templates: template for {', '.join(unused)}, which is not in channels")
        priced = set(self.costs.per_message)
        if priced - set(self.channels):
            raise ValueError(
                f"costs.per_message: prices {', '.join(sorted(priced - set(self.channels)))}, not in channels"
            )
        return self

    @property
    def dag_id(self) -> str:
        return f"kms_campaign_{self.name}"

    @property
    def cell_weights(self) -> dict[str, float]:
        return {cell.name: cell.weight for cell in self.cells}


@dataclass(frozen=True)
class CampaignFile:
    """A campaign definition as loaded from its file, with its version."""

    path: Path
    campaign: Campaign
    version: str


def definition_version(content: bytes) -> str:
    """The version of a definition: the first 16 hex digits of its file's SHA-256."""
    return hashlib.sha256(content).hexdigest()[:16]


def load_campaign(path: Path, templates: Path | None = None) -> CampaignFile:
    """Read and validate one campaign file, including that its template files exist.

    Raises ConfigError reading `<file>: <field>: <problem>` (one line per problem).
    """
    shown = shown_path(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot be read: {exc.strerror}") from exc
    try:
        raw = yaml.load(content, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise ConfigError(f"{shown}: {where}not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{shown}: must be a mapping of fields, not {type(raw).__name__}")
    try:
        campaign = Campaign.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(f"{shown}: {problem}" for problem in _problems(exc))) from exc
    problems = []
    if campaign.name != path.stem:
        problems.append(f"name: must equal the file name {path.stem!r}, not {campaign.name!r}")
    folder = templates or templates_folder()
    for field, name in campaign.templates.files().items():
        if not (folder / name).is_file():
            problems.append(f"templates.{field}: no template file {name!r} in {folder}")
    if problems:
        raise ConfigError("\n".join(f"{shown}: {problem}" for problem in problems))
    return CampaignFile(path=path, campaign=campaign, version=definition_version(content))


def load_campaigns(
    folder: Path | None = None, templates: Path | None = None
) -> tuple[dict[str, CampaignFile], dict[Path, str]]:
    """Every campaign file of `folder` (default campaigns_folder()), sorted by name.

    Returns (valid definitions by name, problems by file) so one broken file never hides
    the others.
    """
    valid: dict[str, CampaignFile] = {}
    invalid: dict[Path, str] = {}
    for path in sorted((folder or campaigns_folder()).glob("*.y*ml")):
        try:
            loaded = load_campaign(path, templates)
        except ConfigError as exc:
            invalid[path] = str(exc)
        else:
            valid[loaded.campaign.name] = loaded
    return valid, invalid


def find_campaign(name: str, folder: Path | None = None) -> CampaignFile:
    """The definition named `name`; ConfigError naming the known ones when there is none."""
    base = folder or campaigns_folder()
    for suffix in (".yaml", ".yml"):
        if (base / f"{name}{suffix}").is_file():
            return load_campaign(base / f"{name}{suffix}")
    known = sorted(p.stem for p in base.glob("*.y*ml"))
    raise ConfigError(f"no campaign {name!r} in {base} (known: {', '.join(known) or 'none'})")


def selections_folder() -> Path:
    """The selections folder as campaign_lib.selection reads it (KMS_SELECTIONS_DIR)."""
    return Path(os.environ.get("KMS_SELECTIONS_DIR") or PROJECT_ROOT / "selections")


def selection_choices(folder: Path | None = None) -> list[str]:
    """Names of the selection files, for trigger forms built at parse time (where the
    selection package, which imports SQLAlchemy, must not be loaded)."""
    base = folder or selections_folder()
    return sorted({p.stem for pattern in ("*.yaml", "*.yml", "*.sql") for p in base.glob(pattern)})


def message_template_sets(folder: Path | None = None) -> list[str]:
    """Names of the message template sets (templates/messages/<set>/), for the ad-hoc form."""
    base = (folder or templates_folder()) / MESSAGES
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def template_set(name: str, channels: list[str], subject: str) -> dict[str, object]:
    """The `templates` field of a definition that uses set `name` for `channels`."""
    files = {
        "email": {
            "subject": subject,
            "html": f"{MESSAGES}/{name}/email.html.j2",
            "text": f"{MESSAGES}/{name}/email.txt.j2",
        },
        "sms": {"text": f"{MESSAGES}/{name}/sms.txt.j2"},
        "push": {"text": f"{MESSAGES}/{name}/push.txt.j2"},
    }
    return {channel: files[channel] for channel in channels}


def adhoc_campaign(choices: dict[str, object], templates: Path | None = None) -> Campaign:
    """The definition of an ad-hoc run from the trigger form's values, validated like a file.

    Raises ConfigError `ad-hoc run: <field>: <problem>`.
    """
    channels = list(choices["channels"])
    raw = {
        "name": choices["campaign_name"],
        "description": f"Ad-hoc run of selection {choices['selection']}",
        "owner": choices.get("owner") or "ad-hoc",
        "selection": {"name": choices["selection"], "params": choices.get("selection_params") or {}},
        "purpose": choices["purpose"],
        "channels": channels,
        "templates": template_set(str(choices["template"]), channels, str(choices["email_subject"])),
        "control_share": choices["control_share"],
        "one_per_household": choices.get("one_per_household", False),
    }
    if choices.get("offer_sku"):
        raw["offer"] = {"sku": choices["offer_sku"], "name": choices["offer_sku"]}
    if choices.get("limit"):
        raw["size_cap"] = {"limit": choices["limit"]}
    try:
        campaign = Campaign.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(f"ad-hoc run: {problem}" for problem in _problems(exc))) from exc
    folder = templates or templates_folder()
    missing = [name for name in campaign.templates.files().values() if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"ad-hoc run: template: {', '.join(missing)} missing in {folder}")
    return campaign


def shown_path(path: Path) -> str:
    """`campaigns/x.yaml` for a file of the checkout, else the path as given."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False):
        location = ""
        for part in error["loc"]:
            location += f"[{part}]" if isinstance(part, int) else (f".{part}" if location else str(part))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] != "value_error" and not isinstance(error.get("input"), dict | list):
            message += f", not {error['input']!r}"
        problems.append(f"{location}: {message}" if location else message)
    return problems
