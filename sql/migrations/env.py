"""Alembic environment of the campaign database.

kms runs migrations in code (campaign_lib.db.migrate), handing over an open
connection, so no URL or password ever sits in an ini file.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table="alembic_version", version_table_schema="public")
with context.begin_transaction():
    context.run_migrations()
