"""Import paths of benchbone 0.1's flat layout, still importable: each warns once and names where it went.

``import benchbone.inputs.feature_cache`` gives the module that now holds its contents (or, for a module split in two,
one holding both parts' names) and a ``DeprecationWarning`` naming the new path.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

MOVED = {
    "benchbone.grid": ("benchbone.planning.grid", "benchbone.planning.suites"),
    "benchbone.names_index": ("benchbone.planning.names_index",),
    "benchbone.data": ("benchbone.inputs.splits", "benchbone.inputs.transforms", "benchbone.inputs.loading"),
    "benchbone.features": ("benchbone.inputs.feature_cache", "benchbone.inputs.extraction"),
    "benchbone.corruptions": ("benchbone.inputs.corruptions", "benchbone.inputs.corruption_functions"),
    "benchbone.folders": ("benchbone.inputs.folders",),
    "benchbone.weights": ("benchbone.inputs.weights",),
    "benchbone.session": ("benchbone.execution.session",),
    "benchbone.context": ("benchbone.execution.context",),
    "benchbone.cell": ("benchbone.execution.cell_run",),
    "benchbone.runner": ("benchbone.execution.resume",),
    "benchbone.executors": ("benchbone.execution.executors",),
    "benchbone.provenance": ("benchbone.execution.provenance",),
    "benchbone.artefacts": ("benchbone.execution.artefacts", "benchbone.reporting.bootstrap"),
    "benchbone.efficiency": ("benchbone.execution.efficiency",),
    "benchbone.device": ("benchbone.execution.device",),
    "benchbone.allocator": ("benchbone.execution.allocator",),
    "benchbone.harness": ("benchbone.execution.harness",),
    "benchbone.leaderboard": ("benchbone.reporting.leaderboard",),
    "benchbone.statistics": ("benchbone.reporting.statistics", "benchbone.reporting.groups", "benchbone.reporting.ranks"),
    "benchbone.compare": ("benchbone.reporting.compare",),
    "benchbone.robustness": ("benchbone.reporting.robustness",),
    "benchbone.report": ("benchbone.reporting.report",),
    "benchbone.plots": ("benchbone.reporting.plots",),
    "benchbone.formats": ("benchbone.reporting.formats",),
    "benchbone.formatting": ("benchbone.reporting.presentation",),
    "benchbone.expect": ("benchbone.reporting.expect",),
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old names of ``MOVED`` and loads them as their new modules."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.machinery.ModuleSpec(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        targets = MOVED[spec.name]
        warnings.warn(f"{spec.name} has moved to {' and '.join(targets)}: import it from there",
                      DeprecationWarning, stacklevel=2)
        modules = [importlib.import_module(name) for name in targets]
        if len(modules) == 1:
            spec.loader_state = modules[0].__spec__  # the import system stamps ``spec`` on it: put its own back
            return modules[0]
        merged = types.ModuleType(spec.name, modules[0].__doc__)
        for module in reversed(modules):
            merged.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
        return merged

    def exec_module(self, module):
        if module.__spec__.loader_state is not None:
            module.__spec__ = module.__spec__.loader_state


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
