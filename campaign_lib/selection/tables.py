"""The core tables selections read, declared once (not reflected, so importing costs nothing).

Only the columns the selection language and its compiler use are declared; the schema itself
is sql/migrations/versions/0001_core_schema.py. `selected_contact` is the session's temporary
table that `materialize` fills.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Date, DateTime, MetaData, Table, Text

metadata = MetaData()

account = Table(
    "account",
    metadata,
    Column("account_id", BigInteger, primary_key=True),
    Column("account_type", Text),
    Column("name", Text),
    Column("created_at", DateTime(timezone=True)),
    schema="core",
)

location = Table(
    "location",
    metadata,
    Column("location_id", BigInteger, primary_key=True),
    Column("account_id", BigInteger),
    Column("street", Text),
    Column("postal_code", Text),
    Column("city", Text),
    Column("country_code", Text),
    schema="core",
)

contact = Table(
    "contact",
    metadata,
    Column("contact_id", BigInteger, primary_key=True),
    Column("account_id", BigInteger),
    Column("location_id", BigInteger),
    Column("status", Text),
    Column("salutation", Text),
    Column("first_name", Text),
    Column("last_name", Text),
    Column("birth_date", Date),
    Column("email", Text),
    Column("phone_e164", Text),
    Column("preferred_language", Text),
    Column("created_at", DateTime(timezone=True)),
    schema="core",
)

product = Table(
    "product",
    metadata,
    Column("product_id", BigInteger, primary_key=True),
    Column("sku", Text),
    Column("category", Text),
    schema="core",
)

activity = Table(
    "activity",
    metadata,
    Column("activity_id", BigInteger, primary_key=True),
    Column("contact_id", BigInteger),
    Column("activity_type", Text),
    Column("source_system", Text),
    Column("occurred_at", DateTime(timezone=True)),
    Column("amount_cents", BigInteger),
    Column("currency", Text),
    Column("product_id", BigInteger),
    Column("outlet", Text),
    schema="core",
)

consent = Table(
    "consent",
    metadata,
    Column("consent_id", BigInteger, primary_key=True),
    Column("contact_id", BigInteger),
    Column("channel", Text),
    Column("purpose", Text),
    Column("status", Text),
    Column("recorded_at", DateTime(timezone=True)),
    Column("double_opt_in_at", DateTime(timezone=True)),
    schema="core",
)

selected_contact = Table("selected_contact", metadata, Column("contact_id", BigInteger, primary_key=True))
