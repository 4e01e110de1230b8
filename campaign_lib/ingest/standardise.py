"""Standardisation of single values: what every feed's raw strings become in a SourceRecord.

Each function is pure and takes one raw value (plus the feed's settings). Two kinds of
failure are told apart, because the quarantine treats them differently:

- `RowProblem`: the row cannot be loaded (an impossible date, a negative amount); the
  parser rejects the row with the message as one of its reasons.
- `FieldIssue`: the value is unusable but the row is still good (an invalid email or
  phone); the parser stores null, keeps the raw value in `attributes["invalid"]` and
  counts the issue by its `kind`.

Expensive work is cached by raw value: phonenumbers costs ~41 µs and email-validator
~30 µs per call, while the same names, dates, amounts and addresses recur thousands of
times in a file. The caches are bounded (`functools.lru_cache`) so a 500,000-row file
cannot grow them without limit.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from functools import lru_cache
from zoneinfo import ZoneInfo

import phonenumbers
from email_validator import EmailNotValidError, validate_email

# The earliest birth date ingest.record accepts; 1900-01-01 is the usual "unknown" placeholder.
MIN_BIRTH_DATE = dt.date(1900, 1, 2)
ISO8601 = "iso8601"

_CACHE = 1 << 16


class RowProblem(ValueError):
    """A value that makes its row unloadable; the message is the quarantine reason."""


class FieldIssue(ValueError):
    """A value that is dropped (stored as null) while its row still loads."""

    def __init__(self, kind: str, raw: str) -> None:
        super().__init__(f"{kind}: {raw!r}")
        self.kind = kind
        self.raw = raw


# A strict subset of what email-validator accepts, normalised exactly as it would be:
# dot-atoms of plain characters, ASCII domain labels without "--" (no IDNA), a letter TLD.
_SIMPLE_EMAIL = re.compile(
    r"[a-z0-9_%+-]+(?:\.[a-z0-9_%+-]+)*@(?:[a-z0-9]+(?:-[a-z0-9]+)*\.)+([a-z]{2,63})",
    re.ASCII,
)
_SPECIAL_USE_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


@lru_cache(maxsize=_CACHE)
def clean_email(raw: str) -> str | None:
    """Return the email trimmed and lower-cased, None when empty; FieldIssue when its syntax is invalid."""
    email = raw.strip().lower()
    if not email:
        return None
    simple = _SIMPLE_EMAIL.fullmatch(email)
    if simple and len(email) <= 254 and email.index("@") <= 64 and simple[1] not in _SPECIAL_USE_TLDS:
        return email
    try:
        return validate_email(email, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        raise FieldIssue("invalid_email", raw) from None


# Digits, spaces and the punctuation people type into phone fields; a letter is an error
# (phonenumbers would read `0170 123O567` as a vanity number).
_PHONE_CHARS = re.compile(r"\+?[0-9 ()./-]+")
_E164 = phonenumbers.PhoneNumberFormat.E164


_E164_CHECK = re.compile(r"\+[1-9][0-9]{6,14}")


# The fast path: a number written only with digits, spaces, "/" and "-" is settled
# without phonenumbers.parse (~41 µs) when that is sure to give the same answer: the
# national significant number is read as parse reads it (+cc or 00cc, else the trunk 0
# of the region; regions whose country code is shared or whose prefixes are not plain
# are left out) and tested against the region's metadata exactly as is_valid_number
# tests it (~2 µs). A national number invalid in the feed's region is tried in its other
# regions in turn, as below. Whatever is not settled (merely possible numbers, a trunk 0
# after the country code, a length parse would read otherwise) takes the full path.
# tests/test_parse.py checks both agree on the generator's formats.
_FAST_PHONE_CHARS = re.compile(r"\+?[0-9][0-9 /-]*")
_FAST_PHONE_STRIP = str.maketrans("", "", " /-")
# Every type is_valid_number accepts; the common ones first (any one will do).
_NUMBER_TYPES = (
    "mobile", "fixed_line", "premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager",
    "uan", "voicemail",
)  # fmt: skip


@lru_cache(maxsize=64)
def _fast_region(region: str):
    """The settings of `region` the fast path needs, or None when it does not apply there."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if (
        metadata is None
        or metadata.international_prefix != "00"
        or metadata.national_prefix not in (None, "0")
        or metadata.national_prefix_for_parsing not in (None, "0")
        or metadata.national_prefix_transform_rule is not None
        or len(phonenumbers.region_codes_for_country_code(metadata.country_code)) != 1
    ):
        return None

    # phonenumbers' _is_number_matching_desc: the length among the description's possible
    # lengths (none listed: the general ones hold), then the whole number matches its pattern.
    def desc(number_desc):
        if number_desc is None or number_desc.national_number_pattern is None:
            return None
        return frozenset(number_desc.possible_length), re.compile(
            number_desc.national_number_pattern
        ).fullmatch

    general = desc(metadata.general_desc)
    types = tuple(d for name in _NUMBER_TYPES if (d := desc(getattr(metadata, name, None))) is not None)
    if general is None or not general[0] or not types:
        return None
    return str(metadata.country_code), metadata.national_prefix == "0", general, types


def _valid(national: str, settings) -> bool:
    """is_valid_number's test: the general description and that of one number type."""
    _, _, (lengths, matches), types = settings
    size = len(national)
    if size not in lengths or matches(national) is None:
        return False
    return any(
        (not lengths or size in lengths) and matches(national) is not None for lengths, matches in types
    )


def _fast_e164(text: str, region: str, other_regions: tuple[str, ...] = ()) -> str | None:
    """E.164 of a plainly written valid number, None when the full path must decide."""
    if _fast_region(region) is None or not _FAST_PHONE_CHARS.fullmatch(text):
        return None
    digits = text.translate(_FAST_PHONE_STRIP)
    if digits[0] == "+" or digits.startswith("00"):
        # International: the country code (1-3 digits, the first that is one) picks the
        # metadata, as phonenumbers.parse does; "00" is the region's international prefix.
        international = digits[1:] if digits[0] == "+" else digits[2:]
        if international[:1] in ("", "0"):
            return None  # parse does not read 00 followed by 0 as the international prefix
        for size in (1, 2, 3):
            if int(international[:size] or 0) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
                break
        else:
            return None
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[int(international[:size])]
        settings = _fast_region(regions[0]) if len(regions) == 1 else None
        national = international[size:]
        if settings is None or not national or national[0] == "0":
            return None
        return _checked(f"+{settings[0]}{national}") if _valid(national, settings) else None
    for candidate in (region, *other_regions):
        settings = _fast_region(candidate)
        if settings is None:
            return None
        code, trunk, (lengths, _), _ = settings
        if trunk:
            if digits[0] != "0":
                return None
            national = digits[1:]
        elif digits.startswith(code):
            return None  # parse may read the country code off a national number
        else:
            national = digits
        # Of another length, parse may keep the trunk prefix: not this path's to decide.
        if not national or national[0] == "0" or len(national) not in lengths:
            return None
        if _valid(national, settings):
            return _checked(f"+{code}{national}")
    return None


def _checked(e164: str) -> str | None:
    """The number if E.164 allows it (15 digits at most); else the full path refuses it."""
    return e164 if _E164_CHECK.fullmatch(e164) else None


@lru_cache(maxsize=_CACHE)
def clean_phone(raw: str, region: str, other_regions: tuple[str, ...] = ()) -> str | None:
    """Return the number in E.164, None when empty; FieldIssue when it is not a phone number.

    A national number is read as `region`'s; when it is no valid number there but is in
    one of `other_regions` (a Swiss `079 123 45 67` in a feed without a country column),
    that region's reading wins. A number that is merely possible (right length, but in a
    range phonenumbers' metadata does not list as allocated) is still accepted in `region`:
    the metadata lags behind the numbering plans, and a dropped number loses a person's link.
    """
    text = raw.strip()
    if not text:
        return None
    fast = _fast_e164(text, region, other_regions)
    if fast is not None:
        return fast
    if not _PHONE_CHARS.fullmatch(text):
        raise FieldIssue("invalid_phone", raw)
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise FieldIssue("invalid_phone", raw) from None
    if not phonenumbers.is_valid_number(number):
        if not text.startswith(("+", "00")):
            for other in other_regions:
                try:
                    candidate = phonenumbers.parse(text, other)
                except phonenumbers.NumberParseException:
                    continue
                if phonenumbers.is_valid_number(candidate):
                    return phonenumbers.format_number(candidate, _E164)
        if phonenumbers.is_possible_number_with_reason(number) != phonenumbers.ValidationResult.IS_POSSIBLE:
            raise FieldIssue("invalid_phone", raw)
    e164 = phonenumbers.format_number(number, _E164)
    if not _E164_CHECK.fullmatch(e164):
        raise FieldIssue("invalid_phone", raw)
    return e164


@lru_cache(maxsize=_CACHE)
def clean_name(raw: str) -> str | None:
    """Return a name NFC-normalised, trimmed, inner whitespace collapsed; ALL-CAPS becomes title case."""
    name = " ".join(raw.split())
    if not name:
        return None
    if not name.isascii():
        name = unicodedata.normalize("NFC", name)
    if name.isupper() and len(name) > 1:
        name = name.title()
    return name


@lru_cache(maxsize=_CACHE)
def split_name(raw: str, order: str) -> tuple[str | None, str | None]:
    """Split a full name into (first, last): `order` is "last, first" (`Müller, Hans`) or "first last"."""
    text = " ".join(raw.split())
    if not text:
        return None, None
    if order == "last, first":
        last, sep, first = text.partition(",")
        if not sep:
            return None, clean_name(text)
    else:
        first, _, last = text.partition(" ")
    return clean_name(first), clean_name(last)


def clean_text(raw: str) -> str | None:
    """Return the text trimmed, None when empty; inner content is kept byte for byte."""
    text = raw.strip()
    return text or None


def _date_parser(fmt: str):
    if fmt == "%Y-%m-%d":

        def iso(raw: str) -> dt.date:
            if len(raw) != 10:
                raise ValueError(raw)
            return dt.date.fromisoformat(raw)

        return iso
    if fmt == "%d.%m.%Y":

        def german(raw: str) -> dt.date:
            if len(raw) != 10 or raw[2] != "." or raw[5] != "." or not raw[6:].isdigit():
                raise ValueError(raw)
            return dt.date(int(raw[6:]), int(raw[3:5]), int(raw[:2]))

        return german
    return lambda raw: dt.datetime.strptime(raw, fmt).date()


@lru_cache(maxsize=_CACHE)
def parse_date(raw: str, formats: tuple[str, ...]) -> dt.date:
    """Return the date written in one of `formats` (strptime); RowProblem when it is none or impossible."""
    text = raw.strip()
    for fmt in formats:
        try:
            return _date_parser(fmt)(text)
        except ValueError:
            continue
    raise RowProblem(f"unparsable date {raw!r} (expected {' or '.join(formats)})")


def check_birth_date(day: dt.date, today: dt.date) -> dt.date:
    """Return `day` if it can be a birth date; RowProblem when it lies in the future or before 1900-01-02."""
    if day > today:
        raise RowProblem(f"birth date {day.isoformat()} is in the future")
    if day < MIN_BIRTH_DATE:
        raise RowProblem(f"birth date {day.isoformat()} is before {MIN_BIRTH_DATE.isoformat()}")
    return day


def _naive_parser(fmt: str):
    if fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        separator = fmt[8]

        def iso(raw: str) -> dt.datetime:
            if len(raw) != 19 or raw[10] != separator:
                raise ValueError(raw)
            return dt.datetime.fromisoformat(raw)

        return iso
    if fmt == ISO8601:
        return dt.datetime.fromisoformat
    return lambda raw: dt.datetime.strptime(raw, fmt)


def datetime_parser(formats: tuple[str, ...], timezone: str):
    """Return a function raw -> aware datetime for `formats` (strptime, or "iso8601" with an optional offset).

    Times without an offset are local times of `timezone`. An ambiguous local time (the
    hour repeated when summer time ends) is read as the first occurrence, summer time
    (PEP 495 fold=0); a time inside the skipped hour keeps the offset before the change.
    """
    zone = ZoneInfo(timezone)
    expected = " or ".join(formats)
    if formats in (("%Y-%m-%dT%H:%M:%S",), ("%Y-%m-%d %H:%M:%S",)):
        # The POS formats: one C call on the common path (~0.4 µs instead of ~1.7).
        separator, fromisoformat = formats[0][8], dt.datetime.fromisoformat

        def parse_local(raw: str) -> dt.datetime:
            if len(raw) == 19 and raw[10] == separator and raw[4] == "-" and raw[13] == ":":
                try:
                    return fromisoformat(raw).replace(tzinfo=zone)
                except ValueError:
                    pass
            raise RowProblem(f"unparsable date-time {raw!r} (expected {expected})")

        return parse_local
    parsers = tuple(_naive_parser(fmt) for fmt in formats)

    def parse(raw: str) -> dt.datetime:
        text = raw.strip()
        for parser in parsers:
            try:
                value = parser(text)
            except ValueError:
                continue
            return value.replace(tzinfo=zone) if value.tzinfo is None else value
        raise RowProblem(f"unparsable date-time {raw!r} (expected {expected})")

    return parse


def day_start(day: dt.date, timezone: str) -> dt.datetime:
    """Return local midnight of `day` in `timezone`, for sources that record days only."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone))


@lru_cache(maxsize=_CACHE)
def parse_amount(raw: str, decimal_separator: str, thousands_separator: str | None) -> int:
    """Return the amount in exact integer cents (`1.234,50` → 123450); RowProblem if unparsable or < 0."""
    text = raw.strip()
    if text.startswith("-"):
        raise RowProblem(f"negative amount {raw!r}")
    whole, sep, fraction = text.partition(decimal_separator)
    if thousands_separator and thousands_separator in whole:
        groups = whole.split(thousands_separator)
        if not (1 <= len(groups[0]) <= 3 and all(len(group) == 3 for group in groups[1:])):
            raise RowProblem(f"unparsable amount {raw!r} (misplaced thousands separator)")
        whole = "".join(groups)
    if text.startswith("+"):
        whole = whole[1:]
    if (
        not whole.isdigit()
        or not whole.isascii()
        or (sep and not (fraction.isdigit() and fraction.isascii()))
    ):
        raise RowProblem(f"unparsable amount {raw!r}")
    if len(fraction) > 2:
        if fraction[2:].strip("0"):
            raise RowProblem(f"amount {raw!r} has fractions of a cent")
        fraction = fraction[:2]
    return int(whole) * 100 + int(fraction.ljust(2, "0") if fraction else 0)


@lru_cache(maxsize=_CACHE)
def parse_integer(raw: str) -> int:
    """Return the whole number written in `raw`; RowProblem when it is not one."""
    text = raw.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits or not digits.isdigit() or not digits.isascii():
        raise RowProblem(f"unparsable integer {raw!r}")
    return int(text)


_CURRENCY = re.compile(r"[A-Z]{3}")


def check_currency(raw: str) -> str:
    """Return the ISO 4217 code in `raw`; RowProblem when it is not three capital letters."""
    code = raw.strip()
    if not _CURRENCY.fullmatch(code):
        raise RowProblem(f"currency {raw!r} is not an ISO 4217 code")
    return code


# Country names as the resort's sources write them, in German and English, casefolded
# (so `ß` is `ss`); ISO 3166 alpha-2 and alpha-3 codes are accepted as well.
COUNTRY_NAMES: dict[str, str] = {
    "deutschland": "DE", "germany": "DE", "bundesrepublik deutschland": "DE", "brd": "DE", "deu": "DE",
    "österreich": "AT", "oesterreich": "AT", "austria": "AT", "aut": "AT",
    "schweiz": "CH", "switzerland": "CH", "suisse": "CH", "svizzera": "CH", "che": "CH",
    "niederlande": "NL", "netherlands": "NL", "the netherlands": "NL", "holland": "NL", "nederland": "NL",
    "nld": "NL",
    "grossbritannien": "GB", "großbritannien": "GB", "vereinigtes königreich": "GB", "united kingdom": "GB",
    "great britain": "GB", "england": "GB", "schottland": "GB", "scotland": "GB", "wales": "GB", "uk": "GB",
    "gbr": "GB",
    "dänemark": "DK", "daenemark": "DK", "denmark": "DK", "danmark": "DK", "dnk": "DK",
    "polen": "PL", "poland": "PL", "polska": "PL", "pol": "PL",
    "frankreich": "FR", "france": "FR", "fra": "FR",
    "italien": "IT", "italy": "IT", "italia": "IT", "ita": "IT",
    "spanien": "ES", "spain": "ES", "españa": "ES", "esp": "ES",
    "portugal": "PT", "prt": "PT",
    "belgien": "BE", "belgium": "BE", "belgique": "BE", "bel": "BE",
    "luxemburg": "LU", "luxembourg": "LU", "lux": "LU",
    "liechtenstein": "LI", "lie": "LI",
    "tschechien": "CZ", "tschechische republik": "CZ", "czech republic": "CZ", "czechia": "CZ", "cze": "CZ",
    "slowakei": "SK", "slovakia": "SK", "svk": "SK",
    "ungarn": "HU", "hungary": "HU", "hun": "HU",
    "slowenien": "SI", "slovenia": "SI", "svn": "SI",
    "kroatien": "HR", "croatia": "HR", "hrv": "HR",
    "schweden": "SE", "sweden": "SE", "swe": "SE",
    "norwegen": "NO", "norway": "NO", "nor": "NO",
    "finnland": "FI", "finland": "FI", "fin": "FI",
    "island": "IS", "iceland": "IS", "isl": "IS",
    "irland": "IE", "ireland": "IE", "irl": "IE",
    "griechenland": "GR", "greece": "GR", "grc": "GR",
    "türkei": "TR", "tuerkei": "TR", "turkey": "TR", "türkiye": "TR", "tur": "TR",
    "rumänien": "RO", "rumaenien": "RO", "romania": "RO", "rou": "RO",
    "bulgarien": "BG", "bulgaria": "BG", "bgr": "BG",
    "estland": "EE", "estonia": "EE", "est": "EE",
    "lettland": "LV", "latvia": "LV", "lva": "LV",
    "litauen": "LT", "lithuania": "LT", "ltu": "LT",
    "malta": "MT", "mlt": "MT",
    "zypern": "CY", "cyprus": "CY", "cyp": "CY",
    "monaco": "MC", "mco": "MC",
    "serbien": "RS", "serbia": "RS", "srb": "RS",
    "ukraine": "UA", "ukr": "UA",
    "russland": "RU", "russia": "RU", "russische föderation": "RU", "rus": "RU",
    "vereinigte staaten": "US", "vereinigte staaten von amerika": "US", "united states": "US",
    "united states of america": "US", "usa": "US",
    "kanada": "CA", "canada": "CA", "can": "CA",
    "australien": "AU", "australia": "AU", "aus": "AU",
    "china": "CN", "chn": "CN",
    "japan": "JP", "jpn": "JP",
    "israel": "IL", "isr": "IL",
    "vereinigte arabische emirate": "AE", "united arab emirates": "AE", "are": "AE",
}  # fmt: skip
_COUNTRY_KEYS = {unicodedata.normalize("NFC", name).casefold(): code for name, code in COUNTRY_NAMES.items()}
_ALPHA2 = frozenset(phonenumbers.SUPPORTED_REGIONS) | {"AQ", "BV", "GS", "HM", "PN", "TF", "UM"}


@lru_cache(maxsize=4096)
def country_code(raw: str) -> str | None:
    """Return the ISO 3166 alpha-2 code of a country name or code, None if empty; FieldIssue if unknown."""
    text = " ".join(raw.split())
    if not text:
        return None
    if len(text) == 2 and text.upper() in _ALPHA2:
        return text.upper()
    code = _COUNTRY_KEYS.get(unicodedata.normalize("NFC", text).casefold())
    if code is None:
        raise FieldIssue("invalid_country", raw)
    return code
