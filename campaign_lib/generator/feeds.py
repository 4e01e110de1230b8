"""The export formats of the resort's source systems: folder, encoding, dialect, columns, file names.

docs/generator.md describes the same formats for the people who write the ingestion;
a change here is a change of that contract.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Feed:
    """One export of one source system as it lands in the drop folder."""

    name: str
    folder: str
    encoding: str
    bom: bool
    delimiter: str
    line_end: str
    quoting: int
    columns: tuple[str, ...]
    file_pattern: str
    drop_hour: int
    drop_minute: int
    monthly: bool = True

    @property
    def is_jsonl(self) -> bool:
        """Whether the feed is JSON Lines rather than CSV."""
        return not self.columns

    def file_name(self, dropped_at: dt.datetime) -> str:
        """Return the file name the source gives an export dropped at ``dropped_at``."""
        return dropped_at.strftime(self.file_pattern)

    def header(self) -> bytes:
        """Return the bytes a file of this feed starts with: BOM and header line, if any."""
        if self.is_jsonl:
            return b""
        names = [f'"{name}"' for name in self.columns] if self.quoting == csv.QUOTE_ALL else self.columns
        text = self.delimiter.join(names) + self.line_end
        return ("\ufeff" if self.bom else "").encode("utf-8") + text.encode(self.encoding)


HOTEL_PMS = Feed(
    name="hotel_pms",
    folder="hotel_pms",
    encoding="latin-1",
    bom=False,
    delimiter=";",
    line_end="\r\n",
    quoting=csv.QUOTE_MINIMAL,
    columns=(
        "ResNr",
        "GastNr",
        "Gastrolle",
        "Anrede",
        "Titel",
        "Vorname",
        "Nachname",
        "Geburtsdatum",
        "EMail",
        "Telefon",
        "Straße",
        "PLZ",
        "Ort",
        "Land",
        "Firma",
        "Anreise",
        "Abreise",
        "Zimmertyp",
        "Erwachsene",
        "Kinder",
        "Betrag",
        "Währung",
        "Buchungskanal",
    ),
    file_pattern="PMS_RESERVATIONS_%Y%m%dT%H%M.csv",
    drop_hour=6,
    drop_minute=5,
)
RESTAURANT_POS = Feed(
    name="restaurant_pos",
    folder="restaurant_pos",
    encoding="utf-8",
    bom=True,
    delimiter=",",
    line_end="\n",
    quoting=csv.QUOTE_MINIMAL,
    columns=(
        "receipt_id",
        "outlet",
        "outlet_type",
        "closed_at",
        "loyalty_card",
        "guest_name",
        "guest_email",
        "room_number",
        "reservation_number",
        "covers",
        "amount",
        "currency",
        "payment_method",
    ),
    file_pattern="pos_receipts_%Y-%m-%dT%H-%M-%S.csv",
    drop_hour=3,
    drop_minute=15,
)
SHOP_POS = Feed(
    name="shop_pos",
    folder="shop_pos",
    encoding="utf-8",
    bom=False,
    delimiter=",",
    line_end="\n",
    quoting=csv.QUOTE_MINIMAL,
    columns=(
        "receipt_id",
        "line_no",
        "shop",
        "sold_at",
        "loyalty_card",
        "sku",
        "product",
        "quantity",
        "amount",
        "currency",
        "customer_email",
    ),
    file_pattern="shop_sales_%Y%m%d_%H%M%S.csv",
    drop_hour=3,
    drop_minute=40,
)
TICKETING = Feed(
    name="ticketing",
    folder="ticketing",
    encoding="utf-8",
    bom=False,
    delimiter=",",
    line_end="\n",
    quoting=csv.QUOTE_ALL,
    columns=(
        "ticket_id",
        "order_id",
        "attraction",
        "visit_date",
        "ticket_type",
        "price",
        "currency",
        "sales_channel",
        "buyer_email",
        "buyer_first_name",
        "buyer_last_name",
        "buyer_phone",
        "product_sku",
    ),
    file_pattern="tickets_export_%Y-%m-%d_%H%M.csv",
    drop_hour=4,
    drop_minute=0,
)
WEBSITE = Feed(
    name="website",
    folder="website",
    encoding="utf-8",
    bom=False,
    delimiter="",
    line_end="\n",
    quoting=0,
    columns=(),
    file_pattern="web_events_%Y%m%dT%H%M%SZ.jsonl",
    drop_hour=0,
    drop_minute=30,
)
CRM_ACCOUNTS = Feed(
    name="crm_accounts",
    folder="crm",
    encoding="utf-8",
    bom=False,
    delimiter=",",
    line_end="\r\n",
    quoting=csv.QUOTE_MINIMAL,
    columns=("account_id", "account_type", "account_name", "vat_id", "created_at"),
    file_pattern="CRM_ACCOUNTS_%Y%m%d_%H%M.csv",
    drop_hour=2,
    drop_minute=0,
    monthly=False,
)
CRM_CONTACTS = Feed(
    name="crm_contacts",
    folder="crm",
    encoding="utf-8",
    bom=False,
    delimiter=",",
    line_end="\r\n",
    quoting=csv.QUOTE_MINIMAL,
    columns=(
        "contact_id",
        "account_id",
        "salutation",
        "title",
        "first_name",
        "last_name",
        "birth_date",
        "email",
        "phone",
        "preferred_language",
        "loyalty_card",
        "web_customer_id",
        "created_at",
    ),
    file_pattern="CRM_CONTACTS_%Y%m%d_%H%M.csv",
    drop_hour=2,
    drop_minute=0,
    monthly=False,
)
CRM_ADDRESSES = Feed(
    name="crm_addresses",
    folder="crm",
    encoding="utf-8",
    bom=False,
    delimiter=",",
    line_end="\r\n",
    quoting=csv.QUOTE_MINIMAL,
    columns=(
        "address_id",
        "account_id",
        "street",
        "house_number",
        "postcode",
        "city",
        "country",
        "valid_from",
    ),
    file_pattern="CRM_ADDRESSES_%Y%m%d_%H%M.csv",
    drop_hour=2,
    drop_minute=0,
    monthly=False,
)

# The product catalogue (tickets, shop articles, room categories): a snapshot on as_of.
PRODUCTS = Feed(
    name="products",
    folder="products",
    encoding="utf-8",
    bom=False,
    delimiter=",",
    line_end="\n",
    quoting=csv.QUOTE_MINIMAL,
    columns=("sku", "name", "category", "price", "currency"),
    file_pattern="products_%Y%m%dT%H%M%S.csv",
    drop_hour=1,
    drop_minute=0,
    monthly=False,
)

# Order matters: feed numbers index the generator's output buckets.
FEEDS = (
    HOTEL_PMS,
    RESTAURANT_POS,
    SHOP_POS,
    TICKETING,
    WEBSITE,
    CRM_ACCOUNTS,
    CRM_CONTACTS,
    CRM_ADDRESSES,
    PRODUCTS,
)
PMS, RESTAURANT, SHOP, TICKET, WEB, ACCOUNT, CONTACT, ADDRESS, PRODUCT = range(len(FEEDS))
ACTIVITY_FEEDS = (PMS, RESTAURANT, SHOP, TICKET, WEB)

GROUND_TRUTH_COLUMNS = ("source_system", "record_kind", "source_key", "person_id", "household_id")

# The PMS stores latin-1 only; its input masks fold other letters the way a clerk types them.
LATIN1_FOLD = str.maketrans(
    {
        "ł": "l",
        "Ł": "L",
        "ś": "s",
        "Ś": "S",
        "ą": "a",
        "ę": "e",
        "ć": "c",
        "Ć": "C",
        "ń": "n",
        "ż": "z",
        "Ż": "Z",
        "ź": "z",
        "Ź": "Z",
        "ş": "s",
        "Ş": "S",
        "\u0131": "i",
        "ğ": "g",
    }
)
