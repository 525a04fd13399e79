"""benchbone 0.1's flat import paths still work: each warns once, naming its new place, and gives the same objects."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from benchbone.moved import MOVED

CHECK = """
import importlib, json, sys, warnings
from benchbone.moved import MOVED
out = {}
for old in MOVED:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    out[old] = [[w.category.__name__, str(w.message)] for w in caught]
json.dump(out, sys.stdout)
"""


def test_every_old_import_path_warns_once_naming_the_new_one():
    import json

    warned = json.loads(subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True).stdout)
    assert sorted(warned) == sorted(MOVED)
    for old, caught in warned.items():
        assert [c for c, _ in caught] == ["DeprecationWarning"], old
        assert all(new in caught[0][1] for new in MOVED[old]), (old, caught)


def test_what_the_0_1_docs_showed_still_imports():
    with pytest.warns(DeprecationWarning, match="benchbone.planning.grid"):
        from benchbone.grid import Cell, GridSpec, load_suite  # noqa: F401
    from benchbone.api import Cell as Now
    assert Cell is Now
    with pytest.warns(DeprecationWarning):
        features = importlib.import_module("benchbone.features")
    assert features.FeatureStore is importlib.import_module("benchbone.inputs.feature_cache").FeatureStore
    assert features.extract is importlib.import_module("benchbone.inputs.extraction").extract
