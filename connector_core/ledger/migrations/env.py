"""Alembic environment. The connection is handed in by ``connector_core.ledger.migrate``,
so no URL (and no database password) ever sits in an ini file or a log line."""

from alembic import context

from connector_core.ledger.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
