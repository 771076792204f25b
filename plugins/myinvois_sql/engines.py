"""One SQLAlchemy engine per database URL, kept for the life of the process.

``pool_pre_ping`` makes a connection that died between cycles (database restart, idle
timeout, a DBA's ``pg_terminate_backend``) be replaced on checkout, so the next cycle simply
works; a connection lost *during* a call makes that call raise, and the connector calls the
hook again on the next cycle.
"""

from __future__ import annotations

import threading

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from myinvois_sql.options import SqlSourceOptions

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def engine_for(options: SqlSourceOptions) -> Engine:
    url = options.engine_url()
    cache_key = url.render_as_string(hide_password=False)
    with _lock:
        engine = _engines.get(cache_key)
        if engine is None:
            backend = url.get_backend_name()
            if backend == "sqlite":
                connect_args = {"timeout": options.connect_timeout_seconds}
            else:
                connect_args = {"connect_timeout": options.connect_timeout_seconds}
            engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
            _engines[cache_key] = engine
        return engine


def dispose_all() -> None:
    """Close every pooled connection (tests, and a clean shutdown), and forget the stores made
    on these engines: the next hook call makes a store on the next engine."""
    from myinvois_sql.store import forget_stores  # the stores sit above the engines

    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
    forget_stores()
