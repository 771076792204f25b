"""docs/configuration.md documents every setting, with the default the code really has.

The settings models (``Settings`` and every model nested in it, recursively, including the
models of ``[profiles.NAME]`` and ``[sources.NAME]``) are walked; each leaf key must appear in
a table row of the page as

    | `cycles.fetch_interval_seconds` | `60.0` | meaning |

where the default is a TOML literal, or the word ``required`` (no default) or ``unset`` (default
none). A key documented but no longer in the code fails too, and so does a TOML example in the
user guides that the settings would refuse.
"""

from __future__ import annotations

import re
import tomllib
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from connector_core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"
ROW = re.compile(r"^\|\s*`(?P<key>[A-Za-z_][\w.]*)`\s*\|\s*(?P<default>`[^|]*`|required|unset)\s*\|(?P<meaning>[^\n]*)\|\s*$", re.MULTILINE)
GUIDES_WITH_CONFIG_EXAMPLES = ("configuration.md", "getting-started.md", "plugin-csv.md", "writing-a-plugin.md")


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model, keyed_by_name) for a field holding a model, or a dict of models; else (None, False)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if typing.get_origin(annotation) is dict:
        value = typing.get_args(annotation)[1]
        if isinstance(value, type) and issubclass(value, BaseModel):
            return value, True
    return None, False


def settings_keys(model: type[BaseModel] = Settings, prefix: str = "") -> dict[str, FieldInfo]:
    """Every leaf key of the settings, dotted as the docs write it (``profiles.NAME.tin``)."""
    keys: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        nested, keyed = _model_of(field.annotation)
        if nested is not None:
            keys.update(settings_keys(nested, f"{prefix}{name}.{'NAME.' if keyed else ''}"))
        else:
            keys[f"{prefix}{name}"] = field
    return keys


def documented() -> dict[str, str]:
    rows: dict[str, str] = {}
    for match in ROW.finditer(CONFIGURATION.read_text(encoding="utf-8")):
        key = match["key"]
        assert key not in rows, f"docs/configuration.md documents {key} twice"
        rows[key] = match["default"]
    return rows


def _normalise(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {(k.value if isinstance(k, Enum) else k): _normalise(v) for k, v in value.items()}
    return value


def _parse_default(text: str) -> Any:
    if text == "required":
        return "required"
    if text == "unset":
        return None
    return tomllib.loads(f"value = {text.strip('`')}")["value"]


def _same(documented_value: Any, actual: Any) -> bool:
    if isinstance(actual, bool) or isinstance(documented_value, bool):
        return type(actual) is type(documented_value) and actual == documented_value
    if isinstance(actual, (int, float)) and isinstance(documented_value, (int, float)):
        return float(actual) == float(documented_value)
    return documented_value == actual


def test_the_walk_finds_the_nested_models():
    keys = settings_keys()
    for key in ("environment", "ledger.url", "profiles.NAME.client_secret", "sources.NAME.options", "cycles.fetch_limit",
                "rate_limits.backend", "retry.jitter", "observability.metrics_port", "simulator"):
        assert key in keys
    assert "cycles" not in keys and "profiles" not in keys  # tables, not keys


def test_the_page_has_rows_in_the_expected_format():
    # If the table format changes, the other tests here would find nothing to check.
    assert len(documented()) >= 50


@pytest.mark.parametrize("key", sorted(settings_keys()))
def test_every_setting_is_documented_with_its_default(key):
    field = settings_keys()[key]
    rows = documented()
    assert key in rows, f"docs/configuration.md has no row | `{key}` | default | meaning |"
    expected: Any
    if field.is_required():
        expected = "required"
    else:
        expected = _normalise(field.get_default(call_default_factory=True))
    written = _parse_default(rows[key])
    assert _same(written, expected), f"docs/configuration.md says {key} defaults to {rows[key]}, the code says {expected!r}"


def test_no_documented_key_is_unknown():
    unknown = set(documented()) - set(settings_keys())
    assert not unknown, f"docs/configuration.md documents keys the settings do not have: {sorted(unknown)}"


def _replace_references(value: Any) -> Any:
    """Secret references cannot be resolved here: stand in a value of the right type."""
    if isinstance(value, dict):
        return {k: _replace_references(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_references(v) for v in value]
    if isinstance(value, str) and value.startswith(("$env:", "$file:")):
        if value.endswith("ledger-url"):
            return "sqlite:///example.sqlite"
        if value.endswith("SENTRY_DSN"):
            return "https://publickey@o0.ingest.sentry.io/1"
        return "a-secret-value"
    return value


def _toml_blocks(page: str) -> list[str]:
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    return re.findall(r"```toml\n(.*?)```", text, re.DOTALL)


@pytest.mark.parametrize("page", GUIDES_WITH_CONFIG_EXAMPLES)
def test_toml_examples_in_the_guides_are_accepted(page):
    """Every TOML example parses; one that names profiles or sources is a valid configuration,
    and the options of a CSV source are valid CSV options."""
    from myinvois_csv.options import CsvSourceOptions

    path = ROOT / "docs" / page
    if not path.exists():
        pytest.skip(f"docs/{page} not written yet")
    blocks = _toml_blocks(page)
    assert blocks, f"docs/{page} has no TOML example"
    for block in blocks:
        data = _replace_references(tomllib.loads(block))
        if "profiles" not in data:
            continue
        settings = Settings(**data)
        for name, source in settings.sources.items():
            if source.kind == "csv" and source.options:
                CsvSourceOptions.model_validate(source.options)


def test_the_plugin_guide_shows_the_example_files_as_they_are():
    """docs/writing-a-plugin.md quotes the example package in full; the test installs the
    files, so the page must show exactly what is tested."""
    text = (ROOT / "docs" / "writing-a-plugin.md").read_text(encoding="utf-8")
    quoted = re.findall(r"^File `(docs/examples/[^`]+)`:\n\n```\w*\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)
    assert {path for path, _ in quoted} >= {
        "docs/examples/myinvois-plugin-jsonl/pyproject.toml",
        "docs/examples/myinvois-plugin-jsonl/myinvois_jsonl/options.py",
        "docs/examples/myinvois-plugin-jsonl/myinvois_jsonl/plugin.py",
    }
    for path, body in quoted:
        assert body == (ROOT / path).read_text(encoding="utf-8"), f"docs/writing-a-plugin.md shows an outdated {path}"


OWN_PAGES = ("getting-started.md", "configuration.md", "hooks.md", "writing-a-plugin.md", "plugin-csv.md")
#: Pages written alongside; a link to one of them is checked once it exists.
SIBLING_PAGES = ("simulator.md", "plugin-sql.md", "plugin-odoo.md", "operations.md", "deployment.md", "performance.md", "architecture.md")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", OWN_PAGES)
def test_links_between_pages_lead_somewhere(page):
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path = (ROOT / "docs" / target).resolve() if target else ROOT / "docs" / page
        if not path.exists():
            assert Path(target).name in SIBLING_PAGES, f"docs/{page} links to {target}, which does not exist"
            continue
        if anchor and path.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
            assert anchor in {_slug(h) for h in headings}, f"docs/{page} links to {target}#{anchor}: no such heading"
