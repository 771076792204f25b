"""Secret values in configuration, and references to where they really live.

A secret setting may hold the value itself (fine for the demo), or a reference resolved when the
configuration is read, so the TOML file can be committed and shared:

* ``"$env:NAME"``: the value of environment variable ``NAME``;
* ``"$file:/run/secrets/name"``: the contents of that file, trailing newline removed
  (systemd credentials, Docker and Kubernetes secrets); a relative path is relative to the
  configuration file's folder.

The resolved value is a ``SecretStr``: it prints as ``**********`` in reprs, logs and errors.
Plugin authors type their secret options as :data:`Secret` to get the same behaviour.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr

from connector_core.config_paths import resolve_path

#: Values that are never real credentials. LHDN blocks logins that use them, and so do we,
#: before any request is made.
PLACEHOLDER_VALUES = frozenset({"", "0", "your_client_id", "your_client_secret", "changeme", "change-me", "xxx"})


class SecretReferenceError(ValueError):
    """A ``$env:`` or ``$file:`` reference that cannot be resolved. The message names the
    reference, never a value."""


def resolve_reference(value: Any) -> Any:
    """Turn ``$env:NAME`` / ``$file:PATH`` into the referenced value; pass anything else on."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        return value
    if value.startswith("$env:"):
        name = value[len("$env:") :]
        if name not in os.environ:
            raise SecretReferenceError(f"environment variable {name} is not set (referenced as '$env:{name}')")
        return os.environ[name]
    if value.startswith("$file:"):
        # Relative to the configuration file's folder, like every path in it.
        path = resolve_path(value[len("$file:") :])
        try:
            return path.read_text("utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SecretReferenceError(f"cannot read secret file {path}: {exc.strerror}") from None
    return value


def is_placeholder(value: str | SecretStr | None) -> bool:
    """True for empty or example values such as '0' or 'YOUR_CLIENT_ID'."""
    if value is None:
        return True
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value.strip().lower() in PLACEHOLDER_VALUES


Secret = Annotated[SecretStr, BeforeValidator(resolve_reference)]
