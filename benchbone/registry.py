"""One generic registry for backbones, datasets, strategies and metrics, filled through the hooks."""
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


def natural_key(name: str) -> list:
    """Sort ``resnet18`` before ``resnet101`` (timm's list_models does the same)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: the plugin's object, the plugin that offered it, and its metadata."""

    name: str
    obj: T
    plugin: str
    meta: dict = field(default_factory=dict)


class Registry(Generic[T]):
    """Names to entries, with aliases, shell-style patterns and did-you-mean errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        self._derived: dict[str, Entry[T]] = {}
        self.load_problems: dict[str, str] = {}  # plugin -> why it failed to load, for unknown-name errors

    def add(self, name: str, obj: T, *, plugin: str, **meta: Any) -> None:
        if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
            raise UsageError(
                f"plugin {plugin!r} registered an invalid {self.kind} name {name!r}: use letters, digits and . _ - / +"
            )
        aliases = tuple(meta.pop("aliases", ()))
        if meta.get("prefix") and not name.endswith((":", "/")):
            raise UsageError(f"plugin {plugin!r} registered prefix {self.kind} {name!r}: a prefix name ends with ':' or '/'")
        for key in (name, *aliases):
            owner = self._entries.get(key) or self._entries.get(self._aliases.get(key, ""))
            if owner is not None:
                if owner.obj is obj and owner.name == name:
                    return  # the same object registered twice is harmless
                raise DuplicateNameError(
                    f"{self.kind} name {key!r} is registered by both plugin {owner.plugin!r} and plugin {plugin!r}; "
                    f"uninstall one or block it with --no-plugin NAME"
                )
        self._entries[name] = Entry(name, obj, plugin, dict(meta, aliases=aliases))
        for alias in aliases:
            self._aliases[alias] = name

    def _owner(self, key: str) -> Entry[T] | None:
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
        self._derived[key] = Entry(key, entry.obj(value), entry.plugin, dict(entry.meta, prefix=False))
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


def make_registrar(registry: Registry, plugin: str) -> Callable[..., None]:
    """The ``register`` callback handed to one plugin's registration hook."""

    def register(name: str, obj: Any, **meta: Any) -> None:
        if not callable(obj):
            raise UsageError(f"plugin {plugin!r} registered {registry.kind} {name!r} with a non-callable {obj!r}")
        registry.add(name, obj, plugin=plugin, **meta)

    register.__name__ = f"register_{registry.kind}"
    return register
