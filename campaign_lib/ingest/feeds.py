"""Feed specs: one YAML file per source feed declares how its files are found, read and mapped.

A feed file (`feeds/<name>.yaml`) says where the files land (`sftp`), how they are
written (`format`), which columns they have (`header`, `required`, `natural_key`) and
how each field of a SourceRecord is filled (`mapping`, `attributes`). A new booking
system is added with a new YAML file, without code (feeds/hotel_pms.yaml is a commented
example). `load_feeds` validates every file and names the file, field and problem of a mistake:

    feeds/x.yaml: mapping.email: unknown converter 'emial'

A feed's rows become source records (`ingest.record`, for identity resolution), or with
`target: product` the product catalogue `core.product` (feeds/products.yaml).

A mapping entry is a one-key converter naming its column, plus options:

    email: {email: EMail}
    booking_ref: {text: ResNr, when: {Gastrolle: H}}
    amount_cents: {amount: Betrag, currency_from: Währung}
"""

from __future__ import annotations

import codecs
import fnmatch
import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from campaign_lib.config import PROJECT_ROOT
from campaign_lib.errors import ConfigError
from campaign_lib.ingest.record import RECORD_COLUMNS
from campaign_lib.ingest.standardise import ISO8601
from campaign_lib.lookups import ACCOUNT_TYPES, ACTIVITY_TYPES, CHANNELS, CONSENT_STATUSES, FEEDS_DIR

ACTIVITY_TYPE_PATTERN = r"^[a-z][a-z0-9_]{1,62}$"  # core.activity_type's check

# Fields a feed may not map: the parser fills them, or (currency) the amount converter does.
_FIXED_FIELDS = frozenset(
    {"source_system", "record_kind", "source_key", "line_number", "attributes", "currency"}
)
MAPPABLE_FIELDS = tuple(name for name in RECORD_COLUMNS if name not in _FIXED_FIELDS)
DATE_FIELDS = frozenset({"birth_date", "address_valid_from"})
DATETIME_FIELDS = frozenset({"occurred_at", "ended_at", "double_opt_in_at"})
# Which values a field of the schema accepts, checked against constants and value maps.
ENUM_FIELDS = {
    "account_type": ACCOUNT_TYPES,
    "consent_channel": CHANNELS,
    "consent_status": CONSENT_STATUSES,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Condition = dict[str, str | list[str]]


class _Converter(_Strict):
    when: Condition | None = Field(
        default=None, description="column → value or list of values; all must hold, else the field is null"
    )

    def columns(self) -> tuple[str, ...]:
        """Every column the entry reads, its condition included."""
        return (*self._own_columns(), *(self.when or {}))

    def _own_columns(self) -> tuple[str, ...]:
        return ()


class TextConverter(_Converter):
    text: str

    def _own_columns(self) -> tuple[str, ...]:
        return (self.text,)


class NameConverter(_Converter):
    name: str
    split: Literal["last, first", "first last"] | None = None
    part: Literal["first", "last"] | None = None

    def _own_columns(self) -> tuple[str, ...]:
        return (self.name,)


class EmailConverter(_Converter):
    email: str

    def _own_columns(self) -> tuple[str, ...]:
        return (self.email,)


class PhoneConverter(_Converter):
    phone: str
    region_from: str | None = Field(
        default=None, description="column with the person's country (name or code) to read national numbers"
    )

    def _own_columns(self) -> tuple[str, ...]:
        return (self.phone, *([self.region_from] if self.region_from else []))


class DateConverter(_Converter):
    date: str

    def _own_columns(self) -> tuple[str, ...]:
        return (self.date,)


class BirthDateConverter(_Converter):
    birth_date: str
    placeholder: str | None = Field(default=None, description="the source's 'unknown' value, read as null")

    def _own_columns(self) -> tuple[str, ...]:
        return (self.birth_date,)


class DatetimeConverter(_Converter):
    datetime: str
    date_only: bool = Field(default=False, description="the column holds a day: local midnight of it")

    def _own_columns(self) -> tuple[str, ...]:
        return (self.datetime,)


class AmountConverter(_Converter):
    amount: str
    currency: str | None = Field(default=None, description="a constant ISO 4217 code")
    currency_from: str | None = Field(default=None, description="the column holding the ISO 4217 code")

    def _own_columns(self) -> tuple[str, ...]:
        return (self.amount, *([self.currency_from] if self.currency_from else []))


class IntegerConverter(_Converter):
    integer: str

    def _own_columns(self) -> tuple[str, ...]:
        return (self.integer,)


class CountryConverter(_Converter):
    country: str

    def _own_columns(self) -> tuple[str, ...]:
        return (self.country,)


class ConstantConverter(_Converter):
    constant: str | int | bool


class TemplateConverter(_Converter):
    template: str = Field(description="text with {column} placeholders; null when any of them is empty")

    def _own_columns(self) -> tuple[str, ...]:
        return tuple(name for _, name, _, _ in string.Formatter().parse(self.template) if name is not None)


class JsonConverter(_Converter):
    # Written `json:` in a feed file; pydantic's BaseModel has a method of that name.
    key: str = Field(
        alias="json", description="a JSON Lines key (dots for nested ones) whose value may be an object"
    )
    prefix: str = Field(default="", description="text put before the value, e.g. 'webpush:'")

    def _own_columns(self) -> tuple[str, ...]:
        return (self.key,)


class MapConverter(_Converter):
    map: str
    values: dict[str, str | None] = Field(description="source value → field value (null allowed)")
    default: str | None = Field(default=None, description="for other values; without it they reject the row")

    def _own_columns(self) -> tuple[str, ...]:
        return (self.map,)


class JoinConverter(_Converter):
    join: list[str] = Field(min_length=1)
    separator: str = " "

    def _own_columns(self) -> tuple[str, ...]:
        return tuple(self.join)


CONVERTERS: dict[str, type[_Converter]] = {
    "text": TextConverter,
    "name": NameConverter,
    "email": EmailConverter,
    "phone": PhoneConverter,
    "date": DateConverter,
    "birth_date": BirthDateConverter,
    "datetime": DatetimeConverter,
    "amount": AmountConverter,
    "integer": IntegerConverter,
    "country": CountryConverter,
    "constant": ConstantConverter,
    "template": TemplateConverter,
    "json": JsonConverter,
    "map": MapConverter,
    "join": JoinConverter,
}


def _converter_of(value: Any) -> str | None:
    if isinstance(value, dict):
        names = [key for key in value if key in CONVERTERS]
        if len(names) == 1:
            return names[0]
    return None


FieldMapping = Annotated[
    Annotated[TextConverter, Tag("text")]
    | Annotated[NameConverter, Tag("name")]
    | Annotated[EmailConverter, Tag("email")]
    | Annotated[PhoneConverter, Tag("phone")]
    | Annotated[DateConverter, Tag("date")]
    | Annotated[BirthDateConverter, Tag("birth_date")]
    | Annotated[DatetimeConverter, Tag("datetime")]
    | Annotated[AmountConverter, Tag("amount")]
    | Annotated[IntegerConverter, Tag("integer")]
    | Annotated[CountryConverter, Tag("country")]
    | Annotated[ConstantConverter, Tag("constant")]
    | Annotated[TemplateConverter, Tag("template")]
    | Annotated[JsonConverter, Tag("json")]
    | Annotated[MapConverter, Tag("map")]
    | Annotated[JoinConverter, Tag("join")],
    Discriminator(_converter_of, custom_error_type="converter", custom_error_message="no converter"),
]


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


# A field takes one entry, or a list of them: the first whose condition holds and whose value
# is not empty wins (a website name comes from first_name, or from `name` on inquiries).
FieldMappings = Annotated[tuple[FieldMapping, ...], BeforeValidator(_as_list), Field(min_length=1)]

# Which converters can fill which kind of field.
_DATE_CONVERTERS = (DateConverter, BirthDateConverter)
_TEXT_CONVERTERS = (
    TextConverter, NameConverter, EmailConverter, PhoneConverter, CountryConverter,
    ConstantConverter, TemplateConverter, JsonConverter, MapConverter, JoinConverter,
)  # fmt: skip
# A feed's rows become source records for identity resolution (FeedSpec.target `record`,
# the default) or the product catalogue (`product`: core.product by SKU), which needs
# these fields and attributes.
PRODUCT_FIELDS = ("product_sku", "product_name")
PRODUCT_ATTRIBUTES = ("category",)
PRODUCT_CATEGORY_PATTERN = r"[a-z][a-z0-9_]*"  # core.product's check


class SftpSpec(_Strict):
    folder: str = Field(description="the drop folder, relative to the source's root")
    pattern: str = Field(description="glob of the file names, e.g. PMS_RESERVATIONS_*.csv")
    completeness: Literal["done_marker", "part_rename", "stable_size"] = Field(
        description="how a complete file is told from one still being written"
    )


class FormatSpec(_Strict):
    type: Literal["csv", "jsonl"]
    encoding: str = "utf-8"
    bom: bool = False
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    line_end: Literal["lf", "crlf", "any"] = "any"
    decimal_separator: Literal[".", ","] = "."
    thousands_separator: Literal[".", ",", " ", "'"] | None = None
    date_format: str = "%Y-%m-%d"
    datetime_formats: tuple[str, ...] = Field(default=("%Y-%m-%dT%H:%M:%S",), min_length=1)
    timezone: str = "Europe/Berlin"
    default_region: str = "DE"
    other_regions: tuple[str, ...] = Field(
        default=(), description="where a national phone number that is invalid in default_region may be from"
    )
    max_field_bytes: int = Field(default=65536, ge=16)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            name = codecs.lookup(value).name
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        if name not in ("utf-8", "iso8859-1", "cp1252", "ascii"):
            raise ValueError(f"encoding {value!r} is not supported (utf-8, latin-1, cp1252 or ascii)")
        return name

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a phone region (an ISO 3166 alpha-2 code such as DE)")
        return value

    @field_validator("other_regions")
    @classmethod
    def _known_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for region in value:
            cls._known_region(region)
        return value

    @field_validator("date_format")
    @classmethod
    def _date_format(cls, value: str) -> str:
        if "%" not in value:
            raise ValueError(f"{value!r} is not a strptime format such as %d.%m.%Y")
        return value

    @field_validator("datetime_formats")
    @classmethod
    def _datetime_formats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for fmt in value:
            if fmt != ISO8601 and "%" not in fmt:
                raise ValueError(f"{fmt!r} is not a strptime format or {ISO8601!r}")
        return value

    @property
    def python_encoding(self) -> str:
        """The codec the parser reads with: utf-8-sig for UTF-8, which drops a BOM when there is one."""
        return "utf-8-sig" if self.encoding == "utf-8" else self.encoding


class SnapshotSpec(_Strict):
    enabled: bool = False
    max_shrink: float = Field(
        default=0.2, ge=0, le=1, description="largest share of rows a snapshot may lose against the last one"
    )


class FeedSpec(_Strict):
    """A validated feed file. Build it with `load_feed`, which also checks columns against the header."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")
    # A new system is registered in core.source_system when its feed first loads.
    source_system: str = Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")
    source_name: str | None = Field(default=None, description="the system's name, when it is new")
    source_trust_rank: int = Field(
        default=50, ge=0, le=100, description="survivorship trust of a new system (higher wins)"
    )
    record_kind: str = Field(pattern=r"^[a-z][a-z_]*$")
    description: str
    target: Literal["record", "product"] = Field(
        default="record",
        description="record: rows become source records (ingest.record) for identity resolution; "
        "product: rows upsert the product catalogue core.product by SKU",
    )
    activity_types: dict[Annotated[str, Field(pattern=ACTIVITY_TYPE_PATTERN)], str] = Field(
        default={},
        description="activity types this feed introduces, name → description; registered in "
        "core.activity_type when the feed loads (the built-in ones need no entry)",
    )
    sftp: SftpSpec
    format: FormatSpec
    header: tuple[str, ...] = Field(min_length=1)
    required: tuple[str, ...] = ()
    natural_key: tuple[str, ...] = Field(min_length=1)
    snapshot: SnapshotSpec = SnapshotSpec()
    mapping: dict[str, FieldMappings]
    attributes: dict[str, FieldMappings] = {}

    @field_validator("activity_types")
    @classmethod
    def _described(cls, value: dict[str, str]) -> dict[str, str]:
        for name, description in value.items():
            if not description.strip():
                raise ValueError(f"{name}: give a description (what a campaign manager sees)")
        return value

    @property
    def known_activity_types(self) -> tuple[str, ...]:
        """The activity types this feed's records may carry: the built-in ones and its own."""
        return (*ACTIVITY_TYPES, *(name for name in self.activity_types if name not in ACTIVITY_TYPES))

    def matches(self, file_name: str) -> bool:
        """Whether a file of this name (a bare name or a path; folders are ignored) belongs to the feed."""
        return fnmatch.fnmatchcase(file_name.replace("\\", "/").rsplit("/", 1)[-1], self.sftp.pattern)


def load_feed(path: Path) -> FeedSpec:
    """Read and validate one feed file; ConfigError names the file, the field and the problem."""
    path = Path(path)
    label = _label(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{label}: cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{label}: is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: is not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: must hold a mapping of settings, not {type(raw).__name__}")
    try:
        spec = FeedSpec.model_validate(raw)
    except ValidationError as exc:
        problems = [_problem(error, raw) for error in exc.errors()]
        raise ConfigError(f"{label}: " + f"\n{label}: ".join(problems)) from None
    problems = _cross_check(spec)
    if problems:
        raise ConfigError(f"{label}: " + f"\n{label}: ".join(problems))
    expected = path.stem
    if spec.name != expected:
        raise ConfigError(f"{label}: name: {spec.name!r} must match the file name {expected!r}")
    return spec


def load_feeds(folder: Path = FEEDS_DIR) -> dict[str, FeedSpec]:
    """Load every `*.yaml` feed file of `folder`, by feed name; ConfigError on the first invalid one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{_label(folder)}: feed folder does not exist")
    return {spec.name: spec for spec in (load_feed(path) for path in sorted(folder.glob("*.yaml")))}


def _label(path: Path) -> str:
    try:
        return path.resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return str(path)


def _problem(error: dict, raw: dict) -> str:
    """One pydantic error as `field.path: problem`, in the words of a feed file's author."""
    loc = [str(part) for part in error["loc"]]
    kind = error["type"]
    if len(loc) >= 3 and loc[0] in ("mapping", "attributes"):
        # A single entry is validated as a list of one: drop the index the author never wrote.
        section = raw.get(loc[0])
        entry = section.get(loc[1]) if isinstance(section, dict) else None
        if not isinstance(entry, list):
            del loc[2]
    if kind == "converter":
        value = error["input"]
        where = ".".join(loc)
        if not isinstance(value, dict):
            return f"{where}: must be a mapping such as {{text: column}}, not {value!r}"
        named = [key for key in value if key in CONVERTERS]
        if len(named) > 1:
            return f"{where}: more than one converter ({', '.join(named)}); give exactly one"
        unknown = [key for key in value if key not in ("when", *CONVERTERS)]
        if unknown:
            return f"{where}: unknown converter {unknown[0]!r} (known: {', '.join(CONVERTERS)})"
        return f"{where}: no converter given (known: {', '.join(CONVERTERS)})"
    # Tagged unions put the converter's name into the location: mapping.email.email.regoin.
    if len(loc) >= 3 and loc[0] in ("mapping", "attributes") and loc[2] in CONVERTERS:
        del loc[2]
    if kind == "extra_forbidden":
        return f"{'.'.join(loc[:-1]) or '(top level)'}: unknown setting {loc[-1]!r}"
    if kind == "missing":
        return f"{'.'.join(loc)}: missing"
    message = error["msg"].removeprefix("Value error, ")
    return f"{'.'.join(loc)}: {message}"


def _cross_check(spec: FeedSpec) -> list[str]:
    """Checks across settings: columns exist in the header, converters fit their fields, enum values."""
    problems: list[str] = []
    header = set(spec.header)
    is_csv = spec.format.type == "csv"
    if is_csv and len(header) != len(spec.header):
        problems.append("header: a column is listed twice")
    for setting in ("required", "natural_key"):
        for column in getattr(spec, setting):
            if column not in header:
                problems.append(f"{setting}: column {column!r} is not in the header")

    def check_columns(where: str, entry: _Converter) -> None:
        for column in entry.columns():
            if not column:
                problems.append(f"{where}: empty column name")
            elif is_csv and column not in header:
                problems.append(f"{where}: column {column!r} is not in the header")

    for field, entries in spec.mapping.items():
        if field not in MAPPABLE_FIELDS:
            hint = " (the amount converter fills it)" if field == "currency" else ""
            problems.append(
                f"mapping.{field}: not a field a feed can fill{hint}; fields: {', '.join(MAPPABLE_FIELDS)}"
            )
            continue
        for index, entry in enumerate(entries):
            where = f"mapping.{field}" + (f".{index}" if len(entries) > 1 else "")
            check_columns(where, entry)
            problems.extend(f"{where}: {problem}" for problem in _fit(field, entry, spec))
    if spec.target == "product":
        for name in PRODUCT_FIELDS:
            if name not in spec.mapping:
                problems.append(f"mapping.{name}: missing (a product feed maps {', '.join(PRODUCT_FIELDS)})")
        for name in PRODUCT_ATTRIBUTES:
            if name not in spec.attributes:
                problems.append(f"attributes.{name}: missing (a product feed maps the category)")
    for name, entries in spec.attributes.items():
        if name == "invalid":
            problems.append("attributes.invalid: the name 'invalid' is kept for dropped values")
        for index, entry in enumerate(entries):
            where = f"attributes.{name}" + (f".{index}" if len(entries) > 1 else "")
            check_columns(where, entry)
            problems.extend(f"{where}: {problem}" for problem in _options(entry))
    return problems


def _fit(field: str, entry: _Converter, spec: FeedSpec) -> list[str]:
    """Problems of putting `entry`'s value into SourceRecord `field` of `spec`'s records."""
    converter = next(name for name, cls in CONVERTERS.items() if type(entry) is cls)
    if field in DATE_FIELDS:
        allowed: tuple[type, ...] = _DATE_CONVERTERS
    elif field in DATETIME_FIELDS:
        allowed = (DatetimeConverter,)
    elif field == "amount_cents":
        allowed = (AmountConverter,)
    elif field == "quantity":
        allowed = (IntegerConverter, ConstantConverter)
    else:
        allowed = _TEXT_CONVERTERS
    if not isinstance(entry, allowed):
        names = ", ".join(name for name, cls in CONVERTERS.items() if cls in allowed)
        return [f"converter {converter!r} cannot fill this field (use {names})"]
    problems = _options(entry)
    if isinstance(entry, BirthDateConverter) and field != "birth_date":
        problems.append("converter 'birth_date' fills birth_date only")
    allowed_values = spec.known_activity_types if field == "activity_type" else ENUM_FIELDS.get(field)
    if allowed_values:
        values: list[Any] = []
        if isinstance(entry, ConstantConverter):
            values = [entry.constant]
        elif isinstance(entry, MapConverter):
            values = [*entry.values.values(), entry.default]
        for value in values:
            if value is not None and value not in allowed_values:
                hint = " (or declare it under activity_types)" if field == "activity_type" else ""
                problems.append(f"{value!r} is not a {field}; one of: {', '.join(allowed_values)}{hint}")
    if (
        field == "quantity"
        and isinstance(entry, ConstantConverter)
        and not (isinstance(entry.constant, int) and entry.constant > 0)
    ):
        problems.append("quantity must be a positive whole number")
    return problems


def _options(entry: _Converter) -> list[str]:
    """Problems of a converter's options that pydantic cannot see one at a time."""
    problems = []
    if isinstance(entry, AmountConverter):
        if (entry.currency is None) == (entry.currency_from is None):
            problems.append("give exactly one of currency (a constant code) and currency_from (a column)")
        elif entry.currency is not None and not re.fullmatch(r"[A-Z]{3}", entry.currency):
            problems.append(f"currency {entry.currency!r} is not an ISO 4217 code")
    if isinstance(entry, NameConverter) and (entry.split is None) != (entry.part is None):
        problems.append("split and part go together: split: 'last, first', part: first")
    return problems
