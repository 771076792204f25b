"""The SQL plugin: invoices from staging tables or custom queries in any SQLAlchemy database.

``kind = "sql"``. Supported and tested: SQLite, PostgreSQL (psycopg 3), MariaDB/MySQL (PyMySQL).
See ``docs/plugin-sql.md`` for the settings, the staging schema and the custom-query contract.
"""
