"""The invoice JSON and the built bytes move to a side table; indexes for every hot query.

* ``document_bodies(document_id, invoice_json, document)``: the two columns of several KB each
  leave ``documents``, whose rows every cycle reads; they are written once beside the row and
  pruned after ``ledger.keep_bodies_days`` (see ``connector_core/ledger/bodies.py``). What an
  audit needs stays on the row: hash, uuid, longId, times, errors.
* ``ix_documents_state_profile`` gains ``id`` (the pending claim reads oldest first without a
  sort); ``ix_documents_unreported`` leads with ``reported_at`` (what is not written back yet is
  a short range, with or without a source); ``ix_documents_state_fetched_at`` (the oldest open
  document) and ``ix_documents_final_at`` (pruning) are new;
* ``bookmarks``: where the pruning stopped, so that each run reads only documents final since.

The space the moved columns held is reused by new rows; to give it back to the file system,
VACUUM (SQLite), VACUUM FULL documents (PostgreSQL) or OPTIMIZE TABLE documents (MariaDB)
once, with the connector stopped (docs/operations.md).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "document_bodies",
        sa.Column("document_id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("invoice_json", LONG_TEXT, nullable=True),
        sa.Column("document", LONG_TEXT, nullable=True),
        # The constraint names the metadata's naming convention gives (schema.py).
        sa.PrimaryKeyConstraint("document_id", name="pk_document_bodies"),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], name="fk_document_bodies_document_id"),
    )
    op.execute(
        "INSERT INTO document_bodies (document_id, invoice_json, document) "
        "SELECT id, invoice_json, document FROM documents WHERE invoice_json IS NOT NULL OR document IS NOT NULL"
    )
    op.drop_index("ix_documents_state_profile", table_name="documents")
    op.drop_index("ix_documents_unreported", table_name="documents")
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("document")
        batch.drop_column("invoice_json")
    op.create_index("ix_documents_state_profile", "documents", ["state", "profile", "id"])
    op.create_index("ix_documents_unreported", "documents", ["reported_at", "source", "state"])
    op.create_index("ix_documents_state_fetched_at", "documents", ["state", "fetched_at"])
    op.create_index("ix_documents_final_at", "documents", ["final_at", "id"])
    op.create_table(
        "bookmarks",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_bookmarks"),
    )


def downgrade() -> None:
    op.drop_table("bookmarks")
    op.drop_index("ix_documents_final_at", table_name="documents")
    op.drop_index("ix_documents_state_fetched_at", table_name="documents")
    op.drop_index("ix_documents_unreported", table_name="documents")
    op.drop_index("ix_documents_state_profile", table_name="documents")
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("invoice_json", LONG_TEXT, nullable=True))
        batch.add_column(sa.Column("document", LONG_TEXT, nullable=True))
    # Bodies already pruned stay empty: a downgrade cannot bring them back.
    op.execute(
        "UPDATE documents SET "
        "invoice_json = (SELECT b.invoice_json FROM document_bodies b WHERE b.document_id = documents.id), "
        "document = (SELECT b.document FROM document_bodies b WHERE b.document_id = documents.id)"
    )
    op.drop_table("document_bodies")
    op.create_index("ix_documents_unreported", "documents", ["source", "reported_at", "state"])
    op.create_index("ix_documents_state_profile", "documents", ["state", "profile"])
