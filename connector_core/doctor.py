"""``myinvois-connector doctor``: is this installation ready to run, and if not, what to fix.

Each check reports ok, a warning or a failure with the fix, and the checks go on after a
failure wherever they still can, so one run names every problem.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from connector_core.exitcodes import ExitCode

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    message: str
    #: What ``doctor`` exits with when this check fails (the most severe failure wins).
    exit_code: ExitCode = ExitCode.CONFIG

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
    _register_secrets(settings)

    sources, host = yield from _check_plugins(settings)
    yield from _check_urls(settings)
    yield from _check_paths(settings)
    yield from _check_sentry(settings)
    yield from _check_ledger(settings)
    if host is not None:
        yield from _check_sources(host, sources)
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
        message = (
            f"sources.{name}.profile: no profile named {profile!r} (profiles: {', '.join(sorted(profiles)) or 'none'})"
        )
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
        return {}, None
    for name, error in host.failed_plugins.items():
        yield Finding(
            "plugins",
            FAIL,
            f"plugin {name!r} failed to start: {error}; reinstall or update it, or exclude it with MYINVOIS_PLUGINS",
        )
    yield Finding("plugins", OK, f"source kinds available: {', '.join(sorted(host.kinds)) or 'none'}")
    sources, problems = build_sources(settings, host)
    for problem in problems:
        yield Finding("sources", FAIL, problem)
    for source in sources.values():
        yield Finding("sources", OK, f"{source.name}: kind {source.kind}, profile {source.profile}")
    return sources, host


def _register_secrets(settings) -> None:
    """Register every secret of ``settings`` (or of a source's options) for masking, as the
    daemon does for its logs: what a plugin's check says is masked before it is printed."""
    from pydantic import BaseModel, SecretStr
    from sqlalchemy.engine import make_url

    from connector_core.observability.redaction import register_secret

    def walk(value) -> None:
        if isinstance(value, SecretStr):
            register_secret(value)
            if "://" in value.get_secret_value():
                try:
                    register_secret(make_url(value.get_secret_value()).password)
                except Exception:
                    pass
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(settings)


def _check_sources(host, sources):
    """Each source's plugin connects and reads one page, and says whether write-back can work.
    Nothing of what it reads is recorded: doctor opens no ledger for it."""
    from connector_core.observability.redaction import redact_secrets
    from connector_core.plugins import HookFailed

    for source in sources.values():
        _register_secrets(source.options)
        check = f"source {source.name}"
        try:
            results = host.check_source(source)
        except HookFailed as failure:
            # A driver's or an ERP's message may quote a secret back: never print it.
            message = redact_secrets(f"{type(failure.error).__name__}: {failure.error}")
            yield Finding(check, FAIL, message, ExitCode.SOURCE_UNAVAILABLE)
            continue
        if results is None:
            yield Finding(
                check,
                WARN,
                f"plugin of kind {source.kind!r} offers no check_source; the first run shows whether it works",
            )
            continue
        for result in results:
            status = {"ok": OK, "fail": FAIL}.get(result.status, WARN)
            yield Finding(check, status, redact_secrets(result.message), ExitCode.SOURCE_UNAVAILABLE)


def _check_urls(settings):
    """Every URL the connector will call, as it will call them."""
    import httpx

    if settings.uses_inprocess_simulator:
        return
    api_url, identity_url, portal_url = settings.base_urls()
    for key, url in (("api_base_url", api_url), ("identity_base_url", identity_url), ("portal_base_url", portal_url)):
        try:
            parsed = httpx.URL(url or "")
            good = parsed.scheme in ("http", "https") and bool(parsed.host)
        except (httpx.InvalidURL, TypeError):
            good = False
        if good:
            yield Finding("urls", OK, f"{key}: {url}")
        else:
            yield Finding(
                "urls", FAIL, f"{key}: {url!r} is not an http(s) URL with a host; set it like https://api.example.com"
            )


def _writable_place(key: str, path: Path, what: str) -> Finding:
    """``path`` is a folder that exists and is writable, or can be created."""
    if path.exists():
        if path.is_dir() and os.access(path, os.W_OK | os.X_OK):
            return Finding("paths", OK, f"{key}: {path} is a writable folder")
        return Finding(
            "paths",
            FAIL,
            f"{key}: {path} is not a folder this user can write to ({what}); fix the path or its permissions",
        )
    parent = next((p for p in path.parents if p.exists()), Path("."))
    if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return Finding("paths", OK, f"{key}: {path} does not exist yet; the first run creates it")
    return Finding(
        "paths", FAIL, f"{key}: {path} does not exist and {parent} is not writable, so it cannot be created ({what})"
    )


def _check_paths(settings):
    from sqlalchemy.engine import make_url

    yield _writable_place(
        "state_dir", Path(settings.state_dir), "the ledger, token cache and rate-limit state live there"
    )
    token_cache = Path(settings.token_cache_path())
    if token_cache.exists() and not os.access(token_cache, os.R_OK | os.W_OK):
        yield Finding(
            "paths", FAIL, f"token_cache: {token_cache} cannot be read and written by this user; fix its permissions"
        )
    elif token_cache.parent != Path(settings.state_dir):
        yield _writable_place("token_cache", token_cache.parent, "the token cache file goes there")
    url = make_url(settings.ledger_url())
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        ledger_file = Path(url.database)
        if ledger_file.exists():
            if not os.access(ledger_file, os.R_OK | os.W_OK):
                yield Finding(
                    "paths", FAIL, f"ledger.url: the SQLite file {ledger_file} cannot be read and written by this user"
                )
        elif ledger_file.parent != Path(settings.state_dir):
            yield _writable_place("ledger.url", ledger_file.parent, "the SQLite ledger goes there")


def _check_sentry(settings):
    """Where errors will be reported. The settings already refused a DSN that Sentry's own
    parser rejects (a configuration failure naming the key), so this one parses."""
    dsn = settings.observability.sentry_dsn
    if dsn is None:
        yield Finding("sentry", OK, "observability.sentry_dsn not set: errors are not reported to Sentry")
        return
    from sentry_sdk.utils import Dsn

    parsed = Dsn(dsn.get_secret_value())
    yield Finding("sentry", OK, f"observability.sentry_dsn: errors go to project {parsed.project_id} at {parsed.host}")


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
    except Exception as exc:
        yield Finding(
            "ledger",
            FAIL,
            f"cannot open {shown}: {type(exc).__name__}: {str(exc).splitlines()[0]}; check ledger.url and that the database server runs",
        )
        return
    head = migrate.head_revision()
    if current == head:
        yield Finding("ledger", OK, f"{shown} at schema revision {current}")
    elif current is None:
        yield Finding(
            "ledger", WARN, f"{shown} has no connector schema yet; the first run creates it (revision {head})"
        )
    else:
        yield Finding(
            "ledger",
            WARN,
            f"{shown} at schema revision {current}; the next run upgrades it to {head} (back it up first)",
        )


def _check_api(settings, *, login: bool, sources):
    import httpx

    from connector_core.api import ApiError, Credentials, MyInvoisClient, RateBackendUnavailable, RatePolicy, TokenCache

    simulator = None
    api_url, identity_url, _ = settings.base_urls()
    if settings.uses_inprocess_simulator:
        from connector_core.simulator import SimulatorConfig, run_in_thread

        simulator = run_in_thread(SimulatorConfig(**settings.simulator))
        api_url = identity_url = simulator.base_url
        yield Finding(
            "api", OK, f"environment 'simulator': started the in-process simulator at {api_url} for this check"
        )
    try:
        try:
            with httpx.Client(timeout=settings.retry.timeout(), verify=settings.verify_tls) as http:
                response = http.get(api_url)
            yield Finding("api", OK, f"{api_url} answers (HTTP {response.status_code})")
        except httpx.HTTPError as exc:
            yield Finding(
                "api",
                FAIL,
                f"{api_url} cannot be reached ({type(exc).__name__}); check the network, proxy and firewall, or api_base_url",
                ExitCode.MYINVOIS_UNAVAILABLE,
            )
            return
        if not login:
            return
        rate_policy = RatePolicy(settings.rate_limits)
        try:
            for name, profile in settings.profiles.items():
                credentials = Credentials(
                    client_id=profile.client_id, client_secret=profile.client_secret, on_behalf_of=profile.on_behalf_of
                )
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
                    yield Finding(
                        "credentials", OK, f"profile {name}: MyInvois accepted client id {profile.client_id}{who}"
                    )
                except RateBackendUnavailable as exc:
                    # Nothing reached MyInvois: the credentials are untested, the limiter is the problem.
                    yield Finding("rate limits", FAIL, f"profile {name}: login not attempted: {exc}")
                except ApiError as exc:
                    yield Finding(
                        "credentials",
                        FAIL,
                        f"profile {name}: login refused ({exc}); check client_id and client_secret in the MyInvois portal "
                        "('View and Register ERP'), and on_behalf_of for an intermediary",
                        ExitCode.MYINVOIS_UNAVAILABLE,
                    )
                finally:
                    client.close()
        finally:
            rate_policy.close()
    finally:
        if simulator is not None:
            simulator.stop()
