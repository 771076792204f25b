"""The ``myinvois-connector`` command line.

Expected failures (bad configuration, a broken plugin, refused credentials) print what to fix
and exit non-zero without a traceback; only the unexpected prints one.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from connector_core import __version__
from connector_core.exitcodes import ExitCode

log = logging.getLogger("connector_core.cli")

EXIT_CONFIG = ExitCode.CONFIG


class _Env:
    def __init__(self, config: Path | None, log_level: str | None, log_format: str | None) -> None:
        self.config = config
        self.log_level = log_level
        self.log_format = log_format

    def settings(self):
        from connector_core.settings import ConfigError, load_settings

        try:
            settings = load_settings(self.config)
        except ConfigError as exc:
            _fail_config(exc)
        self._configure_logging(settings)
        return settings

    def _configure_logging(self, settings) -> None:
        from connector_core.observability.logs import configure_logging
        from connector_core.observability.redaction import register_secret

        obs = settings.observability
        # Libraries (filelock, httpx, sqlalchemy...) log only warnings, unless debug_loggers names them.
        configure_logging(
            self.log_level or obs.log_level,
            self.log_format or obs.log_format,
            stream=sys.stderr,
            debug_loggers=obs.debug_loggers,
        )
        # "maximum number of running instances reached" is max_instances=1 doing its job when a
        # cycle outlasts its interval; job errors reach our own listener, not this logger.
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        # Every secret we know of is masked in any log line that might quote it.
        for profile in settings.profiles.values():
            register_secret(profile.client_secret)
        if settings.ledger.url is not None:
            register_secret(_password_of(settings.ledger.url.get_secret_value()))

    def connector(self, settings, *, monitoring=None):
        from connector_core.ledger.migrate import MigrationInProgress
        from connector_core.observability.redaction import register_secret
        from connector_core.plugins import PluginError
        from connector_core.runtime import Connector
        from connector_core.settings import ConfigError

        try:
            connector = Connector(settings, monitoring=monitoring)
        except ConfigError as exc:
            _fail_config(exc)
        except (PluginError, MigrationInProgress) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_CONFIG)
        for source in connector.ctx.sources.values():
            for value in _secret_values(source.options):
                register_secret(value)
        return connector


def _password_of(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password
    except Exception:
        return None


def _secret_values(model) -> list[str]:
    from pydantic import BaseModel, SecretStr

    out = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            out.append(value.get_secret_value())
            # A database URL's password alone can surface too (a driver's message, a URL
            # rendered by a library): mask it on its own, not only the whole URL.
            password = _password_of(value.get_secret_value()) if "://" in value.get_secret_value() else None
            if password:
                out.append(password)
        elif isinstance(value, BaseModel):
            out.extend(_secret_values(value))
    return out


def _fail_config(exc) -> None:
    where = f" in {exc.path}" if getattr(exc, "path", None) else ""
    click.echo(f"The configuration{where} cannot be used:", err=True)
    for problem in exc.problems:
        click.echo(f"  - {problem}", err=True)
    click.echo("Every key is described in docs/configuration.md.", err=True)
    sys.exit(EXIT_CONFIG)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="myinvois-connector")
@click.option(
    "--config",
    "-c",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="MYINVOIS_CONFIG",
    help="TOML configuration file (or $MYINVOIS_CONFIG).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Overrides observability.log_level.",
)
@click.option("--log-format", type=click.Choice(["auto", "text", "json"]), help="Overrides observability.log_format.")
@click.pass_context
def main(ctx: click.Context, config: Path | None, log_level: str | None, log_format: str | None) -> None:
    """Take invoices out of an ERP, have them validated by LHDN MyInvois, write the outcome back."""
    ctx.obj = _Env(config, log_level, log_format)


@main.command()
@click.option(
    "--once", is_flag=True, help="Run cycles until every fetched document is final, print a summary and exit."
)
@click.option("--json", "as_json", is_flag=True, help="With --once: print the summary as JSON.")
@click.pass_obj
def run(env: _Env, once: bool, as_json: bool) -> None:
    """Run the connector: as a daemon until SIGTERM/Ctrl-C, or with --once until done."""
    from connector_core.memory import limit_malloc_arenas
    from connector_core.observability.wiring import Monitoring

    limit_malloc_arenas()  # before the connector starts its threads

    settings = env.settings()
    monitoring = Monitoring(settings)
    try:
        connector = env.connector(settings, monitoring=monitoring)
        _tune_gc()
        try:
            if once:
                _run_once(connector, as_json)
            else:
                from connector_core.scheduler import run_daemon

                run_daemon(connector, on_job_error=monitoring.cycle_failed)
        finally:
            connector.close()
    finally:
        monitoring.close()


#: Allocations between young-generation collections (CPython's default: 700). A cycle allocates
#: hundreds of thousands of short-lived objects per page (rows, models, statement parameters)
#: that reference counting frees; with the default, the collector ran every few hundred of them
#: and spent about 6% of the run's CPU finding almost no cycles. The older generations keep
#: their default ratios (10, 10).
GC_YOUNG_THRESHOLD = 10_000


def _tune_gc() -> None:
    """Collect less often, and never again look at what start-up made.

    Called once the connector is set up: ``gc.freeze`` moves every object alive then (modules,
    settings, the ledger's compiled statements) out of the collector's reach, so a full
    collection walks only what the run itself keeps. Nothing of it is freed later anyway."""
    import gc

    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _run_once(connector, as_json: bool) -> None:
    import signal

    def request_stop(signum, _frame) -> None:
        connector.stop_event.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    progress = _Progress(enabled=not as_json)
    summary = connector.run_once(progress=progress)
    progress.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "finished": summary.finished,
                    "problem": summary.problem,
                    "duration_s": round(summary.duration_s, 2),
                    "fetched": summary.fetched,
                    "submissions": summary.submissions,
                    "reported": summary.reported,
                    "counts": summary.counts,
                    "errors": summary.latest_errors,
                    "needs_attention": summary.needs_attention,
                    "source_problems": summary.source_problems,
                    "myinvois_problem": summary.myinvois_problem,
                    "exit_code": int(summary.exit_code()),
                },
                indent=2,
            )
        )
    else:
        _print_summary(summary)
    sys.exit(int(summary.exit_code()))


class _Progress:
    """A progress line for long runs: on a terminal it rewrites itself, elsewhere a line every 10 s."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.started = time.monotonic()
        self.shown = False

    def __call__(self, read_counts: Callable[[], dict[str, int]]) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < (0.5 if self.tty else 10.0) or now - self.started < 2.0:
            return
        self.last = now
        counts = read_counts()
        total = sum(counts.values())
        from connector_core.contract import FINAL_STATES

        done = sum(counts.get(s.value, 0) for s in FINAL_STATES)
        parts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(counts.items()))
        line = f"[{now - self.started:5.0f}s] {done}/{total} final: {parts}"
        if self.tty:
            click.echo("\r" + line.ljust(100), nl=False, err=True)
        else:
            click.echo(line, err=True)
        self.shown = True

    def close(self) -> None:
        if self.enabled and self.tty and self.shown:
            click.echo("", err=True)


def _print_summary(summary) -> None:
    state = "Done" if summary.finished else "Stopped before every document was final"
    click.echo(
        f"{state} in {summary.duration_s:.1f} s: {summary.fetched} invoice(s) fetched, "
        f"{summary.submissions} submission(s), {summary.reported} result(s) written back."
    )
    if summary.problem:
        click.echo(f"Problem: {summary.problem}")
    for line in summary.source_problems:
        click.echo(f"Source failed: {line}")
    # By invoice (its latest version): a corrected invoice is what its latest version is.
    click.echo("Invoices by state:")
    for state_name, n in sorted(summary.counts.items()):
        click.echo(f"  {state_name.replace('_', ' '):<16} {n}")
    if summary.latest_errors:
        click.echo("Errors to correct in the ERP:")
        for err in summary.latest_errors:
            click.echo(f"  {err['invoice']} (version {err['version']}, {err['state'].replace('_', ' ')}):")
            for message in err["errors"]:
                click.echo(f"    - {message}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--errors", "error_count", default=10, show_default=True, help="How many of the latest errors to show.")
@click.option("--by-version", is_flag=True, help="Also count every version of corrected invoices.")
@click.pass_obj
def status(env: _Env, as_json: bool, error_count: int, by_version: bool) -> None:
    """Invoices by state, API counters (429s, logins) and the errors to correct, from the ledger."""
    from sqlalchemy.exc import SQLAlchemyError

    from connector_core.ledger import Ledger, NoLedgerYet

    settings = env.settings()
    try:
        # Only reads: a missing ledger is reported, never created (nor a folder for it).
        ledger = Ledger(settings.ledger_url(), create=False)
    except NoLedgerYet:
        where = _describe_url(settings.ledger_url())
        if as_json:
            click.echo(json.dumps({"ledger": where, "exists": False}, indent=2))
        else:
            click.echo(f"No ledger yet at {where}: nothing has run with this configuration; `run` creates it.")
        return
    except SQLAlchemyError as exc:
        # The database is down or refuses us: an expected failure, one line naming ledger.url.
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        click.echo(
            f"error: cannot open the ledger {_describe_url(settings.ledger_url())}: {detail}; "
            "check ledger.url and that the database server runs",
            err=True,
        )
        sys.exit(ExitCode.CONFIG)
    try:
        data: dict[str, Any] = {
            "ledger": _describe_url(settings.ledger_url()),
            "exists": True,
            # Each invoice once, by the state of its latest version; every version below.
            "documents": ledger.status.counts_by_state(),
            "documents_by_version": ledger.status.version_counts_by_state(),
            "unfinished": ledger.status.unfinished_count(),
            "counters": ledger.journal.counter_values(),
            "latest_errors": ledger.status.latest_errors(error_count),
            "incidents": ledger.journal.recent_incidents(error_count),
            "submissions": ledger.status.submission_counts(),
            "escalated_submissions": ledger.status.escalated_submissions(error_count),
            "writeback_refused": ledger.writeback.failing_outcomes(error_count),
            # Invoice JSON and sent bytes still kept; final ones go after ledger.keep_bodies_days.
            "document_bodies": {**ledger.bodies.stored(), "keep_days": settings.ledger.keep_bodies_days},
        }
        oldest = ledger.status.oldest_pending_fetched_at()
        data["oldest_unfinished_fetched_at"] = oldest.isoformat(timespec="seconds") if oldest else None
    finally:
        ledger.close()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"Ledger: {data['ledger']}")
    click.echo("Invoices by state:" if data["documents"] else "Invoices: none yet")
    for state_name, n in sorted(data["documents"].items()):
        click.echo(f"  {state_name.replace('_', ' '):<16} {n}")
    if by_version and data["documents_by_version"]:
        click.echo("Versions by state (a corrected invoice counts once per version):")
        for state_name, n in sorted(data["documents_by_version"].items()):
            click.echo(f"  {state_name.replace('_', ' '):<16} {n}")
    click.echo(f"Not yet final or not yet written back: {data['unfinished']}")
    bodies = data["document_bodies"]
    click.echo(
        f"Invoice JSON and sent bytes kept for {bodies['kept']} document(s); a final document's are pruned "
        f"{bodies['keep_days']:g} day(s) after it became final (ledger.keep_bodies_days)"
    )
    if data["oldest_unfinished_fetched_at"]:
        click.echo(f"Oldest unfinished document fetched at: {data['oldest_unfinished_fetched_at']}")
    counters = data["counters"]
    click.echo(
        f"API: {counters.get('logins', 0)} login(s), {counters.get('rate_limited_429', 0)} rate-limit answer(s) (429), "
        f"{counters.get('submissions_in_doubt', 0)} submission(s) in doubt, {counters.get('plugin_errors', 0)} plugin error(s)"
    )
    for name, value in sorted(counters.items()):
        if name.startswith("rate_limited_429."):
            click.echo(f"  429 on {name.split('.', 1)[1]}: {value}")
    summarised = {"logins", "rate_limited_429", "submissions_in_doubt", "plugin_errors"}
    others = {
        k: v for k, v in sorted(counters.items()) if k not in summarised and not k.startswith("rate_limited_429.")
    }
    if others:
        click.echo("Other counters: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in others.items()))
    if data["escalated_submissions"]:
        click.echo("Escalated (in doubt too long; the connector stopped searching and never re-sends them):")
        for sub in data["escalated_submissions"]:
            click.echo(
                f"  submission {sub['submission']} of {sub['profile']}, first sent {sub['first_sent']}, "
                f"{sub['documents']} document(s): {', '.join(sub['invoices'])}: {sub['reason']}; "
                "look them up on the MyInvois portal"
            )
    if data["writeback_refused"]:
        click.echo("Write-back refused by the ERP (retried with back-off; the others went on):")
        for out in data["writeback_refused"]:
            click.echo(
                f"  {out['invoice']} v{out['version']} ({out['state']}) of source {out['source']}, row {out['row']}: "
                f"{out['attempts']} attempt(s), next {out['next_try']}: {out['error']}"
            )
    if data["latest_errors"]:
        click.echo("Errors to correct in the ERP:")
        for err in data["latest_errors"]:
            click.echo(f"  {err['invoice']} v{err['version']} ({err['state']}): {' | '.join(err['errors'])}")
    if data["incidents"]:
        click.echo("Latest incidents:")
        for inc in data["incidents"]:
            click.echo(
                f"  {inc['at']} {inc['kind']}{' [' + inc['subject'] + ']' if inc['subject'] else ''}: {inc['message']}"
            )


def _describe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json: bool) -> None:
    """The loaded plugins, the hooks each implements and the source kinds each provides."""
    from connector_core.plugins import PluginError, PluginHost

    try:
        host = PluginHost()
    except PluginError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    described = host.describe()
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    for plugin in described:
        dist = f" ({plugin['distribution']})" if plugin["distribution"] else ""
        click.echo(f"{plugin['name']}: {plugin['module']}{dist}")
        if plugin["kinds"]:
            for kind in plugin["kinds"]:
                click.echo(f"  source kind: {kind} - {host.kinds[kind].description}")
        click.echo(f"  hooks: {', '.join(plugin['hooks']) or 'none'}")
        if plugin["error"]:
            click.echo(f"  error: {plugin['error']}")


@main.command()
@click.option("--no-login", is_flag=True, help="Skip the credential check (which makes one login per profile).")
@click.pass_obj
def doctor(env: _Env, no_login: bool) -> None:
    """Check the configuration, plugins, ledger, API and credentials; say what to fix."""
    from connector_core.doctor import FAIL, diagnose
    from connector_core.exitcodes import most_severe
    from connector_core.observability.logs import configure_logging

    configure_logging(env.log_level or "WARNING", env.log_format or "text", stream=sys.stderr)
    failures = 0
    codes = []
    for finding in diagnose(env.config, login=not no_login):
        click.echo(finding.line())
        if finding.status == FAIL:
            failures += 1
            codes.append(finding.exit_code)
    if failures:
        click.echo(f"{failures} problem(s) to fix.")
        sys.exit(int(most_severe(*codes)))
    click.echo("Ready to run.")


def _register_subcommands() -> None:
    from connector_core.demo.cli import demo_command
    from connector_core.simulator.cli import simulator_command

    main.add_command(simulator_command)
    main.add_command(demo_command)
    _register_invoice_commands()
    _register_cancel_command()


def _register_invoice_commands() -> None:
    """Commands about one invoice, or a period of them (connector_core/commands/)."""
    from connector_core.commands.export import export_command
    from connector_core.commands.retry import retry_command
    from connector_core.commands.show import history_command, show_command

    for command in (show_command, history_command, retry_command, export_command):
        main.add_command(command)


def _register_cancel_command() -> None:
    from connector_core.commands.cancel import cancel_command

    main.add_command(cancel_command)


_register_subcommands()


if __name__ == "__main__":
    main()
