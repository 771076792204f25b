"""``myinvois-connector simulator``: serve the simulator on loopback until interrupted.

Settings come from an optional TOML file (the SimulatorConfig fields) and are then
overridden by whichever command-line options were given.
"""

from __future__ import annotations

import signal
import sys
import tomllib
from pathlib import Path

import click
from pydantic import ValidationError

from .config import SimulatorConfig

#: Command-line option -> the SimulatorConfig field it sets (section.field).
OPTION_FIELDS = {
    "rate_profile": "rate_limits.profile",
    "window_seconds": "rate_limits.window_seconds",
    "token_lifetime": "token_lifetime_seconds",
    "validation_delay": "validation.delay_seconds",
    "per_document_delay": "validation.per_document_seconds",
    "latency_ms": "faults.latency_ms",
    "latency_jitter_ms": "faults.latency_jitter_ms",
    "error_rate": "faults.error_rate",
    "spurious_429_rate": "faults.spurious_429_rate",
    "lost_response_rate": "faults.lost_response_rate",
    "revoke_rate": "faults.revoke_rate",
    "slow_validation_rate": "faults.slow_validation_rate",
    "slow_validation_seconds": "faults.slow_validation_seconds",
    "search_lag_seconds": "faults.search_lag_seconds",
    "seed": "seed",
    "overall_status_style": "overall_status_style",
    "lifecycle_window_seconds": "lifecycle_window_seconds",
}


def load_config(path: Path | None, overrides: dict) -> SimulatorConfig:
    """The TOML file's settings (if any), with ``{"section.field": value}`` overrides; None = not given."""
    data: dict = {}
    if path is not None:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.rpartition(".")
        target = data
        if section:
            target = data.setdefault(section, {})
        target[key] = value
    return SimulatorConfig.model_validate(data)


def config_from_options(config_path: Path | None, options: dict) -> SimulatorConfig:
    """The configuration the command line asks for: the file, then each option that was given."""
    return load_config(config_path, {OPTION_FIELDS[name]: value for name, value in options.items()})


def banner(config: SimulatorConfig, base_url: str) -> str:
    lines = [
        f"MyInvois simulator listening on {base_url}",
        f"  identity: {base_url}/connect/token    API: {base_url}/api/v1.0/...",
        f"  rate limits: {config.rate_limits.profile} (window {config.rate_limits.window_seconds:g} s); "
        f"validation {config.validation.delay_seconds:g} s + {config.validation.per_document_seconds:g} s/document",
        f"  after Valid: cancel within {config.cancellation_window_seconds():g} s, "
        f"reject within {config.rejection_window_seconds():g} s",
        "  demo credentials (client_id / client_secret -> TIN, BRN, name):",
    ]
    for taxpayer in config.taxpayers:
        lines.append(
            f"    taxpayer     {taxpayer.client_id} / {taxpayer.client_secret} -> "
            f"{taxpayer.tin}, {taxpayer.brn}, {taxpayer.name}"
        )
    for intermediary in config.intermediaries:
        lines.append(
            f"    intermediary {intermediary.client_id} / {intermediary.client_secret} -> "
            f"acts for {', '.join(intermediary.acts_for)} (send header onbehalfof: <TIN>)"
        )
    lines.append(
        f"  controls: GET {base_url}/_simulator/stats, POST /_simulator/reset, "
        "POST /_simulator/faults, POST /_simulator/revoke-tokens, GET|POST /_simulator/windows, "
        "POST /_simulator/portal/cancel/<uuid>, POST /_simulator/portal/reject/<uuid>"
    )
    return "\n".join(lines)


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)


@click.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (keep it loopback).")
@click.option("--port", default=8085, show_default=True, type=int, help="Port; 0 picks a free one.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML file with SimulatorConfig fields (see docs/simulator.md).",
)
@click.option("--rate-profile", type=click.Choice(["production", "sandbox", "off"]), help="Rate-limit table.")
@click.option("--window-seconds", type=float, help="Rate-limit window length (default 60; shorter compresses time).")
@click.option("--token-lifetime", type=int, help="Token lifetime in seconds (default 3600).")
@click.option("--validation-delay", type=float, help="Seconds before a submission's first document is decided.")
@click.option("--per-document-delay", type=float, help="Extra validation seconds per document.")
@click.option("--latency-ms", type=float, help="Fixed latency added to every API call.")
@click.option("--latency-jitter-ms", type=float, help="Random latency 0..N ms added to every API call.")
@click.option("--error-rate", type=float, help="Share of API calls answered 500/503 unprocessed.")
@click.option("--spurious-429-rate", type=float, help="Share of API calls answered 429 although under the limit.")
@click.option("--lost-response-rate", type=float, help="Share of API calls processed whose answer is lost.")
@click.option("--revoke-rate", type=float, help="Share of authenticated calls whose token is revoked (401).")
@click.option("--slow-validation-rate", type=float, help="Share of submissions validated slowly.")
@click.option("--slow-validation-seconds", type=float, help="Extra validation time of a slow submission.")
@click.option(
    "--search-lag-seconds",
    type=float,
    help="Seconds before a received document shows in Search / Recent Documents (indexing lag).",
)
@click.option(
    "--lifecycle-window-seconds",
    type=float,
    help="Compress the 72-hour cancellation and rejection windows to this many seconds.",
)
@click.option("--seed", type=int, help="Seed of the fault and id random sequences.")
@click.option(
    "--overall-status-style",
    type=click.Choice(["documented", "title", "pascal"]),
    help="Spelling of overallStatus ('in progress' / 'In Progress' / 'InProgress').",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def simulator_command(host: str, port: int, config_path: Path | None, log_level: str, **options) -> None:
    """Run the local MyInvois simulator (identity + API on one base URL)."""
    import uvicorn

    from .app import create_app
    from .server import quiet_lost_responses, uvicorn_config

    try:
        config = config_from_options(config_path, options)
    except (ValidationError, tomllib.TOMLDecodeError) as exc:
        click.echo(f"error: the simulator configuration is not valid: {exc}", err=True)
        sys.exit(2)
    app = create_app(config)
    quiet_lost_responses()
    server = uvicorn.Server(uvicorn_config(app, host, port, log_level=log_level))

    # Print the banner once the socket is bound, so port 0 shows the real port.
    original_startup = server.startup

    async def startup(sockets=None):
        await original_startup(sockets)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()
            click.echo(banner(config, f"http://{host}:{bound[1]}"), err=False)
            sys.stdout.flush()

    server.startup = startup  # type: ignore[method-assign]  # uvicorn has no hook for "bound"
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again with the
    # handlers it found: these make that end an exit 0, not a death by signal or a traceback.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_cleanly)
    try:
        server.run()
    except SystemExit as exc:
        # uvicorn exits 3 when it cannot listen (the address is taken, or not this host's), which
        # is the connector's "needs attention": say it as what it is, a usage error (2).
        if exc.code in (0, None):
            raise
        click.echo(f"error: the simulator cannot listen on {host}:{port}; choose another --host/--port.", err=True)
        sys.exit(2)
