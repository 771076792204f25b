"""The assembled connector: settings, plugins, ledger and API clients, and its cycles.

``Connector`` is what the command line, the scheduler and the tests drive:

* :meth:`Connector.fetch_and_submit_cycle`: fetch every source, record, submit what is pending;
* :meth:`Connector.poll_cycle`: poll due submissions, then write final outcomes back;
* :meth:`Connector.run_once`: both, repeated until every fetched document is final and reported.

Construction validates everything at once (settings, plugin options, profile references) and
raises :class:`~connector_core.settings.ConfigError` listing every problem before any work.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from connector_core.api import ApiCall, Credentials, MyInvoisClient, RatePolicy, TokenCache
from connector_core.config_paths import resolve_model_paths, resolving_against
from connector_core.contract import Source
from connector_core.exitcodes import ExitCode, most_severe
from connector_core.ledger import Ledger, utcnow
from connector_core.observability.wiring import FETCH_CYCLE, POLL_CYCLE, Monitoring
from connector_core.pipeline.cancel import CancelResult, cancel_cycle, cancel_waiting
from connector_core.pipeline.context import PipelineContext
from connector_core.pipeline.fetch import FetchFeed, FetchReport, fetch_sources
from connector_core.pipeline.poll import poll_profile
from connector_core.pipeline.reconcile import abandoned_before
from connector_core.pipeline.report import report_source
from connector_core.pipeline.submit import SubmitReport, submit_profile
from connector_core.plugins import PluginHost
from connector_core.settings import ConfigError, Settings, format_validation_error

log = logging.getLogger("connector_core.runtime")


@dataclass
class CycleReport:
    fetched: list[FetchReport] = field(default_factory=list)
    submitted: list[SubmitReport] = field(default_factory=list)
    polled: int = 0
    reported: int = 0
    duration_s: float = 0.0
    cancels: list[CancelResult] = field(default_factory=list)


@dataclass
class RunSummary:
    """What ``run --once`` prints at the end."""

    counts: dict[str, int]
    fetched: int
    submissions: int
    reported: int
    duration_s: float
    finished: bool
    latest_errors: list[dict[str, Any]]
    problem: str | None = None
    #: MyInvois could not be reached or refused a login: what happened, in words.
    myinvois_problem: str | None = None
    #: ``run --once`` stopped waiting at ``cycles.once_timeout_seconds`` with invoices unfinished.
    gave_up: bool = False
    #: One line per source whose fetch or write-back failed during the run.
    source_problems: list[str] = field(default_factory=list)
    #: Invoices whose latest version is final but needs the ERP's attention (invalid, rejected,
    #: locally invalid, number conflict, changed after validation), or in an escalated submission.
    needs_attention: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def exit_code(self) -> ExitCode:
        """What ``run --once`` exits with: the most severe of what happened."""
        codes = [ExitCode.OK]
        if self.needs_attention:
            codes.append(ExitCode.NEEDS_ATTENTION)
        if self.source_problems:
            codes.append(ExitCode.SOURCE_UNAVAILABLE)
        if self.myinvois_problem:
            codes.append(ExitCode.MYINVOIS_UNAVAILABLE)
        if self.gave_up or (not self.finished and not self.source_problems and not self.myinvois_problem):
            # Unfinished for no reason named above: out of time, or stopped by a signal.
            codes.append(ExitCode.GAVE_UP)
        return most_severe(*codes)


def build_sources(settings: Settings, host: PluginHost) -> tuple[dict[str, Source], list[str]]:
    """Validate each source's options against its plugin's model; collect every problem."""
    problems: list[str] = []
    sources: dict[str, Source] = {}
    for name, cfg in settings.sources.items():
        if not cfg.enabled:
            continue
        kind = host.kinds.get(cfg.kind)
        if kind is None:
            known = ", ".join(sorted(host.kinds)) or "none"
            problems.append(
                f"sources.{name}.kind: no installed plugin provides kind {cfg.kind!r} (installed kinds: {known}); "
                "fix the spelling or install the plugin's package"
            )
            continue
        try:
            # Relative paths in the options (folders, files, $file: references) are relative
            # to the configuration file's folder, like the core's; the plugin need not know.
            with resolving_against(settings.config_dir):
                options = resolve_model_paths(kind.options_model.model_validate(cfg.options))
        except ValidationError as exc:
            problems.extend(format_validation_error(exc, prefix=f"sources.{name}.options."))
            continue
        sources[name] = Source(
            name=name, kind=cfg.kind, profile=cfg.profile, options=options, state_dir=settings.state_dir
        )
    if not settings.profiles:
        problems.append(
            "profiles: no taxpayer profile is configured; add a [profiles.NAME] table with tin, client_id and client_secret"
        )
    if not settings.sources:
        problems.append(
            "sources: no ERP source is configured; add a [sources.NAME] table with kind, profile and options"
        )
    return sources, problems


class StateDirInUse(ConfigError):
    """Another connector process runs on the same state directory."""


def _lock_state_dir(state_dir):
    """One connector per state directory: a second one would take the first one's in-flight
    submissions for crash leftovers. The OS releases the lock when the process dies, even by
    SIGKILL, so a restart after a crash is never blocked."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(state_dir / "connector.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise StateDirInUse(
            [
                f"state_dir: another myinvois-connector is already running on {state_dir}; stop it first, "
                "or give this one its own state_dir (status and doctor can run alongside)"
            ]
        ) from None
    return lock


def _instance_id(state_dir: Path) -> str:
    """This installation's name on the submissions it sends: created once in ``state_dir``.

    Not the host name: a container restarted from the same volume gets a new one, and must still
    know its own interrupted sends. Called with the state directory locked, so never raced."""
    path = state_dir / "instance-id"
    try:
        existing = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    name = uuid.uuid4().hex
    tmp = path.with_suffix(".tmp")
    tmp.write_text(name + "\n", encoding="ascii")
    os.replace(tmp, path)
    return name


def _refused_profiles(reports: list[SubmitReport]) -> set[str]:
    from connector_core.pipeline.submit import BatchOutcome

    return {r.profile for r in reports if BatchOutcome.AUTH_FAILED in r.outcomes}


class Connector:
    def __init__(
        self,
        settings: Settings,
        *,
        host: PluginHost | None = None,
        monitoring: Monitoring | None = None,
        observers: tuple[Callable[[str, dict[str, Any]], None], ...] = (),
    ) -> None:
        self.settings = settings
        self.monitoring = monitoring
        self.host = host or PluginHost()
        sources, problems = build_sources(settings, self.host)
        if problems:
            raise ConfigError(problems)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self._simulator = None
        api_url, identity_url, portal_url = settings.base_urls()
        if settings.uses_inprocess_simulator:
            from connector_core.simulator import SimulatorConfig, run_in_thread

            try:
                simulator_config = SimulatorConfig(**settings.simulator)
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc, prefix="simulator.")) from None
            self._simulator = run_in_thread(simulator_config)
            api_url = identity_url = portal_url = self._simulator.base_url
            log.info("MyInvois simulator started in-process at %s", api_url)
        assert api_url and identity_url and portal_url

        # Unset, the backend is a file in state_dir (see Settings.rate_limit_backend).
        rate_limits = settings.rate_limits.model_copy(update={"backend": settings.rate_limit_backend()})
        self.rate_policy = RatePolicy(rate_limits)
        self.token_cache = TokenCache(settings.token_cache_path())
        self._http = httpx.Client(timeout=settings.retry.timeout(), verify=settings.verify_tls)

        def listeners_for(profile: str) -> tuple[Callable[[ApiCall], None], ...]:
            if monitoring is None:
                return (self._count_api_call,)
            return (self._count_api_call, monitoring.api_listener(profile))

        self.clients = {
            name: MyInvoisClient(
                api_url,
                identity_url,
                Credentials(
                    client_id=profile.client_id, client_secret=profile.client_secret, on_behalf_of=profile.on_behalf_of
                ),
                http=self._http,
                rate_policy=self.rate_policy,
                retry_settings=settings.retry,
                token_cache=self.token_cache,
                listeners=listeners_for(name),
            )
            for name, profile in settings.profiles.items()
        }
        try:
            self._state_lock = _lock_state_dir(settings.state_dir)
        except StateDirInUse:
            self._close_clients_and_simulator()
            raise
        try:
            self.ledger = Ledger(settings.ledger_url(), sender=_instance_id(settings.state_dir))
        except Exception:
            self._state_lock.release()
            raise
        recovered = self.ledger.sends.recover_after_crash(abandoned_before=abandoned_before(settings))
        if recovered:
            log.warning(
                "%d submission(s) were being sent when the connector last stopped; they will be reconciled", recovered
            )
        self.ctx = PipelineContext(
            settings=settings,
            ledger=self.ledger,
            host=self.host,
            sources=sources,
            profiles=dict(settings.profiles),
            clients=self.clients,
            portal_base_url=portal_url,
            observers=[*observers, *([monitoring.observe] if monitoring else [])],
        )
        # The fetch and poll cycles run on separate scheduler threads and both write results
        # back: one at a time, or the same outcome could reach a plugin twice at once.
        self._report_lock = threading.Lock()

    # --- cycles ---------------------------------------------------------------------------

    @property
    def stop_event(self) -> threading.Event:
        return self.ctx.stop

    def fetch_and_submit_cycle(self) -> CycleReport:
        with self._cycle_scope(FETCH_CYCLE):
            return self._fetch_and_submit()

    def poll_cycle(self) -> CycleReport:
        with self._cycle_scope(POLL_CYCLE):
            return self._poll()

    def _cycle_scope(self, cycle: str):
        from connector_core.observability.sentry import sentry_scope

        profiles = self._active_profiles()
        return sentry_scope(
            cycle=cycle,
            environment=self.settings.environment.value,
            profile=profiles[0] if len(profiles) == 1 else None,
        )

    def _fetch_and_submit(self) -> CycleReport:
        """Fetch every source, concurrently, while each profile's submitter sends what is
        recorded so far.

        One submitter per profile: profiles have their own client ids, hence their own rate
        limits, and one waiting for its window must not hold back another. Each profile has its
        own feed, closed when its own sources are done: a slow source of one profile must not
        keep another profile's last part-filled submission waiting."""
        started = time.monotonic()
        report = CycleReport()
        profiles = self._active_profiles()
        feeds = {profile: FetchFeed() for profile in profiles}
        with ThreadPoolExecutor(max_workers=max(1, len(profiles)), thread_name_prefix="submitter") as submitters:
            running = [submitters.submit(submit_profile, self.ctx, profile, feeds[profile]) for profile in profiles]
            try:
                report.fetched.extend(
                    fetch_sources(
                        self.ctx,
                        list(self.ctx.sources.values()),
                        feeds,
                        workers=self.settings.cycles.fetch_concurrency,
                    )
                )
            finally:
                # Already closed by fetch_sources, unless it failed before a source ran.
                for feed in feeds.values():
                    feed.close()
            report.submitted.extend(future.result() for future in running)
        # The ERP's cancel requests, and cancels recorded earlier (by `cancel` or a lost answer).
        # A source whose fetch failed is not asked for them too: one failure per source and
        # cycle is reported, not two; the next cycle asks both again.
        unreadable = {r.source for r in report.fetched if r.failed}
        readable = [s for s in self.ctx.sources.values() if s.name not in unreadable]
        report.cancels = cancel_cycle(self.ctx, readable, profiles)
        # Locally invalid documents are final at once: write them back without waiting for a poll.
        report.reported += self._report_all()
        report.duration_s = time.monotonic() - started
        self._source_verdicts(report)
        self._cycle_done(FETCH_CYCLE, report.duration_s)
        return report

    def _source_verdicts(self, report: CycleReport) -> None:
        """Each source's health for this fetch cycle: failed if its fetch or any write-back
        failed since the previous fetch cycle (poll cycles' write-backs included)."""
        failed = self.ctx.take_cycle_failures()
        for name in dict.fromkeys([r.source for r in report.fetched] + sorted(failed)):
            self.ctx.emit("source_cycle", source=name, ok=name not in failed, error=failed.get(name))

    def _poll(self) -> CycleReport:
        started = time.monotonic()
        report = CycleReport()
        for profile in self._active_profiles():
            if self.ctx.stop.is_set():
                break
            report.polled += poll_profile(self.ctx, profile)
        report.reported += self._report_all()
        # Maintenance: bodies of documents final for longer than the retention (cheap when none is due).
        self.ledger.bodies.prune_if_due(self.settings.ledger.keep_bodies_days)
        report.duration_s = time.monotonic() - started
        self._cycle_done(POLL_CYCLE, report.duration_s)
        return report

    def _cycle_done(self, cycle: str, duration_s: float) -> None:
        self.ctx.emit("cycle_finished", cycle=cycle, duration_s=duration_s)
        if self.monitoring is not None:
            self.monitoring.refresh(self.ledger)

    def submit_cycle(self, *, skip: AbstractSet[str] = frozenset()) -> list[SubmitReport]:
        """Send what is pending (documents put back after a failed send, cancels not sent yet)
        without fetching."""
        profiles = [p for p in self._active_profiles() if p not in skip]
        reports = [submit_profile(self.ctx, p) for p in profiles if not self.ctx.stop.is_set()]
        for profile in profiles:
            if not self.ctx.stop.is_set():
                cancel_waiting(self.ctx, profile)
        return reports

    def run_once(self, progress: Callable[[Callable[[], dict[str, int]]], None] | None = None) -> RunSummary:
        """Fetch once, then submit, poll and report until every document is final and written
        back, the connector is asked to stop, or ``cycles.once_timeout_seconds`` passes.

        A profile whose login MyInvois refuses is not retried (its credentials will not fix
        themselves); the other profiles' invoices go on, and the summary names the refused one.
        Neither is a profile whose MyInvois has been unreachable for ``cycles.once_outage_give_up_seconds``
        without a break: its invoices stay pending for the next run (the daemon keeps trying)."""
        started = time.monotonic()
        deadline = started + self.settings.cycles.once_timeout_seconds
        with self.ctx.source_failure_lock:
            self.ctx.failed_in_run.clear()
        first = self._first_cycle_polling_meanwhile()
        fetched = sum(r.fetched for r in first.fetched)
        submissions = sum(r.submissions for r in first.submitted)
        reported = first.reported
        refused = _refused_profiles(first.submitted)
        unreachable: dict[str, str] = {}
        while not self.ctx.stop.is_set():
            unreachable.update(self._unreachable_too_long(exclude=set(unreachable)))
            waiting_on = refused | set(unreachable)
            if progress is not None:
                # The counts are read only when a line is due (they cover the whole backlog).
                progress(self.ledger.status.version_counts_by_state)
            # Watch sweeps that are due are made; those not due yet are the daemon's (or the
            # next run's): the run never waits out a cancellation window.
            watch_due = self.ledger.watch.has_due(utcnow(), exclude_profiles=waiting_on)
            unfinished = self.ledger.status.has_unfinished(exclude_profiles=waiting_on)
            if (not unfinished and not watch_due) or time.monotonic() > deadline:
                break
            sent = self.submit_cycle(skip=waiting_on)
            submissions += sum(r.submissions for r in sent)
            refused |= _refused_profiles(sent)
            cycle = self.poll_cycle()
            reported += cycle.reported
            waiting_on = refused | set(unreachable)
            if self.ledger.status.has_unfinished(exclude_profiles=waiting_on) or self.ledger.watch.has_due(
                utcnow(), exclude_profiles=waiting_on
            ):
                self._sleep_until_next_poll(deadline)
        problems = []
        if refused:
            names = ", ".join(repr(p) for p in sorted(refused))
            problems.append(
                f"MyInvois refused the login of profile {names}; check its client_id, client_secret and on_behalf_of "
                "(see 'myinvois-connector status' for the answer); its invoices stay pending"
            )
        problems.extend(unreachable[p] for p in sorted(unreachable))
        problem = "; ".join(problems) or None
        return RunSummary(
            counts=self.ledger.status.counts_by_state(),
            fetched=fetched,
            submissions=submissions,
            reported=reported,
            duration_s=time.monotonic() - started,
            finished=self.ledger.status.unfinished_count() == 0,
            latest_errors=self.ledger.status.latest_errors(20),
            problem=problem,
            myinvois_problem=problem,
            source_problems=sorted(self.ctx.failed_in_run.values()),
            needs_attention=self.ledger.status.needs_attention_count(),
        )

    def _unreachable_too_long(self, exclude: set[str]) -> dict[str, str]:
        """Profiles whose MyInvois has been unreachable for ``cycles.once_outage_give_up_seconds``
        without a break, with the sentence that says so; ``run --once`` stops waiting for them."""
        limit = self.settings.cycles.once_outage_give_up_seconds
        given_up: dict[str, str] = {}
        for profile in self._active_profiles():
            down = self.ctx.availability.unreachable_for(profile)
            if profile in exclude or down is None or down < limit:
                continue
            given_up[profile] = (
                f"MyInvois could not be reached for profile {profile!r} for {down:.0f} s "
                f"({self.ctx.availability.describe_outage(profile)}); 'run --once' stopped waiting after "
                f"cycles.once_outage_give_up_seconds ({limit:g} s): its invoices stay pending and go with the next run "
                "(the daemon keeps trying); check the network, proxy and api_base_url / identity_base_url"
            )
            log.error("%s", given_up[profile])
        return given_up

    def _first_cycle_polling_meanwhile(self) -> CycleReport:
        """The first cycle may send a large backlog, mostly waiting for rate-limit slots; the
        submissions sent early are polled and written back meanwhile, as the daemon does with
        its two jobs, instead of all after the last submit."""
        done = threading.Event()
        reported_meanwhile = []

        def poll_until_done() -> None:
            while not done.is_set() and not self.ctx.stop.is_set():
                reported_meanwhile.append(self.poll_cycle().reported)
                # Wake when the next submission is due, not on a fixed beat: a fixed 2 s beat
                # left each result waiting up to 2 s more, the last submission's included.
                done.wait(self._seconds_until_next_poll())

        poller = threading.Thread(target=poll_until_done, name="poll-during-first-cycle", daemon=True)
        poller.start()
        try:
            report = self.fetch_and_submit_cycle()
        finally:
            done.set()
            poller.join()
        report.reported += sum(reported_meanwhile)
        return report

    def _seconds_until_next_poll(self) -> float:
        """Until the earliest submission is due for a poll; ``poll_interval_seconds`` if none is waiting."""
        cycles = self.settings.cycles
        nxt = self.ledger.polls.next_poll_time()
        if nxt is None:
            return cycles.poll_interval_seconds
        return min(max((nxt - utcnow()).total_seconds(), 0.05), cycles.poll_max_interval_seconds)

    def _sleep_until_next_poll(self, deadline: float) -> None:
        self.ctx.stop.wait(min(self._seconds_until_next_poll(), max(0.0, deadline - time.monotonic())))

    def _active_profiles(self) -> list[str]:
        return sorted({s.profile for s in self.ctx.sources.values()})

    def _report_all(self) -> int:
        with self._report_lock:
            return sum(report_source(self.ctx, s) for s in self.ctx.sources.values() if not self.ctx.stop.is_set())

    def _count_api_call(self, call: ApiCall) -> None:
        # Only the rare events go to the ledger (a write per API call would cost more than the call).
        if call.status == 429:
            self.ledger.journal.increment("rate_limited_429")
            self.ledger.journal.increment(f"rate_limited_429.{call.endpoint.value}")
        if call.endpoint.value == "login":
            self.ledger.journal.increment("logins" if call.status == 200 else "login_attempts_failed")
            if call.status == 429:
                # A throttled login is an alert of its own: something else uses this client id.
                # A refused login and an unreachable identity service are told by the pipeline's
                # Availability, once per episode and naming the profile, not once per attempt.
                answer = f"HTTP {call.status}" if call.status is not None else "no answer"
                self.ledger.journal.add_incident(
                    "login_failed",
                    f"MyInvois login failed ({answer}, {call.error or 'error'}); the connector waits before trying again",
                    subject=None,
                )

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        try:
            self._close_parts()
        finally:
            self._state_lock.release()

    def _close_parts(self) -> None:
        self.ledger.close()
        self._close_clients_and_simulator()

    def _close_clients_and_simulator(self) -> None:
        for client in self.clients.values():
            client.close()
        self._http.close()
        self.rate_policy.close()
        if self._simulator is not None:
            self._simulator.stop()
            self._simulator = None

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
