"""The docs keep up with the code (as datasette's do): every subcommand, flag, --set key, BENCHBONE_* variable
and hook is documented; a test fails when one is added without its line in README.md or docs/."""
from __future__ import annotations

import argparse
import pathlib
import re

import pytest

from benchbone import hookspecs
from benchbone.cli.parser import build_parser
from benchbone.planning.grid import CONDITION_KEYS, HARNESS_DEFAULTS
from benchbone.plugins import get_plugin_manager

ROOT = pathlib.Path(__file__).resolve().parents[1]


def docs_text(root: pathlib.Path = ROOT) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def flags() -> list[tuple[str, str]]:
    return sorted({(name, option) for name, parser in subcommands().items() for action in parser._actions
                   for option in action.option_strings if option.startswith("--") and option != "--help"})


def environment_variables(root: pathlib.Path = ROOT) -> list[str]:
    found = set()
    for folder in ("benchbone", "plugins"):
        for path in (root / folder).rglob("*.py"):
            found |= set(re.findall(r"\bBENCHBONE_[A-Z_]+\b", path.read_text(encoding="utf-8")))
    return sorted(found)


def strategy_keys() -> list[tuple[str, str]]:
    strategies = get_plugin_manager(entrypoints=False).registries().strategies
    return sorted((entry.name, key) for entry in strategies for key in entry.params)


def documented(term: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(term)}(?![\w-])", text) is not None


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_subcommand_is_documented(command):
    assert documented(f"benchbone {command}", docs_text()), f"`benchbone {command}` is not in README.md or docs/"


@pytest.mark.parametrize("command, flag", flags())
def test_every_flag_is_documented(command, flag):
    assert documented(flag, docs_text()), f"benchbone {command} {flag} is not in README.md or docs/"


@pytest.mark.parametrize("key", [*HARNESS_DEFAULTS, *CONDITION_KEYS])
def test_every_harness_key_is_documented_and_in_run_help(key):
    assert documented(key, docs_text()), f"--set {key} is not in README.md or docs/"
    assert documented(key, subcommands()["run"].format_help()), f"benchbone run --help does not name --set {key}"


@pytest.mark.parametrize("strategy, key", strategy_keys())
def test_every_strategy_key_is_documented(strategy, key):
    assert documented(key, docs_text()), f"--set {strategy}.{key} is not in README.md or docs/"


@pytest.mark.parametrize("variable", environment_variables())
def test_every_environment_variable_is_documented(variable):
    assert documented(variable, docs_text()), f"{variable} is read by the code but not in README.md or docs/"


@pytest.mark.parametrize("hook", sorted(name for name in dir(hookspecs) if name.startswith("benchbone_")))
def test_every_hook_is_documented(hook):
    assert documented(hook, docs_text()), f"hook {hook} is not in README.md or docs/"


def test_the_checks_fail_on_what_the_docs_lack(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("benchbone run --out DIR; BENCHBONE_CACHE_DIR")
    (tmp_path / "benchbone").mkdir()
    (tmp_path / "plugins").mkdir()
    (tmp_path / "benchbone" / "m.py").write_text('os.environ.get("BENCHBONE_CACHE_DIR"); "BENCHBONE_NEW_THING"')
    text = docs_text(tmp_path)
    assert documented("benchbone run", text) and not documented("benchbone report", text)
    assert documented("--out", text) and not documented("--output", text)
    assert [v for v in environment_variables(tmp_path) if not documented(v, text)] == ["BENCHBONE_NEW_THING"]
