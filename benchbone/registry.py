"""One generic registry for backbones, datasets, strategies, metrics and estimators, and the typed ``register``
callbacks (plugin API 1.2) that the registration hooks hand to each plugin."""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from benchbone.errors import DuplicateNameError, UnknownNameError, UsageError
from benchbone.kinds import plural

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/+]*:?$")
PATTERN_CHARS = set("*?[")
# What a strategy may require of a backbone (``register(..., requires=(...))``) and the Backbone attribute that
# provides it, declared by the backbone's registration (``register(..., text=True)``).
CAPABILITIES = {"text": "a text tower (Backbone.text: a CLIP-style image-text model)"}


def natural_key(name: str) -> list:
    """Sort ``resnet18`` before ``resnet101`` (timm's list_models does the same)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def read_only(array: Any) -> Any:
    """``array`` (a numpy array, or None) made read-only in place: several plugins read it, none may change it."""
    if array is not None:
        array.flags.writeable = False
    return array


def call_reading(kind: str, plugin: str, fn: Callable[..., Any], arrays: dict[str, Any]) -> Any:
    """``fn(*arrays.values())`` for ``plugin``'s ``kind`` (e.g. "metric"), checked as ``Reading.call`` checks it."""
    return Reading(arrays).call(kind, plugin, fn)


class Reading:
    """Arrays (read-only, see ``read_only``) that several plugins read in turn, and what shows that one changed them.

    A plugin that writes into one gets a ``PluginError`` naming the plugin, its module and the array, instead of
    numpy's bare "assignment destination is read-only": it changed nothing, so the other plugins' numbers stay right.
    A write the flag does not stop (through ``torch.from_numpy``, ``np.frombuffer``, ctypes) is found by a digest
    of each array, compared after every call; with ``keep``, the array is put back from a private copy first.
    """

    def __init__(self, arrays: dict[str, Any], keep: bool = False):
        self.arrays = arrays
        self.digests = {name: digest(a) for name, a in arrays.items()}
        self.kept = {name: a.copy() for name, a in arrays.items() if a is not None} if keep else {}

    def call(self, kind: str, plugin: str, fn: Callable[..., Any]) -> Any:
        from benchbone.errors import PluginError

        module = getattr(fn, "__module__", None) or "unknown"
        try:
            return fn(*self.arrays.values())
        except ValueError as exc:
            if "read-only" not in str(exc):
                raise
            written, joiner = _written(fn, self.arrays)
            raise PluginError(f"{kind} plugin {plugin!r} (module {module}) wrote into {joiner.join(written)}, which "
                              f"{'is' if len(written) == 1 else 'are'} read-only: copy "
                              f"{'it' if len(written) == 1 else 'them'} first") from exc
        finally:
            changed = [name for name, a in self.arrays.items() if digest(a) != self.digests[name]]
            for name in changed if self.kept else ():
                _put_back(self.arrays[name], self.kept[name])
            if changed:
                raise PluginError(f"{kind} plugin {plugin!r} (module {module}) wrote into {' and '.join(changed)} "
                                  f"through an alias (e.g. torch.from_numpy); copy "
                                  f"{'it' if len(changed) == 1 else 'them'} first")


def digest(array: Any) -> int | None:
    """xxh3-64 of an array's bytes (None for None): several GiB/s (about 30 ms for 250 MB), no copy."""
    import numpy as np
    import xxhash

    return None if array is None else xxhash.xxh3_64_intdigest(np.ascontiguousarray(array))


def _put_back(array: Any, copy: Any) -> None:
    """``copy``'s values into ``array`` (which owns its memory, made read-only by ``read_only``), read-only again."""
    import numpy as np

    array.flags.writeable = True
    np.copyto(array, copy)
    array.flags.writeable = False


def _written(fn: Callable[..., Any], arrays: dict[str, Any]) -> tuple[list[str], str]:
    """Which of ``arrays`` ``fn`` writes into (and " and "), found by running it once more on private copies;
    every array given (and " or ") when that shows none."""
    import numpy as np

    copies = {name: None if a is None else np.array(a, copy=True) for name, a in arrays.items()}
    try:
        fn(*copies.values())
    except Exception:  # noqa: BLE001 - only to name the array; the first error is the one reported
        pass
    given = [name for name, a in arrays.items() if a is not None]
    written = [name for name in given
               if not np.array_equal(arrays[name], copies[name], equal_nan=arrays[name].dtype.kind in "fc")]
    return (written, " and ") if written else (given, " or ")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: the plugin's object, the plugin that offered it, and its metadata."""

    name: str
    obj: T
    plugin: str
    meta: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)  # settable parameters and their defaults (strategies, datasets)
    types: dict = field(default_factory=dict)  # parameter -> type, where the default (None) does not say it
    check: Callable[[dict], None] | None = None  # raises UsageError for parameter values out of range


class Registry(Generic[T]):
    """Names to entries, with aliases, shell-style patterns and did-you-mean errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        self._derived: dict[str, Entry[T]] = {}
        self.load_problems: dict[str, str] = {}  # plugin -> why it failed to load, for unknown-name errors
        self.blocked: dict[str, str] = {}  # name -> why no plugin has it (two installed plugins claim it)

    def add(self, name: str, obj: T, *, plugin: str, params: dict | None = None, types: dict | None = None,
            check: Callable[[dict], None] | None = None, **meta: Any) -> None:
        if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
            raise UsageError(
                f"plugin {plugin!r} registered an invalid {self.kind} name {name!r}: use letters, digits and . _ - / +"
            )
        aliases = tuple(meta.pop("aliases", ()))
        if meta.get("prefix") and not name.endswith((":", "/")):
            raise UsageError(f"plugin {plugin!r} registered prefix {self.kind} {name!r}: a prefix name ends with ':' or '/'")
        entry = Entry(name, obj, plugin, dict(meta, aliases=aliases), dict(params or {}), dict(types or {}), check)
        for key in (name, *aliases):
            if key in self.blocked:
                raise DuplicateNameError(self.blocked[key], key, ())
            owner = self._entries.get(key) or self._entries.get(self._aliases.get(key, ""))
            if owner is not None:
                if owner == entry:
                    return  # the same registration twice is harmless
                if owner.obj is obj and owner.name == name and owner.plugin == plugin:
                    raise DuplicateNameError(
                        f"plugin {plugin!r} registered {self.kind} {name!r} twice with different settings "
                        f"({_differences(owner, entry)}); register it once", key, (plugin,))
                raise DuplicateNameError(
                    f"{self.kind} name {key!r} is registered by both plugin {owner.plugin!r} and plugin {plugin!r}; "
                    f"uninstall one or block it with --no-plugin NAME", key, (owner.plugin, plugin))
        self._entries[name] = entry
        for alias in aliases:
            self._aliases[alias] = name

    def block(self, key: str, why: str) -> None:
        """Leave ``key`` (a name or an alias) to no plugin: asking for it says ``why``."""
        entry = self._entries.pop(key, None)
        for alias in entry.meta["aliases"] if entry else (key,):
            self._aliases.pop(alias, None)
        self.blocked[key] = why

    def _owner(self, key: str) -> Entry[T] | None:
        if key in self.blocked:
            raise UsageError(f"{self.kind} {key!r} is not available: {self.blocked[key]}")
        if key in self._entries:
            if self._entries[key].meta.get("prefix"):
                raise UsageError(f"{self.kind} {key!r} needs a value after the {'colon' if key.endswith(':') else 'slash'}, "
                                 f"e.g. {key}PATH")
            return self._entries[key]
        if key in self._aliases:
            return self._entries[self._aliases[key]]
        return self._derive(key)

    def _derive(self, key: str) -> Entry[T] | None:
        """``prefix:VALUE`` and ``prefix/VALUE`` names: a prefix entry's object is a factory called with VALUE.

        The first colon ends a ``name:`` prefix; otherwise the longest ``name/`` prefix entry takes the rest."""
        if key in self._derived:
            return self._derived[key]
        head, colon, value = key.partition(":")
        entry = self._entries.get(head + colon) if colon else None
        if entry is None or not entry.meta.get("prefix"):
            slashed = [n for n, e in self._entries.items() if n.endswith("/") and e.meta.get("prefix")
                       and key.startswith(n) and len(key) > len(n)]
            if not slashed:
                return None
            entry = self._entries[max(slashed, key=len)]
            value = key[len(entry.name):]
        obj, meta = entry.obj(value), dict(entry.meta, prefix=False)
        for capability in CAPABILITIES:  # declared per value: a function of it (hf/ORG/NAME: CLIP or not)
            if callable(meta.get(capability)):
                meta[capability] = meta[capability](value)
        self._derived[key] = Entry(key, obj, entry.plugin, meta, entry.params, entry.types, entry.check)
        return self._derived[key]

    def __contains__(self, name: str) -> bool:
        return self._owner(name) is not None

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: natural_key(e.name)))

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Entry[T]:
        entry = self._owner(name)
        if entry is None:
            raise UnknownNameError(self.kind, name, [*self._entries, *self._aliases], failed=self.load_problems)
        return entry

    def names(self, pattern: str | None = None, exclude: str | None = None) -> list[str]:
        """Registered names matching ``pattern`` (fnmatch) but not ``exclude``, naturally sorted."""
        names = [e.name for e in self]
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if exclude:
            names = [n for n in names if not fnmatch.fnmatchcase(n, exclude)]
        return names

    def matching(self, pattern: str | None) -> list[Entry[T]]:
        """Entries whose name or one of whose aliases matches ``pattern`` (fnmatch; None: all), naturally sorted."""
        return [e for e in self if pattern is None
                or any(fnmatch.fnmatchcase(n, pattern) for n in (e.name, *e.meta.get("aliases", ())))]

    def registered(self) -> list[str]:
        """Names in the order plugins registered them (for defaults, where order carries meaning)."""
        return list(self._entries)

    def resolve(self, patterns: Iterable[str]) -> list[str]:
        """Turn user names and patterns into canonical names, in order, without repeats."""
        out: list[str] = []
        for pattern in patterns:
            if PATTERN_CHARS & set(pattern):  # prefix entries (name:) need a value, so patterns skip them
                matched = [n for n in self.names(pattern) if not self._entries[n].meta.get("prefix")]
                if not matched:
                    raise UsageError(f"no {self.kind} matches {pattern!r}; see `benchbone list {plural(self.kind)}`")
            else:
                matched = [self.get(pattern).name]
            out.extend(m for m in matched if m not in out)
        return out


def _differences(old: Entry, new: Entry) -> str:
    fields = ("meta", "params", "types", "check")
    return ", ".join(f"{f} {getattr(old, f)!r} then {getattr(new, f)!r}" for f in fields if getattr(old, f) != getattr(new, f))


class Registrar:
    """The ``register`` callback handed to one plugin's registration hook.

    What the plugin registers is kept until its hook returns, then added at once (``commit``): a plugin whose
    hook raises registers nothing. Registration metadata are keyword-only; subclasses declare them per kind.
    """

    kind = ""

    def __init__(self, plugin: str):
        self.plugin = plugin
        self.staged: list[tuple[str, Any, dict]] = []

    def __repr__(self) -> str:  # what BENCHBONE_TRACE_PLUGINS shows of each call
        return f"<register {self.kind} for plugin {self.plugin!r}>"

    def _stage(self, name: str, obj: Any, aliases: Iterable[str] = (), description: str | None = None,
               **settings: Any) -> None:
        if not callable(obj):
            raise UsageError(f"plugin {self.plugin!r} registered {self.kind} {name!r} with a non-callable {obj!r}")
        aliases = (aliases,) if isinstance(aliases, str) else tuple(aliases)
        if not all(isinstance(a, str) for a in aliases) or not isinstance(description, (str, type(None))):
            raise UsageError(f"plugin {self.plugin!r} registered {self.kind} {name!r}: aliases must be names and "
                             "description a string")
        meta = {k: v for k, v in settings.items() if v is not None}  # unset stays absent: meta.get(key) is None
        self.staged.append((name, obj, dict(meta, aliases=aliases, **({"description": description} if description else {}))))

    def commit(self, registry: Registry, on_error: Callable[[UsageError], None]) -> None:
        """Add every staged registration; a refused one (a taken or invalid name) goes to ``on_error``."""
        for name, obj, meta in self.staged:
            try:
                registry.add(name, obj, plugin=self.plugin, **meta)
            except UsageError as exc:
                on_error(exc)


def _param_settings(kind: str, name: str, params: Any, types: Any, check: Any) -> dict:
    """Declared parameters, checked: a dict of defaults, a dict of types for some of them, a callable check."""
    if not isinstance(params or {}, dict) or not isinstance(types or {}, dict) or not set(types or {}) <= set(params or {}):
        raise UsageError(f"{kind} {name!r}: params must be a dict of defaults and types a dict naming some of them")
    if check is not None and not callable(check):
        raise UsageError(f"{kind} {name!r}: check must be a function of the parameters")
    return {"params": dict(params or {}), "types": dict(types or {}), "check": check}


class BackboneRegistrar(Registrar):
    kind = "backbone"

    def __call__(self, name: str, build: Callable[..., Any], *, aliases: Iterable[str] = (),
                 description: str | None = None, pretrained: bool = True,
                 layers: Callable[[], list[str]] | None = None, prefix: bool = False,
                 text: bool | Callable[[str], bool | None] | None = None) -> None:
        """``build(pretrained: bool[, layer=NAME]) -> Backbone``; ``layers()`` lists the blocks it can be cut at;
        ``text`` whether its Backbones carry a text tower (a prefix name: a cheap function of the value, None
        when it cannot tell; unset: unknown, so a strategy that requires one builds it to look)."""
        self._stage(name, build, aliases, description, pretrained=bool(pretrained), layers=layers, prefix=prefix,
                    text=text)


class DatasetRegistrar(Registrar):
    kind = "dataset"

    def __call__(self, name: str, build: Callable[..., Any], *, aliases: Iterable[str] = (),
                 description: str | None = None, augment: dict | bool | None = None, params: dict | None = None,
                 types: dict | None = None, prefix: bool = False, uses_data_dir: bool = True) -> None:
        """``build(data_dir, download, **params) -> DatasetSplits``; ``augment``: its label-preserving transforms;
        ``uses_data_dir=False``: its data come with its code (generated, or bundled with a library), so its cells
        and features are not keyed by ``--data-dir`` (else they are keyed by what the build read)."""
        self._stage(name, build, aliases, description, augment=augment, prefix=prefix,
                    uses_data_dir=None if uses_data_dir else False,
                    **_param_settings("dataset", name, params, types, None))


class StrategyRegistrar(Registrar):
    kind = "strategy"

    def __call__(self, name: str, fn: Callable[..., Any], /, *, params: dict | None = None,
                 types: dict | None = None, check: Callable[[dict], None] | None = None,
                 aliases: Iterable[str] = (), description: str | None = None, requires: Iterable[str] = (),
                 **v1_params: Any) -> None:
        """``fn(backbone, data, ctx) -> Predictions``; ``params`` its settable parameters and their defaults,
        ``types`` the type of those whose default is None, ``check(params)`` run on each cell's parameters when
        the grid is expanded; ``requires`` what it needs of a backbone (``CAPABILITIES``): backbones without it
        are left out of its cells before the grid runs. v1: ``register(name, fn, **params)`` with ``fn.check_params``."""
        if v1_params and params is not None:
            raise UsageError(f"strategy {name!r}: give its parameters as params={{...}} or (v1) as keywords, not both")
        requires = (requires,) if isinstance(requires, str) else tuple(requires)
        if set(requires) - set(CAPABILITIES):
            raise UsageError(f"strategy {name!r} requires {', '.join(sorted(set(requires) - set(CAPABILITIES)))}; "
                             f"a strategy may require {', '.join(CAPABILITIES)}")
        self._stage(name, fn, aliases, description, requires=requires or None, **_param_settings(
            "strategy", name, v1_params if params is None else params, types, check or getattr(fn, "check_params", None)))


class MetricRegistrar(Registrar):
    kind = "metric"

    def __call__(self, name: str, fn: Callable[..., float], *, higher_is_better: bool = True, percent: bool = False,
                 default: bool = True, per_item: Callable[..., Any] | None = None, resample: bool = False,
                 needs_scores: bool = False, aliases: Iterable[str] = (), description: str | None = None) -> None:
        """``fn(y_true, y_pred, y_score) -> float``; ``per_item``/``resample`` say how the paired tests recompute it."""
        self._stage(name, fn, aliases, description, higher_is_better=bool(higher_is_better), percent=bool(percent),
                    default=bool(default), per_item=per_item, resample=bool(resample) or None,
                    needs_scores=bool(needs_scores) or None)


ESTIMATOR_NEEDS = ("features", "labels", "source_logits", "meta")


class EstimatorRegistrar(Registrar):
    kind = "estimator"

    def __call__(self, name: str, fn: Callable[..., float], *, cost: float = 1.0,
                 needs: Iterable[str] = ("features", "labels"), aliases: Iterable[str] = (),
                 description: str | None = None) -> None:
        """``fn(features, labels, source_logits) -> float`` (``fn(meta)`` when it needs only "meta"); ``cost``
        relative to LogME's; ``needs`` what it reads, of ``ESTIMATOR_NEEDS``."""
        needs = (needs,) if isinstance(needs, str) else tuple(needs)
        if not needs or not set(needs) <= set(ESTIMATOR_NEEDS) or ("meta" in needs and len(needs) > 1):
            raise UsageError(f"plugin {self.plugin!r} registered estimator {name!r} with needs={needs!r}: use some of "
                             f"{', '.join(ESTIMATOR_NEEDS[:3])}, or \"meta\" alone")
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not 0 <= cost < float("inf"):
            raise UsageError(f"plugin {self.plugin!r} registered estimator {name!r} with cost={cost!r}: "
                             "a number >= 0 (its time relative to LogME's)")
        self._stage(name, fn, aliases, description, cost=float(cost), needs=needs)


REGISTRARS = {r.kind: r for r in (BackboneRegistrar, DatasetRegistrar, StrategyRegistrar, MetricRegistrar,
                                  EstimatorRegistrar)}
