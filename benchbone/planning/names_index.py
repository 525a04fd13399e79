"""A cached index of registered names, so that ``benchbone list backbones`` needs neither torch nor timm.

Filling the backbone registry imports torchvision and timm and lists thousands of models (seconds).
The index keeps what ``benchbone list`` prints, per kind, in ``<cache>/index/<kind>.json``, together
with a stamp of everything the names depend on: the versions of benchbone, torch, torchvision and timm,
every loaded plugin's name and version, and the size and mtime of each plugin's module file (so an
edited plugin, an installed or removed one, a blocked one or a ``-p`` file all rebuild it). A file
whose stamp differs, whose digest does not match its content, or that cannot be read is rebuilt, never
trusted. Without a cache directory (``BENCHBONE_CACHE_DIR=``) nothing is kept.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from benchbone.digests import json_digest
from benchbone.versions import package_version

INDEX_VERSION = 1
DEPENDS_ON = ("benchbone", "torch", "torchvision", "timm")


def cache_root() -> Path | None:
    """The default cache directory (``BENCHBONE_CACHE_DIR``, else ``~/.cache/benchbone``); None when empty."""
    root = os.environ.get("BENCHBONE_CACHE_DIR")
    if root is None:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "benchbone"
    return Path(root) if str(root) else None


def _module_file(plugin: object) -> str | None:
    """The source file of a plugin module (also a ``-p`` file, which is not in sys.modules) or of an object's class."""
    module = plugin if isinstance(plugin, type(sys)) else sys.modules.get(type(plugin).__module__)
    return getattr(module, "__file__", None)


def stamp(pm, kind: str) -> dict:
    """What the names of ``kind`` depend on: versions, plugins and their module files (size, mtime)."""
    files = {}
    for name, plugin in pm.list_name_plugin():
        path = _module_file(plugin)
        with contextlib.suppress(OSError, TypeError):
            st = os.stat(path)
            files[name] = [path, st.st_size, st.st_mtime_ns]
    return {"index": INDEX_VERSION, "kind": kind, "python": sys.version, "executable": sys.executable,
            "versions": {dist: package_version(dist) for dist in DEPENDS_ON},
            "plugins": dict(sorted(pm.versions.items())), "files": dict(sorted(files.items()))}


def _read(path: Path, expected: dict) -> list[dict] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        body = {k: data[k] for k in ("stamp", "rows")}
        if data["digest"] != json_digest(body) or body["stamp"] != expected:
            return None
        rows = body["rows"]
        if not all(isinstance(r["name"], str) and isinstance(r["line"], str) for r in rows):
            return None
        return rows
    except (OSError, ValueError, KeyError, TypeError):  # absent, truncated, edited: rebuilt, not trusted
        return None


def line(entry, kind: str) -> str:
    """What `benchbone list KIND` prints of one entry: its name, plugin and details."""
    name = entry.name + ("VALUE" if entry.meta.get("prefix") else "")
    extra = []
    if entry.meta.get("aliases"):
        extra.append("alias " + ", ".join(entry.meta["aliases"]))
    if kind == "strategies":
        extra.append(", ".join(f"{k}={v!r}" for k, v in entry.params.items()))
    if kind == "metrics":
        extra.append("higher is better" if entry.meta.get("higher_is_better", True) else "lower is better")
        extra.append("paired tests: " + ("per item" if entry.meta.get("per_item") else
                                         "recomputed per resample" if entry.meta.get("resample") else "none"))
    if kind == "estimators":
        extra.append(f"cost {entry.meta.get('cost', 1.0):g}, needs {'+'.join(entry.meta.get('needs', ()))}")
    if entry.meta.get("description"):
        extra.append(entry.meta["description"])
    detail = "; ".join(e for e in extra if e)
    return f"{name:<40} [{entry.plugin}]" + (f"  {detail}" if detail else "")


DEFAULT = object()  # the default cache directory (``cache_root()``)


def _path(kind: str, root) -> Path | None:
    root = cache_root() if root is DEFAULT else root
    return Path(root) / "index" / f"{kind}.json" if root else None


def rows(pm, kind: str, keep: bool = True, root=DEFAULT) -> list[dict]:
    """``{"name", "aliases", "plugin", "prefix", "line"}`` of every registered name of ``kind`` in listing order,
    from the index in ``root`` (a cache directory; None: none) when it is current, else from the registry
    (then kept there, unless ``keep`` is false)."""
    path, expected = _path(kind, root), stamp(pm, kind)
    found = _read(path, expected) if path else None
    if found is not None:
        return found
    registry = pm.registries().kind(kind)
    made = [{"name": e.name, "aliases": list(e.meta.get("aliases", ())), "plugin": e.plugin,
             "prefix": bool(e.meta.get("prefix")), "line": line(e, kind)} for e in registry]
    if keep and path and not registry.load_problems and not pm.registries().narrowed.get(kind):  # failed: next time
        from benchbone.records import atomic_path

        body = {"stamp": expected, "rows": made}
        with contextlib.suppress(OSError):  # a cache that cannot be written: listed all the same
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps({**body, "digest": json_digest(body)}), encoding="utf-8")
    return made


def narrow(pm, kind: str, requested: list[str], root=DEFAULT) -> None:
    """Fill ``kind``'s registry from only the plugins that own the ``requested`` names and patterns, where the
    index (when current) says which: a run of one backbone then imports neither torchvision nor timm
    unless that backbone comes from them. A name the index does not know exactly (a prefix name such as
    ``hf/ORG/NAME``, a misspelling) leaves the registry whole, with its did-you-mean errors. Writes
    nothing: a run that fails on bad input leaves no file (the run writes the index once its input is
    checked, with ``rows``)."""
    if not requested or pm.registries().filled(kind):
        return
    import fnmatch

    from benchbone.registry import PATTERN_CHARS

    path = _path(kind, root)
    known = _read(path, stamp(pm, kind)) if path else None
    if known is None:
        return
    owners = set()
    for name in requested:
        if PATTERN_CHARS & set(name):
            found = [r for r in known if not r["prefix"] and fnmatch.fnmatchcase(r["name"], name)]
        else:
            found = [r for r in known if not r["prefix"] and name in (r["name"], *r["aliases"])]
        if not found:
            return
        owners.update(r["plugin"] for r in found)
    pm.registries().narrowed[kind] = owners
