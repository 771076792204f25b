"""Relative paths in a configuration file are relative to that file's folder.

A service, a cron job and an operator's shell rarely share a working directory; the file is
the one fixed point they share. So ``state_dir = "var"`` in ``/etc/myinvois/connector.toml``
means ``/etc/myinvois/var`` wherever the process was started. Without a file (defaults and
environment variables only) paths stay relative to the working directory.

The folder is set for the time the configuration is read (:func:`resolving_against`):
``load_settings`` sets it while the settings are validated, the runtime while each source's
plugin options are. What it covers:

* core settings: ``state_dir``, ``token_cache``, a ``sqlite:///`` ``ledger.url`` and
  ``rate_limits.backend`` (the settings apply :func:`resolve_path` / :func:`resolve_sqlite_url`);
* ``$file:`` secret references, anywhere (:mod:`connector_core.secrets` asks here);
* plugin options: every ``Path`` value of a plugin's options model, at any depth (lists and
  nested models included), without the plugin doing anything (:func:`resolve_model_paths`).
  A plugin holding a path in a plain ``str`` (a SQLite URL, say) calls :func:`resolve_path` or
  :func:`resolve_sqlite_url` from a validator itself.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

_config_dir: contextvars.ContextVar[Path | None] = contextvars.ContextVar("myinvois_config_dir", default=None)


@contextmanager
def resolving_against(folder: Path | None) -> Iterator[None]:
    """Within the block, relative configuration paths resolve against ``folder`` (None: the
    working directory, i.e. left as they are)."""
    token = _config_dir.set(Path(os.path.normpath(folder.expanduser().absolute())) if folder is not None else None)
    try:
        yield
    finally:
        _config_dir.reset(token)


def current_folder() -> Path | None:
    """The folder relative paths resolve against now, or None when they stay as written."""
    return _config_dir.get()


def resolve_path(path: Path | str) -> Path:
    """``path`` made absolute against the configuration file's folder when it is relative
    (``~`` expanded first); unchanged when absolute or when no file is being read."""
    path = Path(path).expanduser()
    folder = _config_dir.get()
    if folder is None or path.is_absolute():
        return path
    # "conf/../var" is written as "var": messages then show the path a person would type.
    return Path(os.path.normpath(folder / path))


def resolve_sqlite_url(url: str) -> str:
    """A ``sqlite:///relative/file`` URL with its file resolved like any other path; other
    URLs (other databases, ``sqlite://`` in memory, absolute files) unchanged."""
    prefix, _, rest = url.partition(":///")
    if not rest or prefix.split("+", 1)[0] != "sqlite" or rest.startswith(("/", ":memory:")):
        return url
    database, query = ([*rest.split("?", 1), ""])[:2]
    resolved = resolve_path(database)
    return f"{prefix}:///{resolved}" + (f"?{query}" if query else "")


def resolve_model_paths(model: BaseModel) -> BaseModel:
    """A copy of a validated model (a plugin's options) in which every relative ``Path`` value,
    at any depth, is resolved with :func:`resolve_path`; the model itself when none is."""
    if _config_dir.get() is None:
        return model
    changed = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        resolved = _resolve_value(value)
        if resolved is not value:
            changed[name] = resolved
    return model.model_copy(update=changed) if changed else model


def _resolve_value(value: Any) -> Any:
    if isinstance(value, Path):
        resolved = resolve_path(value)
        return value if resolved == value else resolved
    if isinstance(value, BaseModel):
        return resolve_model_paths(value)
    if isinstance(value, (list, tuple)):
        items = [_resolve_value(v) for v in value]
        if any(a is not b for a, b in zip(items, value, strict=True)):
            return type(value)(items)
        return value
    if isinstance(value, dict):
        entries = {k: _resolve_value(v) for k, v in value.items()}
        if any(entries[k] is not value[k] for k in value):
            return entries
        return value
    return value
