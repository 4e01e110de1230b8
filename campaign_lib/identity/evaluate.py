"""How well identity resolution matches the generator's ground truth."""

from __future__ import annotations

import csv
import gzip
import io
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from campaign_lib.sqlfiles import queries


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Pairwise precision, recall and F1 of the resolved contacts against the true persons.

    Counted over the *evaluated* records: records of ingest.record that the ground truth
    assigns to a person and that carry identifying information. A pair is two distinct
    evaluated records; it is *predicted* when both have the same contact, *true* when both
    belong to the same ground-truth person, *correct* when both. precision = correct /
    predicted, recall = correct / true, F1 their harmonic mean (1.0 where nothing was
    predicted, resp. nothing was there to find). A record without contact forms no pair.

    Excluded, and counted separately, because nobody can link them, so they would only
    measure the generator:

    - `records_unidentifiable`: records with neither a name nor any identifier except an
      order reference (anonymous counter tickets, cash receipts, shop lines without card or
      e-receipt);
    - `records_anonymous_cookie`: records whose only identifying value is a cookie id that
      no record carrying anything else (name, email, phone, loyalty card, booking reference,
      CRM or customer id) ever carries: page views under a cookie that never logged in or
      signed up. Their cookie links them to each other, never to a person.

    Also not evaluated: ground-truth rows without a person (CRM accounts and addresses) and
    rows ingestion has not loaded (`records_missing`). Before `records_anonymous_cookie`
    existed, those page views were evaluated (and counted in the true pairs)."""

    records_in_ground_truth: int
    records_missing: int
    records_unidentifiable: int
    records_anonymous_cookie: int
    records_evaluated: int
    records_without_contact: int
    persons: int
    contacts: int
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int
    precision: float
    recall: float
    f1: float

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)


def _pairs(counts: Counter) -> int:
    return sum(n * (n - 1) // 2 for n in counts.values())


def read_ground_truth(path: Path) -> dict[tuple[str, str], str]:
    """(source_system, source_key) → person_id of every ground-truth row with a person."""
    truth: dict[tuple[str, str], str] = {}
    with gzip.open(path, "rt", encoding="utf-8", newline="") as stream:
        for row in csv.DictReader(stream):
            if row["person_id"]:
                truth[(row["source_system"], row["source_key"])] = row["person_id"]
    return truth


def evaluate(engine: Engine, ground_truth_path: Path) -> Evaluation:
    """Compare the contacts of ingest.record with the ground truth at `ground_truth_path`
    (the generator's ground_truth.csv.gz); see `Evaluation` for what is counted."""
    truth = read_ground_truth(Path(ground_truth_path))
    buffer = io.StringIO()
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.copy_expert(queries("identity.sql")["evaluation_records"].text, buffer)
        finally:
            cursor.close()
    buffer.seek(0)

    persons: Counter[str] = Counter()
    contacts: Counter[str] = Counter()
    cells: Counter[tuple[str, str]] = Counter()
    found = unidentifiable = anonymous_cookie = without_contact = 0
    for source_system, source_key, contact_id, identifiable, cookie_only in csv.reader(buffer):
        person = truth.get((source_system, source_key))
        if person is None:
            continue
        found += 1
        if identifiable != "t":
            unidentifiable += 1
            continue
        if cookie_only == "t":
            anonymous_cookie += 1
            continue
        persons[person] += 1
        if contact_id:
            contacts[contact_id] += 1
            cells[(contact_id, person)] += 1
        else:
            without_contact += 1

    true_pairs, predicted_pairs, correct_pairs = _pairs(persons), _pairs(contacts), _pairs(cells)
    precision = correct_pairs / predicted_pairs if predicted_pairs else 1.0
    recall = correct_pairs / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Evaluation(
        records_in_ground_truth=len(truth),
        records_missing=len(truth) - found,
        records_unidentifiable=unidentifiable,
        records_anonymous_cookie=anonymous_cookie,
        records_evaluated=found - unidentifiable - anonymous_cookie,
        records_without_contact=without_contact,
        persons=len(persons),
        contacts=len(contacts),
        true_pairs=true_pairs,
        predicted_pairs=predicted_pairs,
        correct_pairs=correct_pairs,
        precision=round(precision, 4),
        recall=round(recall, 4),
        f1=round(f1, 4),
    )
