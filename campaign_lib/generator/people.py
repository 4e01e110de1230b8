"""Households and persons of the resort's guest base, and how sources write them down.

A person has one true identity (name, birth date, email, phone, address, loyalty card,
web cookies). Every source record renders that identity again, with the variation real
systems show: email case and spaces, national or international phone formats, typos,
transposed names, transliterated umlauts, and a few invalid values for the quality gates.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from bisect import bisect
from collections.abc import Callable
from functools import cache
from itertools import accumulate
from random import Random

from campaign_lib.generator import reference as ref

# Rates of rendering variation; docs/generator.md lists them, keep both in step.
EMAIL_CAPITALISED = 0.05
EMAIL_UPPER = 0.02
EMAIL_SPACES = 0.03
EMAIL_EMPTY = 0.005
EMAIL_INVALID = 0.005
PHONE_WITH_LETTERS = 0.005
NAME_TYPO = 0.015
NAME_TRANSPOSED = 0.007
NAME_TRANSLITERATED = 0.05
STREET_ABBREVIATED = 0.25

ADULT_EMAIL = 0.85
ADULT_PHONE = 0.75
ADULT_LOYALTY_CARD = 0.40
ADULT_WEB_USER = 0.55
PARTNER_SHARES_EMAIL = 0.30
FAMILY_MAILBOX = 0.08
HOUSEHOLD_MOVED = 0.08

# Household kinds: single, couple, family (two adults, one to three children), company.
HOUSEHOLD_KINDS = (("single", 34.0), ("couple", 30.0), ("family", 28.0), ("company", 8.0))

COUNTRY_NAMES_DE = {
    "DE": "Deutschland",
    "AT": "Österreich",
    "CH": "Schweiz",
    "NL": "Niederlande",
    "GB": "Großbritannien",
    "DK": "Dänemark",
    "PL": "Polen",
}

_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"})
_NOT_DECOMPOSABLE = str.maketrans(
    {"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "Ae", "\u0131": "i"}
)


def ascii_fold(text: str) -> str:
    """Return ``text`` as a German keyboard would type it without umlauts: ü→ue, ł→l, é→e."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_UMLAUTS).translate(_NOT_DECOMPOSABLE))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@cache
def _email_slug(name: str) -> str:
    return "".join(ch for ch in ascii_fold(name).lower() if ch.isalnum() or ch == "-")


def _cumulative(pairs):
    return tuple(p[0] for p in pairs), tuple(accumulate(p[-1] for p in pairs))


_COUNTRIES, _COUNTRY_CUM = _cumulative(ref.COUNTRY_WEIGHTS)
_KINDS, _KIND_CUM = _cumulative(HOUSEHOLD_KINDS)
# Youngest adult age and the span of ages above it, per household kind.
_ADULT_AGES = {"single": (19, 62), "couple": (24, 58), "family": (27, 27), "company": (23, 40)}
_CITY_TABLE = {c: (cities, tuple(accumulate(city[3] for city in cities))) for c, cities in ref.CITIES.items()}


def female_surname(last: str, country: str) -> str:
    """Return the feminine form of a Polish surname (Kowalski → Kowalska); others unchanged."""
    if country == "PL" and last.endswith("ki"):
        return last[:-1] + "a"
    return last


def one_of(rng_random, values):
    """Draw uniformly from ``values``; cheaper than ``Random.choice`` in the hot loop."""
    return values[int(rng_random() * len(values))]


def pick(rng_random, values, cumulative):
    """Draw from ``values`` with the given cumulative weights using one ``random()`` call."""
    return values[bisect(cumulative, rng_random() * cumulative[-1])]


class Person:
    """One true guest: the identity every source record of this person derives from."""

    __slots__ = (
        "adult",
        "birth_german",
        "birth_iso",
        "card",
        "email",
        "female",
        "first",
        "household",
        "index",
        "language",
        "last",
        "person_id",
        "phone",
        "pms_profiles",
        "title",
        "truth",
        "web_customer",
    )

    def salutation(self) -> str:
        """Return the German salutation the PMS and CRM store: ``Herr`` or ``Frau``."""
        return "Frau" if self.female else "Herr"


class Household:
    """A family, couple, single guest or company account, with its address history."""

    __slots__ = (
        "addresses",
        "company",
        "country",
        "household_id",
        "index",
        "kind",
        "move_day",
        "persons",
    )

    def adults(self) -> list[Person]:
        """Return the adult members."""
        return [p for p in self.persons if p.adult]

    def children(self) -> list[Person]:
        """Return the members under 18."""
        return [p for p in self.persons if not p.adult]

    def address_on(self, day: int):
        """Return the address the household lived at on window day ``day``."""
        return self.addresses[-1] if day >= self.move_day else self.addresses[0]


class Address:
    """A home or company address; ``valid_from`` is a date ordinal."""

    __slots__ = ("city", "country", "house_number", "postcode", "street", "valid_from")


def _postcode(rng: Random, country: str, city: tuple) -> str:
    name, low, high, _ = city
    number = low + int(rng.random() * (high - low + 1))
    if country == "DE":
        return f"{number:05d}"
    if country == "AT" and name == "Wien":
        return f"1{(number // 10 % 100):02d}0"
    if country == "NL":
        letters = ref.GB_INWARD_LETTERS
        return f"{number} {letters[int(rng.random() * 20)]}{letters[int(rng.random() * 20)]}"
    if country == "GB":
        outward = ref.GB_OUTWARD_CODES[name]
        letters = ref.GB_INWARD_LETTERS
        return (
            f"{outward[int(rng.random() * len(outward))]} {int(rng.random() * 10)}"
            f"{letters[int(rng.random() * 20)]}{letters[int(rng.random() * 20)]}"
        )
    if country == "PL":
        return f"{number // 1000:02d}-{number % 1000:03d}"
    return str(number)


def _house_number(rng: Random, country: str) -> str:
    number = str(1 + int(rng.random() * one_of(rng.random, (12, 40, 160))))
    roll = rng.random()
    if country in ("DE", "AT", "CH") and roll < 0.08:
        return number + "abc"[int(rng.random() * 3)]
    if country == "AT" and roll < 0.4:
        return f"{number}/{1 + int(rng.random() * 12)}"
    if country == "DK" and roll < 0.5:
        return f"{number}, {1 + int(rng.random() * 5)}. {('tv', 'th', 'mf')[int(rng.random() * 3)]}"
    if country == "PL" and roll < 0.6:
        return f"{number} m. {1 + int(rng.random() * 60)}"
    return number


def new_address(rng: Random, country: str, city: tuple | None = None) -> Address:
    """Draw a real city of ``country`` with a postcode from its range, and a street."""
    if city is None:
        cities, cumulative = _CITY_TABLE[country]
        city = pick(rng.random, cities, cumulative)
    address = Address()
    address.street = one_of(rng.random, ref.STREETS_BY_CITY.get(city[0]) or ref.STREETS[country])
    address.house_number = _house_number(rng, country)
    address.postcode = _postcode(rng, country, city)
    address.city = city[0]
    address.country = country
    return address


def street_line(address: Address, rng_random) -> str:
    """Return street and house number as one line the way forms capture it, sometimes abbreviated."""
    street = address.street
    if rng_random() < STREET_ABBREVIATED:
        street = street.replace("straße", "str.").replace("strasse", "str.").replace("Straße", "Str.")
    if address.country == "GB":
        return f"{address.house_number} {street}"
    return f"{street} {address.house_number}"


def scrambler(bits: int, salt: int) -> Callable[[int], int]:
    """Return a function turning a running number below ``2**bits`` into a unique, unordered id.

    Multiplying by an odd constant and xor-shifting are both bijections modulo a power of
    two, so ids stay unique, yet they reveal neither the household block nor the order of
    generation, which would hand identity resolution a hint that real data does not give.
    """
    mask, half, third = (1 << bits) - 1, bits // 2, bits // 3

    def scramble(number: int) -> int:
        mixed = ((number + salt) * 0x9E3779B97F4A7C15) & mask
        mixed ^= mixed >> half
        mixed = (mixed * 0xBF58476D1CE4E5B9) & mask
        return mixed ^ (mixed >> third)

    return scramble


# Bits are chosen so every id fits its printed digits: 2**23 < 10**7, 2**33 < 10**10.
EMAIL_TAG = scrambler(23, 1_234_567)
PHONE_NUMBER = scrambler(23, 31_415_926)
LOYALTY_CARD = scrambler(33, 5_172_839_104)


def new_email(rng: Random, first: str, last: str, birth_year: int, index: int, country: str) -> str:
    """Return a unique private mailbox of a person; the tag from ``index`` keeps mailboxes apart."""
    f, lst, tag = _email_slug(first), _email_slug(last), EMAIL_TAG(index)
    style = int(rng.random() * 6)
    if style == 0:
        local = f"{f}.{lst}{tag}"
    elif style == 1:
        local = f"{f}{lst}{tag}"
    elif style == 2:
        local = f"{f[0]}.{lst}.{tag}"
    elif style == 3:
        local = f"{lst}.{f}{birth_year % 100:02d}.{tag}"
    elif style == 4:
        local = f"{f}_{lst}_{tag}"
    else:
        local = f"{f}.{tag}"
    domains = ref.EMAIL_DOMAINS[country]
    return f"{local}@{domains[int(rng.random() * len(domains))]}"


def family_mailbox(rng: Random, last: str, index: int, country: str) -> str:
    """Return a mailbox a whole family uses, such as ``familie.mueller.4711@gmx.de``."""
    word = {"NL": "familie", "GB": "the", "DK": "familien", "PL": "rodzina"}.get(country, "familie")
    domains = ref.EMAIL_DOMAINS[country]
    return f"{word}.{_email_slug(last)}.{EMAIL_TAG(index)}@{domains[int(rng.random() * len(domains))]}"


def new_phone(rng: Random, country: str, index: int) -> tuple[str, str, str]:
    """Return a unique mobile number as (country, national prefix with trunk 0, subscriber)."""
    prefixes, length = ref.MOBILE_PREFIXES[country]
    subscriber = PHONE_NUMBER(index)
    return country, prefixes[int(rng.random() * len(prefixes))], f"{subscriber:0{length}d}"


def render_phone(phone: tuple[str, str, str], rng_random) -> str:
    """Write a mobile number as a person would type it into this source (E.164-ish or national)."""
    country, prefix, subscriber = phone
    if rng_random() < PHONE_WITH_LETTERS:
        return f"{prefix} {subscriber[:3]}O{subscriber[4:]}" if len(subscriber) > 4 else f"tel {prefix}"
    code = ref.COUNTRY_CALLING_CODES[country]
    # DK and PL numbers have no trunk prefix; elsewhere the national form keeps the leading 0.
    national = prefix.removeprefix("0")
    roll = rng_random()
    if country == "DE":
        if roll < 0.35:
            return f"+49 {national} {subscriber}"
        if roll < 0.5:
            return f"0049 {national} {subscriber}"
        if roll < 0.8:
            return f"{prefix} {subscriber}"
        if roll < 0.9:
            return f"{prefix}/{subscriber}"
        return f"+49{national}{subscriber}"
    if country == "CH":
        grouped = f"{subscriber[:3]} {subscriber[3:5]} {subscriber[5:]}"
        return f"+41 {national} {grouped}" if roll < 0.5 else f"{prefix} {grouped}"
    if country == "NL":
        return f"+31 {national} {subscriber}" if roll < 0.5 else f"{prefix}-{subscriber}"
    if country == "GB":
        return (
            f"+44 {national}{subscriber[0]} {subscriber[1:]}"
            if roll < 0.5
            else f"{prefix}{subscriber[0]} {subscriber[1:]}"
        )
    if country == "DK":
        pairs = f"{prefix}{subscriber}"
        spaced = " ".join(pairs[i : i + 2] for i in range(0, 8, 2))
        return f"+45 {spaced}" if roll < 0.5 else pairs
    if country == "PL":
        digits = f"{prefix}{subscriber}"
        spaced = f"{digits[:3]} {digits[3:6]} {digits[6:]}"
        return f"+48 {spaced}" if roll < 0.5 else spaced
    if roll < 0.4:
        return f"+{code} {national} {subscriber}"
    if roll < 0.6:
        return f"00{code} {national} {subscriber}"
    return f"{prefix} {subscriber}"


def render_email(email: str, rng_random) -> str:
    """Write a mailbox as a source captured it: mostly verbatim, sometimes capitalised or padded."""
    roll = rng_random()
    if roll >= EMAIL_CAPITALISED + EMAIL_UPPER + EMAIL_SPACES + EMAIL_EMPTY + EMAIL_INVALID:
        return email
    if roll < EMAIL_CAPITALISED:
        local, _, domain = email.partition("@")
        return f"{'.'.join(part.capitalize() for part in local.split('.'))}@{domain.capitalize()}"
    roll -= EMAIL_CAPITALISED
    if roll < EMAIL_UPPER:
        return email.upper()
    roll -= EMAIL_UPPER
    if roll < EMAIL_SPACES:
        return f" {email}" if roll < EMAIL_SPACES / 2 else f"{email}  "
    roll -= EMAIL_SPACES
    if roll < EMAIL_EMPTY:
        return ""
    local, _, domain = email.partition("@")
    return (f"{local}@", f"{local}(at){domain}", f"{local}@{domain.split('.')[0]}", f"@{domain}")[
        int(roll / EMAIL_INVALID * 4) % 4
    ]


def _typo(name: str, roll: float) -> str:
    if len(name) < 4:
        return name + name[-1]
    position = 1 + int(roll * 1000) % (len(name) - 2)
    kind = int(roll * 7919) % 3
    if kind == 0:
        return name[:position] + name[position + 1] + name[position] + name[position + 2 :]
    if kind == 1:
        return name[:position] + name[position + 1 :]
    return name[:position] + name[position] + name[position:]


def render_name(first: str, last: str, rng_random, ascii_source: bool = False) -> tuple[str, str]:
    """Write a person's first and last name as a source captured them, with typos and swaps."""
    roll = rng_random()
    if roll < NAME_TYPO:
        if roll < NAME_TYPO / 2:
            first = _typo(first, roll / NAME_TYPO)
        else:
            last = _typo(last, roll / NAME_TYPO)
    elif roll < NAME_TYPO + NAME_TRANSPOSED:
        first, last = last, first
    elif ascii_source and roll < NAME_TYPO + NAME_TRANSPOSED + NAME_TRANSLITERATED:
        first, last = ascii_fold(first), ascii_fold(last)
    return first, last


def new_household(
    rng: Random, index: int, first_person: int, max_persons: int, day_count: int, as_of: dt.date
) -> Household:
    """Create household ``index`` with at most ``max_persons`` persons numbered from ``first_person``."""
    household = Household()
    household.index = index
    household.household_id = f"H{index:08d}"
    r = rng.random
    kind = pick(r, _KINDS, _KIND_CUM)
    if kind == "company":
        size = 1 + int(r() * 4)
    elif kind == "family":
        size = 3 + int(r() * r() * 3)
    else:
        size = 2 if kind == "couple" else 1
    size = min(size, max_persons)
    if kind == "family" and size < 3:
        kind = "couple" if size == 2 else "single"
    if kind == "couple" and size < 2:
        kind = "single"
    household.kind = kind
    country = pick(r, _COUNTRIES, _COUNTRY_CUM)
    household.country = country
    household.company = None
    if kind == "company":
        household.company = f"{one_of(r, ref.COMPANY_STEMS)} {one_of(r, ref.COMPANY_FORMS)}"
    home = new_address(rng, country)
    home.valid_from = as_of.toordinal() - day_count - 1 - int(r() * 5000)
    household.addresses = [home]
    household.move_day = day_count
    if kind != "company" and r() < HOUSEHOLD_MOVED:
        household.move_day = 30 + int(r() * (day_count - 60))
        moved_within_city = r() < 0.5
        same_city = next((c for c in ref.CITIES[country] if c[0] == home.city), None)
        city = same_city if moved_within_city else None
        new_home = new_address(rng, country, city)
        new_home.valid_from = as_of.toordinal() - day_count + household.move_day
        household.addresses.append(new_home)
    male_names, female_names, last_names = ref.NAMES[country]
    family_name = one_of(r, last_names)
    as_of_ordinal = as_of.toordinal()
    persons = []
    for member in range(size):
        person = Person()
        person.index = first_person + member
        person.person_id = f"P{person.index:08d}"
        person.household = household
        person.female = r() < 0.5
        if kind == "family" and member >= 2:
            person.adult = False
            age_days = int(r() * 17.9 * 365.25)
        else:
            person.adult = True
            low, span = _ADULT_AGES[kind]
            age_days = int((low + r() * span) * 365.25)
        if kind in ("couple", "family") and member == 1:
            person.female = not persons[0].female if r() < 0.92 else persons[0].female
        shares_name = kind == "family" or (kind == "couple" and r() < 0.7)
        last = family_name if shares_name or member == 0 else one_of(r, last_names)
        person.last = female_surname(last, country) if person.female else last
        person.first = one_of(r, female_names if person.female else male_names)
        birth = dt.date.fromordinal(as_of_ordinal - age_days - 1)
        person.birth_iso = birth.isoformat()
        person.birth_german = f"{birth.day:02d}.{birth.month:02d}.{birth.year}"
        teen = not person.adult and age_days > 14 * 365
        person.email = None
        if (person.adult and r() < ADULT_EMAIL) or (teen and r() < 0.5):
            person.email = new_email(rng, person.first, person.last, birth.year, person.index, country)
            if kind == "company":
                company_domain = f"{_email_slug(household.company.split(' ')[0])}-{household.index % 1000}.de"
                person.email = (
                    f"{_email_slug(person.first)}.{_email_slug(person.last)}"
                    f"{EMAIL_TAG(person.index)}@{company_domain}"
                )
        person.phone = (
            new_phone(rng, country, person.index)
            if ((person.adult and r() < ADULT_PHONE) or (teen and r() < 0.4))
            else None
        )
        has_card = person.adult and r() < ADULT_LOYALTY_CARD
        person.card = f"RC{LOYALTY_CARD(person.index):010d}" if has_card else None
        person.language = ref.LANGUAGE_BY_CITY.get(home.city) or ref.LANGUAGE_BY_COUNTRY[country]
        person.title = "Dr." if person.adult and r() < 0.03 else ""
        person.web_customer = None
        person.pms_profiles = []
        # The tail of every ground-truth line of this person: ",person_id,household_id\n".
        person.truth = f",{person.person_id},{household.household_id}\n"
        persons.append(person)
    if kind in ("couple", "family") and len(persons) >= 2:
        if r() < FAMILY_MAILBOX:
            mailbox = family_mailbox(rng, family_name, persons[0].index, country)
            persons[0].email = persons[1].email = mailbox
        elif persons[0].email and r() < PARTNER_SHARES_EMAIL:
            persons[1].email = persons[0].email
    household.persons = persons
    return household
