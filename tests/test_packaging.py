"""What a user installs is what the repository holds, and every install command the docs print works.

* The sdist and the wheel are built the way .ci/run builds them (PyPA's ``build``: the sdist, then
  the wheel from the sdist) into a temporary folder, and the wheel is listed: every module and
  every file the package reads at run time (code tables, migrations, the demo) must be in it.
* ``myinvois-connector demo FOLDER`` writes the demo the wheel ships, and that demo runs from a
  folder outside the checkout; its files are the repository's demo, not a drifting copy.
* Every ``pip install`` command in README.md and docs/ names something that resolves: a checkout
  (``.``), the wheel built here, or a third-party package; never the unpublished project by name.

The full install of the wheel into a clean virtual environment, and the demo run from it, are
in .ci/run: they need a fresh venv and its dependencies, which is more than a unit test should do.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
PROJECT = PYPROJECT["project"]
CLI = [sys.executable, "-m", "connector_core.cli"]

#: The import packages the wheel installs, and the folder each comes from.
PACKAGE_ROOTS = {
    "connector_core": REPO / "connector_core",
    "myinvois_csv": REPO / "plugins" / "myinvois_csv",
    "myinvois_sql": REPO / "plugins" / "myinvois_sql",
    "myinvois_odoo": REPO / "plugins" / "myinvois_odoo",
}

#: Files in the package folders that are not part of the package (caches, editors' droppings).
NOT_SHIPPED = re.compile(r"(^|/)(__pycache__|\.mypy_cache|\.ruff_cache)(/|$)|\.py[cod]$|~$|\.sw[po]$")


#: Left out of the copy the sdist is built from: version control, environments, caches, state.
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis")


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel, built by ``python -m build`` into a temporary folder.

    From a copy of the working tree: building writes an egg-info folder into the tree it builds,
    and a test suite run beside another must not write into the checkout."""
    tree = tmp_path_factory.mktemp("checkout") / "myinvois-connector"
    shutil.copytree(REPO, tree, ignore=NOT_COPIED)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(tree)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"python -m build failed (is the dev extra installed?):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    wheels = list(out.glob("*.whl"))
    sdists = list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def _source_files() -> set[str]:
    """Every file under the package folders, named as the wheel names it."""
    names = set()
    for package, root in PACKAGE_ROOTS.items():
        for path in root.rglob("*"):
            relative = path.relative_to(root).as_posix()
            if path.is_file() and not NOT_SHIPPED.search(relative):
                names.add(f"{package}/{relative}")
    return names


def test_wheel_is_named_for_the_project_version(dist):
    assert dist["wheel"].name == f"myinvois_connector-{PROJECT['version']}-py3-none-any.whl"
    assert dist["sdist"].name == f"myinvois_connector-{PROJECT['version']}.tar.gz"


def test_wheel_holds_every_module_and_every_data_file_of_the_packages(dist):
    shipped = _wheel_names(dist["wheel"])
    missing = sorted(_source_files() - shipped)
    assert not missing, f"not in the wheel (add them to [tool.setuptools.package-data] in pyproject.toml): {missing}"


def test_wheel_holds_what_the_connector_reads_at_run_time(dist):
    """Named one by one, so an empty source folder cannot make the check above pass vacuously."""
    shipped = _wheel_names(dist["wheel"])
    tables = {f"connector_core/codes/tables/{p.name}" for p in (REPO / "connector_core/codes/tables").glob("*.json")}
    migrations = {f"connector_core/ledger/migrations/versions/{p.name}" for p in (REPO / "connector_core/ledger/migrations/versions").glob("*.py")}
    demo_invoices = {f"connector_core/demo/invoices/{p.name}" for p in (REPO / "config/demo/invoices").glob("*.csv")}
    assert tables and migrations and demo_invoices
    needed = tables | migrations | demo_invoices | {
        "connector_core/ledger/migrations/env.py",
        "connector_core/ledger/migrations/script.py.mako",
        "connector_core/demo/demo.toml",
    }
    assert needed <= shipped, sorted(needed - shipped)


def test_wheel_installs_nothing_but_the_packages_and_its_metadata(dist):
    tops = {name.split("/", 1)[0] for name in _wheel_names(dist["wheel"])}
    assert tops == set(PACKAGE_ROOTS) | {f"myinvois_connector-{PROJECT['version']}.dist-info"}


def test_wheel_declares_the_command_the_builtin_plugins_and_the_extras(dist):
    info = f"myinvois_connector-{PROJECT['version']}.dist-info"
    with zipfile.ZipFile(dist["wheel"]) as archive:
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    assert "myinvois-connector = connector_core.cli:main" in entry_points
    group = entry_points.split("[myinvois_connector]", 1)[1].split("\n[", 1)[0]
    assert {line.split("=")[0].strip() for line in group.strip().splitlines()} == {"csv", "sql", "odoo"}
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.MULTILINE))
    assert {"postgres", "mysql", "redis", "all", "dev"} <= extras


def test_sdist_carries_the_example_configurations_the_docs_refer_to(dist):
    with tarfile.open(dist["sdist"]) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    needed = {"pyproject.toml", "README.md", "config/demo.toml", "config/sql/demo-data.sql"}
    needed |= {f"config/demo/invoices/{p.name}" for p in (REPO / "config/demo/invoices").glob("*.csv")}
    assert needed <= names, sorted(needed - names)


# The demo the package ships -------------------------------------------------------------------

PATH_KEYS = {("state_dir",), *(("sources", "demo", "options", key) for key in ("seed_dir", "inbox", "archive", "outbox"))}


def _without_paths(data: dict, prefix: tuple = ()) -> dict:
    return {
        key: _without_paths(value, (*prefix, key)) if isinstance(value, dict) else value
        for key, value in data.items()
        if (*prefix, key) not in PATH_KEYS
    }


def test_packaged_demo_is_the_repositorys_demo():
    """connector_core/demo/ is a copy of config/demo.toml and config/demo/invoices/: a change to
    one must be made to the other (the paths excepted), or wheel users get another demo."""
    packaged = REPO / "connector_core" / "demo"
    repo_invoices = {p.name: p.read_bytes() for p in (REPO / "config/demo/invoices").glob("*.csv")}
    packaged_invoices = {p.name: p.read_bytes() for p in (packaged / "invoices").glob("*.csv")}
    assert packaged_invoices == repo_invoices, "copy config/demo/invoices/*.csv to connector_core/demo/invoices/"
    repo_config = tomllib.loads((REPO / "config/demo.toml").read_text("utf-8"))
    packaged_config = tomllib.loads((packaged / "demo.toml").read_text("utf-8").replace("@FOLDER@", "/x"))
    assert _without_paths(packaged_config) == _without_paths(repo_config), "make connector_core/demo/demo.toml say what config/demo.toml says"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, check=False, capture_output=True, text=True, timeout=180, env=dict(os.environ))


def test_demo_command_writes_a_demo_that_runs_from_any_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    written = _cli("demo", "my demo", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    folder = tmp_path / "my demo"
    assert sorted(p.name for p in (folder / "invoices").iterdir()) == sorted(p.name for p in (REPO / "config/demo/invoices").iterdir())
    # The command it prints is the one to type, quoted for the shell.
    assert "myinvois-connector --config 'my demo/demo.toml' run --once" in written.stdout

    ran = _cli("--config", str(folder / "demo.toml"), "run", "--once", cwd=elsewhere)
    assert ran.returncode in (0, 3), ran.stderr  # 3: the two invoices the demo refuses on purpose
    assert "13 invoice(s) fetched" in ran.stdout
    with (folder / "var/outbox/results.csv").open(encoding="utf-8", newline="") as handle:
        statuses = sorted(row["status"] for row in csv.DictReader(handle))
    assert statuses == ["locally_invalid"] * 2 + ["valid"] * 11
    # Everything the run wrote is inside the demo folder, nothing in the working directory.
    assert list(elsewhere.iterdir()) == []


def test_demo_command_leaves_an_existing_demo_as_it_is(tmp_path):
    assert _cli("demo", "demo", cwd=tmp_path).returncode == 0
    config = tmp_path / "demo" / "demo.toml"
    config.write_text(config.read_text() + "\n# the user's own note\n")
    again = _cli("demo", "demo", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already exists; left as it is" in again.stdout
    assert config.read_text().endswith("# the user's own note\n")


def test_demo_command_says_in_one_line_when_it_cannot_write_the_folder(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    refused = _cli("demo", "a-file/demo", cwd=tmp_path)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: cannot write the demo into a-file/demo")


# Install commands in the docs -----------------------------------------------------------------

DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
PIP_INSTALL = re.compile(r"pip install\s+(?P<args>[^`#;&|\n]+)")
#: Packages of other projects that docs may tell a user to install from PyPI by name.
THIRD_PARTY = {"build"}


def _install_commands() -> list[tuple[str, str]]:
    """(where, argument) for every requirement a ``pip install`` in the docs names."""
    found = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text("utf-8").splitlines(), 1):
            for match in PIP_INSTALL.finditer(line):
                where = f"{doc.relative_to(REPO)}:{number}"
                for arg in shlex.split(match.group("args")):
                    if not arg.startswith("-"):
                        found.append((where, arg))
    return found


def _extras(requirement: str) -> set[str]:
    match = re.search(r"\[([^\]]*)\]", requirement)
    return {e.strip() for e in match.group(1).split(",")} if match else set()


def test_every_install_command_in_the_docs_names_something_that_resolves(dist):
    known_extras = set(PROJECT["optional-dependencies"])
    repository = PROJECT.get("urls", {}).get("Repository")
    commands = _install_commands()
    problems = []
    for where, arg in commands:
        if not _extras(arg) <= known_extras:
            problems.append(f"{where}: {arg}: unknown extra(s) {sorted(_extras(arg) - known_extras)}")
        name, _, url = (part.strip() for part in arg.partition("@"))
        if url:
            if re.sub(r"\[.*", "", name) != PROJECT["name"]:
                problems.append(f"{where}: {arg}: a direct reference must name {PROJECT['name']}")
            if url.startswith("git+") and (repository is None or not url.startswith(f"git+{repository}")):
                problems.append(f"{where}: {arg}: not the repository in pyproject.toml ({repository})")
            elif url.startswith("file:") and not url.endswith(dist["wheel"].name):
                problems.append(f"{where}: {arg}: the wheel built from this checkout is {dist['wheel'].name}")
            elif not url.startswith(("git+", "file:")):
                problems.append(f"{where}: {arg}: neither a wheel file nor the repository")
        elif re.sub(r"\[.*", "", arg).endswith(".whl"):
            if not re.sub(r"\[.*", "", arg).endswith(dist["wheel"].name):
                problems.append(f"{where}: {arg}: the wheel built from this checkout is {dist['wheel'].name}")
        elif arg.startswith((".", "/")):
            pass  # a checkout (or a plugin's folder): the command runs where the docs say to cd
        elif re.sub(r"\[.*", "", arg) not in THIRD_PARTY:
            problems.append(f"{where}: {arg}: not on PyPI; install from a checkout or the wheel")
    assert not problems, "\n".join(problems)
    # The check must have seen the forms getting-started.md documents, or it checked nothing.
    assert any(arg.startswith(".") for _, arg in commands)
    assert any(dist["wheel"].name in arg and "postgres" in _extras(arg) for _, arg in commands)


def test_the_documented_wheel_form_is_one_pip_accepts(dist, tmp_path):
    """``myinvois-connector[postgres] @ file://…whl`` names the wheel's own project: pip checks it
    against the wheel's metadata. Offline and without dependencies: the clean install is in .ci/run."""
    requirement = f"{PROJECT['name']}[postgres] @ {dist['wheel'].as_uri()}"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index", "--ignore-installed", "--report", str(tmp_path / "report.json"), requirement],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"Would install {PROJECT['name']}-{PROJECT['version']}" in done.stdout


def test_ci_ends_with_the_readmes_test_command():
    """What CI runs last is what README.md tells a contributor to run (pip's -q aside), so the
    Quick start's test command is proven on every run."""
    readme = (REPO / "README.md").read_text("utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.+?)\n```", quick_start)
    assert len(commands) == 2, commands
    ci_lines = [line for line in (REPO / ".ci/run").read_text("utf-8").splitlines() if line.strip()]
    assert ci_lines[-1].replace(" -q ", " ") == commands[1]
