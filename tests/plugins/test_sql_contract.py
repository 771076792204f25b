"""The shared plugin contract, run by the SQL plugin on SQLite, PostgreSQL and MariaDB, in both
staging-table mode and custom-query mode."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

import myinvois_sql.plugin
from connector_core.contract import Source
from myinvois_sql.engines import dispose_all
from myinvois_sql.options import SqlSourceOptions
from tests.plugin_contract import PluginContract
from tests.plugins.sql_staging import STAGING_AS_QUERIES, StagingErp, recreate_staging_tables


class SqlContract(PluginContract):
    mode = "staging"

    @pytest.fixture(scope="class")
    @classmethod
    def database_url(cls) -> str:
        raise NotImplementedError

    @pytest.fixture()
    def plugin_module(self):
        return myinvois_sql.plugin

    @pytest.fixture(scope="class")
    @classmethod
    def staging_tables(cls, database_url) -> None:
        """The staging tables, created once for the class: its tests add, read and update rows,
        never the tables (dropping and creating them for each test was most of its time)."""
        engine = create_engine(database_url)
        recreate_staging_tables(engine)
        engine.dispose()

    @pytest.fixture()
    def erp(self, database_url, staging_tables):
        engine = create_engine(database_url)
        yield StagingErp(engine)
        # Empty again for the next test, as freshly created tables are.
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM einvoice_line"))
            conn.execute(text("DELETE FROM einvoice_header"))
        engine.dispose()
        dispose_all()

    @pytest.fixture()
    def source(self, database_url, erp):
        settings = {"url": database_url, "page_size": 2, "mode": self.mode}
        if self.mode == "queries":
            settings["queries"] = STAGING_AS_QUERIES
        return Source(name="erp", kind="sql", profile="demo", options=SqlSourceOptions.model_validate(settings))

    @pytest.fixture()
    def seed_invoices(self, erp):
        return erp.add

    @pytest.fixture()
    def seed_bad_record(self, erp):
        def seed():
            (key,) = erp.add(1, buyer_tin=None)
            return key, "buyer_tin"

        return seed

    @pytest.fixture()
    def read_back(self, erp):
        return erp.status


class TestSqliteStaging(SqlContract):
    @pytest.fixture(scope="class")
    @classmethod
    def database_url(cls, tmp_path_factory):
        return f"sqlite:///{tmp_path_factory.mktemp('erp') / 'erp.sqlite'}"


class TestSqliteQueries(TestSqliteStaging):
    mode = "queries"


@pytest.mark.services
class TestPostgresStaging(SqlContract):
    @pytest.fixture(scope="class")
    @classmethod
    def database_url(cls, postgres_url):
        return postgres_url


@pytest.mark.services
class TestPostgresQueries(TestPostgresStaging):
    mode = "queries"


@pytest.mark.services
class TestMariadbStaging(SqlContract):
    @pytest.fixture(scope="class")
    @classmethod
    def database_url(cls, mariadb_url):
        return mariadb_url


@pytest.mark.services
class TestMariadbQueries(TestMariadbStaging):
    mode = "queries"
