"""The plugin manager: built-ins, installed entry points and ``-p`` plugins, all through one path."""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Iterable

import pluggy

from benchbone import hookspecs
from benchbone.api import Config
from benchbone.errors import PluginLoadError, UsageError
from benchbone.kinds import KINDS
from benchbone.registry import REGISTRARS, Registry
from benchbone.versions import package_version

ENTRY_POINT_GROUP = "benchbone"

DEFAULT_PLUGINS = (
    "benchbone.execution.device",
    "benchbone_plugins.torchvision_backbones",
    "benchbone_plugins.timm_backbones",
    "benchbone_plugins.efficientnet_lite",
    "benchbone_plugins.hf_transformers",
    "benchbone_plugins.openclip_backbones",
    "benchbone_plugins.pixels",
    "benchbone_plugins.cifar",
    "benchbone_plugins.digits",
    "benchbone_plugins.mnist",
    "benchbone_plugins.imagefolder",
    "benchbone_plugins.hf_datasets",
    "benchbone_plugins.linear_probe",
    "benchbone_plugins.finetune",
    "benchbone_plugins.knn",
    "benchbone_plugins.retrieval",
    "benchbone_plugins.zero_shot",
    "benchbone_plugins.head_sgd",
    "benchbone_plugins.classification_metrics",
    "benchbone_plugins.transferability",
    "benchbone_plugins.log_to",
    "benchbone_plugins.cell_timing",
)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus what ``benchbone plugins`` reports: versions and load problems.

    Its registries follow ``register`` and ``unregister``: both drop what the registration hooks gave, so the
    next look-up calls them again with the plugins registered now.
    """

    def __init__(self) -> None:
        pluggy.PluginManager.__init__(self, ENTRY_POINT_GROUP)
        self.add_hookspecs(hookspecs)
        self.versions: dict[str, str] = {}
        self.problems: dict[str, str] = {}
        self.entrypoint_names: set[str] = set()
        self.load_args: dict = {}  # how get_plugin_manager built it: a worker elsewhere builds the same
        self.tracebacks: dict[str, str] = {}  # plugin -> the traceback of its failure to load, for --debug
        self.config: Config | None = None  # set once benchbone_configure ran: a plugin registered later is configured then
        self._registries: Registries | None = None

    def register(self, plugin: object, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        if registered is not None:
            if registered not in self.versions:
                self.versions[registered] = plugin_version(plugin)
            self._registries = None
            if self.config is not None:  # as pytest does for a plugin registered after pytest_configure
                configure(self, self.config, only=registered)
        return registered

    def unregister(self, plugin: object | None = None, name: str | None = None) -> object | None:
        name = name or (self.get_name(plugin) if plugin is not None else None)
        removed = super().unregister(plugin, name)
        self.versions.pop(name, None)
        self._registries = None
        return removed

    def registries(self) -> "Registries":
        """The registries (one per kind) of the plugins registered now, each filled on first use."""
        if self._registries is None:
            self._registries = Registries(self)
        return self._registries

    def plugin_versions(self) -> dict[str, str]:
        """Every registered plugin's version, by plugin name (for records and executor workers)."""
        return {name: self.versions.get(name, "unknown") for name in sorted(n for n, _ in self.list_name_plugin())}


def plugin_version(plugin: object) -> str:
    """A plugin's ``__version__``, else the version of the distribution that installed its module, else "unknown"."""
    version = getattr(plugin, "__version__", None)
    if isinstance(version, str):
        return version
    module = getattr(plugin, "__name__", None) if isinstance(plugin, type(sys)) else type(plugin).__module__
    top = str(module or "").split(".")[0]
    for dist in _distributions().get(top, []):
        if (version := package_version(dist)) is not None:
            return version
    return "unknown"


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def call_one(pm: pluggy.PluginManager, hook_name: str, impl: pluggy.HookImpl, **kwargs):
    """Call ``hook_name`` through pluggy (traced and monitored) with only ``impl``'s plugin."""
    hook = getattr(pm.hook, hook_name)
    others = [i.plugin for i in hook.get_hookimpls() if i is not impl]
    return pm.subset_hook_caller(hook_name, others)(**kwargs)


def _benchbone_version() -> str:
    return package_version("benchbone") or "0+unknown"


def get_plugin_manager(
    *,
    entrypoints: bool | None = None,
    blocked: Iterable[str] = (),
    extra: Iterable[str] = (),
    strict: bool = False,
    log_to: Iterable[str] = (),
) -> PluginManager:
    """A new manager: built-ins, then installed entry points, then ``extra`` (module names or .py paths),
    then ``benchbone_configure`` with the options: ``log_to`` (``["mlflow:runs.db"]``; see ``log_targets``)
    registers those loggers (``benchbone_plugins.log_to``).

    ``entrypoints=None`` loads them unless ``BENCHBONE_LOAD_PLUGINS`` is set to an empty string.
    ``blocked`` adds to ``BENCHBONE_DISABLE_PLUGINS`` (comma-separated plugin names).
    """
    pm = PluginManager()
    blocked = [n.strip() for n in [*os.environ.get("BENCHBONE_DISABLE_PLUGINS", "").split(","), *blocked] if n.strip()]
    for name in blocked:
        pm.set_blocked(name)
    version = _benchbone_version()
    for module_name in DEFAULT_PLUGINS:
        name = module_name.rsplit(".", 1)[-1]
        if not pm.is_blocked(name):
            _register(pm, importlib.import_module(module_name), name, version)
    if entrypoints is None:
        entrypoints = os.environ.get("BENCHBONE_LOAD_PLUGINS", "1") != ""
    if entrypoints:
        load_entrypoint_plugins(pm, strict=strict)
    extra = list(extra)
    pm.load_args = {"entrypoints": entrypoints, "blocked": blocked,
                    "extra": [str(Path(e).resolve()) if e.endswith(".py") else e for e in extra]}
    for spec in extra:
        _register(pm, _import_explicit(spec), Path(spec).stem if spec.endswith(".py") else spec, "local")
    _check_hook_names(pm)
    if os.environ.get("BENCHBONE_TRACE_PLUGINS"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    config = Config(pm, {"log_to": list(log_to)})
    configure(pm, config, strict=strict)
    if config.options["log_to"]:  # as configure resolved them: a worker elsewhere logs to the same absolute targets
        pm.load_args["log_to"] = list(config.options["log_to"])
    _check_hook_names(pm)
    return pm


def configure(pm: PluginManager, config: Config, *, only: str | None = None, strict: bool = False) -> None:
    """Call ``benchbone_configure`` one plugin at a time (only ``only``'s, for a plugin registered afterwards),
    then remember ``config`` so that a plugin registered later (``benchbone_pm.register`` in a test) gets it too.

    An installed plugin whose configure raises is treated like one that fails to import: unregistered, with the
    plugins it registered meanwhile, and reported (``say_load_problems``; ``--debug`` shows the traceback). A
    built-in's, a ``-p`` plugin's or a later-registered one's fails loudly: a ``UsageError`` (bad options, such as
    ``--log-to nowhere:x``) as it is, anything else as a ``PluginLoadError`` naming the plugin.
    """
    for impl in pm.hook.benchbone_configure.get_hookimpls():
        name = impl.plugin_name
        if (only is not None and name != only) or not pm.has_plugin(name):  # one before it may have unregistered it
            continue
        before = {n for n, _ in pm.list_name_plugin()}
        try:
            call_one(pm, "benchbone_configure", impl, config=config)
        except Exception as exc:
            installed = name in pm.entrypoint_names and only is None and not strict
            message = f"{name} failed in benchbone_configure: {type(exc).__name__}: {exc}"
            for added in ({n for n, _ in pm.list_name_plugin()} - before) | ({name} if only or installed else set()):
                pm.unregister(name=added)
            if not installed:
                if isinstance(exc, UsageError):
                    raise
                raise PluginLoadError(f"plugin {message}") from exc
            pm.problems[name] = message
            pm.tracebacks[name] = traceback.format_exc()
    if only is None:
        pm.config = config


def log_targets(asked: Iterable[str]) -> list[str]:
    """What a run logs to: ``asked`` (``--log-to``), else ``BENCHBONE_LOG_TO`` (comma-separated), else nothing."""
    asked = list(asked) or os.environ.get("BENCHBONE_LOG_TO", "").split(",")
    return [target.strip() for target in asked if target.strip()]


def announce_record(pm: pluggy.PluginManager, record_file: Path, run_dir: Path) -> None:
    """Call ``benchbone_record_written`` for a record just written to ``record_file``, one plugin at a time:
    a plugin that fails is one warning line, and the others and the record are unaffected."""
    impls = pm.hook.benchbone_record_written.get_hookimpls()
    if not impls:
        return
    text = Path(record_file).read_text(encoding="utf-8")
    cell_id = json.loads(text).get("cell_id")
    for impl in impls:
        record = json.loads(text)  # each its own: one that edits its record changes nobody else's
        try:
            call_one(pm, "benchbone_record_written", impl, record=record, run_dir=Path(run_dir))
        except Exception as exc:  # noqa: BLE001 - a logger may fail in any way; the record is already safe
            warnings.warn(f"plugin {impl.plugin_name} failed in benchbone_record_written for cell "
                          f"{cell_id}: {type(exc).__name__}: {exc}; the record {record_file} is kept")


KIND_HOOKS = {many: (one, f"benchbone_register_{many}") for one, many in KINDS.items()}


def warn_load_problems(pm: PluginManager, kinds: Iterable[str] = tuple(KINDS.values())) -> None:
    """One warning line per plugin that failed to load, once the registration hooks of ``kinds`` (those the
    command needs) ran: a plugin that failed to import might have offered any kind, so every command names it."""
    registries = pm.registries()
    for kind in kinds:
        registries.kind(kind)
    say_load_problems(pm)


def say_load_problems(pm: PluginManager) -> None:
    """One warning line per plugin that failed so far (to import, or in a registration hook that ran)."""
    for name, problem in sorted(pm.problems.items()):
        warnings.warn(f"plugin {name} failed to load: {problem}; see `benchbone plugins`")


def _check_hook_names(pm: PluginManager) -> None:
    """A misspelled hook fails loudly; an installed plugin with one is reported and dropped instead."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin)
            if name not in pm.entrypoint_names:
                raise PluginLoadError(f"plugin {name!r}: {exc}; hooks are named benchbone_register_* "
                                      "(see `benchbone plugins`)") from None
            pm.unregister(name=name)
            pm.problems[name] = str(exc)


def _register(pm: PluginManager, plugin: object, name: str, version: str) -> None:
    if pm.has_plugin(name):
        raise PluginLoadError(f"two plugins are named {name!r}; rename one of them")
    pm.versions[name] = version
    pm.register(plugin, name=name)


def load_entrypoint_plugins(pm: PluginManager, *, strict: bool) -> None:
    """Register each installed ``benchbone`` entry point; a broken one is recorded, not fatal."""
    seen: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.is_blocked(ep.name) or seen.get(ep.name) == ep.value:
            continue
        if ep.name in seen or pm.has_plugin(ep.name):  # pluggy would skip it silently: say so instead
            other = f"entry point {ep.name} = {seen[ep.name]}" if ep.name in seen else f"plugin {ep.name!r}"
            pm.problems[ep.name] = (f"{ep.name} = {ep.value}: not loaded, {other} has the same name; "
                                    "rename one entry point or uninstall one package")
            continue
        seen[ep.name] = ep.value
        version = ep.dist.version if ep.dist is not None else "unknown"
        try:
            _register(pm, ep.load(), ep.name, version)
            pm.entrypoint_names.add(ep.name)
        except Exception as exc:  # a plugin may fail in any way; it must not take the CLI down
            if pm.has_plugin(ep.name):
                pm.unregister(name=ep.name)
            message = f"{ep.name} = {ep.value}: {type(exc).__name__}: {exc}"
            if strict:
                raise PluginLoadError(f"plugin {message}") from exc
            pm.problems[ep.name] = message
            pm.tracebacks[ep.name] = traceback.format_exc()


def _import_explicit(spec: str) -> object:
    """Import a ``-p`` plugin given as a module name or as a path to a .py file."""
    try:
        if spec.endswith(".py"):
            path = Path(spec)
            if not path.is_file():
                raise UsageError(f"plugin file {spec} does not exist; pass -p with a .py file or a module name")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            return module
        return importlib.import_module(spec)
    except UsageError:
        raise
    except Exception as exc:
        raise PluginLoadError(f"plugin {spec!r} failed to import: {type(exc).__name__}: {exc}") from exc




class Registries:
    """The name spaces, one per kind, each filled on first use by calling every plugin's registration hook through
    pluggy, one plugin at a time: a plugin's names are added only when its whole call succeeded.

    Lazy per kind: ``benchbone list strategies`` never runs (or imports) the backbone plugins' code.
    """

    def __init__(self, pm: PluginManager):
        self._pm = pm
        self._filled: dict[str, Registry] = {}
        self._loading_problems = dict(pm.problems)  # plugins that failed to import: any kind may miss their names
        self.narrowed: dict[str, set[str]] = {}  # kind -> the only plugins to fill it from (benchbone.planning.names_index.narrow)

    def filled(self, kind: str) -> bool:
        return kind in self._filled

    def kind(self, kind: str) -> Registry:
        """The registry for 'backbones', 'datasets', 'strategies', 'metrics' or 'estimators'."""
        if kind not in KIND_HOOKS:
            raise UsageError(f"unknown kind {kind!r}; use {', '.join(KIND_HOOKS)}")
        if kind not in self._filled:
            singular, hook_name = KIND_HOOKS[kind]
            registry = Registry(singular)
            problems: dict[str, list[str]] = {}
            for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
                if kind not in self.narrowed or impl.plugin_name in self.narrowed[kind]:
                    self._collect_one(impl, hook_name, registry, problems)
            self._pm.problems.update({plugin: "; ".join(lines) for plugin, lines in problems.items()})
            # an unknown name may be one that a broken plugin would have offered: its errors say so
            registry.load_problems = {**self._loading_problems, **{p: "; ".join(v) for p, v in problems.items()}}
            self._filled[kind] = registry
        return self._filled[kind]

    backbones = property(lambda self: self.kind("backbones"))
    datasets = property(lambda self: self.kind("datasets"))
    strategies = property(lambda self: self.kind("strategies"))
    metrics = property(lambda self: self.kind("metrics"))
    estimators = property(lambda self: self.kind("estimators"))

    def _collect_one(self, impl: pluggy.HookImpl, hook_name: str, registry: Registry,
                     problems: dict[str, list[str]]) -> None:
        """Call one plugin's hook; apply its registrations only if the whole call succeeded."""
        plugin, installed = impl.plugin_name, self._pm.entrypoint_names
        registrar = REGISTRARS[registry.kind](plugin)
        try:
            call_one(self._pm, hook_name, impl, register=registrar)
        except Exception as exc:
            message = f"{plugin} failed in {hook_name}: {type(exc).__name__}: {exc}"
            if plugin not in installed:  # built-ins and -p plugins fail loudly
                raise PluginLoadError(f"plugin {message}") from exc
            problems.setdefault(plugin, []).append(message)
            return

        def refused(exc: UsageError) -> None:  # a name taken by another plugin, or an invalid one
            if plugin not in installed:
                raise exc
            owners = getattr(exc, "plugins", ())
            if len(owners) == 2 and owners[0] in installed:  # two installed plugins: neither order is meaningful
                why = f"{exc.name!r} is registered by both plugin {owners[0]!r} and plugin {plugin!r}"
                registry.block(exc.name, f"{why}; uninstall one or block it with --no-plugin NAME")
                for owner in owners:
                    problems.setdefault(owner, []).append(f"{registry.kind} name {why} (left out of both)")
                return
            problems.setdefault(plugin, []).append(f"{exc} (left out)")

        registrar.commit(registry, refused)
