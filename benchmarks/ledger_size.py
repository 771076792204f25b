"""Bytes on disk per final document of a ledger: as a run left it, after the migration to the
newest schema, and after the bodies were pruned (``ledger.keep_bodies_days`` passed).

Takes a SQLite ledger a benchmark run left (``benchmarks/run.py`` writes one under
``var/benchmarks/.../state/ledger.sqlite``), never changes it: it works on a copy, and on a copy
of its rows in scratch PostgreSQL and MariaDB databases. Each figure is measured after VACUUM (SQLite:
file size / final documents; PostgreSQL: ``pg_total_relation_size`` of every table, indexes and
TOAST included, after VACUUM FULL; MariaDB: InnoDB data and index length after OPTIMIZE TABLE).

    .venv/bin/python benchmarks/ledger_size.py var/benchmarks/quick/throughput/state/ledger.sqlite \\
        --documents 20000 --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres \\
        --mariadb mysql+pymysql://root@127.0.0.1:3306/mysql
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import MetaData, create_engine, func, make_url, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector_core.ledger import Ledger, migrate  # noqa: E402
from connector_core.ledger.database import as_utc  # noqa: E402
from connector_core.ledger.schema import documents  # noqa: E402

#: Rows copied per INSERT into PostgreSQL.
COPY_BATCH = 2000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a SQLite ledger left by a run (only read)")
    parser.add_argument("--documents", type=int, help="keep the first N documents only")
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL server: measure there too")
    parser.add_argument("--mariadb", help="admin URL of a MariaDB server (mysql+pymysql://...): measure there too")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ledger-size-"))
    copy, untouched = work / "ledger.sqlite", work / "source.sqlite"
    _copy_sqlite(args.source, copy, args.documents)
    _copy_sqlite(copy, untouched, None)
    results: dict[str, Any] = {"source": str(args.source), "sqlite": _measure_sqlite(copy)}
    if args.postgres:
        results["postgresql"] = _measure_server(untouched, args.postgres, _pg_size)
    if args.mariadb:
        results["mariadb"] = _measure_server(untouched, args.mariadb, _mariadb_size)
    print(json.dumps(results, indent=2))


def sqlite_after_retention(source: Path) -> dict[str, Any]:
    """For ``benchmarks/run.py``: the size per final document of a copy of ``source`` once
    every final document is past ``ledger.keep_bodies_days`` (right after a run, every body is
    still kept: about 8 KB more per document)."""
    copy = Path(tempfile.mkdtemp(prefix="ledger-size-")) / "ledger.sqlite"
    _copy_sqlite(source, copy, None)
    ledger = Ledger(f"sqlite:///{copy}")
    pruned = _prune_all(ledger)
    ledger.close()
    return {**_sqlite_size(copy), "pruned_bodies": pruned}


def _copy_sqlite(source: Path, target: Path, limit: int | None) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    src.backup(dst)
    src.close()
    if limit:
        dst.execute("DELETE FROM documents WHERE id NOT IN (SELECT id FROM documents ORDER BY id LIMIT ?)", (limit,))
        dst.execute(
            "DELETE FROM submissions WHERE id NOT IN (SELECT submission_id FROM documents WHERE submission_id IS NOT NULL)"
        )
        dst.commit()
    dst.close()


def _sqlite_size(path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    final = conn.execute("SELECT count(*) FROM documents WHERE final_at IS NOT NULL").fetchone()[0]
    by_table = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall())
    revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    conn.close()
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if not p.name.endswith("-shm"))
    return {
        "revision": revision,
        "final_documents": final,
        "bytes": size,
        "bytes_per_final_document": round(size / final) if final else None,
        "bytes_by_table": by_table,
    }


def _prune_all(ledger: Ledger) -> int:
    """Prune as a daemon would once the retention has passed for every final document."""
    with ledger.engine.connect() as conn:
        last_final = as_utc(conn.execute(select(func.max(documents.c.final_at))).scalar())
    keep = 3.0
    return ledger.bodies.prune(keep, now=last_final + timedelta(days=keep, seconds=1))


def _measure_sqlite(path: Path) -> dict[str, Any]:
    out = {"as_left": _sqlite_size(path)}
    ledger = Ledger(f"sqlite:///{path}")  # migrates to the newest schema
    ledger.close()
    out["migrated"] = _sqlite_size(path)
    ledger = Ledger(f"sqlite:///{path}")
    out["pruned_bodies"] = _prune_all(ledger)
    ledger.close()
    out["after_retention"] = _sqlite_size(path)
    return out


def _pg_size(url: str) -> dict[str, Any]:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("VACUUM FULL ANALYZE"))
        by_table = dict(
            conn.execute(
                text(
                    "SELECT tablename, pg_total_relation_size(quote_ident(tablename)) FROM pg_tables "
                    "WHERE schemaname = 'public' ORDER BY 2 DESC"
                )
            ).all()
        )
        final = conn.execute(text("SELECT count(*) FROM documents WHERE final_at IS NOT NULL")).scalar()
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    size = sum(by_table.values())
    return {
        "revision": revision,
        "final_documents": final,
        "bytes": size,
        "bytes_per_final_document": round(size / final) if final else None,
        "bytes_by_table": by_table,
    }


def _mariadb_size(url: str) -> dict[str, Any]:
    """InnoDB's data and index length of every table, after OPTIMIZE TABLE (its VACUUM FULL)."""
    engine = create_engine(url)
    schema = make_url(url).database
    with engine.connect() as conn:
        tables = conn.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": schema}
        )
        for (name,) in tables.all():
            conn.exec_driver_sql(f"OPTIMIZE TABLE `{name}`").all()
            conn.exec_driver_sql(f"ANALYZE TABLE `{name}`").all()
        by_table = {
            name: int(size)
            for name, size in conn.execute(
                text(
                    "SELECT table_name, data_length + index_length FROM information_schema.tables "
                    "WHERE table_schema = :s ORDER BY 2 DESC"
                ),
                {"s": schema},
            )
        }
        final = conn.execute(text("SELECT count(*) FROM documents WHERE final_at IS NOT NULL")).scalar()
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    size = sum(by_table.values())
    return {
        "revision": revision,
        "final_documents": final,
        "bytes": size,
        "bytes_per_final_document": round(size / final) if final else None,
        "bytes_by_table": by_table,
    }


def _measure_server(source: Path, admin_url: str, measure) -> dict[str, Any]:
    name = f"ledger_size_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        _copy_rows_to_server(source, url)
        out = {"as_left": measure(url)}
        Ledger(url).close()
        out["migrated"] = measure(url)
        ledger = Ledger(url)
        out["pruned_bodies"] = _prune_all(ledger)
        ledger.close()
        out["after_retention"] = measure(url)
        return out
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()


def _copy_rows_to_server(source: Path, url: str) -> None:
    """The schema at the source's own revision, then every row of its tables."""
    src = create_engine(f"sqlite:///{source}")
    with src.connect() as conn:
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    dst = create_engine(url)
    with migrate.migration_lock(dst) as conn:
        cfg = migrate._config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    src_meta, dst_meta = MetaData(), MetaData()
    src_meta.reflect(src)
    dst_meta.reflect(dst)
    with src.connect() as reading, dst.begin() as writing:
        for table in dst_meta.sorted_tables:
            if table.name == "alembic_version" or table.name not in src_meta.tables:
                continue
            rows = reading.execution_options(yield_per=COPY_BATCH).execute(select(src_meta.tables[table.name]))
            for batch in rows.partitions():
                writing.execute(table.insert(), [dict(r._mapping) for r in batch])
    src.dispose()
    dst.dispose()


if __name__ == "__main__":
    main()
