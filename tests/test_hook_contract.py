"""The hook contract is complete: every hook is in HOOK_NAMES, documented, and tested.

As in datasette's tests/test_docs.py and tests/test_plugins.py: adding a hook to
``connector_core/hookspecs.py`` without a heading in ``docs/hooks.md`` and a test whose name
contains the hook's name fails here.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from connector_core import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS_DOC = ROOT / "docs" / "hooks.md"
TESTS = ROOT / "tests"


def _hookspec_functions() -> list[str]:
    """Names of the functions decorated with ``@hookspec`` in the hookspec module, in order."""
    names = []
    for name, obj in vars(hookspecs).items():
        if inspect.isfunction(obj) and hasattr(obj, f"{hookspecs.PROJECT_NAME}_spec"):
            names.append(name)
    return names


def _documented_hooks() -> set[str]:
    return {m.group(1) for m in re.finditer(r"^#{2,3} `?([a-z_]+)`?\s*$", HOOKS_DOC.read_text(encoding="utf-8"), re.MULTILINE)}


def _test_function_names() -> set[str]:
    names = set()
    for path in TESTS.rglob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def test_hook_names_match_the_hookspec_functions():
    assert _hookspec_functions(), "no @hookspec function found in connector_core/hookspecs.py"
    assert list(hookspecs.HOOK_NAMES) == _hookspec_functions(), (
        "HOOK_NAMES must list every @hookspec function of connector_core/hookspecs.py, in the order they appear"
    )


def test_every_hookspec_has_a_docstring():
    for name in _hookspec_functions():
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"hookspec {name} has no docstring"


@pytest.mark.parametrize("hook", sorted(set(hookspecs.HOOK_NAMES) | set(_hookspec_functions())))
def test_hook_is_documented(hook):
    assert hook in _documented_hooks(), f"docs/hooks.md has no '## {hook}' heading"


@pytest.mark.parametrize("hook", sorted(set(hookspecs.HOOK_NAMES) | set(_hookspec_functions())))
def test_hook_has_a_test(hook):
    tests = [name for name in _test_function_names() if hook in name]
    assert tests, f"no test function under tests/ has {hook!r} in its name; add one to tests/core/test_hooks.py"


def test_documented_hooks_exist():
    """A heading for a hook that no longer exists misleads plugin authors."""
    hook_like = {h for h in _documented_hooks() if h.startswith(("register_", "fetch_", "on_"))}
    assert hook_like <= set(hookspecs.HOOK_NAMES), f"docs/hooks.md documents unknown hooks: {hook_like - set(hookspecs.HOOK_NAMES)}"
