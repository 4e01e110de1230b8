"""Which records are one person, and which persons one household: the rules, in memory.

Works on compact columns of the records in scope (index i = the i-th record) and never
touches the database: `campaign_lib.identity.resolve` reads the columns with one COPY and
writes the result set-based. Persons and households are connected components of a
union-find over record indexes.

Person rules (a link joins two records into one person):

1. Strong identifiers link unconditionally: loyalty card, CRM contact id, source customer id
   (`hotel_pms:<GastNr>`, `website:<customer_id>`), order reference (all tickets of an order
   belong to the buyer) and cookie id (so a login carrying customer id and cookie joins the
   cookie's page views to the customer).
2. Email and phone are guarded, because families and couples share mailboxes and phones:
   within the records sharing a value, records link only when their first names are within
   `guard_first_name_max_edits` edits (either name order) and their birth dates do not differ.
   Records without a name wait for rule 9.
3. Booking reference links the point-of-sale room charges of a reservation with each other and
   with the reservation's main guest in the PMS (flagged by ingestion, or the PMS row carrying
   the amount); PMS rows of one reservation are not linked to each other (they are the party).
4. Fuzzy: records with first name, last name and birth date (and postcode unless
   `fuzzy_require_postcode` is off) are blocked on (birth date, postcode); two distinct name
   signatures in a block link when their rapidfuzz ratio reaches `fuzzy_min_name_similarity`.
5. Name and postcode (`name_address_enabled`): the same first and last name (either order) at
   the same postcode, a CRM contact counting its account's address rows, links records whose
   birth dates do not contradict (duplicate PMS profiles of companions, the CRM contact).
6. Name and birth date (`name_birth_date_enabled`): the same name and birth date link without
   a postcode (a web registration without email and the CRM contact).
7. In house (`in_house_name_enabled`): a record carrying only a name (a ticket sold at the
   hotel desk) joins the one hotel guest of that name whose stay covers its day.
8. Unique name (`unique_name_enabled`): a name-only record left joins the one person known by
   that exact name; two or more people of that name: nobody.
9. Nameless records sharing an email or phone, last (`_link_nameless`): stay with a named
   person another rule already gave them (the card's holder, not the mailbox's), else join
   the person the email's local part names, else nobody when it names someone else or a
   family (`family_mailbox_words`), else the value's only person (or, with
   `nameless_shared_value_needs_name` off, the largest of several).

Household rules (a link joins two persons into one account): the same CRM account id; the
same email or phone (a shared mailbox: the guard kept them apart as people, not as a
household); one PMS reservation at the same address; the same last name at the same address.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise

from rapidfuzz import fuzz
from rapidfuzz.distance import OSA

from campaign_lib.identity.settings import IdentitySettings

_TRANSLITERATION = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "ł": "l", "ø": "oe", "æ": "ae"})


def name_key(name: str | None, _cache: dict[str, str] = {}) -> str:  # noqa: B006 - a deliberate per-process cache
    """`name` lower-cased with umlauts transliterated (ü→ue), accents dropped and only letters
    kept, words separated by one space; '' for no name."""
    if not name:
        return ""
    cached = _cache.get(name)
    if cached is not None:
        return cached
    folded = unicodedata.normalize("NFKD", name.lower().translate(_TRANSLITERATION))
    letters = "".join(ch if ch.isalpha() else " " for ch in folded if not unicodedata.combining(ch))
    key = " ".join(letters.split())
    if len(_cache) < 2_000_000:
        _cache[name] = key
    return key


def address_key(postal_code: str | None, street: str | None) -> str:
    """The postcode and street reduced so that `Hauptstr. 12` and `Hauptstraße 12` agree."""
    if not postal_code or not street:
        return ""
    street = street.lower().replace("ß", "ss").replace("strasse", "str")
    return postal_code.replace(" ", "").upper() + "|" + "".join(ch for ch in street if ch.isalnum())


@dataclass(slots=True)
class ScopeRecords:
    """The records being resolved, one list per column (None where the record has no value)."""

    record_id: list[int] = field(default_factory=list)
    source_system: list[str] = field(default_factory=list)
    prev_contact_id: list[int | None] = field(default_factory=list)
    first_name: list[str] = field(default_factory=list)  # name_key of the first name, '' if none
    last_name: list[str] = field(default_factory=list)
    birth_date: list[str | None] = field(default_factory=list)
    postal_code: list[str | None] = field(default_factory=list)
    address: list[str] = field(default_factory=list)  # address_key, '' if none
    email: list[str | None] = field(default_factory=list)
    phone: list[str | None] = field(default_factory=list)
    loyalty_card: list[str | None] = field(default_factory=list)
    booking_ref: list[str | None] = field(default_factory=list)
    crm_contact_id: list[str | None] = field(default_factory=list)
    crm_account_id: list[str | None] = field(default_factory=list)
    source_customer_id: list[str | None] = field(default_factory=list)
    order_ref: list[str | None] = field(default_factory=list)
    cookie_id: list[str | None] = field(default_factory=list)
    main_guest: list[bool] = field(default_factory=list)
    company_account: list[bool] = field(default_factory=list)
    # ISO day (resort local time) the record happened and, for stays, ended; optional
    # columns: empty lists when the caller has no dates.
    occurred_on: list[str | None] = field(default_factory=list)
    ended_on: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.record_id)


@dataclass(slots=True)
class Linkage:
    """Result of `link`: per record its person (-1: no person) and per person its household.

    `person_status[p]` is 'active' when the person's records carry anything that identifies
    a human (a name, email, phone, card, CRM or customer id, booking reference) and
    'anonymous' when they carry only cookie ids. `account_records` are CRM account and
    address rows: no person, but a household (`record_household`)."""

    record_person: list[int]
    person_status: list[str]
    person_household: list[int]
    record_household: list[int]
    household_company: list[bool]
    guarded_links_refused: int


class _UnionFind:
    __slots__ = ("parent",)

    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller index becomes the root so that labels do not depend on link order.
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb

    def link_equal(self, values: Iterable[str | None], members: Iterable[int]) -> None:
        """Link every member with the first earlier member carrying the same value."""
        first: dict[str, int] = {}
        for i, value in zip(members, values, strict=True):
            if value:
                j = first.setdefault(value, i)
                if j != i:
                    self.union(i, j)


def _same_first_name(a_first: str, a_last: str, b_first: str, b_last: str, max_edits: int) -> bool:
    if OSA.distance(a_first, b_first, score_cutoff=max_edits + 1) <= max_edits:
        return True
    # Transposed first and last name on one side.
    return bool(a_last and b_last) and (
        OSA.distance(a_first, b_last, score_cutoff=max_edits + 1) <= max_edits
        and OSA.distance(a_last, b_first, score_cutoff=max_edits + 1) <= max_edits
    )


def _link_guarded(
    uf: _UnionFind,
    records: ScopeRecords,
    column: list[str | None],
    max_edits: int,
    deferred: list[tuple[int, str, list[int]]],
) -> int:
    """Link records sharing a value of `column` when they look like the same person; returns
    how many distinct person signatures of a shared value were kept apart. Nameless records
    are not linked here but appended to `deferred` as (record, the value, one record of each
    of the value's name groups, largest first), for `_link_nameless` once every other rule
    has run."""
    groups: dict[str, list[int]] = {}
    for i, value in enumerate(column):
        if value:
            groups.setdefault(value, []).append(i)
    first, last, birth = records.first_name, records.last_name, records.birth_date
    refused = 0
    for value, members in groups.items():
        if len(members) == 1:
            continue
        signatures: dict[tuple[str, str, str | None], list[int]] = {}
        nameless: list[int] = []
        for i in members:
            if first[i]:
                signatures.setdefault((first[i], last[i], birth[i]), []).append(i)
            else:
                nameless.append(i)
        first_names = {f for f, _, _ in signatures}
        birth_dates = {b for _, _, b in signatures if b}
        if len(first_names) <= 1 and len(birth_dates) <= 1:
            if not signatures:
                head = members[0]
                for i in members[1:]:
                    uf.union(head, i)
                continue
            head = next(iter(signatures.values()))[0]
            for group in signatures.values():
                for i in group:
                    uf.union(head, i)
            if nameless:
                deferred.extend((i, value, [head]) for i in nameless)
            continue
        keys = list(signatures)
        local = _UnionFind(len(keys))
        for x in range(len(keys)):
            fx, lx, bx = keys[x]
            for y in range(x + 1, len(keys)):
                fy, ly, by = keys[y]
                if bx and by and bx != by:
                    continue
                if _same_first_name(fx, lx, fy, ly, max_edits):
                    local.union(x, y)
        sizes: Counter[int] = Counter()
        for x, key in enumerate(keys):
            root = local.find(x)
            sizes[root] += len(signatures[key])
            head = signatures[keys[root]][0]
            for i in signatures[key]:
                uf.union(head, i)
        refused += len(sizes) - 1
        if nameless:
            heads = [
                signatures[keys[root]][0] for root in sorted(sizes, key=lambda root: (-sizes[root], root))
            ]
            deferred.extend((i, value, heads) for i in nameless)
    return refused


def _link_nameless(
    uf: _UnionFind,
    records: ScopeRecords,
    deferred: list[tuple[int, str, list[int]]],
    settings: IdentitySettings,
) -> int:
    """A nameless record sharing an email or phone (an e-receipt, a newsletter sign-up) joins
    one of the people who used the value with a name, unless something says it is someone
    else; returns how many were kept apart. In order:

    - something else already tied it to a named person: it stays there (a receipt with the
      husband's loyalty card and the wife's mailbox stays the husband's, and does not merge
      the two);
    - the email's local part names one of the people (first name as a word, or the initial
      before the last name: `julia.1695611@…`, `f.meier.38@…`): it joins that person;
    - the local part names someone else (another first name seen in scope, another
      initial, or a family word such as `familie.mueller@…`): kept apart;
    - the value has one person: it joins that person; several (a family phone or mailbox):
      it joins the one with most records unless `nameless_shared_value_needs_name`."""
    if not deferred:
        return 0
    first, last = records.first_name, records.last_name
    named = {uf.find(i) for i in range(len(records)) if first[i]}
    known_first = set(first)
    known_first.discard("")
    family_words = set(settings.family_mailbox_words)
    kept_apart = 0
    for i, value, heads in deferred:
        root = uf.find(i)
        if root in named:
            if all(root != uf.find(head) for head in heads):
                kept_apart += 1
            continue
        chosen: int | None = (
            heads[0] if len(heads) == 1 or not settings.nameless_shared_value_needs_name else None
        )
        if "@" in value:
            words = name_key(value.split("@", 1)[0]).split()
            tokens = set(words)
            naming = [h for h in heads if first[h] in tokens or _initial_names(words, first[h], last[h])]
            if naming:
                chosen = naming[0]
            elif tokens & family_words or any(
                (tokens & known_first) - {first[h], last[h]} or _initial_of_other(words, first[h], last[h])
                for h in heads
            ):
                chosen = None
        if chosen is None:
            kept_apart += 1
            continue
        uf.union(i, chosen)
        named.add(uf.find(i))
    return kept_apart


def _initial_names(words: list[str], first: str, last: str) -> bool:
    """`words` (of an email's local part) hold the initial of `first` right before `last`."""
    return any(a == first[:1] and b == last for a, b in pairwise(words))


def _initial_of_other(words: list[str], first: str, last: str) -> bool:
    """`words` hold another initial than that of `first` right before `last`."""
    return any(len(a) == 1 and a != first[:1] and b == last for a, b in pairwise(words))


def _link_bookings(uf: _UnionFind, records: ScopeRecords, max_edits: int) -> None:
    groups: dict[str, list[int]] = {}
    for i, value in enumerate(records.booking_ref):
        if value:
            groups.setdefault(value, []).append(i)
    first, last = records.first_name, records.last_name
    for members in groups.values():
        pms = [i for i in members if records.source_system[i] == "hotel_pms"]
        charges = [i for i in members if records.source_system[i] != "hotel_pms"]
        if not charges:
            continue
        for i in charges[1:]:
            uf.union(charges[0], i)
        named = next((i for i in charges if first[i]), None)
        candidates = [i for i in pms if records.main_guest[i]] or pms
        if named is not None:
            matching = [
                i
                for i in candidates
                if first[i] and _same_first_name(first[named], last[named], first[i], last[i], max_edits)
            ]
            candidates = matching or [i for i in candidates if records.main_guest[i]]
        elif not any(records.main_guest[i] for i in candidates):
            candidates = []
        if candidates:
            uf.union(charges[0], candidates[0])


def _link_in_house(uf: _UnionFind, records: ScopeRecords) -> int:
    """Link a record that carries only a name (a ticket sold at the hotel desk: buyer name,
    no email, phone or card) to the hotel guest of the same first and last name (either
    order) whose stay covers its day, when exactly one person is in house under that name.
    Returns how many name-only records were left unlinked because the name was ambiguous."""
    size = len(records)
    if len(records.occurred_on) != size or len(records.ended_on) != size:
        return 0
    first, last, source = records.first_name, records.last_name, records.source_system
    occurred, ended = records.occurred_on, records.ended_on
    stays: dict[tuple[str, str], list[tuple[str, str, int]]] = {}
    for i in range(size):
        if source[i] == "hotel_pms" and first[i] and last[i] and occurred[i] and ended[i]:
            key = (first[i], last[i]) if first[i] <= last[i] else (last[i], first[i])
            stays.setdefault(key, []).append((occurred[i], ended[i], i))
    if not stays:
        return 0
    ambiguous = 0
    for i in range(size):
        if not occurred[i] or source[i] == "hotel_pms" or not _name_only(records, i):
            continue
        key = (first[i], last[i]) if first[i] <= last[i] else (last[i], first[i])
        day = occurred[i]
        roots = {uf.find(j) for arrival, departure, j in stays.get(key, ()) if arrival <= day <= departure}
        if len(roots) == 1:
            uf.union(i, roots.pop())
        elif roots:
            ambiguous += 1
    return ambiguous


def _postcode(value: str | None) -> str:
    return value.replace(" ", "").upper() if value else ""


def _link_name_address(uf: _UnionFind, records: ScopeRecords) -> None:
    """Link records with the same first and last name (either order) at the same postcode
    whose birth dates do not contradict: a duplicate PMS profile of a companion (name and
    address only) and the CRM contact, whose postcodes are those of its CRM account's
    address rows. Where the records of a name and postcode carry two different birth dates
    (father and son of one name), only those with the same birth date link; the records
    without one stay apart, since they could be either."""
    first, last, birth = records.first_name, records.last_name, records.birth_date
    account_postcodes: dict[str, set[str]] = {}
    for i, account in enumerate(records.crm_account_id):
        if account and records.postal_code[i]:
            account_postcodes.setdefault(account, set()).add(_postcode(records.postal_code[i]))
    blocks: dict[tuple[str, str, str], list[int]] = {}
    for i in range(len(records)):
        if not (first[i] and last[i]):
            continue
        name = (first[i], last[i]) if first[i] <= last[i] else (last[i], first[i])
        own = _postcode(records.postal_code[i])
        account = records.crm_account_id[i]
        postcodes = account_postcodes.get(account, set()) if account else set()
        if own:
            postcodes = postcodes | {own}
        for postcode in postcodes:
            blocks.setdefault((name[0], name[1], postcode), []).append(i)
    for members in blocks.values():
        if len(members) < 2:
            continue
        births = {birth[i] for i in members if birth[i]}
        if len(births) <= 1:
            for i in members[1:]:
                uf.union(members[0], i)
            continue
        heads: dict[str, int] = {}
        for i in members:
            if birth[i]:
                uf.union(heads.setdefault(birth[i], i), i)


def _name_only(records: ScopeRecords, i: int) -> bool:
    """Record `i` carries a first and last name and no other identifying value (an order
    reference aside): a ticket sold at the hotel desk or counter with the buyer's name."""
    return bool(
        records.first_name[i]
        and records.last_name[i]
        and not (
            records.email[i]
            or records.phone[i]
            or records.loyalty_card[i]
            or records.booking_ref[i]
            or records.crm_contact_id[i]
            or records.source_customer_id[i]
            or records.cookie_id[i]
        )
    )


def _link_unique_name(uf: _UnionFind, records: ScopeRecords) -> int:
    """Link a name-only record (see `_name_only`) to the one person known under exactly the
    same first and last name (either order) by records that carry more than a name; where
    several people are known under that name, it stays apart. Returns how many stayed
    apart for that reason."""
    first, last = records.first_name, records.last_name
    known: dict[tuple[str, str], set[int]] = {}
    name_only: list[int] = []
    for i in range(len(records)):
        if not (first[i] and last[i]):
            continue
        if _name_only(records, i):
            name_only.append(i)
            continue
        name = (first[i], last[i]) if first[i] <= last[i] else (last[i], first[i])
        known.setdefault(name, set()).add(uf.find(i))
    ambiguous = 0
    for i in name_only:
        name = (first[i], last[i]) if first[i] <= last[i] else (last[i], first[i])
        roots = {uf.find(j) for j in known.get(name, ())}
        if len(roots) == 1:
            uf.union(i, roots.pop())
        elif roots:
            ambiguous += 1
    return ambiguous


def _link_name_birth_date(uf: _UnionFind, records: ScopeRecords) -> None:
    """Link records with the same first and last name (either order) and the same birth
    date, wherever they live (a web registration without email or address and the CRM
    contact)."""
    first, last, birth = records.first_name, records.last_name, records.birth_date
    heads: dict[tuple[str, str, str], int] = {}
    for i in range(len(records)):
        if first[i] and last[i] and birth[i]:
            name = (first[i], last[i]) if first[i] <= last[i] else (last[i], first[i])
            uf.union(heads.setdefault((name[0], name[1], birth[i]), i), i)


def _link_fuzzy(uf: _UnionFind, records: ScopeRecords, settings: IdentitySettings) -> None:
    blocks: dict[tuple[str, str | None], dict[tuple[str, str], int]] = {}
    first, last = records.first_name, records.last_name
    birth, postal = records.birth_date, records.postal_code
    for i in range(len(records)):
        if not (first[i] and last[i] and birth[i]):
            continue
        postcode = postal[i].replace(" ", "").upper() if postal[i] else None
        if settings.fuzzy_require_postcode and not postcode:
            continue
        block = blocks.setdefault((birth[i], postcode if settings.fuzzy_require_postcode else None), {})
        head = block.setdefault((first[i], last[i]), i)
        if head != i:
            uf.union(head, i)
    threshold = settings.fuzzy_min_name_similarity
    for block in blocks.values():
        if len(block) < 2:
            continue
        names = list(block.items())
        for x in range(len(names)):
            (fx, lx), ix = names[x]
            full = f"{fx} {lx}"
            for y in range(x + 1, len(names)):
                (fy, ly), iy = names[y]
                score = max(
                    fuzz.ratio(full, f"{fy} {ly}", score_cutoff=threshold),
                    fuzz.ratio(full, f"{ly} {fy}", score_cutoff=threshold),
                )
                if score >= threshold:
                    uf.union(ix, iy)


def link(records: ScopeRecords, settings: IdentitySettings) -> Linkage:
    """Persons and households of `records` by the rules of this module."""
    size = len(records)
    crm_account_only = [
        bool(records.crm_account_id[i])
        and not records.crm_contact_id[i]
        and not records.first_name[i]
        and not records.last_name[i]
        and not records.email[i]
        and not records.phone[i]
        for i in range(size)
    ]
    people = [i for i in range(size) if not crm_account_only[i]]
    uf = _UnionFind(size)
    for column in (
        records.loyalty_card,
        records.crm_contact_id,
        records.source_customer_id,
        records.order_ref,
        records.cookie_id,
    ):
        uf.link_equal((column[i] for i in people), people)
    deferred: list[tuple[int, str, list[int]]] = []
    refused = _link_guarded(uf, records, records.email, settings.guard_first_name_max_edits, deferred)
    refused += _link_guarded(uf, records, records.phone, settings.guard_first_name_max_edits, deferred)
    _link_bookings(uf, records, settings.guard_first_name_max_edits)
    if settings.name_address_enabled:
        _link_name_address(uf, records)
    if settings.name_birth_date_enabled:
        _link_name_birth_date(uf, records)
    if settings.in_house_name_enabled:
        _link_in_house(uf, records)
    if settings.fuzzy_enabled:
        _link_fuzzy(uf, records, settings)
    if settings.unique_name_enabled:
        _link_unique_name(uf, records)
    _link_nameless(uf, records, deferred, settings)

    # A component is a person when one of its records identifies a human; cookie-only
    # components are anonymous visitors; the rest (order reference only, nothing) no one.
    evidence: dict[int, int] = {}  # root -> 2 human, 1 cookie only
    for i in people:
        if (
            records.first_name[i]
            or records.last_name[i]
            or records.email[i]
            or records.phone[i]
            or records.loyalty_card[i]
            or records.booking_ref[i]
            or records.crm_contact_id[i]
            or records.source_customer_id[i]
        ):
            level = 2
        elif records.cookie_id[i]:
            level = 1
        else:
            continue
        root = uf.find(i)
        if evidence.get(root, 0) < level:
            evidence[root] = level
    person_of_root: dict[int, int] = {}
    person_status: list[str] = []
    record_person = [-1] * size
    for i in people:
        root = uf.find(i)
        level = evidence.get(root)
        if level is None:
            continue
        person = person_of_root.get(root)
        if person is None:
            person = person_of_root[root] = len(person_status)
            person_status.append("active" if level == 2 else "anonymous")
        record_person[i] = person

    households, record_household, company = _households(records, record_person, len(person_status), settings)
    return Linkage(record_person, person_status, households, record_household, company, refused)


def _households(
    records: ScopeRecords, record_person: list[int], persons: int, settings: IdentitySettings
) -> tuple[list[int], list[int], list[bool]]:
    """Household of every person and of every CRM account-level record (-1 for others)."""
    size = len(records)
    # Nodes: persons first, then one node per account-level record.
    node = [-1] * size
    extra = persons
    for i in range(size):
        if record_person[i] >= 0:
            node[i] = record_person[i]
        elif records.crm_account_id[i]:
            node[i] = extra
            extra += 1
    uf = _UnionFind(extra)
    linked = [i for i in range(size) if node[i] >= 0]
    nodes = [node[i] for i in linked]
    uf.link_equal((records.crm_account_id[i] for i in linked), nodes)
    uf.link_equal((records.email[i] for i in linked), nodes)
    uf.link_equal((records.phone[i] for i in linked), nodes)
    uf.link_equal(
        (
            f"{records.booking_ref[i]}|{records.address[i]}"
            if records.booking_ref[i] and records.address[i] and records.source_system[i] == "hotel_pms"
            else None
            for i in linked
        ),
        nodes,
    )
    if settings.household_by_last_name_and_address:
        uf.link_equal(
            (
                f"{records.last_name[i]}|{records.address[i]}"
                if records.last_name[i] and records.address[i]
                else None
                for i in linked
            ),
            nodes,
        )
    household_of_root: dict[int, int] = {}
    household = [household_of_root.setdefault(uf.find(n), len(household_of_root)) for n in range(extra)]
    company = [False] * len(household_of_root)
    for i in linked:
        if records.company_account[i]:
            company[household[node[i]]] = True
    record_household = [household[node[i]] if node[i] >= 0 else -1 for i in range(size)]
    return household[:persons], record_household, company
