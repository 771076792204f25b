"""The plugin pages and demo configurations cannot drift from the code: every option, mapping
field and staging column is documented, and every shipped configuration is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector_core.plugins import PluginHost
from connector_core.runtime import build_sources
from connector_core.settings import load_settings
from myinvois_odoo.options import OdooFieldMapping, OdooSourceOptions
from myinvois_sql.columns import (
    CANCEL_REQUEST_COLUMNS,
    HEADER_DATA_COLUMNS,
    LIFECYCLE_COLUMNS,
    LINE_DATA_COLUMNS,
    PARTY_FIELDS,
    STATUS_COLUMNS,
)
from myinvois_sql.options import CustomQueries, SqlSourceOptions

REPO = Path(__file__).resolve().parents[2]
SQL_DOC = (REPO / "docs" / "plugin-sql.md").read_text("utf-8")
ODOO_DOC = (REPO / "docs" / "plugin-odoo.md").read_text("utf-8")


def documented_options(doc: str) -> set[str]:
    """Names in the first cell of a table row: | `name` | ..."""
    return {line.split("`")[1] for line in doc.splitlines() if line.startswith("| `")}


def test_every_sql_option_and_query_is_documented():
    names = documented_options(SQL_DOC)
    assert set(SqlSourceOptions.model_fields) <= names
    assert set(CustomQueries.model_fields) <= names


def test_every_staging_column_is_documented():
    buyer_columns = {f"buyer_{field}" for field in PARTY_FIELDS}
    for column in [*HEADER_DATA_COLUMNS, *STATUS_COLUMNS, *LIFECYCLE_COLUMNS, *CANCEL_REQUEST_COLUMNS, *LINE_DATA_COLUMNS]:
        if column in buyer_columns:
            continue  # documented together as buyer_*
        assert f"`{column}`" in SQL_DOC, column


def test_every_odoo_option_and_mapping_field_is_documented_with_its_default():
    names = documented_options(ODOO_DOC)
    assert set(OdooSourceOptions.model_fields) <= names
    for name, field in OdooFieldMapping.model_fields.items():
        row = next(line for line in ODOO_DOC.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"`{field.default}`" in row or (field.default == "" and '`""`' in row), row


@pytest.mark.parametrize("name", ["sql-sqlite.toml", "sql-postgres.toml", "sql-mariadb.toml", "odoo.toml"])
def test_shipped_configuration_is_valid(name, monkeypatch):
    monkeypatch.setenv("ODOO_API_KEY", "any-key-for-validation")
    settings = load_settings(REPO / "config" / name)
    sources, problems = build_sources(settings, PluginHost())
    assert problems == []
    assert set(sources) == {"erp"}
