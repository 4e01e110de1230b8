"""The thresholds of identity resolution, with the reasons for their defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    """How identity resolution links records; the defaults fit the resort's sources.

    guard_first_name_max_edits
        A shared email or phone links two records only when their first names (normalised:
        lower case, umlauts transliterated, accents dropped) differ by at most this many edits
        (optimal string alignment: a swapped, dropped or doubled letter is one edit), in either
        name order, and their birth dates do not contradict. 1 lets a typo through and keeps
        "Anna" and "Max" sharing a family mailbox apart.
    nameless_shared_value_needs_name
        A record without a name that shares an email or phone with several named people (a
        family mailbox) joins the largest of them only when the email's local part names
        that person's first name (True), or always (False).
    family_mailbox_words
        Words of an email's local part that mark a family mailbox (`familie.mueller.12@…`):
        a record without a name is never tied to one person by such an email.
    fuzzy_enabled
        Link records that share no identifier by name, birth date and postcode.
    fuzzy_min_name_similarity
        rapidfuzz ratio (0-100) of the normalised "first last" names, the better of both name
        orders, at or above which two records of the same block are one person. 88 accepts a
        single typo in a short name ("max meier" / "mxa meier" = 88.9) and rejects siblings such
        as "anna mueller" / "lena mueller" (83.3).
    fuzzy_require_postcode
        Block on birth date and postcode (True) or on birth date alone (False). Birth date is
        always required: a similar name without the same birth date is never a match.
    name_address_enabled
        Link records with the same first and last name (either order) at the same postcode
        (a CRM contact has the postcodes of its account's addresses) unless their birth dates
        differ; records without a birth date link only where the name and postcode carry at
        most one birth date.
    name_birth_date_enabled
        Link records with the same first and last name (either order) and the same birth
        date, without asking for a postcode (the fuzzy rule's block): a web registration
        without email and the CRM contact.
    in_house_name_enabled
        Link a record that carries a name and nothing else (a ticket sold at the hotel desk)
        to the hotel guest of the same first and last name (either order) whose stay covers
        its day, when exactly one person of that name is in house then.
    unique_name_enabled
        Link a record that carries a name and nothing else to the one person known under
        exactly that first and last name (either order) by records with more than a name;
        when two or more people share the name, the record stays apart.
    household_by_last_name_and_address
        Put people with the same last name at the same address into one household account when
        the CRM does not say otherwise.
    bulk_min_records
        A run whose scope holds at least this many records, and at least as many as already
        have a contact (an initial build, a rebuild), writes in bulk mode: secondary indexes and
        foreign keys of the history tables are dropped and rebuilt around the writes, on one
        connection that locks those tables until it commits (docs/adr/0006-identity-bulk-build.md).
        Below it, a batch is written row by row into the indexed tables and takes no table
        lock: 100,000 keeps every incremental run of a day's files on that path.
    """

    guard_first_name_max_edits: int = 1
    nameless_shared_value_needs_name: bool = True
    family_mailbox_words: tuple[str, ...] = ("familie", "family", "fam", "famille", "famiglia")
    fuzzy_enabled: bool = True
    fuzzy_min_name_similarity: float = 88.0
    fuzzy_require_postcode: bool = True
    name_address_enabled: bool = True
    name_birth_date_enabled: bool = True
    in_house_name_enabled: bool = True
    unique_name_enabled: bool = True
    household_by_last_name_and_address: bool = True
    bulk_min_records: int = 100_000
