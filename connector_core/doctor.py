"""``myinvois-connector doctor``: is this installation ready to run, and if not, what to fix.

Each check reports ok, a warning or a failure with the fix, and the checks go on after a
failure wherever they still can, so one run names every problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    message: str

    def line(self) -> str:
        mark = {OK: "ok  ", WARN: "warn", FAIL: "FAIL"}[self.status]
        return f"[{mark}] {self.check}: {self.message}"


def diagnose(config: Path | None, *, login: bool = True) -> Iterator[Finding]:
    from connector_core.settings import ConfigError, load_settings

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        for problem in exc.problems:
            yield Finding("configuration", FAIL, problem)
        if config is not None and Path(config).exists():
            yield from _check_raw(config, exc.problems)
        return
    yield Finding("configuration", OK, f"{config or 'defaults'} read; environment {settings.environment.value}")

    sources = yield from _check_plugins(settings)
    yield from _check_ledger(settings)
    if not settings.profiles:
        return
    yield from _check_api(settings, login=login, sources=sources)


def _check_raw(config: Path, reported: list[str]):
    """The settings did not load; still check what can be checked from the file itself, so
    one run names every problem (pydantic stops before cross-references when fields fail)."""
    from types import SimpleNamespace

    from connector_core.plugins import PluginError, PluginHost
    from connector_core.settings import ConfigError, read_toml

    try:
        raw = read_toml(Path(config))
    except ConfigError:
        return
    profiles = raw.get("profiles") or {}
    try:
        host = PluginHost()
    except PluginError as exc:
        yield Finding("plugins", FAIL, str(exc))
        host = None
    for name, source in (raw.get("sources") or {}).items():
        if not isinstance(source, dict):
            continue
        profile = source.get("profile")
        message = f"sources.{name}.profile: no profile named {profile!r} (profiles: {', '.join(sorted(profiles)) or 'none'})"
        if profile not in profiles and message not in reported:
            yield Finding("configuration", FAIL, message)
        kind = source.get("kind")
        if host is not None and kind not in host.kinds:
            yield Finding(
                "sources",
                FAIL,
                f"sources.{name}.kind: no installed plugin provides kind {kind!r} (installed kinds: {', '.join(sorted(host.kinds))})",
            )
    ledger_url = (raw.get("ledger") or {}).get("url")
    if isinstance(ledger_url, str) and not ledger_url.startswith("$"):
        state_dir = Path(raw.get("state_dir", "var"))
        fake = SimpleNamespace(ledger_url=lambda: ledger_url, state_dir=state_dir)
        yield from _check_ledger(fake)


def _check_plugins(settings):
    from connector_core.plugins import PluginError, PluginHost
    from connector_core.runtime import build_sources

    try:
        host = PluginHost()
    except PluginError as exc:
        yield Finding("plugins", FAIL, str(exc))
        return {}
    for name, error in host.failed_plugins.items():
        yield Finding("plugins", FAIL, f"plugin {name!r} failed to start: {error}; reinstall or update it, or exclude it with MYINVOIS_PLUGINS")
    yield Finding("plugins", OK, f"source kinds available: {', '.join(sorted(host.kinds)) or 'none'}")
    sources, problems = build_sources(settings, host)
    for problem in problems:
        yield Finding("sources", FAIL, problem)
    for source in sources.values():
        yield Finding("sources", OK, f"{source.name}: kind {source.kind}, profile {source.profile}")
    return sources


def _check_ledger(settings):
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from connector_core.ledger import migrate

    url = settings.ledger_url()
    shown = make_url(url).render_as_string(hide_password=True)
    if make_url(url).get_backend_name() == "sqlite" and not Path(make_url(url).database or "").exists():
        yield Finding("ledger", OK, f"{shown} does not exist yet; the first run creates it")
        return
    try:
        engine = create_engine(url)
        try:
            current = migrate.current_revision(engine)
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any driver error is the finding
        yield Finding("ledger", FAIL, f"cannot open {shown}: {type(exc).__name__}: {str(exc).splitlines()[0]}; check ledger.url and that the database server runs")
        return
    head = migrate.head_revision()
    if current == head:
        yield Finding("ledger", OK, f"{shown} at schema revision {current}")
    elif current is None:
        yield Finding("ledger", WARN, f"{shown} has no connector schema yet; the first run creates it (revision {head})")
    else:
        yield Finding("ledger", WARN, f"{shown} at schema revision {current}; the next run upgrades it to {head} (back it up first)")


def _check_api(settings, *, login: bool, sources):
    import httpx

    from connector_core.api import ApiError, Credentials, MyInvoisClient, RateBackendUnavailable, RatePolicy, TokenCache

    simulator = None
    api_url, identity_url, _ = settings.base_urls()
    if settings.uses_inprocess_simulator:
        from connector_core.simulator import SimulatorConfig, run_in_thread

        simulator = run_in_thread(SimulatorConfig(**settings.simulator))
        api_url = identity_url = simulator.base_url
        yield Finding("api", OK, f"environment 'simulator': started the in-process simulator at {api_url} for this check")
    try:
        try:
            with httpx.Client(timeout=settings.retry.timeout(), verify=settings.verify_tls) as http:
                response = http.get(api_url)
            yield Finding("api", OK, f"{api_url} answers (HTTP {response.status_code})")
        except httpx.HTTPError as exc:
            yield Finding(
                "api", FAIL, f"{api_url} cannot be reached ({type(exc).__name__}); check the network, proxy and firewall, or api_base_url"
            )
            return
        if not login:
            return
        rate_policy = RatePolicy(settings.rate_limits)
        try:
            for name, profile in settings.profiles.items():
                credentials = Credentials(client_id=profile.client_id, client_secret=profile.client_secret, on_behalf_of=profile.on_behalf_of)
                client = MyInvoisClient(
                    api_url,
                    identity_url,
                    credentials,
                    rate_policy=rate_policy,
                    retry_settings=settings.retry,
                    token_cache=TokenCache(settings.token_cache_path()) if simulator is None else TokenCache(),
                )
                try:
                    client.login()
                    who = f" on behalf of {profile.on_behalf_of}" if profile.on_behalf_of else ""
                    yield Finding("credentials", OK, f"profile {name}: MyInvois accepted client id {profile.client_id}{who}")
                except RateBackendUnavailable as exc:
                    # Nothing reached MyInvois: the credentials are untested, the limiter is the problem.
                    yield Finding("rate limits", FAIL, f"profile {name}: login not attempted: {exc}")
                except ApiError as exc:
                    yield Finding(
                        "credentials",
                        FAIL,
                        f"profile {name}: login refused ({exc}); check client_id and client_secret in the MyInvois portal "
                        "('View and Register ERP'), and on_behalf_of for an intermediary",
                    )
                finally:
                    client.close()
        finally:
            rate_policy.close()
    finally:
        if simulator is not None:
            simulator.stop()
