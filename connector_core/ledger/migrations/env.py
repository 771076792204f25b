"""Alembic environment. The connection is handed in by ``connector_core.ledger.migrate``,
so no URL (and no database password) ever sits in an ini file or a log line.

Migrations must run on exactly that connection: it holds the ledger's migration lock (see
``migrate.migration_lock``), which makes connectors that start together migrate one at a time.
It arrives inside a transaction, so ``begin_transaction`` below adds none of its own."""

from alembic import context

from connector_core.ledger.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
