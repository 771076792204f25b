"""Finding, checking and calling plugins.

Every plugin, built-in or third-party, is found through the ``myinvois_connector`` entry-point
group. The environment variable ``MYINVOIS_PLUGINS`` (comma-separated entry-point names)
restricts which ones load, for debugging a misbehaving plugin.

:class:`PluginHost` is the typed facade the pipeline calls: one method per hook, each isolating
the plugin's failures so that one plugin cannot starve the others.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pluggy
from pydantic import BaseModel

from connector_core import hookspecs
from connector_core.contract import CancelRequest, DocumentOutcome, Source, SourceCheck
from connector_core.model import Invoice, RejectedRecord

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME


class PluginError(Exception):
    """A plugin is broken in a way that stops start-up (a clash, a hook without a spec)."""


class HookFailed(Exception):
    """A plugin hook raised. Carries the plugin, hook and source names for the report."""

    def __init__(self, plugin: str, hook: str, source: str | None, error: BaseException) -> None:
        self.plugin, self.hook, self.source, self.error = plugin, hook, source, error
        where = f" for source {source!r}" if source else ""
        super().__init__(f"plugin {plugin!r} failed in {hook}{where}: {type(error).__name__}: {error}")


@dataclass(frozen=True)
class SourceKind:
    kind: str
    plugin: str
    options_model: type[BaseModel]
    description: str


class PluginHost:
    """The loaded plugins and the source kinds they provide."""

    def __init__(self, *, load_entry_points: bool = True, extra_plugins: tuple[object, ...] = ()) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        if load_entry_points:
            self._load_entry_points()
        for plugin in extra_plugins:
            self.pm.register(plugin)
        try:
            # A hook implementation whose name matches no spec is a typo: refuse to start.
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(str(exc)) from None
        self.kinds: dict[str, SourceKind] = {}
        self.failed_plugins: dict[str, str] = {}
        self._collect_kinds()

    # --- discovery ------------------------------------------------------------------------

    def _load_entry_points(self) -> None:
        only = {n.strip() for n in os.environ.get("MYINVOIS_PLUGINS", "").split(",") if n.strip()}
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if only and ep.name not in only:
                continue
            if self.pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                log.error(
                    "plugin %r could not be imported (%s: %s); its source kinds are unavailable",
                    ep.name,
                    type(exc).__name__,
                    exc,
                )
                continue
            self.pm.register(plugin, name=ep.name)

    def _collect_kinds(self) -> None:
        for impl in self.pm.hook.register_source_kinds.get_hookimpls():
            plugin_name = self.pm.get_name(impl.plugin) or repr(impl.plugin)

            def register(
                kind: str, options_model: type[BaseModel], description: str = "", _plugin: str = plugin_name
            ) -> None:
                if kind in self.kinds:
                    raise PluginError(
                        f"source kind {kind!r} is registered by both {self.kinds[kind].plugin!r} and {_plugin!r}; "
                        f"uninstall one, or restrict plugins with MYINVOIS_PLUGINS"
                    )
                if not (isinstance(options_model, type) and issubclass(options_model, BaseModel)):
                    raise PluginError(
                        f"plugin {_plugin!r} registered kind {kind!r} with options that are not a pydantic model"
                    )
                self.kinds[kind] = SourceKind(kind, _plugin, options_model, description)

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:
                self.failed_plugins[plugin_name] = f"{type(exc).__name__}: {exc}"
                log.error("plugin %r failed in register_source_kinds: %s", plugin_name, exc)

    # --- introspection for `myinvois-connector plugins` -----------------------------------

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: item[0]):
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            dist = _distribution_of(plugin)
            out.append(
                {
                    "name": name,
                    "module": getattr(plugin, "__name__", type(plugin).__name__),
                    "distribution": dist,
                    "hooks": hooks,
                    "kinds": sorted(k.kind for k in self.kinds.values() if k.plugin == name),
                    "error": self.failed_plugins.get(name),
                }
            )
        return out

    # --- the hooks, one method each -------------------------------------------------------

    def _owner_caller(self, hook_name: str, source: Source):
        kind = self.kinds.get(source.kind)
        if kind is None:
            raise PluginError(f"no installed plugin provides source kind {source.kind!r} (source {source.name!r})")
        owner = self.pm.get_plugin(kind.plugin)
        others = [p for p in self.pm.get_plugins() if p is not owner]
        return kind.plugin, self.pm.subset_hook_caller(hook_name, remove_plugins=others)

    def fetch_pending_invoices(self, source: Source, limit: int) -> Iterator[Invoice | RejectedRecord]:
        """Yield what the owning plugin fetched. Errors, including those raised while the
        plugin's generator runs, come out as :class:`HookFailed`."""
        plugin, caller = self._owner_caller("fetch_pending_invoices", source)
        try:
            results = caller(source=source, limit=limit)
            for result in results:
                if result is None:
                    continue
                for item in result:
                    if not isinstance(item, (Invoice, RejectedRecord)):
                        raise TypeError(
                            f"fetch_pending_invoices must yield Invoice or RejectedRecord objects, got {type(item).__name__}"
                        )
                    yield item
        except HookFailed:
            raise
        except Exception as exc:
            raise HookFailed(plugin, "fetch_pending_invoices", source.name, exc) from exc

    def on_invoices_recorded(self, source: Source, source_keys: list[str]) -> None:
        self._call_owner("on_invoices_recorded", source, source_keys=source_keys)

    def fetch_cancel_requests(self, source: Source) -> Iterator[CancelRequest]:
        """Yield the owning plugin's cancel requests (none when it implements no
        ``fetch_cancel_requests``). Errors, the generator's included, come out as :class:`HookFailed`."""
        plugin, caller = self._owner_caller("fetch_cancel_requests", source)
        if not caller.get_hookimpls():
            return
        try:
            for result in caller(source=source):
                for item in result or ():
                    if not isinstance(item, CancelRequest):
                        raise TypeError(
                            f"fetch_cancel_requests must yield CancelRequest objects, got {type(item).__name__}"
                        )
                    yield item
        except Exception as exc:
            raise HookFailed(plugin, "fetch_cancel_requests", source.name, exc) from exc

    def on_submission_result(self, source: Source, outcomes: list[DocumentOutcome]) -> None:
        self._call_owner("on_submission_result", source, outcomes=outcomes)

    def check_source(self, source: Source) -> list[SourceCheck] | None:
        """The owning plugin's checks of ``source``; ``None`` when it implements no
        ``check_source``. A raising check comes out as :class:`HookFailed`."""
        plugin, caller = self._owner_caller("check_source", source)
        if not caller.get_hookimpls():
            return None
        try:
            checks = []
            for result in caller(source=source):
                for item in result or ():
                    if not isinstance(item, SourceCheck):
                        raise TypeError(f"check_source must return SourceCheck objects, got {type(item).__name__}")
                    checks.append(item)
            return checks
        except Exception as exc:
            raise HookFailed(plugin, "check_source", source.name, exc) from exc

    def _call_owner(self, hook_name: str, source: Source, **kwargs: Any) -> None:
        plugin, caller = self._owner_caller(hook_name, source)
        try:
            caller(source=source, **kwargs)
        except Exception as exc:
            raise HookFailed(plugin, hook_name, source.name, exc) from exc


def _distribution_of(plugin: object) -> str | None:
    module = plugin if isinstance(plugin, ModuleType) else type(plugin)
    top = getattr(module, "__name__", "").split(".")[0]
    try:
        from importlib.metadata import packages_distributions

        dists = packages_distributions().get(top)
        return dists[0] if dists else None
    except Exception:
        return None
