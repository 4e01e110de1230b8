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
    household_by_last_name_and_address
        Put people with the same last name at the same address into one household account when
        the CRM does not say otherwise.
    """

    guard_first_name_max_edits: int = 1
    fuzzy_enabled: bool = True
    fuzzy_min_name_similarity: float = 88.0
    fuzzy_require_postcode: bool = True
    household_by_last_name_and_address: bool = True
