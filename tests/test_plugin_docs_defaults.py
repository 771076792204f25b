"""Each plugin's page documents every option with the default the code really has.

For every source kind the installed plugins register, docs/plugin-<kind>.md must hold a table
documenting its options model, and one for each model nested in it (a CSV source's
``company``, a SQL source's ``queries``, an Odoo source's ``fields``; a small one such as
``company.address`` may be described in its parent's row instead), in tables whose second
column is headed "Default", each row as

    | `page_size` | `500` | meaning |

where the default is a TOML literal (a bare word like `x_tin` reads as that string), or
``required`` / ``(required)`` (no default), ``unset`` / ``none`` (default none), or ``see
below`` for a nested table documented in its own table. The core's settings are checked the
same way against docs/configuration.md by tests/test_docs.py.
"""

from __future__ import annotations

import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from connector_core.plugins import PluginHost
from tests.test_docs import _normalise, _same

DOCS = Path(__file__).resolve().parent.parent / "docs"
ROW = re.compile(r"^\|\s*`(?P<key>[A-Za-z_]\w*)`\s*\|\s*(?P<default>[^|]*?)\s*\|")
BUILT_IN_KINDS = ("csv", "sql", "odoo")


def _tables(text: str) -> list[dict[str, str]]:
    """Every table of the page whose second column is headed "Default", as {key: default cell}."""
    tables, current, is_defaults = [], {}, False
    for line in text.splitlines():
        if line.startswith("|"):
            match = ROW.match(line)
            if match and is_defaults:
                current[match["key"]] = match["default"]
            elif not match and not line.startswith("| ---"):
                cells = [c.strip() for c in line.strip("|").split("|")]
                is_defaults = len(cells) > 1 and cells[1] == "Default"
        else:
            if current:
                tables.append(current)
            current, is_defaults = {}, False
    if current:
        tables.append(current)
    return tables


def _row_of(text: str, key: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| `{key}` |"))


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _models(model: type[BaseModel], path: str = "options") -> list[tuple[str, type[BaseModel]]]:
    out = [(path, model)]
    for name, field in model.model_fields.items():
        nested = _nested_model(field.annotation)
        if nested is not None:
            out.extend(_models(nested, f"{path}.{name}"))
    return out


def _written(cell: str) -> Any:
    text = cell.strip()
    if text in ("required", "(required)"):
        return "required"
    if text in ("unset", "none"):
        return None
    if text == "see below":
        return "nested"
    literal = text.strip("`")
    try:
        return tomllib.loads(f"value = {literal}")["value"]
    except tomllib.TOMLDecodeError:
        return literal  # a bare name such as x_tin


def _cases() -> list[tuple[str, str, type[BaseModel]]]:
    host = PluginHost()
    return [(kind, path, model) for kind in BUILT_IN_KINDS for path, model in _models(host.kinds[kind].options_model)]


@pytest.mark.parametrize(("kind", "path", "model"), _cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_plugin_option_is_documented_with_the_codes_default(kind, path, model):
    page = DOCS / f"plugin-{kind}.md"
    text = page.read_text("utf-8")
    fields = model.model_fields
    tables = _tables(text)
    table = max(tables, key=lambda t: len(set(t) & set(fields)))
    if not set(table) & set(fields) and "." in path[len("options") :]:
        # A small nested table described in its parent's row, e.g. company.address: every key
        # named there, and every default other than none stated as "default `X`".
        row = _row_of(text, path.rsplit(".", 1)[1])
        for name, field in fields.items():
            assert f"`{name}`" in row, f"{page.name}: the row of {path} does not name {name}"
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            if default is not None:
                assert f"default `{default}`" in row, f"{page.name}: the row of {path} does not say {name} defaults to {default!r}"
        return
    missing = sorted(set(fields) - set(table))
    assert not missing, f"{page.name}: no table documents {path} ({model.__name__}) fully; missing rows: {missing}"
    wrong = []
    for name, field in fields.items():
        written = _written(table[name])
        if field.is_required():
            expected: Any = "required"
        elif _nested_model(field.annotation) is not None and written == "nested":
            continue
        else:
            expected = _normalise(field.get_default(call_default_factory=True))
            if isinstance(expected, list):
                expected = [_normalise(v) for v in expected]
        if not _same(written, expected):
            wrong.append(f"{path}.{name}: the page says {table[name]}, the code {expected!r}")
    assert not wrong, f"{page.name} disagrees with the code:\n" + "\n".join(wrong)


def test_the_walk_finds_every_built_in_options_model():
    found = {(kind, path) for kind, path, _ in _cases()}
    assert {("csv", "options"), ("csv", "options.company"), ("sql", "options"), ("sql", "options.queries"),
            ("odoo", "options"), ("odoo", "options.fields")} <= found  # fmt: skip
